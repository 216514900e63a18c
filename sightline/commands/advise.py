"""`sightline advise batching`: observe, optionally sweep, propose a config diff."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.table import Table

from sightline import advise
from sightline.commands._common import console, err_console
from sightline.durations import parse_seconds
from sightline.errors import SightlineError


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _observation_table(observation: advise.Observation, current: advise.Settings) -> Table:
    table = Table(title=f"Observed over the last {observation.window_s:.0f} s (Prometheus)")
    for column in ("step", "settings", "req/s", "batch", "queue ms", "compute ms", "busy"):
        table.add_column(column, justify="left" if column in ("step", "settings") else "right")
    for model in advise.STEPS:
        seen, settings = observation.steps[model], current[model]
        busy = seen.busy(settings.instances)
        table.add_row(model, settings.describe(), _ms(seen.rate), "-" if seen.batch is None else f"{seen.batch:.2f}",
                      _ms(None if seen.queue_s is None else seen.queue_s * 1e3),
                      _ms(None if seen.compute_s is None else seen.compute_s * 1e3),
                      "-" if busy is None else f"{busy:.0%}")
    return table


def _trials_table(trials: list[advise.Trial], chosen: str, target_ms: float) -> Table:
    table = Table(title=f"Measured: the same open-loop load on each candidate (target P95 {target_ms:.0f} ms)")
    for column in ("candidate", "offered/s", "served/s", "P50 ms", "P95 ms", "batch", "model queue ms", "errors"):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for t in trials:
        mark = " <- proposed" if t.label == chosen else ""
        table.add_row(t.label + mark, f"{t.offered_per_s:.1f}", f"{t.served_per_s:.1f}", _ms(t.p50_ms), _ms(t.p95_ms),
                      "-" if t.batch is None else f"{t.batch:.2f}", _ms(t.queue_ms.get(advise.BATCHED_MODEL)),
                      str(t.errors + t.dropped))
    return table


def cmd_advise_batching(args: argparse.Namespace) -> int:
    try:
        target_s = parse_seconds(args.target_p95)
        window_s = parse_seconds(args.window)
        triton = advise.Triton(args.url, args.metrics_url)
        current = advise.current_settings(triton)
        observation = None
        try:
            observation = advise.observe(args.prometheus, window_s)
        except advise.AdviceError as exc:
            if not args.sweep:
                raise
            err_console.print(f"[yellow]no observation ({exc}); sweeping at --rate only[/]")
        proposal, reasons = (advise.rules_proposal(current, observation, target_s) if observation is not None
                             else (dict(current), []))
        if observation is not None:
            console.print(_observation_table(observation, current))
        for reason in reasons:
            console.print(f"  {reason.model}: {reason.text}")
        out_dir = Path(args.out_dir)
        record: dict = {"target_p95_ms": target_s * 1000, "current": {m: vars(s) for m, s in current.items()},
                        "observed": None if observation is None else {
                            "window_s": observation.window_s, "p95_s": observation.p95_s,
                            "steps": {m: vars(s) for m, s in observation.steps.items()}},
                        "reasons": [vars(r) for r in reasons]}
        final, source = proposal, "the observed rules"
        if args.sweep:
            rate = args.rate or (observation.steps["preprocess"].rate if observation is not None else None)
            if not rate:
                raise advise.AdviceError("no traffic observed to sweep at: give --rate REQ_PER_S")
            trials_of = advise.candidates(current, proposal, args.max_candidates)
            console.print(f"sweep: {len(trials_of)} candidates x {args.rounds} rounds x {args.seconds:.0f} s at "
                          f"{rate:.0f} req/s (about {len(trials_of) * args.rounds * (args.seconds + 3 + 5):.0f} s)")
            started = time.monotonic()
            trials = advise.sweep(triton, args.grpc_url, trials_of, rate, args.seconds, rounds=args.rounds,
                                  progress=lambda text: console.print(f"  {time.monotonic() - started:5.0f} s  {text}"))
            best, meets = advise.choose(trials, target_s * 1000)
            console.print(_trials_table(trials, best.label, target_s * 1000))
            chart = advise.chart(trials, target_s * 1000, best.label, out_dir / "batching.png")
            console.print(f"chart: {chart}")
            if not meets:
                console.print(f"[yellow]no candidate served the whole load within {target_s * 1000:.0f} ms; "
                              f"proposing the best one ({best.label})[/]")
            final, source = best.settings, f"the sweep ({best.label}) at {rate:.0f} req/s"
            record["trials"] = [t.as_dict() for t in trials]
            record["chosen"] = best.label
            record["meets_target"] = meets
        record["proposal"] = {m: vars(s) for m, s in final.items()}
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "batching.json").write_text(json.dumps(record, indent=2, default=list) + "\n")
        change = advise.describe_change(current, final)
        diff_path = out_dir / "batching.diff"
        diff = advise.proposal_diff(Path(args.model_repository), current, final) if change != "committed" else ""
        if not diff:
            diff_path.unlink(missing_ok=True)
            console.print(f"[green]proposal from {source}: keep the committed settings[/] (nothing to change)")
            return 0
        diff_path.write_text(diff)
        console.print(f"[bold]proposal from {source}:[/] {change}")
        console.print(f"diff: {diff_path} (review, then `git apply {diff_path}`; nothing was changed)")
        console.print("[yellow]a proposal fits the load it was measured or observed at: a shorter queue delay that "
                      "wins at a quiet rate can lose near capacity, so sweep at the peak rate you must serve "
                      "(--rate) before applying it[/]")
        if final[advise.BATCHED_MODEL] != current[advise.BATCHED_MODEL]:
            console.print(f"{advise.BATCHED_MODEL}'s configs are written by `sightline export onnx`: re-export with "
                          f"{advise.export_flags(final[advise.BATCHED_MODEL])} to keep them generated")
        return 0
    except SightlineError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        return 1
