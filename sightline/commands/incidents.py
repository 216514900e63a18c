"""`sightline load`, `fault`, `diagnose`, `status`, `snapshot` and `drift`: incidents and what they show."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from sightline import conventions as names
from sightline import http_client
from sightline.commands._common import console, err_console


def cmd_load(args: argparse.Namespace) -> int:
    import asyncio

    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    from sightline.loadgen import CameraSpec, Scenario, parse_conditions, run, write_report
    from sightline.progress import progress_bar

    try:
        conditions = parse_conditions(args.conditions)
        scenario = Scenario.parse(args.scenario) if args.scenario else None
    except ValueError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        return 2
    from sightline.export.scenes import Conditions

    cameras = [CameraSpec(f"cam-{i + 1}", args.fps, conditions.get(f"cam-{i + 1}", Conditions()))
               for i in range(args.cameras)]
    with progress_bar(TextColumn("[bold]load[/]"), BarColumn(), TextColumn("{task.description}"),
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
