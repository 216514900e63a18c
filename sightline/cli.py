"""The ``sightline`` command line: one console script, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sightline import conventions as names
from sightline import http_client, modelspec
from sightline.errors import SightlineError
from sightline.faults import DEFAULT_LEAK_BYTES, FAULTS, SCENARIOS
from sightline.runtime import (
    DEFAULT_MODEL_REPOSITORY,
    DEFAULT_STATE_DIR,
    REPO_ROOT,
    ServerOptions,
    TritonServer,
    TritonStartError,
)

console = Console()
err_console = Console(stderr=True)


def _server_options(args: argparse.Namespace) -> ServerOptions:
    return ServerOptions(
        model_repository=Path(args.model_repository),
        state_dir=Path(args.state_dir),
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        ready_timeout_s=args.ready_timeout,
    )


def _add_server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", default=str(DEFAULT_MODEL_REPOSITORY))
    parser.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR), help="logs and runtime files")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for readiness")


def _start(options: ServerOptions) -> TritonServer:
    with console.status(f"starting Triton (models from {options.model_repository}) ..."):
        return TritonServer(options).start()


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


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


def _detections_table(title: str, rows: list[dict]) -> Table:
    table = Table(title=title)
    for column in ("frame", "camera", "class", "score", "box (x1, y1, x2, y2)"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[key]) for key in ("frame", "camera", "class", "score", "box")))
    return table


def cmd_infer(args: argparse.Namespace) -> int:
    from sightline.client import DetectorClient, InferenceError

    results, failures = [], 0
    with DetectorClient(args.url) as client:
        for path in args.images:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                err_console.print(f"[red]{path}: cannot read: {exc.strerror}")
                failures += 1
                continue
            try:
                result = client.infer(data, camera_id=args.camera)
            except InferenceError as exc:
                err_console.print(f"[red]{path}: {exc}")
                failures += 1
                continue
            results.append((path, result))
    if args.json:
        payload = [
            {
                "image": path,
                "request_id": r.request_id,
                "trace_id": r.trace_id,
                "camera_id": r.camera_id,
                "latency_ms": round(r.latency_s * 1000, 2),
                "detections": [d.as_dict() for d in r.detections],
            }
            for path, r in results
        ]
        print(json.dumps(payload, indent=2))
    else:
        rows = [
            {"frame": path, "camera": r.camera_id, "class": d.label, "score": f"{d.score:.2f}",
             "box": ", ".join(f"{v:.0f}" for v in d.box)}
            for path, r in results
            for d in r.detections
        ]
        console.print(_detections_table("detections", rows))
        for path, r in results:
            console.print(f"{path}: {len(r.detections)} detections in {r.latency_s * 1000:.1f} ms, request_id {r.request_id}")
    return 1 if failures else 0


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


def cmd_export_demo(args: argparse.Namespace) -> int:
    from sightline.export.demo import build_demo
    from sightline.export.triton_config import write_model_dir

    started = time.monotonic()
    report = build_demo(schedule="short" if args.short else "full", progress=True)
    model_dir = DEFAULT_MODEL_REPOSITORY / modelspec.MODEL_NAME
    written = write_model_dir(model_dir, model_dir / "1" / "model.onnx", modelspec.MODEL_NAME)
    console.print_json(json.dumps(report, default=str))
    console.print("Triton configs rewritten from the new graph: " + ", ".join(str(p) for p in written.values()))
    console.print(f"done in {time.monotonic() - started:.0f}s")
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from sightline.export.triton_config import (
        BatchingPolicy,
        ConfigError,
        signature_from_onnx,
        trtexec_command,
        write_model_dir,
    )
    from sightline.export.user_model import ExportError, export_factory

    out_dir = Path(args.out)
    try:
        batching = BatchingPolicy(
            max_batch_size=args.max_batch_size,
            preferred_batch_sizes=tuple(args.preferred_batch_sizes),
            max_queue_delay_microseconds=args.max_queue_delay_us,
        )
        if args.onnx:
            onnx_path = Path(args.onnx)
            if not onnx_path.exists():
                raise ExportError(f"--onnx {onnx_path}: no such file")
        else:
            onnx_path = out_dir / "1" / "model.onnx"
            report = export_factory(args.factory, onnx_path, weights=args.weights, input_size=args.input_size)
            console.print(f"exported {args.factory} -> {onnx_path} (torch vs ONNX Runtime max |diff| "
                          f"{report['max_abs_diff']:.2e})")
        written = write_model_dir(out_dir, onnx_path, args.name, batching)
    except (ExportError, ConfigError) as exc:
        err_console.print(f"[red]export failed: {exc}")
        return 2
    for what, path in written.items():
        console.print(f"  {what:14s} {path}")
    console.print(f"TensorRT plan (run in the Triton container on a GPU):\n  "
                  f"{trtexec_command(signature_from_onnx(written['model.onnx']), batching)}")
    return 0


def cmd_slo_generate(args: argparse.Namespace) -> int:
    from sightline.sidecars.slo_rules import generate, stale_files
    from sightline.sidecars.slo_spec import SpecError, load

    try:
        spec = load(Path(args.spec))
    except SpecError as exc:
        err_console.print(f"[red]{exc}")
        return 2
    out, tests = Path(args.out), Path(args.tests_out)
    return _generate_or_check(
        args.check,
        lambda: stale_files(spec, out, tests),
        lambda: generate(spec, out, time_scale=args.time_scale, tests_dir=None if args.time_scale != 1 else tests),
        "sightline slo generate",
    )


def _generate_or_check(check: bool, stale, generate, command: str) -> int:
    """Write generated files, or with ``--check`` list the stale ones and exit 1."""
    if check:
        paths = stale()
        for path in paths:
            err_console.print(f"[red]stale:[/] {path} (run `{command}`)")
        return 1 if paths else 0
    for path in generate():
        console.print(f"wrote {path}")
    return 0


def cmd_dashboards_generate(args: argparse.Namespace) -> int:
    from sightline import dashboards

    return _generate_or_check(args.check, dashboards.stale, dashboards.generate, "sightline dashboards generate")


def cmd_k8s_generate(args: argparse.Namespace) -> int:
    from sightline import k8s

    return _generate_or_check(args.check, k8s.stale, k8s.generate, "sightline k8s generate")


def cmd_load(args: argparse.Namespace) -> int:
    import asyncio

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from sightline.loadgen import CameraSpec, Scenario, parse_conditions, run, write_report

    try:
        conditions = parse_conditions(args.conditions)
        scenario = Scenario.parse(args.scenario) if args.scenario else None
    except ValueError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        return 2
    from sightline.export.scenes import Conditions

    cameras = [CameraSpec(f"cam-{i + 1}", args.fps, conditions.get(f"cam-{i + 1}", Conditions()))
               for i in range(args.cameras)]
    with Progress(TextColumn("[bold]load[/]"), BarColumn(), TextColumn("{task.description}"),
                  TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("", total=1.0)

        def on_progress(report, fraction: float) -> None:
            p95 = report.percentile_ms(95)
            progress.update(task, completed=fraction, description=(
                f"done {report.completed}/{report.offered} ok {len(report.latencies_s)} "
                f"errors {sum(report.errors.values())} dropped {report.dropped} "
                f"p95 {'-' if p95 is None else f'{p95:.0f} ms'}"))

        from sightline.faults import FaultError

        try:
            report = asyncio.run(run(args.url, cameras, args.duration, args.arrivals, args.error_fraction,
                                     args.max_in_flight, args.seed, on_progress, scenario,
                                     admin_url=args.admin_url, keep_fault=args.keep_fault))
        except FaultError as exc:
            err_console.print(f"[red]error:[/] {exc}")
            return 1
    path = write_report(report, Path(args.report))
    summary = report.as_dict()
    table = Table(title=f"{args.cameras} cameras x {args.fps:g} fps, {args.arrivals} arrivals, {args.duration:g} s")
    for column in ("offered/s", "achieved/s", "p50 ms", "p95 ms", "p99 ms", "errors", "dropped", "skipped", "late"):
        table.add_column(column, justify="right")
    lat = summary["latency_ms_from_schedule"]
    table.add_row(str(summary["offered_rate_per_s"]), str(summary["achieved_rate_per_s"]), str(lat["p50"]),
                  str(lat["p95"]), str(lat["p99"]), json.dumps(summary["errors_by_code"]),
                  str(summary["dropped_client_backlog"]), str(summary["skipped_by_camera"]), str(summary["sent_late"]))
    console.print(table)
    console.print("dropped: the client's backlog was full; skipped: a stuttering camera never sent the frame; "
                  "late: sent more than one frame interval after capture")
    console.print(f"report: {path}")
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    from sightline import faults

    try:
        model = (faults.inject(args.url, args.name, args.leak_bytes) if args.action == "inject"
                 else faults.clear(args.url, args.name))
    except faults.FaultError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        return 1
    console.print(f"{args.name}: {model} reloaded " + ("with the fault" if args.action == "inject" else "from the repository"))
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from sightline.boards_cli import Prometheus, PrometheusError
    from sightline.diagnose import diagnose, parse_duration, write_report

    try:
        since, baseline = parse_duration(args.since), parse_duration(args.baseline)
        prom = Prometheus(args.prometheus)
        with console.status(f"comparing the last {args.since} with the {args.baseline} baseline ..."):
            result = diagnose(prom, since, baseline)
            path = write_report(prom, result, Path(args.out_dir))
    except (ValueError, PrometheusError) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        return 1
    style = "green" if result.healthy else "bold red"
    console.print(f"[{style}]{result.summary()}[/]")
    for rank, hypothesis in enumerate(result.hypotheses, 1):
        console.print(f"  {rank}. {hypothesis.title} (score {hypothesis.score:.1f})")
    if result.top is not None:
        console.print(f"[bold]mitigation:[/] {result.top.mitigation}")
    console.print(f"report: {path}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from sightline.boards_cli import Prometheus, PrometheusError, status

    try:
        return status(Prometheus(args.prometheus), console)
    except PrometheusError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        return 1


def cmd_snapshot(args: argparse.Namespace) -> int:
    from sightline.boards_cli import Prometheus, PrometheusError, snapshot

    prom = Prometheus(args.prometheus)
    try:
        for board in args.boards:
            out = Path(args.out_dir) / f"{board}-board.png"
            with console.status(f"rendering the {board} board from {args.prometheus} ..."):
                snapshot(prom, board, out, minutes=args.minutes)
            console.print(f"wrote {out}")
    except PrometheusError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        return 1
    return 0


MONITOR_TOKEN_ENV = "SIGHTLINE_MONITOR_API_TOKEN"


def _monitor_api_token(token_file: str) -> str:
    """The monitor's API token: the environment's, else the file's first line (ValueError naming why not)."""
    import os

    token = os.environ.get(MONITOR_TOKEN_ENV, "").strip()
    if token:
        return token
    try:
        lines = Path(token_file).read_text().strip().splitlines()
    except FileNotFoundError:
        raise ValueError(f"no API token for the monitor: {MONITOR_TOKEN_ENV} is unset and {token_file} does not exist "
                         "(`sightline up` writes it; pass --token-file for another state directory)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--token-file: cannot read {token_file}: {getattr(exc, 'strerror', None) or exc}") from None
    if not lines or not lines[0].strip():
        raise ValueError(f"--token-file: {token_file} is empty")
    return lines[0].strip()


def cmd_drift_rebaseline(args: argparse.Namespace) -> int:
    """Rebuild the sidecar's drift reference from recent traffic. Exit 0 rebuilt, 1 unreachable or failed, 2 refused."""

    from sightline.boards_cli import Prometheus, PrometheusError
    from sightline.diagnose import parse_duration

    try:
        window_s = parse_duration(args.window)
    except ValueError as exc:
        err_console.print(f"[red]error:[/] --window: {exc}")
        return 2
    query = f'ALERTS{{alertstate="firing",alertname=~"{names.ALERT_EMBEDDING_DRIFT}|{names.ALERT_DRIFT_BURN}"}}'
    try:
        labels = [r["metric"] for r in Prometheus(args.prometheus, timeout_s=5).query(query)]
        firing = sorted({m.get("alertname", "?") + (f" ({m['camera']})" if "camera" in m else "") for m in labels})
    except PrometheusError as exc:
        firing = []
        err_console.print(f"[yellow]warning:[/] cannot check drift alerts ({escape(str(exc))}); "
                          "the sidecar still checks its own drift verdicts")
    if args.force:
        overridden = f" ({escape(', '.join(firing))} firing)" if firing else ""
        console.print(f"[yellow]forced:[/] the reference is refreshed even during drift{overridden}; "
                      "the sidecar logs it as forced")
    try:
        token = _monitor_api_token(args.token_file)
    except ValueError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    body = {"window_s": window_s, "force": args.force, "reason": args.reason, "min_records": args.min_records,
            "alerts": firing}
    refused_for_alerts = (f"drift alerts are firing: {', '.join(firing)}. A reference rebuilt now would hide that "
                          "drift; --force overrides this") if firing and not args.force else None
    try:
        summary = http_client.request_json(f"{args.monitor.rstrip('/')}/drift/rebaseline", method="POST",
                                           json_body=body, headers={"Authorization": f"Bearer {token}"},
                                           timeout_s=60)
    except http_client.HttpStatusError as exc:
        reply = exc.json()
        if exc.status == 409:
            message = refused_for_alerts or reply.get("error", "refused")
            hint = "; --force overrides this" if reply.get("refusal") == "drift" and not refused_for_alerts else ""
            err_console.print(f"[red]refused:[/] {escape(message)}{hint}. The sidecar logged this refusal.")
            return 2
        detail = escape(str(reply.get("error", "")))
        if exc.status == 401:
            detail += (f". Give the monitor's API token: {MONITOR_TOKEN_ENV} or --token-file (`sightline up` writes "
                       f"one per run to its state directory; in a cluster, the sightline-monitor-api Secret)")
        err_console.print(f"[red]error:[/] {args.monitor} answered HTTP {exc.status}: {detail}")
        return 1
    except http_client.HttpError as exc:
        if refused_for_alerts:
            err_console.print(f"[red]refused:[/] {escape(refused_for_alerts)}. (The sidecar at {args.monitor} could "
                              f"not be reached to log this refusal: {escape(str(exc))})")
            return 2
        err_console.print(f"[red]error:[/] cannot reach the monitor sidecar at {args.monitor}: {escape(str(exc))}")
        return 1
    table = Table(title="drift reference rebuilt")
    table.add_column("field")
    table.add_column("value")
    for key in ("version", "previous_version", "records", "window_s", "covered_s", "forced", "reason", "path"):
        table.add_row(key, escape(str(summary.get(key))))
    console.print(table)
    if summary.get("warning"):
        err_console.print(f"[yellow]warning:[/] {escape(str(summary['warning']))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sightline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the local stack: monitor sidecar, Triton, Prometheus, Alertmanager")
    _add_server_args(up)
    up.add_argument("--otlp-port", type=int, default=4318)
    up.add_argument("--monitor-port", type=int, default=9102)
    up.add_argument("--prometheus-port", type=int, default=9090)
    up.add_argument("--tap-port", type=int, default=9411, help="UDP port of the sidecar's tap receiver")
    up.add_argument("--trace-rate", type=int, default=0,
                    help="trace one request in N to the sidecar, for exemplars and single slow requests (0 = off, "
                         "the default: Triton 2.51 crashes tracing every request under load, server issue #7795)")
    up.add_argument("--no-monitor", action="store_true", help="Triton only, no sidecar or tracing")
    up.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    up.add_argument("--alertmanager-port", type=int, default=9093)
    up.add_argument("--pager-port", type=int, default=9095)
    up.add_argument("--no-alerting", action="store_true", help="no Alertmanager and no local pager")
    up.add_argument("--time-scale", type=float, default=1.0,
                    help="compress SLO windows N times (a 30-day SLO in 30d/N), for demos")
    up.add_argument("--demo-faults", action="store_true",
                    help="the demo profile: explicit model control, so `sightline fault` and the batcher and leak "
                         "scenarios can switch faults inside Triton (never in production)")
    up.set_defaults(func=cmd_up)

    pager = sub.add_parser("pager", help="run the local pager (Alertmanager webhook receiver)")
    pager.add_argument("--port", type=int, default=9095)
    pager.add_argument("--log", help="append notifications as JSON lines to this file")
    pager.set_defaults(func=cmd_pager)

    monitor = sub.add_parser("monitor", help="run the monitor sidecar (OTLP receiver, /metrics)")
    monitor.add_argument("--config", help="YAML config; SIGHTLINE_MONITOR_<FIELD> env vars override it")
    monitor.add_argument("--otlp-port", type=int)
    monitor.add_argument("--metrics-port", type=int)
    monitor.add_argument("--tap-port", type=int, help="UDP port for tap records")
    monitor.set_defaults(func=cmd_monitor)

    demo = sub.add_parser("demo", help="the whole chain: stack, camera frames, an error burst, a page and its resolution")
    _add_server_args(demo)
    demo.add_argument("--frames", type=int, default=4, help="frames to show as detection tables")
    demo.add_argument("--time-scale", type=float, default=DEMO_TIME_SCALE)
    demo.add_argument("--scenario", default=DEMO_SCENARIO, choices=list(SCENARIOS))
    demo.add_argument("--cameras", type=int, default=4)
    demo.add_argument("--fps", type=float, default=None,
                      help="frames per second per camera (default 10; 15 for the batcher scenario, which needs "
                           "traffic that could share batches)")
    demo.add_argument("--warmup-s", type=float, default=15.0)
    demo.add_argument("--baseline-s", type=float, default=60.0)
    demo.add_argument("--timeout-s", type=float, default=180.0, help="how long to wait for the alert")
    demo.add_argument("--report-dir", default=".sightline/incidents")
    demo.set_defaults(func=cmd_demo)

    infer = sub.add_parser("infer", help="send images to a running server over gRPC")
    infer.add_argument("images", nargs="+")
    infer.add_argument("--camera", default="cam-1", help="camera_id request parameter")
    infer.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address")
    infer.add_argument("--json", action="store_true", help="print JSON instead of a table")
    infer.set_defaults(func=cmd_infer)

    export = sub.add_parser("export", help="train/export models and write Triton model directories")
    export_sub = export.add_subparsers(dest="what", required=True)
    demo_export = export_sub.add_parser("demo", help="retrain the demo detector and rebuild its artefacts")
    demo_export.add_argument("--short", action="store_true", help="a short schedule (a smoke run)")
    demo_export.set_defaults(func=cmd_export_demo)
    onnx = export_sub.add_parser("onnx", help="export your own model and write its Triton model directory")
    source = onnx.add_mutually_exclusive_group(required=True)
    source.add_argument("--factory", help="module:callable returning a torch model whose forward "
                                           "returns (predictions, embedding)")
    source.add_argument("--onnx", help="wrap a model already exported to ONNX")
    onnx.add_argument("--weights", help="state_dict file to load into the factory's model")
    onnx.add_argument("--input-size", type=int, default=modelspec.INPUT_SIZE)
    onnx.add_argument("--name", default=modelspec.MODEL_NAME, help="Triton model name")
    onnx.add_argument("--out", required=True, help="model directory to write")
    onnx.add_argument("--max-batch-size", type=int, default=32)
    onnx.add_argument("--preferred-batch-sizes", type=int, nargs="*", default=[4, 8, 16])
    onnx.add_argument("--max-queue-delay-us", type=int, default=2000)
    onnx.set_defaults(func=cmd_export_onnx)

    slo = sub.add_parser("slo", help="SLOs as code: generate Prometheus rules and their tests")
    slo_sub = slo.add_subparsers(dest="what", required=True)
    generate = slo_sub.add_parser("generate", help="prometheus/slo.yaml -> prometheus/rules/slo-*.yaml + tests")
    generate.add_argument("--spec", default=str(REPO_ROOT / "prometheus" / "slo.yaml"))
    generate.add_argument("--out", default=str(REPO_ROOT / "prometheus" / "rules"))
    generate.add_argument("--tests-out", default=str(REPO_ROOT / "prometheus" / "tests"))
    generate.add_argument("--time-scale", type=float, default=1.0,
                          help="divide every window by N (demo, end-to-end tests); tests are written only at 1")
    generate.add_argument("--check", action="store_true", help="exit 1 if the committed files are stale")
    generate.set_defaults(func=cmd_slo_generate)

    boards = sub.add_parser("dashboards", help="Grafana boards as code")
    boards_sub = boards.add_subparsers(dest="what", required=True)
    boards_generate = boards_sub.add_parser("generate", help="write grafana/dashboards/*.json")
    boards_generate.add_argument("--check", action="store_true", help="exit 1 if the committed boards are stale")
    boards_generate.set_defaults(func=cmd_dashboards_generate)

    kube = sub.add_parser("k8s", help="Kubernetes manifests")
    kube_sub = kube.add_subparsers(dest="what", required=True)
    kube_generate = kube_sub.add_parser("generate", help="render k8s/base/generated/ from prometheus/ and grafana/")
    kube_generate.add_argument("--check", action="store_true", help="exit 1 if the committed copies are stale")
    kube_generate.set_defaults(func=cmd_k8s_generate)

    load = sub.add_parser("load", help="open-loop camera streams against a running server")
    load.add_argument("--url", default="127.0.0.1:8001")
    load.add_argument("--cameras", type=int, default=4)
    load.add_argument("--fps", type=float, default=15.0, help="frames per second per camera")
    load.add_argument("--duration", type=float, default=60.0, help="seconds")
    load.add_argument("--arrivals", choices=["constant", "poisson"], default="constant")
    load.add_argument("--conditions", default="cam-3=dusk,cam-4=night", help="per-camera light, e.g. cam-4=night")
    load.add_argument("--error-fraction", type=float, default=0.0, help="share of corrupt frames to inject")
    load.add_argument("--max-in-flight", type=int, default=256)
    load.add_argument("--seed", type=int, default=0)
    load.add_argument("--scenario", help="NAME[@START]: batcher, lowlight, leak, resolution, outage or saturation, "
                                         "e.g. lowlight@30s (batcher and leak need `sightline up --demo-faults`)")
    load.add_argument("--admin-url", default="http://127.0.0.1:8000", help="Triton's HTTP API, for server-side faults")
    load.add_argument("--keep-fault", action="store_true", help="leave a server-side fault on after the run")

    fault = sub.add_parser("fault", help="switch a server-side fault of the demo profile on or off")
    fault.add_argument("action", choices=["inject", "clear"])
    fault.add_argument("name", choices=list(FAULTS))
    fault.add_argument("--url", default="http://127.0.0.1:8000", help="Triton's HTTP API")
    fault.add_argument("--leak-bytes", type=int, default=DEFAULT_LEAK_BYTES, help="bytes the postprocess keeps per request")
    fault.set_defaults(func=cmd_fault)

    diag = sub.add_parser("diagnose", help="compare now with a baseline in Prometheus; write an incident report")
    diag.add_argument("--prometheus", default="http://127.0.0.1:9090")
    diag.add_argument("--since", default="30m", help="the 'now' window, e.g. 30m")
    diag.add_argument("--baseline", default="2h", help="how far back the baseline starts (it ends where --since begins)")
    diag.add_argument("--out-dir", default=".sightline/incidents")
    diag.set_defaults(func=cmd_diagnose)
    load.add_argument("--report", default=".sightline/load-report.json")
    load.set_defaults(func=cmd_load)

    status = sub.add_parser("status", help="the SLO board in the terminal, from Prometheus")
    status.add_argument("--prometheus", default="http://127.0.0.1:9090")
    status.set_defaults(func=cmd_status)

    snap = sub.add_parser("snapshot", help="render the SLO and pipeline boards' key panels to PNG")
    snap.add_argument("--prometheus", default="http://127.0.0.1:9090")
    snap.add_argument("--boards", nargs="+", default=["slo", "pipeline"], choices=["slo", "pipeline"])
    snap.add_argument("--minutes", type=float, default=15.0, help="how far back to plot")
    snap.add_argument("--out-dir", default="docs/img")
    snap.set_defaults(func=cmd_snapshot)

    drift = sub.add_parser("drift", help="the monitor sidecar's drift reference")
    drift_sub = drift.add_subparsers(dest="what", required=True)
    rebaseline = drift_sub.add_parser("rebaseline", help="rebuild the drift reference from recent tap records; "
                                                         "refused while drift alerts fire unless --force")
    rebaseline.add_argument("--window", default="30m", help="how far back the records go, e.g. 30m, 2h, 600")
    rebaseline.add_argument("--force", action="store_true", help="refresh even during drift (logged as forced)")
    rebaseline.add_argument("--reason", default="", help="why: kept in the reference and the sidecar's log")
    rebaseline.add_argument("--min-records", type=int, default=200, help="refuse with fewer records in the window")
    rebaseline.add_argument("--monitor", default="http://127.0.0.1:9102", help="the monitor sidecar's metrics server")
    rebaseline.add_argument("--prometheus", default="http://127.0.0.1:9090")
    rebaseline.add_argument("--token-file", default=str(DEFAULT_STATE_DIR / "monitor-token"),
                            help=f"the monitor's API token (default: what `sightline up` writes); "
                                 f"{MONITOR_TOKEN_ENV} wins")
    rebaseline.set_defaults(func=cmd_drift_rebaseline)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SightlineError as exc:  # a message for the user (sightline.errors), not a traceback
        err_console.print(f"[red]error:[/] {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
