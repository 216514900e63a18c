"""Model events: which model versions Triton serves, and when that changes.

Polls Triton's repository index (``POST /v2/repository/index``) and exports one
``sightline_model_ready`` series per model version, an info series for the version being
served, and a counter of version switches, so boards can annotate deploys and alerts can
see that a change just happened.

A cluster's Triton restricts the model-repository API (``--http-restricted-api=
model-repository,...:admin-token=<token>``): the index answers 403 unless each request
carries that header. The poller sends it when given the token, and says once, loudly, when
Triton refuses it, because the only symptom otherwise is model-version events that never come.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Mapping, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge

from sightline import conventions as names
from sightline import http_client
from sightline.sidecars import logs

# The header Triton's restricted APIs expect: `--http-restricted-api=<apis>:<header>=<value>`.
ADMIN_HEADER = "admin-token"
DENIED = (401, 403)


def fetch_index(base_url: str, timeout_s: float = 3.0, headers: Optional[Mapping[str, str]] = None) -> list[dict]:
    return http_client.request_json(f"{base_url}/v2/repository/index", method="POST", json_body={},
                                    headers=headers, timeout_s=timeout_s)


class ModelEvents:
    """Keeps the last seen ready versions per model; ``update(index)`` exports the change."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = [names.LABEL_MODEL, names.LABEL_VERSION]
        self.ready = Gauge(names.MODEL_READY, "1 when the model version is READY in Triton.", labels,
                           registry=registry)
        self.serving = Gauge(names.MODEL_VERSION_INFO, "The version a model currently serves (value 1).",
                             labels, registry=registry)
        self.switches = Counter(names.MODEL_VERSION_SWITCHES, "Changes of a model's ready versions.",
                                [names.LABEL_MODEL], registry=registry)
        self.changed_at = Gauge(names.MODEL_VERSION_CHANGED_AT,
                                "When a model's ready versions last changed.", [names.LABEL_MODEL], registry=registry)
        self.poll_errors = Counter(names.MODEL_INDEX_ERRORS, "Failed polls of Triton's repository index.",
                                   registry=registry)
        self._versions: dict[str, frozenset[str]] = {}

    def update(self, index: list[dict], now: Optional[float] = None) -> list[str]:
        """Apply one repository index; returns the models whose ready versions changed."""
        now = time.time() if now is None else now
        ready: dict[str, set[str]] = {}
        for entry in index:
            model, version = str(entry.get("name", "")), str(entry.get("version", ""))
            if not model or not version:
                continue
            is_ready = entry.get("state") == "READY"
            self.ready.labels(model, version).set(1.0 if is_ready else 0.0)
            if is_ready:
                ready.setdefault(model, set()).add(version)
        changed = []
        for model in set(ready) | set(self._versions):
            now_ready = frozenset(ready.get(model, set()))
            before = self._versions.get(model)
            if before is not None and before != now_ready:
                self.switches.labels(model).inc()
                self.changed_at.labels(model).set(now)
                changed.append(model)
                for version in before - now_ready:
                    self.serving.remove(model, version)
            elif before is None:
                self.changed_at.labels(model).set(now)
                self.switches.labels(model)  # a 0 series from the start, so increase() works
            for version in now_ready:
                self.serving.labels(model, version).set(1.0)
            self._versions[model] = now_ready
        return changed


class EventPoller:
    """Polls the index every ``every_s`` seconds in a daemon thread.

    ``token``: the value of Triton's admin-token header (``header``), sent with every poll
    when set. A 401/403 is logged once per run of refusals (and counted, like any failed poll).
    """

    def __init__(self, events: ModelEvents, base_url: str, every_s: float = 5.0,
                 fetch: Optional[Callable[[str], list[dict]]] = None, token: Optional[str] = None,
                 header: str = ADMIN_HEADER) -> None:
        self.events = events
        self.base_url = base_url
        self.every_s = every_s
        self.has_token = bool(token)
        headers = {header: token} if token else {}
        self._fetch = fetch or (lambda url: fetch_index(url, headers=headers))
        self.header = header
        self.denied = False  # the last poll was refused for want of the admin token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-events", daemon=True)

    def start(self) -> "EventPoller":
        self._thread.start()
        return self

    def poll_once(self) -> None:
        try:
            index = self._fetch(self.base_url)
        except http_client.HttpStatusError as exc:
            self.events.poll_errors.inc()
            if exc.status in DENIED:
                self._refused(exc.status)
            return
        except (http_client.HttpError, OSError, ValueError):
            self.events.poll_errors.inc()
            return
        if self.denied:
            logs.event("info", "Triton's repository index answers again; model-version events resume",
                       stage="events", url=f"{self.base_url}/v2/repository/index")
        self.denied = False
        try:
            self.events.update(index)
        except (AttributeError, TypeError, ValueError):
            self.events.poll_errors.inc()

    def _refused(self, code: int) -> None:
        if self.denied:
            return  # said once; the error counter keeps counting
        self.denied = True
        why = (f"the {self.header!r} header the monitor sends is not the one Triton expects"
               if self.has_token else f"the monitor sends no {self.header!r} header")
        logs.event("error", f"Triton refuses the repository index (HTTP {code}): {why}, so no model-version "
                   f"events ({names.MODEL_VERSION_SWITCHES}, {names.ALERT_MODEL_VERSION_CHANGED}) until it is "
                   "fixed. Give the monitor Triton's admin token: SIGHTLINE_MONITOR_TRITON_ADMIN_TOKEN or "
                   "triton_admin_token_file, from the same Secret as Triton's --http-restricted-api.",
                   stage="events", url=f"{self.base_url}/v2/repository/index", status=code)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
