"""The local stack as processes on loopback: monitor sidecar, Triton, pager, Alertmanager, Prometheus.

Each piece is a child process with its log in the state directory. Pieces start in
dependency order (sidecar before Triton, so the first spans have somewhere to go) and
stop in reverse.

While the stack runs, a supervisor thread watches two pieces. A monitor sidecar that dies
is restarted on the same ports with the same environment, after an exponential backoff;
serving never waited on it. Triton is not restarted (a crash must be visible): the
supervisor stops the Python-backend stubs it left behind, removes its shared-memory
segments and reports how it died. Each event goes to the ``sightline.stack`` logger, to
``supervisor.log`` in the state directory and to :meth:`LocalStack.new_events`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sightline import http_client
from sightline.errors import OperationError
from sightline.runtime import REPO_ROOT, ServerOptions, TritonServer, TritonStartError, port_is_free, relevant_log_lines

log = logging.getLogger("sightline.stack")
log.addHandler(logging.NullHandler())  # `sightline up` prints the events itself; no last-resort echo


class StackError(OperationError):
    """A piece of the local stack could not start; the message says which and why."""


def exit_description(returncode: int | None) -> str:
    """How a process ended, as a person says it: "died with SIGKILL", "exited with status 1"."""
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            return f"died with {signal.Signals(-returncode).name}"
        except ValueError:
            return f"died with signal {-returncode}"
    return f"exited with status {returncode}"


def signal_name(number: int) -> str:
    """SIGSEGV for 11; "signal 99" for a number that names no signal."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def wait_http_ok(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        if http_client.is_ok(url, timeout_s=2):
            return True
        time.sleep(0.2)
    return False


@dataclass
class ChildProcess:
    """A child process of the stack with its log file."""

    name: str
    command: list[str]
    log_path: Path
    ready_url: str
    env: dict[str, str] | None = None
    process: subprocess.Popen | None = None
    started_at: float | None = None  # time.monotonic() of the last launch

    def launch(self, append: bool = False) -> subprocess.Popen:
        """Start the process without waiting for it; a restart appends to the log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab" if append else "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        self.started_at = time.monotonic()
        return self.process

    def start(self, timeout_s: float = 30.0) -> None:
        self.launch()
        if not wait_http_ok(self.ready_url, timeout_s, self.process):
            tail = "\n".join(f"  | {line}" for line in relevant_log_lines(self.log_text()))
            self.stop()
            raise StackError(f"{self.name} did not become ready at {self.ready_url}\n{self.name} log ({self.log_path}):\n{tail}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@dataclass
class StackOptions:
    triton: ServerOptions
    monitor_otlp_port: int = 4318
    monitor_metrics_port: int = 9102
    monitor_tap_port: int = 9411
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    pager_port: int = 9095
    with_monitor: bool = True
    with_prometheus: bool = True
    with_alerting: bool = True
    time_scale: float = 1.0  # >1 compresses SLO windows and alert timings (demo, e2e tests)
    # Start from empty history: Prometheus's TSDB, Alertmanager's silences and notification
    # log, the pager's log and refreshed drift references of an earlier run are removed, so
    # nothing that run saw (a Triton that went down, a fault's burn) fires again here.
    fresh_data: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    # Restarting a dead monitor: the first wait, doubled per quick death up to the cap; a
    # monitor that stayed up `monitor_stable_s` starts again from the first wait.
    monitor_restart_initial_s: float = 1.0
    monitor_restart_max_s: float = 30.0
    monitor_stable_s: float = 60.0
    supervise_interval_s: float = 0.25
    # Triton that reported a fatal signal in its log and is still running this long after is
    # hung in its crash handler (a corrupt heap): the supervisor kills it and cleans up.
    crash_exit_grace_s: float = 10.0


@dataclass
class Backoff:
    """Exponential restart delays: initial, doubling to the cap, reset after a stable run."""

    initial_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 60.0
    next_s: float | None = None

    def delay_after(self, uptime_s: float) -> float:
        if self.next_s is None or uptime_s >= self.stable_s:
            self.next_s = self.initial_s
        delay = self.next_s
        self.next_s = min(self.max_s, delay * 2)
        return delay


MONITOR_TOKEN_FILE = "monitor-token"


def write_monitor_token(state_dir: Path) -> Path:
    """A fresh API token for this run's monitor, readable by this user only: ``state_dir/monitor-token``,
    which ``sightline drift rebaseline`` reads by default. Replaced atomically, never world-readable."""
    import secrets

    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / MONITOR_TOKEN_FILE
    partial = state_dir / f".{MONITOR_TOKEN_FILE}.{os.getpid()}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secrets.token_urlsafe(32) + "\n").encode())
    finally:
        os.close(fd)
    os.replace(partial, path)
    return path


def monitor_process(options: StackOptions) -> ChildProcess:
    command = [sys.executable, "-m", "sightline.cli", "monitor",
               "--otlp-port", str(options.monitor_otlp_port), "--metrics-port", str(options.monitor_metrics_port),
               "--tap-port", str(options.monitor_tap_port)]
    # Refreshed drift references live with the stack's state (the environment may override).
    # State-changing requests need this run's API token, which the drift CLI reads from the file.
    env = {"SIGHTLINE_MONITOR_REFERENCE_DIR": str(options.triton.state_dir / "drift"), **os.environ,
           "SIGHTLINE_MONITOR_TRITON_URL": f"http://127.0.0.1:{options.triton.http_port}",
           "SIGHTLINE_MONITOR_API_TOKEN_FILE": str(write_monitor_token(options.triton.state_dir).resolve()),
           **options.extra_env}
    return ChildProcess("monitor sidecar", command, options.triton.state_dir / "monitor.log",
                        f"http://127.0.0.1:{options.monitor_metrics_port}/readyz", env=env)


def scaled(duration_s: float, time_scale: float, floor_s: float = 1.0) -> str:
    return f"{max(floor_s, duration_s / time_scale):g}s"


def rules_dir(options: StackOptions) -> Path:
    """The committed rules, or, on a compressed clock, the SLO rules and the operational rules
    generated for it into the state directory (any other rule file copied as it is)."""
    committed = (REPO_ROOT / "prometheus" / "rules").resolve()
    if options.time_scale == 1:
        return committed
    from sightline.slo.rules import generate
    from sightline.slo.spec import load

    target = options.triton.state_dir / "prometheus" / "rules"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    generate(load(REPO_ROOT / "prometheus" / "slo.yaml"), target, time_scale=options.time_scale,
                       operations_template=REPO_ROOT / "prometheus" / "operations-rules.in.yaml")
    for path in committed.glob("*.yaml"):  # a rule file of the user's own: its durations stay as written
        if not (target / path.name).exists():
            shutil.copyfile(path, target / path.name)
    return target.resolve()


def render_prometheus_config(options: StackOptions, target: Path) -> Path:
    """``prometheus/prometheus.yml`` with the local stack's ports (and time scale) filled in."""
    template = (REPO_ROOT / "prometheus" / "prometheus.yml").read_text()
    replacements = {
        "127.0.0.1:8002": f"127.0.0.1:{options.triton.metrics_port}",
        "127.0.0.1:9102": f"127.0.0.1:{options.monitor_metrics_port}",
        "127.0.0.1:9090": f"127.0.0.1:{options.prometheus_port}",
        "127.0.0.1:9093": f"127.0.0.1:{options.alertmanager_port}",
        "rules/": f"{rules_dir(options)}/",
    }
    if options.time_scale > 1:
        replacements["scrape_interval: 5s"] = f"scrape_interval: {scaled(5, options.time_scale)}"
        replacements["evaluation_interval: 5s"] = f"evaluation_interval: {scaled(5, options.time_scale)}"
    for old, new in replacements.items():
        template = template.replace(old, new)
    target.write_text(template)
    return target


def render_alertmanager_config(options: StackOptions, target: Path) -> Path:
    text = (REPO_ROOT / "prometheus" / "alertmanager.yml").read_text()
    text = text.replace("127.0.0.1:9095", f"127.0.0.1:{options.pager_port}")
    if options.time_scale > 1:
        text = text.replace("group_wait: 10s", "group_wait: 1s").replace("group_wait: 5s", "group_wait: 1s")
        text = text.replace("group_interval: 1m", f"group_interval: {scaled(60, options.time_scale, 2)}")
        text = text.replace("resolve_timeout: 5m", f"resolve_timeout: {scaled(300, options.time_scale, 5)}")
    target.write_text(text)
    return target


def prometheus_process(options: StackOptions) -> ChildProcess:
    binary = shutil.which("prometheus")
    if binary is None:
        raise StackError("prometheus is not installed: run `make install` (apt-get install prometheus) "
                         "or start with --no-prometheus")
    state = options.triton.state_dir / "prometheus"
    state.mkdir(parents=True, exist_ok=True)
    config = render_prometheus_config(options, state / "prometheus.yml")
    command = [binary, f"--config.file={config}", f"--storage.tsdb.path={state / 'data'}",
               f"--web.listen-address=127.0.0.1:{options.prometheus_port}", "--storage.tsdb.retention.time=2d",
               "--enable-feature=exemplar-storage", "--web.enable-lifecycle"]
    return ChildProcess("Prometheus", command, options.triton.state_dir / "prometheus.log",
                        f"http://127.0.0.1:{options.prometheus_port}/-/ready")


def alertmanager_process(options: StackOptions) -> ChildProcess:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        raise StackError("Alertmanager is not installed: run `make install` (apt-get install "
                         "prometheus-alertmanager) or start with --no-alerting")
    state = options.triton.state_dir / "alertmanager"
    state.mkdir(parents=True, exist_ok=True)
    config = render_alertmanager_config(options, state / "alertmanager.yml")
    command = [binary, f"--config.file={config}", f"--storage.path={state / 'data'}",
               f"--web.listen-address=127.0.0.1:{options.alertmanager_port}", "--cluster.listen-address="]
    return ChildProcess("Alertmanager", command, options.triton.state_dir / "alertmanager.log",
                        f"http://127.0.0.1:{options.alertmanager_port}/-/ready")


def pager_process(options: StackOptions) -> ChildProcess:
    command = [sys.executable, "-m", "sightline.cli", "pager", "--port", str(options.pager_port),
               "--log", str(options.triton.state_dir / "pages.jsonl")]
    return ChildProcess("local pager", command, options.triton.state_dir / "pager.log",
                        f"http://127.0.0.1:{options.pager_port}/healthz")


class LocalStack:
    """Monitor sidecar + Triton (+ Prometheus), started in order, stopped in reverse, and
    supervised in between (see the module's docstring)."""

    def __init__(self, options: StackOptions, on_event: Callable[[str], None] | None = None) -> None:
        self.options = options
        self.monitor: ChildProcess | None = None
        self.triton: TritonServer | None = None
        self.prometheus: ChildProcess | None = None
        self.alertmanager: ChildProcess | None = None
        self.pager: ChildProcess | None = None
        self.on_event = on_event
        self.events_path = options.triton.state_dir / "supervisor.log"
        self.monitor_restarts = 0
        self.triton_failure: str | None = None  # set once Triton died and was cleaned up after
        self._events: list[str] = []
        self._events_read = 0
        self._events_lock = threading.Lock()
        self._lifecycle = threading.Lock()  # a restart and stop() never interleave
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def start(self) -> "LocalStack":
        opts = self.options
        wanted = {"monitor OTLP": opts.monitor_otlp_port, "monitor metrics": opts.monitor_metrics_port} if opts.with_monitor else {}
        if opts.with_prometheus:
            wanted["Prometheus"] = opts.prometheus_port
        if opts.with_alerting:
            wanted["Alertmanager"] = opts.alertmanager_port
            wanted["pager"] = opts.pager_port
        busy = [f"{name} port {port}" for name, port in wanted.items() if not port_is_free(port)]
        if busy:
            raise StackError(f"cannot start the stack: {', '.join(busy)} already in use on 127.0.0.1")
        if opts.fresh_data:
            self.clear_history()
        try:
            if opts.with_monitor:
                self.monitor = monitor_process(opts)
                self.monitor.start()
                if opts.triton.trace_rate > 0:  # tracing is a sampled extra, off by default on 2.51
                    opts.triton.trace_url = f"127.0.0.1:{opts.monitor_otlp_port}/v1/traces"
                opts.triton.env["SIGHTLINE_TAP_ADDRESS"] = f"127.0.0.1:{opts.monitor_tap_port}"
            self.triton = TritonServer(opts.triton).start()
            if opts.with_alerting:
                self.pager = pager_process(opts)
                self.pager.start()
                self.alertmanager = alertmanager_process(opts)
                self.alertmanager.start(timeout_s=60)
            if opts.with_prometheus:
                self.prometheus = prometheus_process(opts)
                self.prometheus.start(timeout_s=60)
        except (StackError, TritonStartError):
            self.stop()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="sightline-stack-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def clear_history(self) -> list[Path]:
        """Remove what an earlier run of this state directory recorded (see ``fresh_data``)."""
        state = self.options.triton.state_dir
        removed = []
        for path in (state / "prometheus" / "data", state / "alertmanager" / "data", state / "drift", state / "pages.jsonl"):
            if path.is_dir():
                shutil.rmtree(path)
                removed.append(path)
            elif path.exists():
                path.unlink()
                removed.append(path)
        return removed

    # -- supervision -------------------------------------------------------------------

    def _report(self, text: str, level: int = logging.WARNING) -> None:
        log.log(level, text)
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with contextlib.suppress(OSError), self.events_path.open("a") as out:
            out.write(f"{stamp} {text}\n")
        with self._events_lock:
            self._events.append(text)
        if self.on_event is not None:
            with contextlib.suppress(Exception):
                self.on_event(text)

    def events(self) -> list[str]:
        """Everything the supervisor reported so far."""
        with self._events_lock:
            return list(self._events)

    def new_events(self) -> list[str]:
        """What the supervisor reported since the last call."""
        with self._events_lock:
            fresh = self._events[self._events_read:]
            self._events_read = len(self._events)
        return fresh

    def _supervise(self) -> None:
        opts = self.options
        backoff = Backoff(opts.monitor_restart_initial_s, opts.monitor_restart_max_s, opts.monitor_stable_s)
        restart_at: float | None = None
        awaiting_ready = False
        last_error = ""
        crash_seen_at: float | None = None
        while not self._stopping.wait(opts.supervise_interval_s):
            try:
                if self.triton is not None and self.triton_failure is None and self.triton.process is not None:
                    if self.triton.process.poll() is not None:
                        self._triton_died(self.triton)
                    else:
                        crash_seen_at = self._check_triton_hung(self.triton, crash_seen_at)
                monitor = self.monitor
                if monitor is None or monitor.process is None:
                    continue
                now = time.monotonic()
                if restart_at is None and monitor.process.poll() is not None:
                    uptime = now - (monitor.started_at or now)
                    delay = backoff.delay_after(uptime)
                    restart_at = now + delay
                    awaiting_ready = False
                    how = exit_description(monitor.process.returncode)
                    self._report(f"monitor sidecar (pid {monitor.process.pid}) {how} after {uptime:.1f} s up; "
                                 f"restarting it in {delay:g} s on the same ports (restart {self.monitor_restarts + 1}); "
                                 "serving goes on without it")
                if restart_at is not None and now >= restart_at:
                    with self._lifecycle:
                        if self._stopping.is_set():
                            return
                        try:
                            with contextlib.suppress(OSError), monitor.log_path.open("a") as out:
                                out.write(f"--- restarted by the stack supervisor "
                                          f"(restart {self.monitor_restarts + 1}) ---\n")
                            monitor.launch(append=True)
                        except OSError as exc:
                            restart_at = now + backoff.delay_after(0.0)
                            self._report(f"monitor sidecar could not be restarted ({exc}); trying again in "
                                         f"{restart_at - now:g} s")
                            continue
                    restart_at, awaiting_ready = None, True
                    self.monitor_restarts += 1
                    self._report(f"monitor sidecar restarted (pid {monitor.process.pid}, "
                                 f"restart {self.monitor_restarts})", logging.INFO)
                if awaiting_ready and monitor.alive() and wait_http_ok(monitor.ready_url, 0.5, monitor.process):
                    awaiting_ready = False
                    since = time.monotonic() - (monitor.started_at or 0)
                    self._report(f"monitor sidecar ready again at {monitor.ready_url} ({since:.1f} s after the restart)",
                                 logging.INFO)
            except Exception as exc:  # the supervisor must outlive its own mistakes (reported once each)
                if repr(exc) != last_error:
                    last_error = repr(exc)
                    log.exception("stack supervisor")
                    self._report(f"stack supervisor error: {exc!r}", logging.ERROR)

    def _check_triton_hung(self, triton: TritonServer, seen_at: float | None) -> float | None:
        """Kill a Triton that reported a fatal signal and did not exit within the grace time.
        Returns when the signal was first seen (None while there is none)."""
        number = triton.crash_signal()
        if number is None:
            return None
        now = time.monotonic()
        if seen_at is None:
            return now
        if now - seen_at >= self.options.crash_exit_grace_s and triton.process is not None:
            self._report(f"tritonserver (pid {triton.process.pid}) reported {signal_name(number)} in its log and did "
                         f"not exit within {self.options.crash_exit_grace_s:g} s (hung in its crash handler); "
                         "killing it", logging.ERROR)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(triton.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                triton.process.wait(timeout=5)
        return seen_at

    def _triton_died(self, triton: TritonServer) -> None:
        assert triton.process is not None
        how = exit_description(triton.process.returncode)
        reported = triton.crash_signal()
        if reported is not None and triton.process.returncode != -reported:
            how = f"reported {signal_name(reported)} in its log, hung, and was killed by the stack ({how})"
        try:
            summary = triton.cleanup_after_exit().summary()
        except Exception as exc:  # noqa: BLE001 - still report the death
            summary = f"cleaning up after it failed ({exc!r})"
        lines = [line.rstrip() for line in triton.log_text().splitlines() if line.strip()][-5:]
        tail = "\n".join(f"  | {line}" for line in lines) or "  | (empty)"
        self.triton_failure = (f"tritonserver (pid {triton.process.pid}) {how}; {summary}; "
                               f"last lines of {triton.log_path}:\n{tail}")
        self._report(self.triton_failure, logging.ERROR)

    def stop(self) -> dict[str, int | None]:
        with self._lifecycle:
            self._stopping.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=30)
        codes: dict[str, int | None] = {}
        if self.prometheus is not None:
            codes["prometheus"] = self.prometheus.stop()
        if self.alertmanager is not None:
            codes["alertmanager"] = self.alertmanager.stop()
        if self.pager is not None:
            codes["pager"] = self.pager.stop()
        if self.triton is not None:
            codes["triton"] = self.triton.stop()
        if self.monitor is not None:
            codes["monitor"] = self.monitor.stop()
        return codes

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
