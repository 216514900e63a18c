"""``sightline monitor``: the sidecar process that watches Triton.

One process, several collectors behind one seam: every collector registers its metrics
in one ``CollectorRegistry``; one exposition server serves ``/metrics`` (OpenMetrics when
asked, so exemplars carrying trace ids reach Prometheus), ``/healthz`` and ``/readyz``, and
takes ``POST /drift/rebaseline`` (rebuild the drift reference from recent tap records).
Collectors never touch HTTP. Reads are open to whoever reaches the port; every
state-changing request needs ``Authorization: Bearer <api token>`` (401 otherwise, and
always 401 while the monitor has no token) and ``Content-Type: application/json`` (415). The OTLP/HTTP receiver listens on its own port (4318).
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from sightline import conventions as names
from sightline.errors import ConfigError, InputError
from sightline.sidecars import logs
from sightline.sidecars.audit_store import AuditStore
from sightline.sidecars.drift import DriftThresholds
from sightline.sidecars.events import ADMIN_HEADER, EventPoller, ModelEvents
from sightline.sidecars.forward import Forwarder
from sightline.sidecars.otlp import MAX_BODY_BYTES, REASON_BUSY, OtlpRejected, decode, read_body
from sightline.sidecars.reference import current_reference, describe
from sightline.sidecars.resources import GpuCollector, ProcessCollector
from sightline.sidecars.spans import SpanMetrics
from sightline.sidecars.tap_receiver import (
    DEFAULT_REFERENCE,
    DEFAULT_REFERENCE_DIR,
    MIN_REFERENCE_RECORDS,
    DriftService,
    RebaselineRefused,
    TapReceiver,
    build_detector,
)

ENV_PREFIX = "SIGHTLINE_MONITOR_"
MAX_REBASELINE_BODY_BYTES = 64 * 1024
MIN_API_TOKEN_CHARS = 16


class MonitorConfig(BaseModel):
    """Sidecar settings: YAML file, then ``SIGHTLINE_MONITOR_<FIELD>`` environment overrides."""

    model_config = ConfigDict(extra="forbid")

    listen_host: str = "127.0.0.1"
    # Where the OTLP receiver and the tap socket listen (None: listen_host). Only Triton in
    # the same pod sends to them, so the cluster keeps them on loopback while the metrics
    # server listens on the pod's address for Prometheus.
    ingest_host: Optional[str] = None
    otlp_port: int = Field(4318, ge=0, le=65535)
    metrics_port: int = Field(9102, ge=0, le=65535)
    forward_otlp_url: Optional[str] = None
    batch_window_s: float = Field(2.0, gt=0)
    pending_ttl_s: float = Field(30.0, gt=0)
    tap_port: int = Field(9411, ge=0, le=65535)
    reference: Optional[Path] = None  # default: the packaged sightline/export/reference/daylight_reference.npz
    # Refreshed references and current.json; a current.json here wins over `reference`.
    reference_dir: Path = DEFAULT_REFERENCE_DIR
    rebaseline_buffer: int = Field(5000, ge=MIN_REFERENCE_RECORDS)  # recent tap records kept for a refresh
    drift_window: int = Field(500, ge=20)
    drift_min_window: int = Field(50, ge=10)
    drift_every_s: float = Field(10.0, gt=0)
    drift_permutations: int = Field(100, ge=10, le=10_000)
    triton_url: str = "http://127.0.0.1:8000"  # for the repository index (model events)
    events_every_s: float = Field(5.0, gt=0)
    # Triton's restricted model-repository API (the cluster's `--http-restricted-api`) wants
    # this header on the index: the token from the env (SIGHTLINE_MONITOR_TRITON_ADMIN_TOKEN)
    # or a file (a mounted Secret); the env wins. Never logged.
    triton_admin_token: Optional[SecretStr] = None
    triton_admin_token_file: Optional[Path] = None
    triton_admin_header: str = Field(ADMIN_HEADER, min_length=1)
    # The bearer token every state-changing request (POST /drift/rebaseline) must carry: from
    # the env (SIGHTLINE_MONITOR_API_TOKEN) or a file (a mounted Secret; what `sightline up`
    # writes per run); the env wins. Without one, state-changing requests are all refused.
    api_token: Optional[SecretStr] = None
    api_token_file: Optional[Path] = None
    # Read Triton's processes from /proc as well (and name GPU users per process). Off: the
    # steps report their own memory and CPU through Triton's /metrics, so the pod need not
    # share its process namespace; on, where sidecar and Triton share one, the same series
    # come twice (job sightline-monitor and job triton).
    watch_processes: bool = False
    audit_dir: Path = Path(".sightline/audit")
    audit_ttl_s: float = Field(24 * 3600, gt=0)
    audit_max_files: int = Field(1000, ge=1)
    # Frames the store redacts and writes a minute (each costs about 0.9 s of one core); the
    # rest are refused as busy. Senders send one a minute per preprocess instance by default.
    audit_per_minute: float = Field(6.0, gt=0)
    cost_per_hour_dollars: float = Field(0.40, ge=0)  # what the serving node costs
    cost_guardrail_per_1k_dollars: float = Field(0.01, gt=0)  # the cost per 1000 inferences not to exceed
    # The models whose spans get their own `model` label, comma-separated (others fold into
    # "other", so no export can create series at will). Default: the models of the model
    # repository (SIGHTLINE_MODEL_REPOSITORY) or, without one here, Sightline's pipeline.
    span_models: Optional[str] = Field(None, max_length=10_000)


class RebaselineRequest(BaseModel):
    """The body of ``POST /drift/rebaseline``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    window_s: float = Field(gt=0, allow_inf_nan=False)
    force: bool = False
    reason: str = Field("", max_length=1000)
    min_records: int = Field(200, ge=MIN_REFERENCE_RECORDS)
    alerts: list[str] = Field(default_factory=list, max_length=100)  # drift alerts the caller saw firing


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


def load_config(path: Path | None = None, environ: dict[str, str] | None = None) -> MonitorConfig:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read monitor config: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the monitor config must be a mapping")
        data.update(loaded)
    for key, value in (environ if environ is not None else os.environ).items():
        if key.startswith(ENV_PREFIX):
            data[key[len(ENV_PREFIX):].lower()] = value
    try:
        config = MonitorConfig(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid monitor config: {_problems(exc)}") from exc
    admin_token(config)  # an unreadable token file is a config error, named now rather than at the first poll
    api_token(config)
    return config


def admin_token(config: MonitorConfig) -> Optional[str]:
    """Triton's admin token: the configured value, else the file's first line, else None."""
    if config.triton_admin_token is not None and config.triton_admin_token.get_secret_value().strip():
        return config.triton_admin_token.get_secret_value().strip()
    if config.triton_admin_token_file is not None:
        try:
            token = config.triton_admin_token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"triton_admin_token_file: cannot read {config.triton_admin_token_file}: "
                              f"{exc.strerror or exc}") from exc
        return token or None
    return None


def api_token(config: MonitorConfig) -> Optional[str]:
    """The bearer token of state-changing requests: the configured value, else the file's first
    line, else None. Too short a token is a config error: it would be guessed."""
    token: Optional[str] = None
    if config.api_token is not None and config.api_token.get_secret_value().strip():
        token = config.api_token.get_secret_value().strip()
    elif config.api_token_file is not None:
        try:
            lines = config.api_token_file.read_text().strip().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"api_token_file: cannot read {config.api_token_file}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from exc
        token = lines[0].strip() if lines else None
    if token is not None and len(token) < MIN_API_TOKEN_CHARS:
        source = "api_token" if config.api_token is not None else "api_token_file"
        raise ConfigError(f"{source}: the API token has {len(token)} characters; at least {MIN_API_TOKEN_CHARS} "
                          "are needed (e.g. `openssl rand -hex 24`)")
    return token or None


class Refusal(InputError):
    """A state-changing request refused before its body is read: the status and the reason."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def authorize(expected: Optional[str], authorization: str, content_type: str) -> None:
    """Raise ``Refusal`` (401 or 415) unless the request may change state."""
    if expected is None:
        raise Refusal(HTTPStatus.UNAUTHORIZED, "state-changing requests are disabled: the monitor has no API token "
                      "(set SIGHTLINE_MONITOR_API_TOKEN or api_token_file)")
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Refusal(HTTPStatus.UNAUTHORIZED, "missing bearer token: send Authorization: Bearer <api token>")
    if not hmac.compare_digest(presented.strip().encode(), expected.encode()):
        raise Refusal(HTTPStatus.UNAUTHORIZED, "the bearer token is not the monitor's API token")
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise Refusal(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                      f"Content-Type {media_type or '(none)'!r}: only application/json is accepted")


def _reference_path(config: MonitorConfig) -> Path:
    """The refreshed reference ``current.json`` names, else the configured or committed one."""
    try:
        refreshed = current_reference(config.reference_dir)
    except ValueError as exc:
        refreshed = None
        logs.event("error", "cannot follow the refreshed drift reference; using the configured one", stage="drift",
                   error=str(exc))
    return refreshed or config.reference or DEFAULT_REFERENCE


class Monitor:
    """The running sidecar: receivers, collectors and the exposition server."""

    def __init__(self, config: MonitorConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        models = [m.strip() for m in config.span_models.split(",") if m.strip()] if config.span_models else None
        self.spans = SpanMetrics(self.registry, batch_window_s=config.batch_window_s, pending_ttl_s=config.pending_ttl_s,
                                 models=models)
        self.rejected = Counter(names.SPANS_REJECTED, "OTLP exports refused, by reason.", [names.LABEL_REASON],
                                registry=self.registry)
        self.up_since = Gauge(names.MONITOR_START_TIME, "When the monitor started (unix time).",
                              registry=self.registry)
        self.forwarder = Forwarder(config.forward_otlp_url, self.registry) if config.forward_otlp_url else None
        reference = _reference_path(config)
        self.drift: DriftService | None = None
        self.drift_enabled = Gauge(names.DRIFT_ENABLED, "1 when a drift reference is loaded.", registry=self.registry)
        if reference.exists():
            detector = build_detector(reference, config.drift_permutations,
                                      DriftThresholds(min_window=config.drift_min_window))
            self.drift = DriftService(self.registry, detector, window=config.drift_window,
                                      reference=describe(reference), reference_dir=config.reference_dir,
                                      recent=config.rebaseline_buffer)
            self.drift_enabled.set(1)
        else:
            logs.event("error", f"drift is off: no drift reference; drift alerts cannot fire ({names.ALERT_DRIFT_OFF})",
                       stage="drift", reference=str(reference))
        # Inputs of the cost-per-1k-inferences guardrail: the rule divides by the request rate.
        Gauge(names.COST_PER_HOUR, "What the serving node costs per hour (config).",
              registry=self.registry).set(config.cost_per_hour_dollars)
        Gauge(names.COST_GUARDRAIL_PER_1K, "Cost per 1000 inferences not to exceed (config).",
              registry=self.registry).set(config.cost_guardrail_per_1k_dollars)
        self.audit = AuditStore(config.audit_dir, self.registry, ttl_s=config.audit_ttl_s,
                                max_files=config.audit_max_files, per_minute=config.audit_per_minute,
                                background=True)
        self.tap: TapReceiver | None = None
        self.processes = ProcessCollector() if config.watch_processes else None
        if self.processes is not None:
            self.registry.register(self.processes)
        self.gpu = GpuCollector(process_names={} if self.processes is not None else None)
        self.registry.register(self.gpu)
        self.events = ModelEvents(self.registry)
        self.poller = EventPoller(self.events, config.triton_url.rstrip("/"), config.events_every_s,
                                  token=admin_token(config), header=config.triton_admin_header)
        self.api_token = api_token(config)
        self.decoding = threading.BoundedSemaphore(DECODE_SLOTS)  # exports decoded at once
        self.refused_requests = Counter(names.MONITOR_REQUESTS_REFUSED,
                                        "Requests refused before their body was read (state changes without a token, "
                                        "connections over the limit), by reason.",
                                        [names.LABEL_REASON], registry=self.registry)
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._ready = threading.Event()
        self._stop_flush = threading.Event()

    # -- OTLP -----------------------------------------------------------------------------
    def receive(self, body: bytes, content_type: str, content_encoding: str = "") -> int:
        try:
            request = decode(body, content_type, content_encoding)
        except OtlpRejected as exc:
            self.refused(exc)
            raise
        if self.forwarder is not None:
            self.forwarder.submit(body, content_type, content_encoding)
        return self.spans.ingest(request)

    def refused(self, exc: OtlpRejected) -> None:
        """Count and log an export refused before or while decoding, by its reason."""
        self.rejected.labels(exc.reason).inc()
        logs.limited(f"otlp-refused:{exc.reason}", "error", "refused an OTLP export", stage="otlp", reason=exc.reason,
                     error=str(exc))

    # -- exposition -----------------------------------------------------------------------
    def exposition(self, accept: str) -> tuple[bytes, str]:
        self.spans.flush()
        if self.processes is not None and self.gpu.process_names is not None:
            self.gpu.process_names = self.processes.pids()
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    # -- drift reference --------------------------------------------------------------------
    def rebaseline(self, body: bytes) -> tuple[HTTPStatus, dict]:
        """``POST /drift/rebaseline``: status and JSON reply for a request body."""
        if self.drift is None:
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": "drift is disabled: no reference is loaded"}
        try:
            request = RebaselineRequest.model_validate_json(body)
        except ValidationError as exc:
            return HTTPStatus.BAD_REQUEST, {"error": _problems(exc)}
        try:
            summary = self.drift.rebaseline(request.window_s, request.force, request.reason, request.min_records,
                                            request.alerts)
        except RebaselineRefused as exc:
            return HTTPStatus.CONFLICT, {"error": str(exc), "refusal": exc.kind}
        except OSError as exc:
            logs.event("error", "cannot write the drift reference", stage="drift", error=str(exc))
            return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"cannot write the drift reference: {exc}"}
        except Exception as exc:  # noqa: BLE001 - the caller gets a reason, the sidecar keeps running
            logs.event("error", "cannot rebuild the drift reference", stage="drift", error=repr(exc))
            return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"cannot rebuild the drift reference: {exc!r}"}
        return HTTPStatus.OK, summary

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> "Monitor":
        ingest_host = self.config.ingest_host or self.config.listen_host
        def refused(reason: str) -> None:
            self.refused_requests.labels(reason).inc()
        otlp = _server(ingest_host, self.config.otlp_port, _otlp_handler(self), refused)
        metrics = _server(self.config.listen_host, self.config.metrics_port, _metrics_handler(self), refused)
        self._servers = [otlp, metrics]
        self.tap = TapReceiver(self.drift, ingest_host, self.config.tap_port,
                               evaluate_every_s=self.config.drift_every_s, audit=self.audit).start()
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.poller.start()
        flusher = threading.Thread(target=self._flush_loop, name="span-flush", daemon=True)
        flusher.start()
        self._threads.append(flusher)
        self.up_since.set(time.time())
        self._ready.set()
        return self

    def _flush_loop(self) -> None:
        while not self._stop_flush.wait(0.5):
            self.spans.flush()

    @property
    def otlp_port(self) -> int:
        return self._servers[0].server_address[1]

    @property
    def metrics_port(self) -> int:
        return self._servers[1].server_address[1]

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def stop(self) -> None:
        self._ready.clear()
        self._stop_flush.set()
        self.poller.stop()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self.spans.flush(force=True)
        if self.tap is not None:
            self.tap.stop()
        self.audit.close()
        if self.forwarder is not None:
            self.forwarder.close()

    def __enter__(self) -> "Monitor":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# Each listener serves at most this many connections at once. When all are taken, the one
# that has waited longest for its client (an idle keep-alive, a request line, headers or a
# body trickling in) is cut off for the newcomer; only when all are busy being served is the
# newcomer closed unanswered. Either way it is counted. So clients that trickle bytes hold at
# most MAX_CONNECTIONS threads and bodies, and cannot lock out Triton's exporter or a scrape.
MAX_CONNECTIONS = 16
# A request body must arrive whole within this long, however its bytes trickle in.
BODY_DEADLINE_S = 30.0
# Exports decoded at once: what decoding builds is up to 32x the body (4 MiB bodies: about
# 130 MB each). Triton's exporter sends one batch at a time; one more waits this long, then 503.
DECODE_SLOTS = 2
DECODE_WAIT_S = 5.0


class _BoundedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 on_refused: Any = None, max_connections: int = MAX_CONNECTIONS) -> None:
        super().__init__(address, handler)
        self.max_connections = max_connections
        self._on_refused = on_refused  # called with "too_many_connections" or "evicted_waiting_connection"
        self._lock = threading.Lock()
        # connection -> [when it last started waiting for its client, busy being served]
        self._active: dict[Any, list] = {}

    def _count(self, reason: str) -> None:
        if self._on_refused is not None:
            self._on_refused(reason)

    def process_request(self, request: Any, client_address: Any) -> None:
        victim = None
        with self._lock:
            if len(self._active) >= self.max_connections:
                waiting = [(since, conn) for conn, (since, busy) in self._active.items() if not busy]
                if not waiting:
                    refused = True
                else:
                    refused = False
                    victim = min(waiting, key=lambda item: item[0])[1]
                    del self._active[victim]  # its slot is the newcomer's; its thread ends on its own
            else:
                refused = False
            if not refused:
                self._active[request] = [time.monotonic(), False]
        if refused:
            self._count("too_many_connections")
            self.shutdown_request(request)
            return
        if victim is not None:
            self._count("evicted_waiting_connection")
            try:
                victim.shutdown(socket.SHUT_RDWR)  # its blocked read returns: the handler gives up
            except OSError:
                pass
        try:
            super().process_request(request, client_address)  # starts the request's thread
        except BaseException:
            with self._lock:
                self._active.pop(request, None)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._active.pop(request, None)

    def mark(self, request: Any, busy: bool) -> None:
        """The handler's phase: waiting for its client (evictable, oldest first) or busy serving."""
        with self._lock:
            entry = self._active.get(request)
            if entry is not None:
                entry[0], entry[1] = time.monotonic(), busy


def _server(host: str, port: int, handler: type[BaseHTTPRequestHandler], on_refused: Any = None) -> ThreadingHTTPServer:
    return _BoundedServer((host, port), handler, on_refused, MAX_CONNECTIONS)


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a client may stall mid-request before its connection is closed

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def handle_one_request(self) -> None:
        self.busy(False)  # waiting for the client's next request: the first to go when slots run out
        super().handle_one_request()

    def busy(self, busy: bool = True) -> None:
        mark = getattr(self.server, "mark", None)
        if mark is not None:
            mark(self.request, busy)

    def reply(self, status: HTTPStatus, body: bytes = b"", content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        if self.close_connection:
            self.send_header("Connection", "close")  # a refusal leaves the body unread: no keep-alive
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _otlp_handler(monitor: Monitor) -> type[BaseHTTPRequestHandler]:
    class Handler(_QuietHandler):
        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            if self.path.rstrip("/") != "/v1/traces":
                self.reply(HTTPStatus.NOT_FOUND, b"only /v1/traces is served here\n")
                return
            content_type = self.headers.get("Content-Type", "")
            try:
                # Exactly Content-Length bytes, at most MAX_BODY_BYTES, within BODY_DEADLINE_S; a
                # negative, non-numeric or repeated length is refused before anything is read (no
                # length is an empty export).
                body = read_body(self.headers, self.rfile, MAX_BODY_BYTES, time.monotonic() + BODY_DEADLINE_S,
                                 self.connection.settimeout)
            except OtlpRejected as exc:
                monitor.refused(exc)
                self.close_connection = True  # the body, if any, is left unread
                try:
                    self.connection.settimeout(self.timeout)
                    self.reply(exc.status, f"{exc}\n".encode())
                except OSError:
                    pass  # the client is gone or still stalled: nothing to tell it
                return
            self.connection.settimeout(self.timeout)
            self.busy()  # the body is in: decoding and answering is the listener's own work
            if not monitor.decoding.acquire(timeout=DECODE_WAIT_S):
                exc = OtlpRejected(f"{DECODE_SLOTS} exports are being decoded; retry", REASON_BUSY,
                                   HTTPStatus.SERVICE_UNAVAILABLE)
                monitor.refused(exc)
                self.send_response(exc.status)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            try:
                monitor.receive(body, content_type, self.headers.get("Content-Encoding", ""))
            except OtlpRejected as exc:
                self.reply(exc.status, f"{exc}\n".encode())
                return
            finally:
                monitor.decoding.release()
            if content_type.startswith("application/json"):
                self.reply(HTTPStatus.OK, b"{}", "application/json")
            else:
                self.reply(HTTPStatus.OK, b"", "application/x-protobuf")

    return Handler


def _metrics_handler(monitor: Monitor) -> type[BaseHTTPRequestHandler]:
    class Handler(_QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            self.busy()
            path = self.path.split("?")[0].rstrip("/")
            if path == "/metrics":
                body, content_type = monitor.exposition(self.headers.get("Accept", ""))
                self.reply(HTTPStatus.OK, body, content_type)
            elif path == "/healthz":
                self.reply(HTTPStatus.OK, b"ok\n")
            elif path == "/readyz":
                ok = monitor.ready
                self.reply(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, b"ready\n" if ok else b"starting\n")
            else:
                self.reply(HTTPStatus.NOT_FOUND, b"try /metrics, /healthz or /readyz\n")

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            if self.path.split("?")[0].rstrip("/") != "/drift/rebaseline":
                self.close_connection = True  # the body is left unread
                self.reply(HTTPStatus.NOT_FOUND, b"only POST /drift/rebaseline is served here\n")
                return
            try:
                authorize(monitor.api_token, self.headers.get("Authorization", ""), self.headers.get("Content-Type", ""))
            except Refusal as exc:
                reason = "unauthorized" if exc.status == HTTPStatus.UNAUTHORIZED else "media_type"
                monitor.refused_requests.labels(reason).inc()
                logs.event("warning", "refused a state-changing request", stage="api",  # each one: an audit trail
                           path=self.path.split("?")[0], status=int(exc.status), reason=str(exc),
                           client=self.client_address[0])
                self.close_connection = True  # the body is left unread
                body = json.dumps({"error": str(exc)}).encode() + b"\n"
                self.send_response(exc.status)
                self.send_header("Connection", "close")
                if exc.status == HTTPStatus.UNAUTHORIZED:
                    self.send_header("WWW-Authenticate", 'Bearer realm="sightline-monitor"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.busy()  # an authorized state change: not cut off for a newcomer
            try:
                # The same reader as the OTLP receiver's: exactly Content-Length bytes, at most
                # MAX_REBASELINE_BODY_BYTES, within BODY_DEADLINE_S; a bad length is refused unread.
                body = read_body(self.headers, self.rfile, MAX_REBASELINE_BODY_BYTES,
                                 time.monotonic() + BODY_DEADLINE_S, self.connection.settimeout)
            except OtlpRejected as exc:
                self.close_connection = True  # the body, if any, is left unread
                status, reply = exc.status, {"error": str(exc)}
            else:
                status, reply = monitor.rebaseline(body)
            try:
                self.connection.settimeout(self.timeout)
                self.reply(status, json.dumps(reply).encode() + b"\n", "application/json")
            except OSError:
                pass  # the client is gone or still stalled: nothing to tell it

    return Handler
