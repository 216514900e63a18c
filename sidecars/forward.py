"""Forward OTLP exports to an upstream collector (Tempo, Jaeger) without ever blocking.

Bodies go into a bounded queue; one worker thread posts them. When the queue is full or
the upstream is down, the body is dropped and counted: the receiver never waits.
"""

from __future__ import annotations

import queue
import threading
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from sightline import conventions as names


class Forwarder:
    def __init__(self, url: str, registry: CollectorRegistry, max_queue: int = 256, timeout_s: float = 2.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._queue: queue.Queue[tuple[bytes, str] | None] = queue.Queue(maxsize=max_queue)
        self.dropped = Counter(names.SPANS_FORWARD_DROPPED, "OTLP exports not forwarded upstream, by reason.",
                               [names.LABEL_REASON], registry=registry)
        self.forwarded = Counter("sightline_otlp_forwarded_total", "OTLP exports forwarded upstream.", registry=registry)
        self._thread = threading.Thread(target=self._run, name="otlp-forward", daemon=True)
        self._thread.start()

    def submit(self, body: bytes, content_type: str) -> None:
        try:
            self._queue.put_nowait((body, content_type))
        except queue.Full:
            self.dropped.labels("queue_full").inc()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            body, content_type = item
            request = urllib.request.Request(self.url, data=body, headers={"Content-Type": content_type}, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                self.forwarded.inc()
            except (urllib.error.URLError, OSError, ValueError):
                self.dropped.labels("upstream_error").inc()

    def close(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=self.timeout_s + 1)
