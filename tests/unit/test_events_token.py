"""Model-version events behind Triton's restricted model-repository API: the monitor sends the
admin-token header it is given (env or file) and says once, clearly, when Triton refuses it."""

from __future__ import annotations

import http.server
import json
import logging
import threading

import pytest
from prometheus_client import CollectorRegistry

from sightline.sidecars.events import EventPoller, ModelEvents
from sightline.sidecars.monitor import ConfigError, Monitor, MonitorConfig, load_config

TOKEN = "s3cret-token"
INDEX = [{"name": "detector", "version": "1", "state": "READY"},
         {"name": "detector_model", "version": "1", "state": "READY"}]


class RestrictedTriton(http.server.ThreadingHTTPServer):
    """Answers POST /v2/repository/index like `--http-restricted-api=model-repository:admin-token=TOKEN`."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - stdlib naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.seen.append(self.headers.get("admin-token"))
                if self.path != "/v2/repository/index":
                    status, body = 404, {"error": "not found"}
                elif self.headers.get("admin-token") != TOKEN:
                    status, body = 403, {"error": "This API is restricted, expecting header 'admin-token'"}
                else:
                    status, body = 200, INDEX
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture()
def triton():
    server = RestrictedTriton()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def monitor_for(tmp_path, triton: RestrictedTriton, environ: dict[str, str], yaml_text: str = "") -> Monitor:
    path = tmp_path / "monitor.yaml"
    path.write_text(f"triton_url: {triton.url}\naudit_dir: {tmp_path / 'audit'}\nwatch_processes: false\n" + yaml_text)
    return Monitor(load_config(path, environ=environ))


def test_the_token_from_the_environment_reaches_triton_and_versions_appear(tmp_path, triton):
    monitor = monitor_for(tmp_path, triton, {"SIGHTLINE_MONITOR_TRITON_ADMIN_TOKEN": TOKEN})
    monitor.poller.poll_once()
    assert triton.seen == [TOKEN]
    assert sample(monitor.registry, "sightline_model_ready", model="detector", version="1") == 1.0
    assert sample(monitor.registry, "sightline_model_index_errors_total") == 0.0


def test_the_token_from_a_mounted_secret_file_reaches_triton(tmp_path, triton):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")  # `kubectl create secret --from-file` keeps a trailing newline
    monitor = monitor_for(tmp_path, triton, {}, f"triton_admin_token_file: {token_file}\n")
    monitor.poller.poll_once()
    assert triton.seen == [TOKEN]
    assert sample(monitor.registry, "sightline_model_ready", model="detector_model", version="1") == 1.0


def test_an_unreadable_token_file_is_a_config_error_that_names_the_field(tmp_path):
    path = tmp_path / "monitor.yaml"
    path.write_text(f"triton_admin_token_file: {tmp_path / 'missing'}\n")
    with pytest.raises(ConfigError, match="triton_admin_token_file"):
        load_config(path, environ={})


def test_a_refused_index_is_logged_once_clearly_and_counted_every_time(triton, caplog):
    registry = CollectorRegistry()
    poller = EventPoller(ModelEvents(registry), triton.url)  # no token
    with caplog.at_level(logging.INFO, logger="sightline.monitor"):
        for _ in range(3):
            poller.poll_once()
    refused = [r for r in caplog.records if "HTTP 403" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in caplog.records]
    message = refused[0].getMessage()
    assert refused[0].levelno == logging.ERROR
    assert "sends no 'admin-token' header" in message and "SIGHTLINE_MONITOR_TRITON_ADMIN_TOKEN" in message
    assert sample(registry, "sightline_model_index_errors_total") == 3.0
    assert sample(registry, "sightline_model_ready", model="detector", version="1") is None


def test_a_wrong_token_says_so_and_never_logs_the_token(triton, caplog):
    registry = CollectorRegistry()
    poller = EventPoller(ModelEvents(registry), triton.url, token="stale-token")
    with caplog.at_level(logging.INFO, logger="sightline.monitor"):
        poller.poll_once()
        poller.poll_once()
    messages = [r.getMessage() + repr(getattr(r, "fields", {})) for r in caplog.records]
    assert len(messages) == 1 and "is not the one Triton expects" in messages[0]
    assert "stale-token" not in " ".join(messages)
    config = MonitorConfig(triton_admin_token=TOKEN)
    assert TOKEN not in repr(config) and TOKEN not in str(config.model_dump())
