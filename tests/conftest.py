"""Shared fixtures: the bad-input corpus and one real Triton server per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from corpus import bomb_jpeg, good_jpeg, zero_size_png
from hypothesis import HealthCheck, settings

from sightline.runtime import DEFAULT_MODEL_REPOSITORY, ServerOptions, TritonServer, free_port

# `make test` runs every property test with fixed examples (derandomized: the same cases on
# every run and machine, so a failure reproduces); HYPOTHESIS_PROFILE=explore draws new ones.
# No deadline and no too-slow check: the machine is shared, and slowness is the benchmarks' job.
settings.register_profile("fixed", derandomize=True, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))


@pytest.fixture(scope="session")
def bad_frames() -> dict[str, bytes]:
    """Encoded payloads that must each be refused, keyed by the expected reason."""
    jpeg = good_jpeg()
    return {
        "empty": b"",
        "not_an_image": b"GIF89a this is not a frame we accept",
        "truncated": jpeg[: len(jpeg) // 2],
        "too_many_pixels": bomb_jpeg(),
        "zero_size": zero_size_png(),
    }


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory):
    """The real tritonserver from the wheel, serving the committed model repository."""
    state = tmp_path_factory.mktemp("sightline-state")
    options = ServerOptions(
        model_repository=DEFAULT_MODEL_REPOSITORY,
        state_dir=state,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        ready_timeout_s=180,
    )
    with TritonServer(options) as server:
        yield server


REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def scaled_stack_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A whole local stack on free ports, SLO windows compressed 60x, audit frames in tmp."""
    from sightline.stack import StackOptions

    monkeypatch.setenv("SIGHTLINE_MONITOR_AUDIT_DIR", str(tmp_path / "audit"))
    triton = ServerOptions(state_dir=tmp_path / "state", http_port=free_port(), grpc_port=free_port(),
                           metrics_port=free_port(), ready_timeout_s=180)
    return StackOptions(triton=triton, monitor_otlp_port=free_port(), monitor_metrics_port=free_port(),
                        monitor_tap_port=free_port(), prometheus_port=free_port(),
                        alertmanager_port=free_port(), pager_port=free_port(), time_scale=60)
