"""Fault switches of the demo profile."""

from __future__ import annotations

import pytest

from sightline import faults
from sightline.steps import demo_fault

SERVED = {"name": "detector_model", "max_batch_size": 32, "backend": "python",
          "dynamic_batching": {"preferred_batch_size": [4, 8, 16], "max_queue_delay_microseconds": "2000"},
          "parameters": {"onnx_file": {"string_value": "model.onnx"}}}


def test_the_batcher_fault_dispatches_every_request_alone_and_keeps_the_rest_of_the_config():
    bad = faults.faulty_config("batcher", SERVED)
    assert bad["dynamic_batching"]["preferred_batch_size"] == [1]
    assert bad["dynamic_batching"]["max_queue_delay_microseconds"] == "0"
    assert bad["max_batch_size"] == 32 and bad["parameters"]["onnx_file"] == SERVED["parameters"]["onnx_file"]
    assert SERVED["dynamic_batching"]["preferred_batch_size"] == [4, 8, 16]  # the served config is not mutated
    # the config before the fault travels with it, so `clear` can load it back; twice injected, still the first
    assert faults.pre_fault_config(bad) == SERVED
    assert faults.pre_fault_config(faults.faulty_config("batcher", bad)) == SERVED
    assert faults.pre_fault_config(SERVED) is None


def test_the_leak_fault_is_a_step_parameter_and_refuses_nonsense():
    leaky = faults.faulty_config("leak", SERVED, leak_bytes=1024)
    assert leaky["parameters"][faults.LEAK_PARAMETER] == {"string_value": "1024"}
    with pytest.raises(faults.FaultError, match="leak_bytes must be positive"):
        faults.faulty_config("leak", SERVED, leak_bytes=0)
    with pytest.raises(faults.FaultError, match="unknown fault 'meteor'"):
        faults.faulty_config("meteor", SERVED)


def test_the_leak_parameter_is_ignored_outside_the_demo_profile(monkeypatch):
    params = {faults.LEAK_PARAMETER: "4096"}
    monkeypatch.delenv("SIGHTLINE_DEMO_FAULTS", raising=False)
    leak, warning = demo_fault.leak_bytes_from(params)
    assert leak == 0 and "only work in the demo profile" in warning
    monkeypatch.setenv("SIGHTLINE_DEMO_FAULTS", "1")
    assert demo_fault.leak_bytes_from(params) == (4096, None)
    assert demo_fault.leak_bytes_from({faults.LEAK_PARAMETER: "lots"})[0] == 0
    assert demo_fault.leak_bytes_from({}) == (0, None)


def test_an_unreachable_server_is_a_clear_error():
    with pytest.raises(faults.FaultError, match="cannot reach Triton"):
        faults.inject("http://127.0.0.1:1", "batcher")
