"""`make demo` twice in a row: the second run must not inherit the first run's alerts."""

from __future__ import annotations

from sightline.runtime import ServerOptions
from sightline.stack import LocalStack, StackOptions


def _state(tmp_path):
    (tmp_path / "prometheus" / "data" / "wal").mkdir(parents=True)
    (tmp_path / "prometheus" / "data" / "wal" / "00000001").write_bytes(b"old samples")
    (tmp_path / "prometheus" / "prometheus.yml").write_text("config")
    (tmp_path / "alertmanager" / "data").mkdir(parents=True)
    (tmp_path / "alertmanager" / "data" / "nflog").write_bytes(b"old notifications")
    (tmp_path / "drift").mkdir()
    (tmp_path / "drift" / "reference-rb-1.npz").write_bytes(b"forced rebaseline")
    (tmp_path / "pages.jsonl").write_text('{"alertname": "SightlineTritonDown"}\n')
    (tmp_path / "monitor.log").write_text("kept\n")


def test_clear_history_removes_tsdb_alert_state_pages_and_refreshed_references(tmp_path):
    _state(tmp_path)
    stack = LocalStack(StackOptions(triton=ServerOptions(state_dir=tmp_path), fresh_data=True))
    removed = stack.clear_history()
    assert {p.relative_to(tmp_path).as_posix() for p in removed} == {
        "prometheus/data", "alertmanager/data", "drift", "pages.jsonl"}
    assert not (tmp_path / "prometheus" / "data").exists() and not (tmp_path / "pages.jsonl").exists()
    # logs and rendered configs stay: they say what the earlier run did
    assert (tmp_path / "monitor.log").read_text() == "kept\n"
    assert (tmp_path / "prometheus" / "prometheus.yml").exists()
    assert stack.clear_history() == []  # nothing left to remove: a fresh state directory is fine


def test_the_demo_starts_from_empty_history(monkeypatch):
    import sightline.cli as cli

    captured = {}

    class Stop(Exception):
        pass

    def fake_stack(options):
        captured["options"] = options
        raise Stop

    monkeypatch.setattr("sightline.stack.LocalStack", fake_stack)
    monkeypatch.setattr("sightline.incident.render_camera_frames", lambda *a, **k: None)
    monkeypatch.setattr("sightline.commands.stack._stop_on_signals", lambda: None)
    for name in ("SIGHTLINE_TAP_RATE", "SIGHTLINE_MONITOR_DRIFT_EVERY_S"):  # the demo sets these; undo after
        monkeypatch.delenv(name, raising=False)
    args = cli.build_parser().parse_args(["demo"])
    try:
        args.func(args)
    except Stop:
        pass
    assert captured["options"].fresh_data is True
