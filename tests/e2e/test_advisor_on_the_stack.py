"""`sightline advise batching` on the real stack: it reads Prometheus, sweeps the real server
through model control, proposes a diff that applies, and leaves the server and the files as
they were."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sightline import advise, loadgen
from sightline.runtime import DEFAULT_MODEL_REPOSITORY
from sightline.stack import LocalStack

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _files(repository: Path) -> dict:
    return {p: p.read_text() for step in advise.STEPS for p in advise.config_files(repository, step)}


def test_advise_batching_observes_sweeps_and_proposes_a_diff_without_changing_anything(scaled_stack_options, tmp_path):
    scaled_stack_options.triton.demo_faults = True  # explicit model control: the sweep reloads models
    committed_files = _files(DEFAULT_MODEL_REPOSITORY)
    with LocalStack(scaled_stack_options) as stack:
        triton = advise.Triton(stack.triton.http_url, stack.triton.metrics_url)
        served_before = advise.current_settings(triton)
        cameras = [loadgen.CameraSpec(f"cam-{i + 1}", 10.0) for i in range(4)]
        traffic = asyncio.run(loadgen.run(stack.triton.grpc_url, cameras, 20.0, frames_per_camera=advise.SWEEP_FRAMES))  # what Prometheus observes
        assert traffic.completed == traffic.offered and not traffic.errors
        out = tmp_path / "advice"
        done = subprocess.run(
            [sys.executable, "-m", "sightline.cli", "advise", "batching", "--target-p95", "120ms", "--window", "12s",
             "--prometheus", f"http://127.0.0.1:{scaled_stack_options.prometheus_port}", "--url", stack.triton.http_url,
             "--grpc-url", stack.triton.grpc_url, "--metrics-url", stack.triton.metrics_url, "--sweep",
             "--seconds", "3", "--rounds", "2", "--max-candidates", "3", "--out-dir", str(out)],
            capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
        assert done.returncode == 0, done.stdout + done.stderr
        served_after = advise.current_settings(triton)
    assert served_after == served_before  # every model back as it was served
    assert _files(DEFAULT_MODEL_REPOSITORY) == committed_files  # it never rewrites a config
    record = json.loads((out / "batching.json").read_text())
    observed = record["observed"]["steps"]
    assert observed["preprocess"]["rate"] == pytest.approx(40.0, rel=0.35)  # 4 cameras x 10 fps, from Prometheus
    assert observed["detector_model"]["batch"] >= 1.0
    trials = record["trials"]
    assert [t["label"] for t in trials][0] == "committed" and len(trials) == 3
    assert all(t["p95_ms"] is not None and t["served_per_s"] > 0 for t in trials)
    assert all(t["offered_per_s"] == pytest.approx(40.0, rel=0.2) for t in trials)  # the observed rate, swept
    assert all(t["batch"] >= 1.0 and t["queue_ms"]["detector_model"] >= 0 for t in trials)  # Triton's own counters
    assert record["chosen"] in {t["label"] for t in trials}
    assert (out / "batching.png").stat().st_size > 10_000
    assert "Measured: the same open-loop load" in done.stdout and "<- proposed" in done.stdout
    diff = out / "batching.diff"
    if record["chosen"] == "committed":
        assert not diff.exists() and "keep the committed settings" in done.stdout
    else:
        copy = tmp_path / "checkout"
        shutil.copytree(DEFAULT_MODEL_REPOSITORY, copy / "model_repository", ignore=shutil.ignore_patterns("*.onnx"))
        subprocess.run(["git", "init", "-q", str(copy)], check=True)
        text = diff.read_text().replace(f"{DEFAULT_MODEL_REPOSITORY.resolve().parent}/", "")
        (tmp_path / "p.diff").write_text(text)
        subprocess.run(["git", "apply", "--check", str(tmp_path / "p.diff")], cwd=copy, check=True)


def test_the_sweep_on_a_server_without_model_control_says_what_it_needs(triton, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sightline.cli", "advise", "batching", "--target-p95", "120ms", "--prometheus",
         "http://127.0.0.1:9", "--url", triton.http_url, "--grpc-url", triton.grpc_url, "--metrics-url",
         triton.metrics_url, "--sweep", "--rate", "20", "--seconds", "2", "--max-candidates", "2",
         "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "explicit model control" in done.stderr, done.stdout + done.stderr


def test_fault_clear_loads_back_the_config_served_before_the_fault(tmp_path):
    from sightline import faults
    from sightline.runtime import ServerOptions, TritonServer, free_port

    options = ServerOptions(state_dir=tmp_path / "state", http_port=free_port(), grpc_port=free_port(),
                            metrics_port=free_port(), ready_timeout_s=180, demo_faults=True)
    with TritonServer(options) as server:
        def delay() -> str:
            return str(faults.model_config(server.http_url, "detector_model")["dynamic_batching"]
                       ["max_queue_delay_microseconds"])

        before = delay()
        faults.inject(server.http_url, "batcher")
        assert delay() == "0"
        faults.clear(server.http_url, "batcher")  # a plain load would keep the faulty config: the files did not change
        assert delay() == before != "0"
