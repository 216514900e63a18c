"""Refreshing the drift reference: refused during drift unless forced, versioned, kept across restarts."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from sightline import cli, modelspec
from sightline.datagrams import encode_embedding
from sightline.sidecars import logs
from sightline.sidecars.monitor import Monitor, MonitorConfig, load_config
from sightline.sidecars.tap_receiver import load_reference

DIM = 128
TOKEN = "test-monitor-api-token-0123456789"
HUNDRED_DAYS_AGO = time.time() - 100 * 86400


@pytest.fixture()
def reference(tmp_path) -> Path:
    """A committed-style reference: no version, no created_at, deployed 100 days ago."""
    rng = np.random.default_rng(0)
    path = tmp_path / "daylight.npz"
    np.savez(path, embeddings=rng.normal(size=(600, DIM)).astype(np.float16),
             quality_brightness=rng.normal(0.5, 0.05, 600).astype(np.float32))
    os.utime(path, (HUNDRED_DAYS_AGO, HUNDRED_DAYS_AGO))
    return path


@pytest.fixture()
def config(tmp_path, reference) -> MonitorConfig:
    return MonitorConfig(otlp_port=0, metrics_port=0, tap_port=0, audit_dir=tmp_path / "audit",
                         triton_url="http://127.0.0.1:9", watch_processes=False, reference=reference,
                         reference_dir=tmp_path / "drift", drift_window=300, drift_permutations=20,
                         drift_every_s=3600, api_token=TOKEN)


@pytest.fixture(autouse=True)
def cli_token(monkeypatch):
    """The drift CLI finds the monitor's API token in the environment."""
    monkeypatch.setenv("SIGHTLINE_MONITOR_API_TOKEN", TOKEN)


@pytest.fixture()
def monitor(config):
    with Monitor(config) as running:
        yield running


@pytest.fixture()
def events():
    """Records the sidecar logs (message, severity and fields)."""
    logger = logging.getLogger(logs.LOGGER_NAME)
    captured: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = captured.append  # type: ignore[method-assign]
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield captured
    logger.removeHandler(handler)
    logger.setLevel(level)


def logged(events: list[logging.LogRecord], message: str) -> list[dict]:
    return [dict(r.fields, severity=r.levelname.lower()) for r in events if r.getMessage() == message]


def send_traffic(monitor: Monitor, count: int, shift: float = 0.0, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for seq in range(count):
        body = {"sender": f"test-{seed}", "seq": seq, "camera": "cam-1",
                "embedding": encode_embedding(rng.normal(size=DIM) + shift),
                "quality": {"brightness": float(rng.normal(0.5, 0.05)), "sharpness": 0.3, "contrast": 0.2},
                "detections": {"count": 1, "by_class": [1] + [0] * (modelspec.NUM_CLASSES - 1)}}
        assert monitor.drift.accept(json.dumps(body).encode())


def rebaseline(monitor: Monitor, body: bytes | dict) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{monitor.metrics_port}/drift/rebaseline", data=data,
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def scrape(monitor: Monitor) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{monitor.metrics_port}/metrics").read().decode()


def sample(monitor: Monitor, name: str, labels: dict | None = None) -> float | None:
    return monitor.registry.get_sample_value(name, labels or {})


def test_the_committed_reference_is_named_by_its_hash_and_dated_by_its_file(monitor, reference):
    version = "daylight-" + hashlib.sha256(reference.read_bytes()).hexdigest()[:12]
    assert f'sightline_drift_reference_info{{version="{version}"}} 1.0' in scrape(monitor)
    assert sample(monitor, "sightline_drift_reference_created_timestamp_seconds") == pytest.approx(HUNDRED_DAYS_AGO)
    assert sample(monitor, "sightline_drift_reference_records") == 600


def test_a_refresh_is_refused_and_logged_while_drift_is_detected(monitor, events):
    before = monitor.drift.reference.version
    send_traffic(monitor, 300, shift=1.0)
    assert monitor.drift.evaluate()["all"].drift
    status, reply = rebaseline(monitor, {"window_s": 600, "reason": "night cameras"})
    assert status == 409 and reply["refusal"] == "drift"
    assert "found drift for camera(s) all, cam-1" in reply["error"]
    assert monitor.drift.reference.version == before
    assert logged(events, "drift reference refresh refused")[0]["refusal"] == "drift"


def test_a_forced_refresh_replaces_the_reference_its_metrics_and_the_verdict(monitor, events):
    before = monitor.drift.reference.version
    send_traffic(monitor, 300, shift=1.0)
    assert monitor.drift.evaluate()["all"].drift
    status, summary = rebaseline(monitor, {"window_s": 600, "force": True, "reason": "cameras moved", "min_records": 250})
    assert status == 200
    assert summary["version"].startswith("rb-") and summary["previous_version"] == before
    assert summary["records"] == 300 and summary["forced"] is True
    text = scrape(monitor)
    assert f'sightline_drift_reference_info{{version="{summary["version"]}"}} 1.0' in text
    assert before not in text
    assert sample(monitor, "sightline_drift_reference_created_timestamp_seconds") == pytest.approx(time.time(), abs=30)
    assert sample(monitor, "sightline_drift_reference_records") == 300
    rebuilt = logged(events, "drift reference rebuilt")[0]
    assert rebuilt["severity"] == "warning" and rebuilt["forced"] is True and rebuilt["previous_version"] == before
    send_traffic(monitor, 300, shift=1.0, seed=2)  # more of the accepted change: no longer drift
    assert not monitor.drift.evaluate()["all"].drift


def test_too_few_records_are_refused_even_when_forced(monitor):
    send_traffic(monitor, 50)
    status, reply = rebaseline(monitor, {"window_s": 600, "force": True})
    assert status == 409 and reply["refusal"] == "too_few_records"
    assert "only 50 tap records arrived in the last 600 s; a reference needs at least 200" in reply["error"]


def test_the_new_reference_is_written_atomically_and_a_restart_keeps_it(config):
    with Monitor(config) as first:
        send_traffic(first, 300)
        first.drift.evaluate()
        status, summary = rebaseline(first, {"window_s": 600, "reason": "new lenses"})
    assert status == 200 and summary["forced"] is False
    current = json.loads((config.reference_dir / "current.json").read_text())
    assert current["version"] == summary["version"] and Path(current["path"]).name == f"reference-{summary['version']}.npz"
    assert [p.name for p in config.reference_dir.iterdir() if p.name.startswith(".")] == []
    with np.load(current["path"]) as data:
        assert data["embeddings"].shape == (300, DIM) and data["embeddings"].dtype == np.float32
        assert str(data["reason"]) == "new lenses" and int(data["records"]) == 300 and not bool(data["forced"])
        assert {"quality_brightness", "quality_sharpness", "quality_contrast", "class_counts"} <= set(data.files)
    embeddings, quality, classes = load_reference(Path(current["path"]))
    assert len(embeddings) == 300 and set(quality) == {"brightness", "sharpness", "contrast"} and classes[0] == 300
    with Monitor(config) as restarted:
        assert restarted.drift.reference.version == summary["version"]
        assert sample(restarted, "sightline_drift_reference_info", {"version": summary["version"]}) == 1


@pytest.mark.parametrize("body, problem", [
    (b"{broken", "body: Invalid JSON"),
    ({"force": True}, "window_s: Field required"),
    ({"window_s": "10m"}, "window_s: Input should be a valid number"),
    ({"window_s": -5}, "window_s: Input should be greater than 0"),
    ({"window_s": 600, "force": "yes"}, "force: Input should be a valid boolean"),
    ({"window_s": 600, "min_records": 5}, "min_records: Input should be greater than or equal to 20"),
    ({"window_s": 600, "colour": "blue"}, "colour: Extra inputs are not permitted"),
])
def test_a_bad_body_gets_400_naming_the_problem(monitor, body, problem):
    status, reply = rebaseline(monitor, body)
    assert status == 400 and problem in reply["error"]


def test_an_oversized_body_is_not_read(monitor):
    status, reply = rebaseline(monitor, b" " * (128 * 1024))
    assert status == 413 and "at most" in reply["error"]


@pytest.mark.parametrize("length, status", [("-1", 400), ("12abc", 400), ("1e3", 400), (None, 411)])
def test_a_lying_content_length_is_refused_unread_and_the_monitor_keeps_serving(monitor, length, status):
    import socket

    head = (f"POST /drift/rebaseline HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {TOKEN}\r\n")
    head += f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    with socket.create_connection(("127.0.0.1", monitor.metrics_port), timeout=10) as conn:
        conn.sendall(head.encode() + b"\r\n" + b'{"window_s": 600}')
        chunks = []
        while chunk := conn.recv(4096):  # the refusal closes the connection: read to its end
            chunks.append(chunk)
        reply = b"".join(chunks).decode(errors="replace")
    assert reply.startswith(f"HTTP/1.1 {status} ") or reply.startswith(f"HTTP/1.0 {status} "), reply[:200]
    assert '"error"' in reply
    assert "sightline_" in scrape(monitor)  # still serving


def test_without_a_reference_drift_is_disabled_and_the_refresh_gets_503(config, tmp_path):
    with Monitor(config.model_copy(update={"reference": tmp_path / "missing.npz"})) as running:
        assert rebaseline(running, {"window_s": 600}) == (503, {"error": "drift is disabled: no reference is loaded"})


def test_cost_settings_are_exported_as_gauges(config):
    assert load_config(None, {"SIGHTLINE_MONITOR_COST_PER_HOUR_DOLLARS": "1.25"}).cost_per_hour_dollars == 1.25
    running = Monitor(config.model_copy(update={"cost_per_hour_dollars": 2.5, "cost_guardrail_per_1k_dollars": 0.02}))
    assert sample(running, "sightline_cost_per_hour_dollars") == 2.5
    assert sample(running, "sightline_cost_guardrail_per_1k_dollars") == 0.02


# -- the command line ------------------------------------------------------------------------------

@pytest.fixture()
def prometheus():
    """A local Prometheus stand-in whose ALERTS report a firing embedding-drift alert."""
    queries: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            queries.append(urllib.parse.unquote_plus(self.path))
            body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"__name__": "ALERTS", "alertname": "SightlineEmbeddingDrift", "alertstate": "firing",
                            "camera": "cam-4"}, "value": [time.time(), "1"]}]}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", queries
    server.shutdown()
    server.server_close()


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(["drift", "rebaseline", *argv])
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def test_the_cli_refuses_while_a_drift_alert_fires_and_the_sidecar_logs_it(monitor, prometheus, capsys, events):
    url, queries = prometheus
    send_traffic(monitor, 300)
    before = monitor.drift.reference.version
    code, output = run_cli(capsys, "--window", "10m", "--monitor", f"http://127.0.0.1:{monitor.metrics_port}",
                           "--prometheus", url)
    assert code == 2
    assert "SightlineEmbeddingDrift (cam-4)" in output and "--force overrides this" in output
    assert "logged this refusal" in output
    assert 'ALERTS{alertstate="firing",alertname=~"SightlineEmbeddingDrift|SightlineDriftBudgetBurn"}' in queries[0]
    assert monitor.drift.reference.version == before
    assert logged(events, "drift reference refresh refused")[0]["alerts"] == ["SightlineEmbeddingDrift (cam-4)"]


def test_the_cli_with_force_refreshes_during_a_drift_alert(monitor, prometheus, capsys, events):
    send_traffic(monitor, 300)
    code, output = run_cli(capsys, "--window", "10m", "--force", "--reason", "accepted: new cameras",
                           "--monitor", f"http://127.0.0.1:{monitor.metrics_port}", "--prometheus", prometheus[0])
    assert code == 0
    assert "forced" in output and "logs it as forced" in output
    assert monitor.drift.reference.version in output
    assert logged(events, "drift reference rebuilt")[0]["reason"] == "accepted: new cameras"


def test_the_cli_goes_on_without_prometheus_and_reports_an_unreachable_sidecar(monitor, capsys):
    send_traffic(monitor, 300)
    code, output = run_cli(capsys, "--monitor", f"http://127.0.0.1:{monitor.metrics_port}",
                           "--prometheus", "http://127.0.0.1:9")
    assert code == 0 and "cannot check drift alerts" in output
    code, output = run_cli(capsys, "--monitor", "http://127.0.0.1:9", "--prometheus", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach the monitor sidecar" in output


def test_the_cli_relays_too_few_records_with_exit_code_2(monitor, capsys):
    code, output = run_cli(capsys, "--window", "90s", "--monitor", f"http://127.0.0.1:{monitor.metrics_port}",
                           "--prometheus", "http://127.0.0.1:9")
    assert code == 2 and "only 0 tap records arrived in the last 90 s" in output
    assert "--force" not in output


def test_a_buffer_that_covers_less_than_the_window_says_so(config):
    config = config.model_copy(update={"rebaseline_buffer": 250})
    with Monitor(config) as running:
        send_traffic(running, 300)  # the buffer keeps the latest 250, all from the last seconds
        status, summary = rebaseline(running, {"window_s": 3600})
    assert status == 200 and summary["records"] == 250
    assert summary["covered_s"] < 60 and "cover only the last" in summary["warning"]


def test_a_reference_that_cannot_be_built_is_never_written_and_the_reply_says_why(monitor, monkeypatch):
    from sightline.sidecars import tap_receiver

    def broken(*args, **kwargs):
        raise ValueError("the embeddings are all NaN")

    send_traffic(monitor, 250)
    monkeypatch.setattr(tap_receiver, "DriftDetector", broken)
    status, reply = rebaseline(monitor, {"window_s": 600})
    assert status == 500 and "all NaN" in reply["error"]
    assert not (monitor.config.reference_dir / "current.json").exists()
    assert rebaseline(monitor, {"window_s": 600})[0] == 500  # the sidecar is still serving
