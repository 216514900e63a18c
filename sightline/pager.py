"""A local pager: the webhook Alertmanager pages on the local stack.

It prints every notification as it arrives, appends it as a JSON line to
``.sightline/pages.jsonl``, and serves what it received at ``GET /notifications`` so tests
and the demo can wait for a page and its resolution. ``POST /page`` is the pager
(severity critical), ``POST /ticket`` the ticket queue (warning).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, List, Optional, TextIO

from sightline import http_client


def summarize(channel: str, payload: dict) -> List[dict]:
    """One record per alert in an Alertmanager webhook payload."""
    out = []
    for alert in payload.get("alerts", []):
        labels, annotations = alert.get("labels", {}), alert.get("annotations", {})
        out.append({
            "received_at": time.time(),
            "channel": channel,
            "status": alert.get("status", payload.get("status", "")),
            "alertname": labels.get("alertname", ""),
            "severity": labels.get("severity", ""),
            "slo": labels.get("sloth_slo", labels.get("slo", "")),
            "burnrate_tier": labels.get("burnrate_tier", ""),
            "summary": annotations.get("summary", ""),
            "description": annotations.get("description", ""),
            "runbook_url": annotations.get("runbook_url", ""),
            "starts_at": alert.get("startsAt"),
            "ends_at": alert.get("endsAt"),
        })
    return out


def render(record: dict) -> str:
    icon = "RESOLVED" if record["status"] == "resolved" else ("PAGE" if record["channel"] == "page" else "TICKET")
    tier = f" [{record['burnrate_tier']}]" if record["burnrate_tier"] else ""
    return (f"{time.strftime('%H:%M:%S', time.localtime(record['received_at']))} {icon:8s} "
            f"{record['alertname']}{tier} ({record['severity']}): {record['summary']}  runbook: {record['runbook_url']}")


class Pager:
    def __init__(self, host: str = "127.0.0.1", port: int = 9095, log_path: Optional[Path] = None,
                 out: TextIO = sys.stdout, on_record: Optional[Callable[[dict], None]] = None) -> None:
        self.records: List[dict] = []
        self.log_path = log_path
        self.out = out
        self.on_record = on_record
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> "Pager":
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def receive(self, channel: str, payload: dict) -> None:
        records = summarize(channel, payload)
        with self._lock:
            self.records.extend(records)
            if self.log_path is not None:
                with self.log_path.open("a") as log:
                    for record in records:
                        log.write(json.dumps(record) + "\n")
        for record in records:
            print(render(record), file=self.out, flush=True)
            if self.on_record is not None:
                self.on_record(record)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        pager = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _reply(self, status: HTTPStatus, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                channel = self.path.strip("/")
                if channel not in ("page", "ticket"):
                    self._reply(HTTPStatus.NOT_FOUND, b'{"error": "POST /page or /ticket"}')
                    return
                try:
                    payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                except ValueError:
                    self._reply(HTTPStatus.BAD_REQUEST, b'{"error": "body is not JSON"}')
                    return
                pager.receive(channel, payload)
                self._reply(HTTPStatus.OK, b"{}")

            def do_GET(self) -> None:  # noqa: N802
                if self.path.split("?")[0] == "/notifications":
                    with pager._lock:
                        body = json.dumps(pager.records).encode()
                    self._reply(HTTPStatus.OK, body)
                elif self.path == "/healthz":
                    self._reply(HTTPStatus.OK, b"ok\n", "text/plain")
                else:
                    self._reply(HTTPStatus.NOT_FOUND, b'{"error": "GET /notifications"}')

        return Handler


def fetch_notifications(url: str) -> List[dict]:
    return http_client.request_json(f"{url}/notifications", timeout_s=5)
