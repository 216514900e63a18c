"""Structured JSON-lines logs: one object per line, never image bytes.

Sampled requests (tap records), drift verdicts and errors are logged with ``request_id``,
``stage``, ``severity`` and ``message`` so a log search can join them to traces and
exemplars by request or trace id.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any, Optional, TextIO

LOGGER_NAME = "sightline.monitor"
_FORBIDDEN = ("jpeg", "image", "embedding", "frame")


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": round(record.created, 3),
            "severity": record.levelname.lower(),
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None) or {}
        body.update({k: v for k, v in fields.items() if k not in _FORBIDDEN})
        if record.exc_info:
            body["error"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str, separators=(",", ":"))


def configure(stream: Optional[TextIO] = None, level: int = logging.INFO) -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLinesFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def event(severity: str, message: str, **fields: Any) -> None:
    """Log one structured event; ``fields`` become top-level keys (image data is dropped)."""
    logging.getLogger(LOGGER_NAME).log(getattr(logging, severity.upper(), logging.INFO), message,
                                       extra={"fields": fields})


_limits: dict[str, tuple[float, int]] = {}  # key -> (when a line was last written, lines held back since)
_limits_lock = threading.Lock()
MAX_LIMITED_KEYS = 256


def limited(key: str, severity: str, message: str, every_s: float = 10.0, **fields: Any) -> bool:
    """:func:`event`, at most one line per ``key`` every ``every_s`` seconds: a flood of bad
    input (a 4 MiB export of bad spans, a stream of bad datagrams) logs a line, then one line
    every ``every_s`` with ``suppressed`` saying how many were held back in between. The
    counters that go with these lines count every one. True when the line was written.
    """
    at = time.monotonic()
    with _limits_lock:
        last, held = _limits.get(key, (-float("inf"), 0))
        if at - last < every_s:
            _limits[key] = (last, held + 1)
            return False
        if key not in _limits and len(_limits) >= MAX_LIMITED_KEYS:
            _limits.pop(next(iter(_limits)))
        _limits[key] = (at, 0)
    event(severity, message, **(dict(fields, suppressed=held) if held else fields))
    return True


def now() -> float:
    return time.time()
