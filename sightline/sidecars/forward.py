"""Forward OTLP exports to an upstream collector (Tempo, Jaeger) without ever blocking.

Bodies go into a queue bounded in count and bytes; one worker thread posts them, with the
Content-Type and Content-Encoding they arrived with. When the queue is full or the upstream
is down, the body is dropped and counted: the receiver never waits.
"""

from __future__ import annotations

import queue
import threading

from prometheus_client import CollectorRegistry, Counter

from sightline import conventions as names
from sightline import http_client


class Forwarder:
    def __init__(self, url: str, registry: CollectorRegistry, max_queue: int = 256, timeout_s: float = 2.0,
                 max_queue_bytes: int = 32 * 1024 * 1024) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.max_queue_bytes = max_queue_bytes
        self._queued_bytes = 0
        self._bytes_lock = threading.Lock()
        self._queue: queue.Queue[tuple[bytes, str, str] | None] = queue.Queue(maxsize=max_queue)
        self.dropped = Counter(names.SPANS_FORWARD_DROPPED, "OTLP exports not forwarded upstream, by reason.",
                               [names.LABEL_REASON], registry=registry)
        self.forwarded = Counter(names.SPANS_FORWARDED, "OTLP exports forwarded upstream.", registry=registry)
        self._thread = threading.Thread(target=self._run, name="otlp-forward", daemon=True)
        self._thread.start()

    def submit(self, body: bytes, content_type: str, content_encoding: str = "") -> None:
        with self._bytes_lock:
            if self._queued_bytes + len(body) > self.max_queue_bytes:
                self.dropped.labels("queue_full").inc()
                return
            try:
                self._queue.put_nowait((body, content_type, content_encoding))
            except queue.Full:
                self.dropped.labels("queue_full").inc()
                return
            self._queued_bytes += len(body)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            body, content_type, content_encoding = item
            with self._bytes_lock:
                self._queued_bytes -= len(body)
            headers = {"Content-Type": content_type}
            if content_encoding:
                headers["Content-Encoding"] = content_encoding
            try:
                http_client.request(self.url, method="POST", body=body, headers=headers, timeout_s=self.timeout_s)
                self.forwarded.inc()
            except http_client.HttpError:
                self.dropped.labels("upstream_error").inc()

    def close(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=self.timeout_s + 1)
