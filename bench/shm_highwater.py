"""Shared memory of each Triton process after alternating steady load and bursts.

One server in the default configuration (monitor, Triton, no Prometheus). Phases: 40 s open
loop at 100 req/s, 20 s closed loop at concurrency 64, 40 s at 100 req/s, 20 s at
concurrency 96, 40 s at 100 req/s. After each phase the resident heap (``RssAnon``) and
shared memory (``RssShmem``) of tritonserver and every Python-backend stub are read from
/proc. It shows what the soak's one slope is: the Python backend's shared-memory pools
follow the largest backlog seen so far and keep it (server issue #7481).

Writes ``bench/results/shm-highwater.json``; the finding is a row of the soak bisect in
``bench/README.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from resilience import closed_loop
from rich.console import Console
from soak import cameras_for, parent_of
from tables import exit_on_sigterm

from sightline import loadgen
from sightline.client import encode_frame
from sightline.export.scenes import generate_scene
from sightline.procfs import memory_of
from sightline.runtime import ServerOptions, free_port
from sightline.sidecars.resources import scan_processes
from sightline.stack import LocalStack, StackOptions

RESULTS = Path(__file__).resolve().parent / "results" / "shm-highwater.json"
console = Console()


def memory_mb(triton_pid: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for proc in scan_processes():
        if proc.pid == triton_pid or parent_of(proc.pid) == triton_pid:
            memory = memory_of(proc.pid)
            out[proc.name] = {"heap_mb": round(memory["RssAnon"] / 1e6, 1),
                              "shared_mb": round(memory["RssShmem"] / 1e6, 1)}
    return out


def main() -> int:
    exit_on_sigterm()
    state = Path(tempfile.mkdtemp(prefix="sightline-shm-"))
    os.environ.setdefault("SIGHTLINE_MONITOR_AUDIT_DIR", str(state / "audit"))
    options = StackOptions(
        triton=ServerOptions(state_dir=state, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()),
        monitor_otlp_port=free_port(), monitor_metrics_port=free_port(), monitor_tap_port=free_port(),
        with_prometheus=False, with_alerting=False)
    frames = [encode_frame(generate_scene(seed=9_100_000 + i).image) for i in range(32)]
    phases = [("open loop 100 req/s, 40 s", None, 40.0), ("closed loop, concurrency 64, 20 s", 64, 20.0),
              ("open loop 100 req/s, 40 s", None, 40.0), ("closed loop, concurrency 96, 20 s", 96, 20.0),
              ("open loop 100 req/s, 40 s", None, 40.0)]
    rows = []
    with LocalStack(options) as stack:
        url, pid = stack.triton.grpc_url, stack.triton.process.pid
        rows.append({"phase": "after start", "memory": memory_mb(pid)})
        for index, (name, concurrency, seconds) in enumerate(phases):
            console.print(f"phase {index + 1}/{len(phases)}: {name}")
            if concurrency is None:
                asyncio.run(loadgen.run(url, cameras_for(100.0), seconds, seed=index))
            else:
                closed_loop(url, frames, concurrency, seconds)
            rows.append({"phase": name, "memory": memory_mb(pid)})
            console.print(rows[-1]["memory"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"generated_by": "bench/shm_highwater.py", "measured_at": time.strftime("%Y-%m-%d"),
                                   "machine": f"{os.uname().machine}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
                                   "phases": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
