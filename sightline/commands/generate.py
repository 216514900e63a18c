"""`sightline slo generate`, `dashboards generate` and `k8s generate`: the generated files."""

from __future__ import annotations

import argparse
from pathlib import Path

from sightline.commands._common import console, err_console


def cmd_slo_generate(args: argparse.Namespace) -> int:
    from sightline.slo.rules import generate, stale_files
    from sightline.slo.spec import SpecError, load

    try:
        spec = load(Path(args.spec))
    except SpecError as exc:
        err_console.print(f"[red]{exc}")
        return 2
    out, tests, operations = Path(args.out), Path(args.tests_out), Path(args.operations)
    return _generate_or_check(
        args.check,
        lambda: stale_files(spec, out, tests, operations),
        lambda: generate(spec, out, time_scale=args.time_scale, tests_dir=None if args.time_scale != 1 else tests,
                         operations_template=operations),
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
