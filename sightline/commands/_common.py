"""What every command group shares: the consoles, the server options and signal handling."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sightline.runtime import (
    DEFAULT_MODEL_REPOSITORY,
    DEFAULT_STATE_DIR,
    ServerOptions,
    TritonServer,
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


def _detections_table(title: str, rows: list[dict]) -> Table:
    table = Table(title=title)
    for column in ("frame", "camera", "class", "score", "box (x1, y1, x2, y2)"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[key]) for key in ("frame", "camera", "class", "score", "box")))
    return table
