"""`sightline infer` and `export`: send frames to a server, build and export models."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sightline import modelspec
from sightline.commands._common import _detections_table, console, err_console
from sightline.runtime import (
    DEFAULT_MODEL_REPOSITORY,
)


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
