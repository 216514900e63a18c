"""State changes on the monitor need its API token and JSON: POST /drift/rebaseline answers 401
without the token (always, while the monitor has none) and 415 for another content type; the
drift CLI sends the token, the local stack makes one per run, the cluster mounts a Secret."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sightline import cli
from sightline import conventions as names
from sightline.commands import incidents
from sightline.runtime import REPO_ROOT, ServerOptions
from sightline.sidecars import logs
from sightline.sidecars.monitor import ConfigError, Monitor, MonitorConfig, Refusal, api_token, authorize, load_config
from sightline.stack import StackOptions, monitor_process, write_monitor_token

TOKEN = "security-test-token-abcdefghijkl"
DIM = 128


@pytest.fixture()
def reference(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "daylight.npz"
    np.savez(path, embeddings=rng.normal(size=(300, DIM)).astype(np.float16))
    return path


def make_config(tmp_path, reference, **extra) -> MonitorConfig:
    return MonitorConfig(otlp_port=0, metrics_port=0, tap_port=0, audit_dir=tmp_path / "audit",
                         triton_url="http://127.0.0.1:9", watch_processes=False, reference=reference,
                         reference_dir=tmp_path / "drift", drift_permutations=20, drift_every_s=3600, **extra)


def post(monitor: Monitor, body: bytes, headers: dict) -> tuple[int, dict, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{monitor.metrics_port}/drift/rebaseline", data=body,
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


FORCE = json.dumps({"window_s": 600, "force": True, "min_records": 20}).encode()


@pytest.fixture()
def events():
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


def test_a_forced_rebaseline_from_anyone_without_the_token_is_refused_and_changes_nothing(tmp_path, reference, events):
    with Monitor(make_config(tmp_path, reference, api_token=TOKEN)) as monitor:
        before = monitor.drift.reference.version
        for headers in ({"Content-Type": "application/json"},
                        {"Content-Type": "application/json", "Authorization": "Bearer wrong-token-wrong-token"},
                        {"Content-Type": "application/json", "Authorization": f"Basic {TOKEN}"},
                        {"Content-Type": "application/json", "Authorization": TOKEN}):
            status, reply, reply_headers = post(monitor, FORCE, headers)
            assert status == 401, (headers, reply)
            assert reply_headers["WWW-Authenticate"].startswith("Bearer")
            assert "token" in reply["error"]
        assert monitor.drift.reference.version == before
        assert not (tmp_path / "drift" / "current.json").exists()
        assert monitor.registry.get_sample_value(names.MONITOR_REQUESTS_REFUSED,
                                                 {"reason": "unauthorized"}) == 4
    said = [r for r in events if r.getMessage() == "refused a state-changing request"]
    assert len(said) == 4 and all(r.levelname == "WARNING" for r in said)
    assert all(TOKEN not in json.dumps(r.fields) and "wrong-token" not in json.dumps(r.fields) for r in said)


def test_the_right_token_with_another_content_type_gets_415(tmp_path, reference):
    with Monitor(make_config(tmp_path, reference, api_token=TOKEN)) as monitor:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
            headers = {"Authorization": f"Bearer {TOKEN}"}
            if content_type:
                headers["Content-Type"] = content_type
            status, reply, _ = post(monitor, FORCE, headers)
            assert status == 415 and "application/json" in reply["error"], (content_type, reply)
        # the right token and JSON (with a charset) reach the drift service: too few records, 409
        status, reply, _ = post(monitor, FORCE, {"Authorization": f"Bearer {TOKEN}",
                                                 "Content-Type": "application/json; charset=utf-8"})
        assert status == 409 and reply["refusal"] == "too_few_records"


def test_a_monitor_without_a_token_refuses_every_state_change_and_says_how_to_set_one(tmp_path, reference):
    with Monitor(make_config(tmp_path, reference)) as monitor:
        status, reply, _ = post(monitor, FORCE, {"Content-Type": "application/json", "Authorization": "Bearer anything-at-all-here"})
        assert status == 401 and "SIGHTLINE_MONITOR_API_TOKEN" in reply["error"]
        # reads stay open
        assert urllib.request.urlopen(f"http://127.0.0.1:{monitor.metrics_port}/metrics", timeout=5).status == 200


@settings(max_examples=200, deadline=None)
@given(header=st.text(max_size=80), content_type=st.text(max_size=40))
def test_no_crafted_authorization_header_passes_but_the_token_itself(header, content_type):
    try:
        authorize(TOKEN, header, content_type)
    except Refusal as exc:
        assert exc.status in (401, 415)
        if exc.status == 415:
            assert header.strip().partition(" ")[2].strip() == TOKEN
        return
    assert header.strip().partition(" ")[2].strip() == TOKEN
    assert content_type.split(";")[0].strip().lower() == "application/json"


def test_the_token_comes_from_the_environment_or_a_file_and_a_bad_one_is_a_named_config_error(tmp_path):
    assert api_token(load_config(None, {"SIGHTLINE_MONITOR_API_TOKEN": TOKEN})) == TOKEN
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert api_token(load_config(None, {"SIGHTLINE_MONITOR_API_TOKEN_FILE": str(path)})) == TOKEN
    with pytest.raises(ConfigError, match="api_token: the API token has 5 characters; at least 16"):
        load_config(None, {"SIGHTLINE_MONITOR_API_TOKEN": "short"})
    with pytest.raises(ConfigError, match=r"api_token_file: cannot read .*missing"):
        load_config(None, {"SIGHTLINE_MONITOR_API_TOKEN_FILE": str(tmp_path / "missing")})


def test_the_local_stack_makes_a_private_token_per_run_that_the_monitor_and_the_cli_share(tmp_path, monkeypatch):
    monkeypatch.delenv("SIGHTLINE_MONITOR_API_TOKEN", raising=False)
    monkeypatch.delenv("SIGHTLINE_MONITOR_API_TOKEN_FILE", raising=False)
    options = StackOptions(triton=ServerOptions(state_dir=tmp_path / "state"))
    first = monitor_process(options)
    path = Path(first.env["SIGHTLINE_MONITOR_API_TOKEN_FILE"])
    assert path.is_absolute() and path.parent == (tmp_path / "state").resolve()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert len(token) >= 32
    assert api_token(load_config(None, first.env)) == token
    assert incidents._monitor_api_token(str(path)) == token
    monitor_process(options)
    assert path.read_text().strip() != token  # a new run, a new token
    assert [p.name for p in path.parent.iterdir()] == ["monitor-token"]


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(["drift", "rebaseline", *argv])
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def test_the_drift_cli_sends_the_token_and_says_clearly_when_it_has_none_or_a_wrong_one(tmp_path, reference, capsys,
                                                                                       monkeypatch):
    monkeypatch.delenv("SIGHTLINE_MONITOR_API_TOKEN", raising=False)
    token_file = write_monitor_token(tmp_path / "state")
    config = make_config(tmp_path, reference, api_token_file=token_file)
    with Monitor(config) as monitor:
        common = ["--monitor", f"http://127.0.0.1:{monitor.metrics_port}", "--prometheus", "http://127.0.0.1:9",
                  "--min-records", "20", "--window", "10m"]
        code, output = run_cli(capsys, *common, "--token-file", str(token_file))
        assert code == 2 and "only 0 tap records" in output  # authorised: the drift service answered
        code, output = run_cli(capsys, *common, "--token-file", str(tmp_path / "nowhere"))
        assert code == 2 and "no API token for the monitor" in output and "nowhere" in output
        (tmp_path / "other").write_text("a-token-of-another-run-0000\n")
        code, output = run_cli(capsys, *common, "--token-file", str(tmp_path / "other"))
        assert code == 1 and "HTTP 401" in output and "--token-file" in output
        assert "a-token-of-another-run" not in output
        assert monitor.registry.get_sample_value(names.MONITOR_REQUESTS_REFUSED,
                                                 {"reason": "unauthorized"}) == 1


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed")
@pytest.mark.parametrize("overlay", ("cpu", "gpu"))
def test_the_cluster_monitor_reads_its_api_token_from_its_own_mounted_secret(overlay, tmp_path):
    result = subprocess.run(["kubectl", "kustomize", str(REPO_ROOT / "k8s" / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.load_all(result.stdout, Loader=_Loader) if d]
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    monitor = next(c for c in pod["containers"] if c["name"] == "monitor")
    env = {e["name"]: e for e in monitor["env"]}
    path = env["SIGHTLINE_MONITOR_API_TOKEN_FILE"]["value"]
    assert "SIGHTLINE_MONITOR_API_TOKEN" not in env  # a file, not the environment
    mount = next(m for m in monitor["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "sightline-monitor-api"
    assert volume["secret"]["secretName"] not in json.dumps(next(c for c in pod["containers"] if c["name"] == "triton"))
    assert volume["secret"]["defaultMode"] & 0o007 == 0  # not world-readable
    # the monitor, configured as deployed, loads the token from that file
    token_path = tmp_path / os.path.basename(path)
    token_path.write_text(TOKEN + "\n")
    assert api_token(load_config(None, {"SIGHTLINE_MONITOR_API_TOKEN_FILE": str(token_path)})) == TOKEN


def pod_address() -> str | None:
    """This machine's non-loopback IPv4 address, if it has one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # no packet is sent
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_otlp_and_the_tap_stay_on_loopback_while_metrics_face_the_network(tmp_path, reference):
    import socket

    address = pod_address()
    if address is None:
        pytest.skip("no non-loopback address here")
    config = make_config(tmp_path, reference, listen_host="0.0.0.0", ingest_host="127.0.0.1", api_token=TOKEN)
    with Monitor(config) as monitor:
        assert urllib.request.urlopen(f"http://{address}:{monitor.metrics_port}/metrics", timeout=5).status == 200
        with pytest.raises(OSError):  # connection refused: nothing listens there
            socket.create_connection((address, monitor.otlp_port), timeout=5).close()
        exported = urllib.request.Request(f"http://127.0.0.1:{monitor.otlp_port}/v1/traces", data=b"{}",
                                          headers={"Content-Type": "application/json"}, method="POST")
        assert urllib.request.urlopen(exported, timeout=5).status == 200  # Triton, in the pod, still can
        assert monitor.tap._socket.getsockname()[0] == "127.0.0.1"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed")
def test_the_cluster_monitor_takes_spans_and_taps_on_loopback_where_triton_sends_them(tmp_path):
    result = subprocess.run(["kubectl", "kustomize", str(REPO_ROOT / "k8s" / "overlays" / "gpu")],
                            capture_output=True, text=True, timeout=120)
    docs = [d for d in yaml.load_all(result.stdout, Loader=_Loader) if d]
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    monitor_env = {e["name"]: e.get("value") for e in containers["monitor"]["env"]}
    triton_env = {e["name"]: e.get("value") for e in containers["triton"]["env"]}
    config_map = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "sightline-monitor")
    path = tmp_path / "monitor.yaml"
    path.write_text(config_map["data"]["monitor.yaml"])
    config = load_config(path, environ={k: v for k, v in monitor_env.items() if v is not None and "TOKEN" not in k})
    assert config.ingest_host == "127.0.0.1"
    assert triton_env["SIGHTLINE_TAP_ADDRESS"] == f"127.0.0.1:{config.tap_port}"
    assert f"opentelemetry,url=127.0.0.1:{config.otlp_port}/v1/traces" in " ".join(containers["triton"]["args"])


@pytest.mark.integration
def test_on_the_local_stack_the_drift_cli_with_this_runs_token_reaches_the_monitor_and_others_do_not(
        tmp_path, monkeypatch, capsys):
    """`sightline up`'s monitor (a real process beside the real Triton) takes this run's token only."""
    from sightline.runtime import free_port
    from sightline.stack import LocalStack

    monkeypatch.delenv("SIGHTLINE_MONITOR_API_TOKEN", raising=False)
    monkeypatch.delenv("SIGHTLINE_MONITOR_API_TOKEN_FILE", raising=False)
    monkeypatch.setenv("SIGHTLINE_MONITOR_AUDIT_DIR", str(tmp_path / "audit"))
    triton = ServerOptions(state_dir=tmp_path / "state", http_port=free_port(), grpc_port=free_port(),
                           metrics_port=free_port(), ready_timeout_s=180)
    options = StackOptions(triton=triton, monitor_otlp_port=free_port(), monitor_metrics_port=free_port(),
                           monitor_tap_port=free_port(), with_prometheus=False, with_alerting=False)
    with LocalStack(options):
        token_file = tmp_path / "state" / "monitor-token"
        common = ["--monitor", f"http://127.0.0.1:{options.monitor_metrics_port}", "--prometheus",
                  "http://127.0.0.1:9", "--window", "10m"]
        code, output = run_cli(capsys, *common, "--token-file", str(token_file))
        assert code == 2 and "tap records arrived" in output  # authorised; too few records yet
        (tmp_path / "stale").write_text("the-token-of-an-earlier-run-000\n")
        code, output = run_cli(capsys, *common, "--token-file", str(tmp_path / "stale"))
        assert code == 1 and "HTTP 401" in output
