"""Starting and stopping the real server: clear errors, clean shutdown."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from corpus import good_jpeg

from sightline.runtime import DEFAULT_MODEL_REPOSITORY, ServerOptions, TritonServer, TritonStartError, free_port

pytestmark = pytest.mark.integration
SIGHTLINE = [sys.executable, "-m", "sightline.cli"]


def options(tmp_path: Path, repository: Path = DEFAULT_MODEL_REPOSITORY, **overrides) -> ServerOptions:
    base = dict(
        model_repository=repository,
        state_dir=tmp_path / "state",
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        ready_timeout_s=120,
    )
    base.update(overrides)
    return ServerOptions(**base)


def test_a_port_in_use_is_named_before_triton_starts(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(TritonStartError, match=f"grpc port {port} already in use"):
            TritonServer(options(tmp_path, grpc_port=port)).start()


def test_a_model_that_fails_to_load_is_reported_with_its_log_lines(tmp_path):
    repository = tmp_path / "repo"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY, repository)
    (repository / "postprocess" / "1" / "model.py").write_text("raise RuntimeError('postprocess is broken on purpose')\n")
    server = TritonServer(options(tmp_path, repository))
    with pytest.raises(TritonStartError) as caught:
        server.start()
    message = str(caught.value)
    assert "postprocess is broken on purpose" in message
    assert "Triton log" in message
    assert server.process.poll() is not None  # nothing left running


def test_a_missing_repository_is_refused(tmp_path):
    with pytest.raises(TritonStartError, match="no Sightline model repository"):
        TritonServer(options(tmp_path, tmp_path / "nowhere")).start()


def test_sightline_up_serves_and_stops_the_whole_stack_cleanly_on_sigterm(tmp_path):
    opts = options(tmp_path)
    command = [*SIGHTLINE, "up", "--state-dir", str(opts.state_dir), "--http-port", str(opts.http_port),
               "--grpc-port", str(opts.grpc_port), "--metrics-port", str(opts.metrics_port),
               "--otlp-port", str(free_port()), "--monitor-port", str(free_port()), "--prometheus-port", str(free_port()),
               "--tap-port", str(free_port()), "--alertmanager-port", str(free_port()), "--pager-port", str(free_port())]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        ready = False
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = urllib.request.urlopen(f"http://127.0.0.1:{opts.http_port}/v2/health/ready", timeout=2).status == 200
            except OSError:
                pass
            if ready:
                break
            time.sleep(0.5)
        if not ready:  # say why (a port in use, a crash), and close the pipe
            process.kill()
            output, _ = process.communicate(timeout=30)
        assert ready, f"sightline up never became ready:\n{output}"
        image = tmp_path / "frame.jpg"
        image.write_bytes(good_jpeg())
        infer = subprocess.run([*SIGHTLINE, "infer", str(image), "--url", f"127.0.0.1:{opts.grpc_port}", "--json",
                                "--camera", "cam-7"], capture_output=True, text=True, timeout=60)
        assert infer.returncode == 0, infer.stderr
        payload = json.loads(infer.stdout)
        assert payload[0]["camera_id"] == "cam-7" and len(payload[0]["request_id"]) == 36
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "Triton stopped (exit status 0)" in output
    assert "monitor exit status 0" in output and "prometheus exit status 0" in output
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{opts.http_port}/v2/health/live", timeout=2)
