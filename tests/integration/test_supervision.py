"""Supervision of the local stack against the real server: a dead monitor comes back, a dead
Triton leaves no stub and no shared memory behind and is reported, a stop leaves nothing."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from corpus import good_jpeg

from sightline.client import DetectorClient
from sightline.runtime import SHM_DIR, ServerOptions, TritonServer, free_port, port_is_free, python_backend_stubs
from sightline.stack import Backoff, LocalStack, StackOptions, exit_description

SIGHTLINE = [sys.executable, "-m", "sightline.cli"]


def server_options(tmp_path: Path, **overrides) -> ServerOptions:
    base = dict(state_dir=tmp_path / "state", http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                ready_timeout_s=180)
    base.update(overrides)
    return ServerOptions(**base)


def stack_options(tmp_path: Path, triton: ServerOptions | None = None, **overrides) -> StackOptions:
    base = dict(triton=triton or server_options(tmp_path), monitor_otlp_port=free_port(),
                monitor_metrics_port=free_port(), monitor_tap_port=free_port(), with_prometheus=False,
                with_alerting=False)
    base.update(overrides)
    return StackOptions(**base)


def segments(prefix: str) -> list[str]:
    return sorted(path.name for path in SHM_DIR.iterdir() if path.name.startswith(prefix))


def running(pid: int) -> bool:
    """Alive and not a zombie (a reaped number reused by something else is not a stub)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and argv0.endswith(b"triton_python_backend_stub")


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(predicate, timeout_s: float, step_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


# -- without a server ------------------------------------------------------------------


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_stable_run():
    backoff = Backoff(initial_s=1, max_s=30, stable_s=60)
    assert [backoff.delay_after(2) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay_after(61) == 1
    assert backoff.delay_after(5) == 2


def test_exit_descriptions_name_the_signal():
    assert exit_description(-signal.SIGSEGV) == "died with SIGSEGV"
    assert exit_description(-signal.SIGKILL) == "died with SIGKILL"
    assert exit_description(3) == "exited with status 3"


# -- the real server -------------------------------------------------------------------


@pytest.mark.integration
def test_a_killed_monitor_comes_back_on_its_ports_with_backoff_and_inference_never_stops(tmp_path):
    # Tracing on (one request in 4), so Triton's exporter really loses its receiver meanwhile.
    opts = stack_options(tmp_path, server_options(tmp_path, trace_rate=4))
    frame = good_jpeg()
    answered: list[float] = []
    errors: list[str] = []
    stop = threading.Event()

    def closed_loop(url: str) -> None:
        with DetectorClient(url) as client:
            for _ in range(3000):  # bounded; stopped long before
                if stop.is_set():
                    return
                try:
                    client.infer(frame, camera_id="cam-1")
                    answered.append(time.monotonic())
                except Exception as exc:  # noqa: BLE001 - any failure is the finding
                    errors.append(repr(exc))
                time.sleep(0.02)

    with LocalStack(opts) as stack:
        assert stack.monitor is not None and stack.triton is not None
        ready_url = stack.monitor.ready_url
        load = threading.Thread(target=closed_loop, args=(stack.triton.grpc_url,), daemon=True)
        load.start()
        try:
            assert wait_for(lambda: len(answered) >= 5, 30), errors
            outages = []
            for _ in range(2):  # the second death waits twice as long: the backoff doubles
                old_pid = stack.monitor.process.pid
                os.kill(old_pid, signal.SIGKILL)
                killed_at = time.monotonic()
                assert wait_for(lambda old_pid=old_pid: stack.monitor.process.pid != old_pid and ready(ready_url), 40, 0.2), \
                    stack.events()
                outages.append((killed_at, time.monotonic()))
            served_while_down = [t for t in answered if any(a <= t <= b for a, b in outages)]
            time.sleep(1)
        finally:
            stop.set()
            load.join(timeout=30)
        assert not errors, errors[:5]
        assert served_while_down, "no request was answered while the monitor was down"
        assert not port_is_free(opts.monitor_otlp_port) and not port_is_free(opts.monitor_metrics_port)
        assert stack.monitor_restarts == 2
        events = "\n".join(stack.events())
    for wanted in ("died with SIGKILL", "restarting it in 1 s on the same ports (restart 1)",
                   "restarting it in 2 s on the same ports (restart 2)", "monitor sidecar restarted",
                   "ready again"):
        assert wanted in events
    logged = (opts.triton.state_dir / "supervisor.log").read_text()
    assert logged.count("died with SIGKILL") == 2 and "restarting it in 2 s" in logged
    assert "restarted by the stack supervisor (restart 2)" in (opts.triton.state_dir / "monitor.log").read_text()


@pytest.mark.integration
def test_a_killed_triton_leaves_no_stub_and_no_shared_memory_and_is_reported(tmp_path):
    opts = stack_options(tmp_path, with_monitor=False)
    with LocalStack(opts) as stack:
        triton = stack.triton
        assert triton is not None and triton.process is not None
        stubs = python_backend_stubs(triton.shm_prefix)
        assert len(stubs) >= 3 and segments(triton.shm_prefix)
        # A healthy stub exits by itself when its parent dies; a stuck one stays and keeps its
        # region. Freeze one so the stack has a leftover to clean up.
        os.kill(stubs[0], signal.SIGSTOP)
        os.kill(triton.process.pid, signal.SIGKILL)
        assert wait_for(lambda: stack.triton_failure is not None, 10), stack.events()
        failure = stack.triton_failure
        assert not [pid for pid in stubs if running(pid)]
        assert python_backend_stubs(triton.shm_prefix, triton.process.pid) == []
        assert segments(triton.shm_prefix) == []
        codes = stack.stop()
    assert failure.startswith(f"tritonserver (pid {triton.process.pid}) died with SIGKILL; ")
    assert re.search(r"stopped [1-9]\d* Python-backend stubs?; removed [1-9]\d* shared-memory segments?; "
                     r"last lines of .*triton\.log:\n  \| ", failure), failure
    assert "died with SIGKILL" in (opts.triton.state_dir / "supervisor.log").read_text()
    assert codes["triton"] == -signal.SIGKILL


@pytest.mark.integration
def test_a_triton_hung_in_its_crash_handler_is_killed_cleaned_up_after_and_reported(tmp_path):
    # Seen in bench/overhead on 2.51 with tracing at 1 in 100: "corrupted double-linked list",
    # "Signal (6) received.", and then no exit: the server held its ports and stubs while the
    # clients' requests waited for their timeouts. Here the server is frozen and its handler's
    # line written for it; the stack must not wait on it forever.
    opts = stack_options(tmp_path, with_monitor=False, crash_exit_grace_s=1.0)
    with LocalStack(opts) as stack:
        triton = stack.triton
        assert triton is not None and triton.process is not None
        stubs = python_backend_stubs(triton.shm_prefix)
        assert len(stubs) >= 3 and segments(triton.shm_prefix)
        time.sleep(1.0)
        assert stack.triton_failure is None  # a healthy log is not a crash
        os.kill(triton.process.pid, signal.SIGSTOP)
        with triton.log_path.open("a") as log:
            log.write("corrupted double-linked list (not small)\nSignal (6) received.\n")
        assert wait_for(lambda: stack.triton_failure is not None, 15), stack.events()
        failure = stack.triton_failure
        assert triton.process.poll() == -signal.SIGKILL
        assert not [pid for pid in stubs if running(pid)]
        assert segments(triton.shm_prefix) == []
        stack.stop()
    assert failure.startswith(f"tritonserver (pid {triton.process.pid}) reported SIGABRT in its log, hung, and was "
                              "killed by the stack (died with SIGKILL); "), failure
    logged = (opts.triton.state_dir / "supervisor.log").read_text()
    assert "did not exit within 1 s (hung in its crash handler); killing it" in logged


@pytest.mark.integration
def test_sightline_up_reports_a_triton_crash_with_its_signal_and_exits_non_zero(tmp_path):
    opts = server_options(tmp_path)
    command = [*SIGHTLINE, "up", "--state-dir", str(opts.state_dir), "--http-port", str(opts.http_port),
               "--grpc-port", str(opts.grpc_port), "--metrics-port", str(opts.metrics_port),
               "--no-monitor", "--no-prometheus", "--no-alerting"]

    def no_core_files() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                               preexec_fn=no_core_files, env={**os.environ, "COLUMNS": "200"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        # Wait for `sightline up` to say "Triton ready", not for Triton's endpoint: Triton
        # answers ready a moment before `up` has seen it, and a crash inside that moment is
        # (rightly) reported as a failed start, not as a crash of a running stack.
        assert wait_for(lambda: process.poll() is not None or any("Triton ready" in line for line in lines), 120, 0.5)
        assert process.poll() is None, "".join(lines)
        triton_pid, prefix = None, None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = entry.joinpath("cmdline").read_bytes().decode().split("\0")
                parent = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == process.pid and argv[0].endswith("tritonserver"):
                triton_pid = int(entry.name)
                prefix = next(arg.split("shm-region-prefix-name=")[1] for arg in argv if "shm-region-prefix" in arg)
        assert triton_pid is not None and prefix and segments(prefix)
        os.kill(triton_pid, signal.SIGSEGV)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=10)
        process.stdout.close()
    output = "".join(lines)
    assert process.returncode == 1, output
    assert "Triton is down, not restarted" in output and "died with SIGSEGV" in output, output
    assert "shared-memory segment" in output and "last lines of" in output
    assert segments(prefix) == [] and python_backend_stubs(prefix) == []


@pytest.mark.integration
@pytest.mark.parametrize("stuck_stub", [False, True], ids=["clean", "with-a-stuck-stub"])
def test_a_stop_leaves_no_stub_and_no_segment_behind(tmp_path, stuck_stub):
    # A stuck stub holds Triton's drain until the exit timeout; keep that one short.
    server = TritonServer(server_options(tmp_path, exit_timeout_s=2 if stuck_stub else 10)).start()
    try:
        stubs = python_backend_stubs(server.shm_prefix)
        assert len(stubs) >= 3 and segments(server.shm_prefix)
        if stuck_stub:
            os.kill(stubs[0], signal.SIGSTOP)  # Triton's drain cannot finish with it
    finally:
        code = server.stop()
    if not stuck_stub:
        assert code == 0
    assert server.last_cleanup is not None
    assert not [pid for pid in stubs if running(pid)]
    assert python_backend_stubs(server.shm_prefix, server.process.pid) == []
    assert segments(server.shm_prefix) == []
