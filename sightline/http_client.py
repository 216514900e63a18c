"""One small HTTP client for Sightline's own calls: Triton's APIs, Prometheus, the monitor,
the pager and an OTLP upstream.

Every call has a timeout. An answer outside 2xx raises :class:`HttpStatusError` with its
status and body; no answer at all (refused, reset, timed out, a bad address) raises
:class:`Unreachable`. Both are :class:`~sightline.errors.OperationError`, whose message
says which URL.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Mapping, Optional

from sightline.errors import OperationError


class HttpError(OperationError):
    """An HTTP call that did not succeed."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class HttpStatusError(HttpError):
    """The server answered with a status outside 2xx."""

    def __init__(self, url: str, status: int, body: bytes) -> None:
        detail = body.decode(errors="replace").strip()[:300]
        super().__init__(f"{url} answered HTTP {status}" + (f": {detail}" if detail else ""), url)
        self.status = status
        self.body = body

    def json(self) -> Any:
        """The body as JSON, or {} when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return {}


class Unreachable(HttpError):
    """No answer: the server could not be reached or did not answer in time."""


def request(url: str, *, method: str = "GET", body: Optional[bytes] = None, json_body: Any = None,
            headers: Optional[Mapping[str, str]] = None, timeout_s: float = 10.0) -> bytes:
    """The body of a 2xx answer to one request (``json_body`` is sent as JSON)."""
    all_headers = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    call = urllib.request.Request(url, data=body, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(call, timeout=timeout_s) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read()
        except Exception:  # noqa: BLE001 - a body cut short still leaves the status
            detail = b""
        raise HttpStatusError(url, exc.code, detail) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:  # refused, reset, timed out, a bad URL
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"cannot reach {url}: {reason}", url) from exc


def request_json(url: str, **kwargs: Any) -> Any:
    """The JSON body of a 2xx answer; a body that is not JSON raises :class:`HttpError`."""
    raw = request(url, **kwargs)
    try:
        return json.loads(raw or b"{}")
    except ValueError as exc:
        raise HttpError(f"{url} answered with something that is not JSON: {raw[:100]!r}", url) from exc


def is_ok(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``url`` answers 2xx within ``timeout_s`` (a readiness probe)."""
    try:
        request(url, timeout_s=timeout_s)
        return True
    except HttpError:
        return False
