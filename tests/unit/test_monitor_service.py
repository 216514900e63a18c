"""The monitor process: configuration errors name the field; endpoints; forwarding never blocks."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sightline.sidecars.monitor import ConfigError, Monitor, MonitorConfig, load_config

CAPTURE = Path(__file__).resolve().parent.parent / "fixtures" / "triton_otlp_ensemble.json"


def test_config_comes_from_yaml_then_environment(tmp_path):
    path = tmp_path / "monitor.yaml"
    path.write_text("otlp_port: 14318\ndrift_window: 300\n")
    config = load_config(path, environ={"SIGHTLINE_MONITOR_DRIFT_WINDOW": "400"})
    assert config.otlp_port == 14318 and config.drift_window == 400


@pytest.mark.parametrize(
    "yaml_text, field",
    [("otlp_port: 99999\n", "otlp_port"), ("drift_window: many\n", "drift_window"), ("colour: blue\n", "colour")],
)
def test_a_bad_config_names_the_field(tmp_path, yaml_text, field):
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=field):
        load_config(path, environ={})


def post(url: str, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture()
def monitor(tmp_path):
    config = MonitorConfig(otlp_port=0, metrics_port=0, tap_port=0, audit_dir=tmp_path / "audit",
                           triton_url="http://127.0.0.1:9", forward_otlp_url="http://127.0.0.1:9/v1/traces")
    with Monitor(config) as running:
        yield running


def test_health_readiness_and_metrics_are_served(monitor):
    base = f"http://127.0.0.1:{monitor.metrics_port}"
    assert urllib.request.urlopen(f"{base}/healthz").read() == b"ok\n"
    assert urllib.request.urlopen(f"{base}/readyz").status == 200
    request = urllib.request.Request(f"{base}/metrics", headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(request) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")


def test_a_bad_export_gets_400_and_is_counted_while_good_ones_are_accepted(monitor):
    url = f"http://127.0.0.1:{monitor.otlp_port}/v1/traces"
    assert post(url, b"{broken", "application/json") == 400
    assert post(url, CAPTURE.read_bytes(), "application/json") == 200
    assert monitor.registry.get_sample_value("sightline_otlp_spans_rejected_total", {"reason": "decode_error"}) == 1
    assert monitor.registry.get_sample_value("sightline_otlp_spans_received_total") == 8


def test_forwarding_to_a_dead_upstream_never_slows_the_receiver(monitor):
    url = f"http://127.0.0.1:{monitor.otlp_port}/v1/traces"
    started = time.perf_counter()
    for _ in range(20):
        assert post(url, CAPTURE.read_bytes(), "application/json") == 200
    assert time.perf_counter() - started < 5
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        dropped = monitor.registry.get_sample_value("sightline_otlp_forward_dropped_total", {"reason": "upstream_error"})
        if dropped:
            break
        time.sleep(0.1)
    assert dropped and dropped >= 1


def test_exports_are_forwarded_upstream_with_their_content_encoding(tmp_path):
    received = []

    class Upstream(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers.get("Content-Encoding"), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    upstream = http.server.HTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    config = MonitorConfig(otlp_port=0, metrics_port=0, tap_port=0, audit_dir=tmp_path / "audit",
                           triton_url="http://127.0.0.1:9",
                           forward_otlp_url=f"http://127.0.0.1:{upstream.server_address[1]}/v1/traces")
    zipped = gzip.compress(CAPTURE.read_bytes())
    try:
        with Monitor(config) as running:
            url = f"http://127.0.0.1:{running.otlp_port}/v1/traces"
            assert post(url, CAPTURE.read_bytes(), "application/json") == 200
            request = urllib.request.Request(url, data=zipped, method="POST", headers={
                "Content-Type": "application/json", "Content-Encoding": "gzip"})
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
            deadline = time.monotonic() + 5
            while len(received) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        upstream.shutdown()
        upstream.server_close()
    # the upstream can read both: the gzip body goes on with the encoding it came with
    assert received == [(None, CAPTURE.read_bytes()), ("gzip", zipped)]
