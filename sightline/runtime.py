"""Run the real Triton server that ships in the ``nvidia-pytriton`` wheel.

The wheel carries a complete ``tritonserver`` (2.51) with the Python backend. Running it
directly, rather than through PyTriton's Python API, needs three things that this module
prepares:

* ``LD_LIBRARY_PATH`` pointing at the wheel's bundled libraries (``nvidia_pytriton.libs``);
* a backend directory whose ``python/triton_python_backend_stub`` matches the running
  interpreter (the wheel keeps one stub per Python version);
* the project's environment ``bin/`` first on ``PATH``, because the stub finds its
  packages through the ``python3`` it finds there.

Use :class:`TritonServer` as a context manager::

    with TritonServer(ServerOptions(state_dir=Path(".sightline"))) as server:
        print(server.grpc_url)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sightline import http_client
from sightline.errors import OperationError
from sightline.steps.demo_fault import DEMO_FAULTS_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_REPOSITORY = Path(os.environ.get("SIGHTLINE_MODEL_REPOSITORY", REPO_ROOT / "model_repository"))
DEFAULT_STATE_DIR = Path(".sightline")
LOCAL_CONFIG_NAME = "local"


class TritonStartError(OperationError):
    """Triton could not be started; the message says why and quotes its log."""


@dataclass(frozen=True)
class TritonDistribution:
    """Where the wheel keeps the server binary, its libraries and the Python stubs."""

    binary: Path
    library_dir: Path
    python_backend_dir: Path
    stub: Path

    @classmethod
    def locate(cls) -> TritonDistribution:
        try:
            import pytriton
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise TritonStartError(
                "the nvidia-pytriton wheel is not installed; run `make demo` or "
                "`pip install -e .` to install the Triton server binary"
            ) from exc
        package_dir = Path(pytriton.__file__).resolve().parent
        dist = package_dir / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        found = cls(
            binary=dist / "bin" / "tritonserver",
            library_dir=package_dir.parent / "nvidia_pytriton.libs",
            python_backend_dir=dist / "backends" / "python",
            stub=dist / "python_backend_stubs" / version / "triton_python_backend_stub",
        )
        for what, path in (
            ("server binary", found.binary),
            ("bundled libraries", found.library_dir),
            ("Python backend", found.python_backend_dir),
            (f"Python {version} backend stub", found.stub),
        ):
            if not path.exists():
                raise TritonStartError(f"the Triton {what} is missing: expected {path}")
        return found


def prepare_backend_dir(dist: TritonDistribution, state_dir: Path) -> Path:
    """Build ``state_dir/backends`` with a Python backend whose stub fits this interpreter."""
    backends = state_dir / "backends"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for item in dist.python_backend_dir.iterdir():
        if item.name == "__pycache__":
            continue
        target = python_dir / item.name
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(item)
    stub = python_dir / "triton_python_backend_stub"
    if stub.exists() or stub.is_symlink():
        stub.unlink()
    shutil.copy2(dist.stub, stub)
    return backends


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port the OS says is free right now (for tests that run beside a live stack), and not
    one this process was handed before: the OS may offer a port again as soon as its probe
    socket closes, and two of a stack's ports alike (Triton's gRPC and metrics ports, once in a
    fresh ``make test``) stop the server from starting."""
    for _ in range(1000):  # bounded: the ephemeral range holds tens of thousands of ports
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port this process has not been handed already")


@dataclass
class ServerOptions:
    """How to launch Triton. Defaults are Triton's usual ports (the README's "Security" table lists them)."""

    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    state_dir: Path = DEFAULT_STATE_DIR
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    config_name: str = LOCAL_CONFIG_NAME
    ready_timeout_s: float = 120.0
    exit_timeout_s: int = 10
    log_verbose: int = 0
    # OpenTelemetry tracing to the monitor sidecar's OTLP/HTTP receiver; None disables it.
    trace_url: str | None = None
    # Trace one request in every `trace_rate`; 0 = off (the default). Tracing is a sampled
    # extra: latency comes from the steps' own stamps. Triton 2.51 (this wheel) crashes when
    # tracing every request under load (server issue #7795, fixed in 2.57), so it stays off
    # here unless asked for; see the README, "Where each latency number comes from".
    trace_rate: int = 0
    trace_export_delay_ms: int = 500
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # extra environment for Triton and its steps
    # The demo profile: explicit model control (every model loaded at start) and the fault
    # switches of sightline.faults honoured by the steps. Never for production.
    demo_faults: bool = False

    @property
    def ports(self) -> dict[str, int]:
        return {"http": self.http_port, "grpc": self.grpc_port, "metrics": self.metrics_port}


_ERROR_LINE = re.compile(r"^E\d{4}|error|failed|UNAVAILABLE|Traceback|Exception", re.IGNORECASE)


def relevant_log_lines(log_text: str, limit: int = 25) -> list[str]:
    """The lines of a Triton log that explain a failure: errors first, else the tail."""
    lines = [line.rstrip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    return (errors or lines)[-limit:]


STUB_NAME = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")


@dataclass(frozen=True)
class ExitCleanup:
    """What was left of a server after it exited, and has now been removed."""

    stubs_stopped: list[int]
    segments_removed: list[str]

    def summary(self) -> str:
        stubs, segments = len(self.stubs_stopped), len(self.segments_removed)
        return (f"stopped {stubs} Python-backend stub{'' if stubs == 1 else 's'}; "
                f"removed {segments} shared-memory segment{'' if segments == 1 else 's'}")


def python_backend_stubs(shm_prefix: str, pgid: int | None = None) -> list[int]:
    """Live Python-backend stub processes of one server: orphaned in its process group, or naming a
    shared-memory region with its prefix on their command line. Zombies do not count."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours to read
        state, parent, group = fields[0], int(fields[1]), int(fields[2])
        if state == "Z" or not argv[0].endswith(STUB_NAME):
            continue
        # In the group but orphaned: a live server that reused the number would be the parent.
        orphan_in_group = pgid is not None and group == pgid and parent != pgid
        if orphan_in_group or any(arg.startswith(shm_prefix) for arg in argv[1:]):
            found.append(int(entry.name))
    return sorted(found)


def stop_python_backend_stubs(shm_prefix: str, pgid: int | None, timeout_s: float = 5.0) -> list[int]:
    """SIGKILL the server's leftover stubs and wait (bounded) until they are gone."""
    stubs = python_backend_stubs(shm_prefix, pgid)
    for pid in stubs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while stubs and python_backend_stubs(shm_prefix, pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return stubs


def remove_shm_segments(shm_prefix: str, shm_dir: Path = SHM_DIR) -> list[str]:
    """Remove the shared-memory segments whose names start with one server's prefix."""
    if not shm_prefix.startswith("sightline_") or len(shm_prefix) < len("sightline_1_abcdef_"):
        raise ValueError(f"refusing to remove segments by the loose prefix {shm_prefix!r}")
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for path in sorted(shm_dir.iterdir()):
            if path.name.startswith(shm_prefix):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path.name)
    return removed


# The line tritonserver's signal handler writes before it prints a backtrace and exits.
_CRASH_LINE = re.compile(rb"^Signal \((\d{1,2})\) received", re.MULTILINE)


class TritonServer:
    """A running ``tritonserver`` process on loopback, stopped cleanly on exit."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = options.state_dir / "triton.log"
        # A unique shared-memory prefix lets two servers (say, a test run beside the demo)
        # live on one machine without clobbering each other's Python-backend regions; it
        # also names what to remove after this server has gone (see cleanup_after_exit).
        self.shm_prefix = f"sightline_{os.getpid()}_{uuid.uuid4().hex[:6]}_"
        self.last_cleanup: ExitCleanup | None = None
        self._log_scanned = 0
        self._crash_signal: int | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.options.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.options.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.options.metrics_port}/metrics"

    def command(self, backends: Path, dist: TritonDistribution) -> list[str]:
        opts = self.options
        shm_prefix = self.shm_prefix
        return [
            str(dist.binary),
            f"--model-repository={opts.model_repository.resolve()}",
            f"--model-config-name={opts.config_name}",
            f"--backend-directory={backends.resolve()}",
            f"--cache-directory={(dist.binary.parent.parent / 'caches').resolve()}",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
            f"--http-port={opts.http_port}",
            f"--grpc-port={opts.grpc_port}",
            f"--metrics-port={opts.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=true",
            *(["--model-control-mode=explicit", "--load-model=*"] if opts.demo_faults else ["--model-control-mode=none"]),
            "--strict-readiness=true",
            f"--exit-timeout-secs={opts.exit_timeout_s}",
            f"--log-verbose={opts.log_verbose}",
            *self.trace_args(),
            *opts.extra_args,
        ]

    def trace_args(self) -> list[str]:
        opts = self.options
        if not opts.trace_url or opts.trace_rate <= 0:
            return []
        url = opts.trace_url.removeprefix("http://")
        return [
            "--trace-config=mode=opentelemetry",
            "--trace-config=level=TIMESTAMPS",
            f"--trace-config=rate={opts.trace_rate}",
            "--trace-config=count=-1",
            f"--trace-config=opentelemetry,url={url}",
            "--trace-config=opentelemetry,resource=service.name=triton",
            f"--trace-config=opentelemetry,bsp_schedule_delay={opts.trace_export_delay_ms}",
        ]

    def environment(self, dist: TritonDistribution) -> dict[str, str]:
        env = os.environ.copy()
        libs = str(dist.library_dir)
        env["LD_LIBRARY_PATH"] = f"{libs}:{env['LD_LIBRARY_PATH']}" if env.get("LD_LIBRARY_PATH") else libs
        env_bin = str(Path(sys.prefix) / "bin")
        env["PATH"] = f"{env_bin}:{env.get('PATH', '')}"
        # Each step is its own process; keep their thread pools from fighting over cores.
        env.setdefault("OMP_NUM_THREADS", "1")
        env.update(self.options.env)
        if self.options.demo_faults:
            env[DEMO_FAULTS_ENV] = "1"
        return env

    def start(self) -> TritonServer:
        opts = self.options
        if not (opts.model_repository / "detector" / "config.pbtxt").exists():
            raise TritonStartError(f"no Sightline model repository at {opts.model_repository}")
        busy = {name: port for name, port in opts.ports.items() if not port_is_free(port)}
        if busy:
            listing = ", ".join(f"{name} port {port}" for name, port in busy.items())
            raise TritonStartError(
                f"cannot start Triton: {listing} already in use on 127.0.0.1 "
                "(is another `sightline up` running? choose other ports with --http-port/"
                "--grpc-port/--metrics-port)"
            )
        dist = TritonDistribution.locate()
        opts.state_dir.mkdir(parents=True, exist_ok=True)
        backends = prepare_backend_dir(dist, opts.state_dir)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command(backends, dist),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.environment(dist),
            start_new_session=True,
        )
        log.close()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def crash_signal(self) -> int | None:
        """The signal Triton's own crash handler reported in its log ("Signal (11) received."),
        or None. Read incrementally: each call reads only the log's new complete lines. A
        server whose heap is corrupt can hang inside that handler instead of exiting (2.51
        with tracing: "corrupted double-linked list", then "Signal (6) received." and no
        exit), still holding its ports and its stubs."""
        if self._crash_signal is None:
            try:
                with self.log_path.open("rb") as log:
                    log.seek(self._log_scanned)
                    chunk = log.read(1 << 22)
            except OSError:
                return None
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._log_scanned += len(complete)
            found = _CRASH_LINE.search(complete)
            if found:
                self._crash_signal = int(found.group(1))
        return self._crash_signal

    def _failure(self, reason: str) -> TritonStartError:
        quoted = "\n".join(f"  | {line}" for line in relevant_log_lines(self.log_text()))
        return TritonStartError(f"{reason}\nTriton log ({self.log_path}):\n{quoted}")

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.options.ready_timeout_s
        url = f"{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise self._failure(f"Triton exited with status {code} before it was ready")
            if http_client.is_ok(url, timeout_s=2):
                return
            time.sleep(0.25)
        raise self._failure(
            f"Triton was not ready after {self.options.ready_timeout_s:.0f}s "
            "(a model may have failed to load)"
        )

    def stop(self) -> int | None:
        """SIGTERM, wait for in-flight requests (exit timeout), then SIGKILL as a last resort."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=self.options.exit_timeout_s + 20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.cleanup_after_exit()
        return self.process.returncode

    def cleanup_after_exit(self) -> ExitCleanup:
        """Once tritonserver has exited (stopped, killed or crashed): stop the Python-backend
        stubs it left running and remove the shared-memory segments with its prefix.

        Healthy stubs notice a dead parent and exit by themselves within a second, but a
        stuck or stopped one stays, reparented to init, holding its region in /dev/shm. The
        stubs are in Triton's process group (Triton runs in its own session), and a group
        outlives its leader, so they are found by that group or by the prefix they were given.
        """
        assert self.process is not None and self.process.poll() is not None, "Triton is still running"
        stubs = stop_python_backend_stubs(self.shm_prefix, self.process.pid)
        segments = remove_shm_segments(self.shm_prefix)
        self.last_cleanup = ExitCleanup(stubs, segments)
        return self.last_cleanup

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
