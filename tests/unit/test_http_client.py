"""Sightline's one HTTP client against a real local server: statuses, silence and garbage."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sightline import http_client
from sightline.errors import OperationError
from sightline.runtime import free_port


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - stdlib naming
        if self.path == "/ok":
            self._reply(200, b'{"status": "success"}')
        elif self.path == "/garbage":
            self._reply(200, b"<html>not json</html>")
        elif self.path == "/slow":
            time.sleep(1.0)
            self._reply(200, b"{}")
        else:
            self._reply(404, b'{"error": "no such thing"}')

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        self._reply(200, json.dumps({"echo": body, "type": self.headers.get("Content-Type")}).encode())


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # the client that gave up on /slow is gone; expected
        pass


@pytest.fixture(scope="module")
def server():
    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()
    time.sleep(1.0)  # the /slow handler finishes and closes its connection before the module ends


def test_a_2xx_answer_comes_back_as_json_and_a_json_body_is_sent_as_json(server):
    assert http_client.request_json(f"{server}/ok") == {"status": "success"}
    echoed = http_client.request_json(f"{server}/post", method="POST", json_body={"force": False})
    assert echoed == {"echo": {"force": False}, "type": "application/json"}
    assert http_client.is_ok(f"{server}/ok")


def test_another_status_raises_with_the_status_and_the_body(server):
    with pytest.raises(http_client.HttpStatusError) as caught:
        http_client.request_json(f"{server}/missing")
    assert caught.value.status == 404 and caught.value.json() == {"error": "no such thing"}
    assert "answered HTTP 404" in str(caught.value) and isinstance(caught.value, OperationError)
    assert not http_client.is_ok(f"{server}/missing")


def test_no_answer_is_unreachable_naming_the_url(server):
    closed = f"http://127.0.0.1:{free_port()}/ok"
    with pytest.raises(http_client.Unreachable, match="cannot reach http://127.0.0.1"):
        http_client.request(closed, timeout_s=2)
    with pytest.raises(http_client.Unreachable):
        http_client.request(f"{server}/slow", timeout_s=0.2)
    assert not http_client.is_ok(closed)


def test_a_body_that_is_not_json_is_an_error_not_a_crash(server):
    with pytest.raises(http_client.HttpError, match="not JSON"):
        http_client.request_json(f"{server}/garbage")
