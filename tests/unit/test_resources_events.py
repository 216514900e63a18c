"""GPU and process collectors, and model-version events, without a GPU or a server."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from sightline.sidecars.events import ModelEvents
from sightline.sidecars.resources import GpuCollector, ProcessCollector, classify


class FakeNvml:
    NVML_TEMPERATURE_GPU = 0

    def nvmlInit(self):  # noqa: N802 - NVML's spelling
        pass

    def nvmlDeviceGetCount(self):  # noqa: N802
        return 1

    def nvmlDeviceGetHandleByIndex(self, index):  # noqa: N802
        return index

    def nvmlDeviceGetUtilizationRates(self, handle):  # noqa: N802
        return SimpleNamespace(gpu=87)

    def nvmlDeviceGetMemoryInfo(self, handle):  # noqa: N802
        return SimpleNamespace(used=6 << 30, total=16 << 30)

    def nvmlDeviceGetTemperature(self, handle, sensor):  # noqa: N802
        return 71

    def nvmlDeviceGetPowerUsage(self, handle):  # noqa: N802
        return 215_000

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):  # noqa: N802
        return 0x20  # software thermal slowdown

    def nvmlDeviceGetComputeRunningProcesses(self, handle):  # noqa: N802
        return [SimpleNamespace(pid=10, usedGpuMemory=3 << 30), SimpleNamespace(pid=99, usedGpuMemory=1 << 30)]


class BrokenNvml:
    def nvmlInit(self):  # noqa: N802
        raise OSError("NVML Shared Library Not Found")


def test_a_gpu_is_reported_with_memory_power_throttling_and_tritons_share():
    registry = CollectorRegistry()
    registry.register(GpuCollector(FakeNvml(), process_names={10: "tritonserver"}))
    value = registry.get_sample_value
    assert value("sightline_gpu_available") == 1
    assert value("sightline_gpu_utilization_ratio", {"gpu": "0"}) == 0.87
    assert value("sightline_gpu_memory_used_bytes", {"gpu": "0"}) == 6 << 30
    assert value("sightline_gpu_power_watts", {"gpu": "0"}) == 215.0
    assert value("sightline_gpu_throttle_active", {"gpu": "0", "reason": "sw_thermal"}) == 1
    assert value("sightline_gpu_throttle_active", {"gpu": "0", "reason": "hw_slowdown"}) == 0
    assert value("sightline_gpu_process_memory_bytes", {"gpu": "0", "process": "tritonserver"}) == 3 << 30


def test_without_nvml_the_collector_says_no_gpu_and_nothing_else():
    registry = CollectorRegistry()
    collector = GpuCollector(BrokenNvml())
    registry.register(collector)
    assert registry.get_sample_value("sightline_gpu_available") == 0
    assert "NVML" in collector.error
    assert [m.name for m in registry.collect()] == ["sightline_gpu_available"]


def test_triton_processes_get_bounded_labels():
    assert classify(["/x/bin/tritonserver", "--model-repository=/m"]) == "tritonserver"
    stub = ["/s/backends/python/triton_python_backend_stub", "/repo/model_repository/preprocess/1/model.py", "x"]
    assert classify(stub) == "stub:preprocess"
    assert classify(["/usr/bin/python3", "app.py"]) is None


def test_the_process_collector_reads_this_machines_proc():
    registry = CollectorRegistry()
    registry.register(ProcessCollector())
    assert list(registry.collect())  # families exist even when no Triton runs


def test_a_version_switch_is_counted_and_the_old_version_is_no_longer_served():
    registry = CollectorRegistry()
    events = ModelEvents(registry)
    assert events.update([{"name": "detector_model", "version": "1", "state": "READY"}], now=100) == []
    changed = events.update([{"name": "detector_model", "version": "1", "state": "UNAVAILABLE"},
                             {"name": "detector_model", "version": "2", "state": "READY"}], now=200)
    assert changed == ["detector_model"]
    value = registry.get_sample_value
    assert value("sightline_model_version_switches_total", {"model": "detector_model"}) == 1
    assert value("sightline_model_version_info", {"model": "detector_model", "version": "2"}) == 1
    assert value("sightline_model_version_info", {"model": "detector_model", "version": "1"}) is None
    assert value("sightline_model_ready", {"model": "detector_model", "version": "1"}) == 0
    assert value("sightline_model_version_change_timestamp_seconds", {"model": "detector_model"}) == 200


def test_memory_is_split_into_heap_and_shared_as_the_kernel_counts_it(tmp_path):
    """A real process, named like a Python-backend stub, that touches 64 MB of heap and
    32 MB of a /dev/shm segment: the collector reports each under its own kind, so a pool
    growing is not mistaken for a leak in code (and a leak in code is not hidden by a pool)."""
    import os
    import subprocess
    import sys

    segment = f"/dev/shm/sightline_memtest_{os.getpid()}"
    script = (
        "import mmap, os, sys\n"
        "heap = bytearray(64 << 20)\n"
        "for i in range(0, len(heap), 4096): heap[i] = 1\n"
        f"fd = os.open({segment!r}, os.O_CREAT | os.O_RDWR, 0o600)\n"
        "os.ftruncate(fd, 32 << 20)\n"
        "shm = mmap.mmap(fd, 32 << 20)\n"
        "for i in range(0, len(shm), 4096): shm[i] = 1\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n")
    model = tmp_path / "sightline_memtest" / "1" / "model.py"  # what a stub's command line names
    model.parent.mkdir(parents=True)
    model.write_text(script)
    child = subprocess.Popen(["triton_python_backend_stub", str(model)], executable=sys.executable,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        registry = CollectorRegistry()
        registry.register(ProcessCollector())
        value = registry.get_sample_value
        labels = {"process": "stub:sightline_memtest"}
        heap = value("sightline_process_memory_bytes", {**labels, "kind": "heap"})
        shared = value("sightline_process_memory_bytes", {**labels, "kind": "shared"})
        total = value("sightline_process_resident_memory_bytes", labels)
        assert heap >= 64 << 20 and shared >= 32 << 20, (heap, shared)
        assert shared < 40 << 20  # the heap's pages are not counted as shared
        assert total >= heap + shared
        assert value("sightline_process_count", labels) == 1
    finally:
        child.stdin.close()
        child.wait(timeout=10)
        child.stdout.close()
        Path(segment).unlink(missing_ok=True)
