"""Resilience of the default stack: overload and recovery, and many fresh starts under load.

``overload``: the stack as deployed in the pod (monitor sidecar and Triton in the default
configuration; no Prometheus), its capacity measured with an open-loop probe, then
open-loop cameras at ``--base`` x capacity for ``--base-minutes`` (the baseline P95 is the
median over all but the first of those minutes, so a machine still settling does not set
it), at ``--load`` x capacity (150 %) for ``--minutes``, then back at the base rate for
three minutes. The cameras drop a frame when ``max_in_flight`` requests are outstanding,
as a backed-up gateway would. Reports, per 10-second slice: achieved rate, P95, errors,
and the CPU share of Triton (server and stubs) and of the monitor sidecar; whether Triton
survived; and how long after the load dropped the P95 came back within 1.5x its
baseline (goal: within a minute).

``starts``: ``--starts`` fresh starts of the default local stack (monitor, Triton,
Prometheus), each with closed-loop load at concurrency 8 and then 16 for ``--seconds``
each. Counts crashes (Triton exiting), errors and the Python-backend stubs and
shared-memory segments left behind after each stop. Goal: 0 crashes.

Writes ``bench/results/resilience-<mode>.json`` and its table in ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from soak import cameras_for
from tables import exit_on_sigterm, splice

from sightline import loadgen
from sightline.client import DetectorClient, InferenceError, encode_frame
from sightline.export.scenes import generate_scene
from sightline.progress import progress_bar
from sightline.runtime import ServerOptions, free_port
from sightline.stack import LocalStack, StackOptions

BENCH = Path(__file__).resolve().parent
console = Console()
RECOVERY_FACTOR = 1.5


def stack_options(state: Path, prometheus: bool, trace_rate: int = 0) -> StackOptions:
    return StackOptions(
        triton=ServerOptions(state_dir=state, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                             trace_rate=trace_rate),
        monitor_otlp_port=free_port(), monitor_metrics_port=free_port(), monitor_tap_port=free_port(),
        prometheus_port=free_port(), with_prometheus=prometheus, with_alerting=False)


def machine() -> str:
    return f"{os.uname().machine}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """User + system CPU seconds of a process (and, optionally, of its live children)."""
    pids = [pid]
    if with_children:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                        pids.append(int(entry.name))
                except (OSError, IndexError, ValueError):
                    continue
    total = 0.0
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    return total


def run_slices(url: str, rate: float, seconds: float, slice_s: float, phase: str, t0: float,
               progress: Progress, task: int, stack: LocalStack | None = None,
               latencies: list[tuple[str, list[float]]] | None = None) -> list[dict]:
    """Open-loop load at ``rate`` in slices of ``slice_s``; one row per slice (and, into
    ``latencies``, each slice's raw latencies, for minute-long views)."""
    out = []
    for index in range(max(1, int(round(seconds / slice_s)))):
        cpu = _cpu_now(stack)
        report = asyncio.run(loadgen.run(url, cameras_for(rate), slice_s, seed=hash((phase, index)) % 10_000))
        latency = p95(report.latencies_s)
        if latencies is not None:
            latencies.append((phase, list(report.latencies_s)))
        out.append({"phase": phase, "t_s": round(time.monotonic() - t0, 1), "offered_per_s": round(rate, 1),
                    "achieved_per_s": round(len(report.latencies_s) / slice_s, 1),
                    "p95_ms": None if latency is None else round(1000 * latency, 1),
                    "errors": sum(report.errors.values()), "dropped": report.dropped,
                    "lost": report.offered - report.dropped - report.completed})
        if cpu is not None:
            later = _cpu_now(stack)
            out[-1]["cpu_triton_pct"] = round(100 * (later[0] - cpu[0]) / slice_s, 1)
            out[-1]["cpu_monitor_pct"] = round(100 * (later[1] - cpu[1]) / slice_s, 1)
        progress.update(task, advance=slice_s, description=f"{phase}: {out[-1]['achieved_per_s']} req/s, "
                        f"p95 {out[-1]['p95_ms']} ms")
    return out


def _cpu_now(stack: LocalStack | None) -> tuple[float, float] | None:
    if stack is None or stack.triton is None:
        return None
    monitor = stack.monitor.process.pid if stack.monitor is not None and stack.monitor.process else 0
    return (cpu_seconds(stack.triton.process.pid, with_children=True), cpu_seconds(monitor) if monitor else 0.0)


def overload(args: argparse.Namespace) -> dict:
    state = Path(tempfile.mkdtemp(prefix="sightline-overload-"))
    os.environ.setdefault("SIGHTLINE_MONITOR_AUDIT_DIR", str(state / "audit"))
    with LocalStack(stack_options(state, prometheus=False)) as stack:
        url = stack.triton.grpc_url
        with console.status(f"measuring capacity: {args.probe_rate:g} req/s offered for {args.probe_s:g} s ..."):
            probe = asyncio.run(loadgen.run(url, cameras_for(args.probe_rate), args.probe_s, max_in_flight=64))
        capacity = len(probe.latencies_s) / args.probe_s
        console.print(f"capacity {capacity:.1f} req/s")
        t0 = time.monotonic()
        total = args.base_minutes * 60 + args.minutes * 60 + 180
        with progress_bar(TextColumn("[bold]overload[/]"), BarColumn(), TextColumn("{task.description}"),
                          TimeRemainingColumn(), console=console) as progress:
            task = progress.add_task("", total=total)
            raw: list[tuple[str, list[float]]] = []
            slices = run_slices(url, args.base * capacity, args.base_minutes * 60, 10, "base", t0, progress, task, stack,
                                raw)
            slices += run_slices(url, args.load * capacity, args.minutes * 60, 10, "overload", t0, progress, task,
                                 stack, raw)
            slices += run_slices(url, args.base * capacity, 180, 10, "after", t0, progress, task, stack, raw)
        exit_code = stack.triton.process.poll()
    settle = 6 if args.base_minutes > 1 else 1  # the first minute (or, with one minute, slice) warms up
    base = [s["p95_ms"] for s in slices if s["phase"] == "base" and s["p95_ms"] is not None][settle:]
    baseline = round(statistics.median(base), 1) if base else None
    after = [s for s in slices if s["phase"] == "after"]
    recovered_s = None
    if baseline is not None:
        for index in range(len(after)):
            if all(x["p95_ms"] is not None and x["p95_ms"] <= RECOVERY_FACTOR * baseline for x in after[index:index + 3]):
                recovered_s = 10 * (index + 1)  # the end of the first of three good slices in a row
                break
    over = [s for s in slices if s["phase"] == "overload"]
    minutes = minute_p95s(raw, settle)
    return {
        "generated_by": "bench/resilience.py overload", "measured_at": time.strftime("%Y-%m-%d"), "machine": machine(),
        "capacity_req_per_s": round(capacity, 1), "base_share": args.base, "load_share": args.load,
        "minutes": args.minutes, "base_minutes": args.base_minutes, "triton_exit_code": exit_code, "crashed": exit_code is not None,
        "baseline_p95_ms": baseline, "recovered_after_s": recovered_s,
        "overload_achieved_per_s": round(statistics.mean(s["achieved_per_s"] for s in over), 1),
        "overload_p95_ms_max": max((s["p95_ms"] or 0) for s in over),
        "lost": sum(s["lost"] for s in slices), "errors": sum(s["errors"] for s in slices),
        "dropped_by_cameras": sum(s["dropped"] for s in slices),
        "met": exit_code is None and recovered_s is not None and recovered_s <= 60 and sum(s["lost"] for s in slices) == 0,
        "slices": slices,
        # Beside the criterion (10-second slices), the same run in minutes: each minute's P95
        # over all its requests, which a single slow burst moves less.
        "minutes_p95_ms": minutes,
    }


def minute_p95s(raw: list[tuple[str, list[float]]], settle: int) -> dict:
    """P95 (ms) of every whole minute of each phase, from the slices' raw latencies; the
    baseline minute P95 is the median of the base minutes after ``settle`` slices."""
    by_phase: dict[str, list[list[float]]] = {}
    for phase, values in raw:
        by_phase.setdefault(phase, []).append(values)
    out: dict[str, object] = {}
    for phase, chunks in by_phase.items():
        skip = settle if phase == "base" else 0
        chunks = chunks[skip:]
        minutes = [sum(chunks[i:i + 6], []) for i in range(0, len(chunks) - 5, 6)]
        out[phase] = [None if (v := p95(m)) is None else round(1000 * v, 1) for m in minutes]
    base = [v for v in out.get("base", []) if v is not None]  # type: ignore[union-attr]
    out["baseline"] = round(statistics.median(base), 1) if base else None
    return out


def leftovers(prefix: str | None, triton_pid: int) -> tuple[int, int]:
    """Stubs of this server still running, and its shared-memory segments still on disk."""
    stubs = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "triton_python_backend_stub" in cmdline and prefix and prefix in cmdline:
            stubs += 1
    segments = len(list(Path("/dev/shm").glob(f"{prefix}*"))) if prefix else 0
    return stubs, segments


def closed_loop(url: str, frames: list[bytes], concurrency: int, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    counts = {"ok": 0, "errors": 0}
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        with DetectorClient(url) as client:
            n = index
            while time.monotonic() < deadline:
                n += concurrency
                try:
                    result = client.infer(frames[n % len(frames)], camera_id=f"cam-{n % 4 + 1}")
                except InferenceError:
                    with lock:
                        counts["errors"] += 1
                    time.sleep(0.05)
                    continue
                with lock:
                    counts["ok"] += 1
                    latencies.append(result.latency_s)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    latency = p95(latencies)
    return {"concurrency": concurrency, "requests": counts["ok"], "errors": counts["errors"],
            "req_per_s": round(counts["ok"] / seconds, 1), "p95_ms": None if latency is None else round(1000 * latency, 1)}


def starts(args: argparse.Namespace) -> dict:
    frames = [encode_frame(generate_scene(seed=9_100_000 + i).image) for i in range(32)]
    runs = []
    with progress_bar(TextColumn("[bold]fresh starts[/]"), BarColumn(), TextColumn("{task.description}"),
                      TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("", total=args.starts)
        for index in range(args.starts):
            state = Path(tempfile.mkdtemp(prefix=f"sightline-start-{index}-"))
            os.environ["SIGHTLINE_MONITOR_AUDIT_DIR"] = str(state / "audit")
            stack = LocalStack(stack_options(state, prometheus=True, trace_rate=args.trace_rate))
            started = time.monotonic()
            stack.start()
            ready_s = time.monotonic() - started
            loads = [closed_loop(stack.triton.grpc_url, frames, c, args.seconds) for c in (8, 16)]
            exit_code = stack.triton.process.poll()
            prefix = getattr(stack.triton, "shm_prefix", None)
            triton_pid = stack.triton.process.pid
            stack.stop()
            stubs, segments = leftovers(prefix, triton_pid)
            runs.append({"start": index + 1, "ready_s": round(ready_s, 1), "crashed": exit_code is not None,
                         "triton_exit_code": exit_code, "loads": loads, "stubs_left": stubs, "segments_left": segments})
            progress.update(task, advance=1, description=(
                f"start {index + 1}: {'CRASHED' if exit_code is not None else 'ok'}, "
                + ", ".join(f"c{x['concurrency']} {x['req_per_s']} req/s p95 {x['p95_ms']} ms" for x in loads)))
    crashes = sum(r["crashed"] for r in runs)
    return {"generated_by": "bench/resilience.py starts", "measured_at": time.strftime("%Y-%m-%d"), "machine": machine(),
            "trace_rate": args.trace_rate, "starts": args.starts, "seconds_per_concurrency": args.seconds, "crashes": crashes,
            "errors": sum(x["errors"] for r in runs for x in r["loads"]),
            "stubs_left": sum(r["stubs_left"] for r in runs), "segments_left": sum(r["segments_left"] for r in runs),
            "met": crashes == 0, "runs": runs}


def cpu_rows(slices: list[dict]) -> list[str]:
    """Median CPU share per phase: does anything keep working harder after the overload?"""
    if not any("cpu_triton_pct" in s for s in slices):
        return []
    rows = []
    for key, label in (("cpu_triton_pct", "Triton (server + stubs)"), ("cpu_monitor_pct", "monitor sidecar")):
        per_phase = [statistics.median([s[key] for s in slices if s["phase"] == phase and key in s] or [0.0])
                     for phase in ("base", "overload", "after")]
        rows.append(f"| CPU of {label}, median % of a core: base / overload / after | "
                    + " / ".join(f"{x:.0f}" for x in per_phase) + " | - |")
    return rows


def minute_rows(minutes: dict | None) -> list[str]:
    """The run in one-minute P95s, beside the criterion's 10-second slices."""
    if not minutes or minutes.get("baseline") is None:
        return []

    def shown(values: list) -> str:
        return ", ".join("-" if v is None else f"{v:g}" for v in values)

    return [f"| P95 per minute (ms): baseline (median) / after the load dropped | {minutes['baseline']:g} / "
            f"{shown(minutes.get('after', []))} | - |"]


def table(mode: str, result: dict) -> tuple[str, str, str]:
    begin, end = f"<!-- resilience {mode} table: generated by bench/resilience.py; do not edit -->", \
        f"<!-- end resilience {mode} table -->"
    if mode == "overload":
        over = [s for s in result["slices"] if s["phase"] == "overload"]
        lines = [begin, f"Measured {result['measured_at']} on {result['machine']}: capacity {result['capacity_req_per_s']} "
                 f"req/s; {result['base_share']:.0%} for {result.get('base_minutes', 1):g} min, {result['load_share']:.0%} for {result['minutes']:g} min, "
                 f"then {result['base_share']:.0%} for 3 min. Default configuration (tracing off).", "",
                 "| what | result | goal |", "|---|---:|---:|",
                 f"| Triton | {'**crashed** (exit ' + str(result['triton_exit_code']) + ')' if result['crashed'] else 'survived'} | no crash |",
                 f"| served during overload | {result['overload_achieved_per_s']} req/s (the cameras dropped "
                 f"{result['dropped_by_cameras']} frames at their in-flight cap) | - |",
                 f"| P95 baseline / worst 10 s during overload | {result['baseline_p95_ms']} / {max((s['p95_ms'] or 0) for s in over)} ms | - |",
                 f"| P95 back within {RECOVERY_FACTOR}x baseline after the load dropped | "
                 f"{'never' if result['recovered_after_s'] is None else str(result['recovered_after_s']) + ' s'} | <= 60 s |",
                 f"| lost responses / errors | {result['lost']} / {result['errors']} | 0 lost |",
                 *minute_rows(result.get("minutes_p95_ms")),
                 *cpu_rows(result["slices"]),
                 "", f"Goal met: {'yes' if result['met'] else 'no'}.", end]
    else:
        lines = [begin, f"Measured {result['measured_at']} on {result['machine']}: {result['starts']} fresh starts of the "
                 f"default stack (monitor, Triton, Prometheus; tracing "
                 f"{'off' if not result['trace_rate'] else '1 in ' + str(result['trace_rate'])}), each "
                 f"{result['seconds_per_concurrency']:g} s closed loop at concurrency 8, then 16.", "",
                 "| start | ready after | c8 req/s (P95 ms) | c16 req/s (P95 ms) | errors | crashed | stubs / segments left |",
                 "|---:|---:|---:|---:|---:|---|---:|"]
        for run in result["runs"]:
            c8, c16 = run["loads"]
            lines.append(f"| {run['start']} | {run['ready_s']} s | {c8['req_per_s']} ({c8['p95_ms']}) | "
                         f"{c16['req_per_s']} ({c16['p95_ms']}) | {c8['errors'] + c16['errors']} | "
                         f"{'**yes**' if run['crashed'] else 'no'} | {run['stubs_left']} / {run['segments_left']} |")
        lines += ["", f"Crashes: **{result['crashes']}** of {result['starts']}. Goal met: {'yes' if result['met'] else 'no'}.", end]
    return "\n".join(lines), begin, end


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    over = sub.add_parser("overload", help="150 %% of capacity, then back: does latency recover?")
    over.add_argument("--minutes", type=float, default=10.0)
    over.add_argument("--load", type=float, default=1.5)
    over.add_argument("--base", type=float, default=0.7)
    over.add_argument("--base-minutes", type=float, default=3.0,
                      help="minutes at the base rate before the overload; the first one is not in the baseline")
    over.add_argument("--probe-s", type=float, default=20.0)
    over.add_argument("--probe-rate", type=float, default=400.0)
    st = sub.add_parser("starts", help="fresh starts under closed-loop load: any crash?")
    st.add_argument("--starts", type=int, default=10)
    st.add_argument("--seconds", type=float, default=60.0, help="per concurrency (8, then 16)")
    st.add_argument("--trace-rate", type=int, default=0, help="trace one request in N (0 = off, the default)")
    for p in (over, st):
        p.add_argument("--no-readme", action="store_true")
        p.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = overload(args) if args.mode == "overload" else starts(args)
    out = args.out or BENCH / "results" / f"resilience-{args.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    text, begin, end = table(args.mode, result)
    console.print(text)
    if not args.no_readme:
        heading = ("## `resilience.py overload`: 150 % of capacity, then back" if args.mode == "overload"
                   else "## `resilience.py starts`: fresh starts under load")
        splice(text, begin, end, heading=heading)
    return 0 if result["met"] else 1


if __name__ == "__main__":
    exit_on_sigterm()
    sys.exit(main())
