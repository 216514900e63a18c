"""The ``sightline`` command line: one console script, one subcommand per job.

The commands live in ``sightline.commands``, one module per group: the local stack, serving and
export, generated files, incidents.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from sightline import modelspec
from sightline.commands._common import _add_server_args, _stop_on_signals, console, err_console  # noqa: F401
from sightline.commands.advise import cmd_advise_batching
from sightline.commands.generate import cmd_dashboards_generate, cmd_k8s_generate, cmd_slo_generate
from sightline.commands.incidents import (
    MONITOR_TOKEN_ENV,
    cmd_diagnose,
    cmd_drift_rebaseline,
    cmd_fault,
    cmd_load,
    cmd_snapshot,
    cmd_status,
)
from sightline.commands.serving import cmd_export_demo, cmd_export_onnx, cmd_infer
from sightline.commands.stack import (  # noqa: F401
    DEMO_SCENARIO,
    DEMO_TIME_SCALE,
    cmd_demo,
    cmd_monitor,
    cmd_pager,
    cmd_up,
    demo_succeeded,
)
from sightline.errors import SightlineError
from sightline.faults import DEFAULT_LEAK_BYTES, FAULTS, SCENARIOS
from sightline.runtime import (
    DEFAULT_MODEL_REPOSITORY,
    DEFAULT_STATE_DIR,
    REPO_ROOT,
)


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
    generate.add_argument("--operations", default=str(REPO_ROOT / "prometheus" / "operations-rules.in.yaml"),
                          help="template of the operational rules (rendered into --out)")
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

    advise = sub.add_parser("advise", help="proposals from what the stack observed")
    advise_sub = advise.add_subparsers(dest="what", required=True)
    batching = advise_sub.add_parser(
        "batching", help="propose preferred batch sizes, queue delay and instance counts for a P95 target, as a diff")
    batching.add_argument("--target-p95", required=True, help="the latency target, e.g. 120ms")
    batching.add_argument("--prometheus", default="http://127.0.0.1:9090")
    batching.add_argument("--window", default="10m", help="how far back to read what was observed")
    batching.add_argument("--url", default="http://127.0.0.1:8000", help="Triton's HTTP API (configs, model control)")
    batching.add_argument("--grpc-url", default="127.0.0.1:8001", help="Triton's gRPC address, for the sweep's load")
    batching.add_argument("--metrics-url", default="http://127.0.0.1:8002/metrics", help="Triton's metrics")
    batching.add_argument("--sweep", action="store_true",
                          help="measure candidates on the running server (needs explicit model control: "
                               "`sightline up --demo-faults`); every model goes back to the config it was served with")
    batching.add_argument("--rate", type=float, help="offered load of the sweep, req/s (default: the observed rate)")
    batching.add_argument("--seconds", type=float, default=20.0, help="load per candidate, seconds")
    batching.add_argument("--rounds", type=int, default=2,
                          help="times each candidate is measured, in alternating order (latencies pooled)")
    batching.add_argument("--max-candidates", type=int, default=6)
    batching.add_argument("--model-repository", default=str(DEFAULT_MODEL_REPOSITORY),
                          help="the configs the diff is written against")
    batching.add_argument("--out-dir", default=".sightline/advice")
    batching.set_defaults(func=cmd_advise_batching)

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
