"""`sightline up`, `pager`, `monitor` and `demo`: the local stack and its pieces."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from sightline import modelspec
from sightline.commands._common import _detections_table, _server_options, _stop_on_signals, console, err_console
from sightline.runtime import (
    TritonStartError,
)

# Triton 2.51 (the server in the nvidia-pytriton wheel) releases traces with a race (server
# issue #7795, fixed in 2.57): a sampled rate makes the crash rarer, not impossible.
TRACING_WARNING = ("[yellow]warning:[/] tracing on Triton 2.51 can crash the server (issue #7795, fixed in 2.57): "
                   "bench/overhead saw one crash in five fresh servers at 1 request in 100. Use it for a short look.")


def cmd_up(args: argparse.Namespace) -> int:
    from sightline.stack import LocalStack, StackError, StackOptions

    stop = _stop_on_signals()
    options = _server_options(args)
    options.trace_rate = args.trace_rate
    options.demo_faults = args.demo_faults
    stack_options = StackOptions(
        triton=options,
        monitor_otlp_port=args.otlp_port,
        monitor_metrics_port=args.monitor_port,
        prometheus_port=args.prometheus_port,
        monitor_tap_port=args.tap_port,
        alertmanager_port=args.alertmanager_port,
        pager_port=args.pager_port,
        with_alerting=not args.no_alerting,
        time_scale=args.time_scale,
        with_monitor=not args.no_monitor,
        with_prometheus=not args.no_prometheus,
    )
    stack = LocalStack(stack_options)
    try:
        with console.status("starting the local stack (monitor sidecar, Triton, Prometheus) ..."):
            stack.start()
    except StackError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        return 1
    triton = stack.triton
    assert triton is not None
    lines = [f"[green]Triton ready[/]      gRPC {triton.grpc_url}  HTTP {triton.http_url}  metrics {triton.metrics_url}"]
    if stack.monitor is not None:
        lines.append(f"[green]monitor sidecar[/]   OTLP http://127.0.0.1:{args.otlp_port}/v1/traces  "
                     f"metrics http://127.0.0.1:{args.monitor_port}/metrics  "
                     f"({f'tracing 1 request in {args.trace_rate}' if args.trace_rate > 0 else 'tracing off'})")
    if stack.prometheus is not None:
        lines.append(f"[green]Prometheus UI[/]     http://127.0.0.1:{args.prometheus_port}/graph")
    if stack.alertmanager is not None:
        lines.append(f"[green]Alertmanager[/]      http://127.0.0.1:{args.alertmanager_port}  "
                     f"pager http://127.0.0.1:{args.pager_port}/notifications (pages print here)")
    lines.append(f"logs in {options.state_dir}/   press Ctrl-C (or send SIGTERM) to stop")
    if args.trace_rate > 0:
        lines.append(TRACING_WARNING)
    console.print("\n".join(lines))
    code = 0
    pages = PageTail(options.state_dir / "pages.jsonl")
    try:
        while not stop.is_set():
            pages.print_new()
            # The stack restarts a dead monitor by itself; Triton it does not restart.
            for event in stack.new_events():
                if event != stack.triton_failure:
                    err_console.print(f"[yellow]{escape(event)}[/]")
            if stack.triton_failure is not None:
                err_console.print(f"[red]Triton is down, not restarted:[/] {escape(stack.triton_failure)}")
                code = 1
                break
            stop.wait(0.5)
    finally:
        with console.status("stopping (Triton drains in-flight requests) ..."):
            codes = stack.stop()
        console.print("stopped: " + ", ".join(f"{name} exit status {value}" for name, value in codes.items()))
        console.print(f"Triton stopped (exit status {codes.get('triton')})")
    return code


class PageTail:
    """Print notifications the local pager logged since the last look."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new(self) -> list[dict]:
        try:
            with self.path.open() as log:
                log.seek(self.offset)
                lines = log.readlines()
                self.offset = log.tell()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def print_new(self) -> list[dict]:
        from sightline.pager import render

        records = self.new()
        for record in records:
            style = "green" if record["status"] == "resolved" else ("bold red" if record["channel"] == "page" else "yellow")
            console.print(f"[{style}]{escape(render(record))}[/]")
        return records


def cmd_pager(args: argparse.Namespace) -> int:
    from sightline.pager import Pager

    stop = _stop_on_signals()
    try:
        pager = Pager(port=args.port, log_path=Path(args.log) if args.log else None).start()
    except OSError as exc:
        err_console.print(f"[red]error:[/] cannot listen on 127.0.0.1:{args.port}: {exc.strerror}")
        return 1
    print(f"local pager on http://127.0.0.1:{pager.port} (POST /page, /ticket; GET /notifications)", flush=True)
    try:
        stop.wait()
    finally:
        pager.stop()
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from sightline.sidecars import logs
    from sightline.sidecars.monitor import ConfigError, Monitor, load_config

    try:
        config = load_config(Path(args.config) if args.config else None)
    except ConfigError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        return 2
    if args.otlp_port is not None:
        config.otlp_port = args.otlp_port
    if args.metrics_port is not None:
        config.metrics_port = args.metrics_port
    if args.tap_port is not None:
        config.tap_port = args.tap_port
    logs.configure(sys.stdout)
    stop = _stop_on_signals()
    try:
        monitor = Monitor(config).start()
    except OSError as exc:
        err_console.print(f"[red]error:[/] cannot listen on {config.listen_host} ports "
                          f"{config.otlp_port}/{config.metrics_port}: {exc.strerror}")
        return 1
    console.print(f"monitor: OTLP on {config.listen_host}:{monitor.otlp_port}/v1/traces, "
                  f"metrics on {config.listen_host}:{monitor.metrics_port}/metrics")
    try:
        stop.wait()
    finally:
        monitor.stop()
        console.print("monitor stopped")
    return 0




DEMO_CAMERAS = (("cam-1", "day"), ("cam-2", "day"), ("cam-3", "dusk"), ("cam-4", "night"))
DEMO_SCENARIO = "saturation"
DEMO_TIME_SCALE = 60.0


def _demo_frames(client, frames: int) -> list:
    from sightline.client import InferenceError
    from sightline.export.scenes import Conditions, generate_scene

    summary = []
    for index in range(frames):
        camera, light = DEMO_CAMERAS[index % len(DEMO_CAMERAS)]
        scene = generate_scene(seed=900_000 + index, conditions=Conditions(brightness=light))
        try:
            result = client.infer(scene.image, camera_id=camera)
        except InferenceError as exc:
            err_console.print(f"[red]frame {index}: {exc}")
            continue
        rows = [
            {"frame": index, "camera": camera, "class": d.label, "score": f"{d.score:.2f}",
             "box": ", ".join(f"{v:.0f}" for v in d.box)}
            for d in result.detections
        ]
        truth = ", ".join(modelspec.CLASS_NAMES[c] for c in scene.classes) or "nothing"
        console.print(_detections_table(
            f"frame {index} from {camera} ({light}): {result.latency_s * 1000:.0f} ms, ground truth: {truth}", rows))
        summary.append((camera, light, len(scene.classes), len(result.detections), result.latency_s))
    table = Table(title="what the cameras saw")
    for column in ("camera", "light", "frames", "objects", "detections", "mean latency ms"):
        table.add_column(column)
    for camera, light in DEMO_CAMERAS:
        mine = [s for s in summary if s[0] == camera]
        if mine:
            table.add_row(camera, light, str(len(mine)), str(sum(s[2] for s in mine)),
                          str(sum(s[3] for s in mine)), f"{1000 * sum(s[4] for s in mine) / len(mine):.1f}")
    console.print(table)
    return summary


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole chain for real: stack up, cameras, an injected incident, its alert and page, a diagnosis."""
    import os

    from sightline.client import DetectorClient, InferenceError
    from sightline.incident import EXPECTED, fps_for, run_incident

    if args.fps is None:
        args.fps = fps_for(args.scenario)
    from sightline.stack import LocalStack, StackError, StackOptions

    stop = _stop_on_signals()
    options = _server_options(args)
    options.demo_faults = True  # the demo profile: `sightline fault` can switch faults inside Triton
    # A denser tap so drift has a window within the demo's minutes.
    os.environ.setdefault("SIGHTLINE_TAP_RATE", "0.5")
    os.environ.setdefault("SIGHTLINE_MONITOR_DRIFT_EVERY_S", "2")
    # Every demo starts from empty history, so a second run does not see the first one's incident.
    stack_options = StackOptions(triton=options, time_scale=args.time_scale, with_alerting=True,
                                 with_prometheus=True, with_monitor=True, fresh_data=True)
    from sightline.incident import render_camera_frames

    with console.status(f"rendering {args.cameras} x 512 camera frames ..."):
        render_camera_frames(args.scenario, args.cameras, args.fps)
    stack = LocalStack(stack_options)
    try:
        with console.status(f"starting the local stack (SLO windows compressed {args.time_scale:g}x: "
                            f"a 30-day SLO in {30 * 24 / args.time_scale:g} hours) ..."):
            stack.start()
    except (StackError, TritonStartError) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        return 1
    pager_url = f"http://127.0.0.1:{stack_options.pager_port}"
    prometheus_url = f"http://127.0.0.1:{stack_options.prometheus_port}"
    console.print(f"[green]stack ready[/]: Triton {stack.triton.grpc_url}, Prometheus {prometheus_url}, "
                  f"Alertmanager http://127.0.0.1:{stack_options.alertmanager_port}, pager {pager_url}")
    expected = EXPECTED[args.scenario]
    started = time.monotonic()
    run = None
    try:
        with DetectorClient(stack.triton.grpc_url) as client:
            _demo_frames(client, args.frames)
            try:
                client.infer(b"not a jpeg", camera_id="cam-1")
            except InferenceError as exc:
                console.print(f"[yellow]a corrupt frame is refused alone:[/] {exc.message}")
        console.print(f"[bold]{args.cameras} cameras x {args.fps:g} fps; the '{args.scenario}' incident goes live after "
                      f"{args.warmup_s + args.baseline_s:g} s of healthy traffic[/] (expected alert: {expected.alert})")

        def event(text: str) -> None:
            style = "bold red" if text.startswith("PAGE") else ("yellow" if text.startswith("alert") else "cyan")
            console.print(f"[dim]{time.monotonic() - started:6.1f}s[/] [{style}]{text}[/]")

        with console.status("cameras sending; watching alerts and pages ..."):
            run = run_incident(stack.triton.grpc_url, stack.triton.http_url, prometheus_url, pager_url, args.scenario,
                               cameras=args.cameras, fps=args.fps, warmup_s=args.warmup_s, baseline_s=args.baseline_s,
                               timeout_s=args.timeout_s, report_dir=Path(args.report_dir), on_event=event, stop=stop)
    finally:
        with console.status("stopping the stack ..."):
            codes = stack.stop()
        console.print("stopped: " + ", ".join(f"{name} {value}" for name, value in codes.items()))
    if run is None or run.diagnosis is None:
        return 1
    diagnosis = run.diagnosis
    noise = run.healthy_alerts()
    if noise:
        console.print("[red]the healthy traffic before the fault fired: [/]"
                      + ", ".join(f"{name} ({severity})" for name, severity in sorted(noise.items())))
    else:
        healthy_s = args.warmup_s + args.baseline_s
        console.print(f"[green]healthy traffic before the fault: no page and no ticket[/] ({healthy_s:g} s, "
                      f"{healthy_s * args.time_scale / 60:g} min of SLO time)")
    fired = run.fired_after_s(expected.alert)
    console.print(f"[bold]{expected.alert}[/]: " + (f"fired {fired} s after the fault went live" if fired is not None
                                                   else "[red]did not fire[/]"))
    console.print("pages: " + (", ".join(run.pages) or "none"))
    style = "green" if diagnosis.top is not None and diagnosis.top.key == expected.cause else "red"
    console.print(f"[bold {style}]diagnose: {diagnosis.summary()}[/]")
    for rank, hypothesis in enumerate(diagnosis.hypotheses, 1):
        console.print(f"  {rank}. {hypothesis.title} (score {hypothesis.score:.1f})")
    if diagnosis.top is not None:
        console.print(f"[bold]mitigation:[/] {diagnosis.top.mitigation}")
    console.print(f"incident report: {run.report_path}")
    ok = demo_succeeded(run, expected, codes)
    console.print(f"demo finished in {time.monotonic() - started:.0f} s" + ("" if ok else " [red](not as expected)[/]"))
    return 0 if ok else 1


def demo_succeeded(run, expected, codes: dict) -> bool:
    """The demo's verdict: its healthy stretch fired no page and no ticket, the expected alert
    fired after the fault, diagnose ranked the expected cause first, and Triton exited cleanly."""
    diagnosis = run.diagnosis
    return (not run.healthy_alerts() and run.fired_after_s(expected.alert) is not None
            and diagnosis is not None and diagnosis.top is not None and diagnosis.top.key == expected.cause
            and codes.get("triton") == 0)
