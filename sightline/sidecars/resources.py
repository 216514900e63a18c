"""Resource collectors: the GPU through NVML, and Triton's processes through /proc.

Both are ``prometheus_client`` custom collectors: they read at scrape time and keep no
state of their own beyond the NVML handle. Without NVML (no driver, no GPU) the GPU
collector reports ``sightline_gpu_available 0`` and nothing else, without errors.
The /proc collector is off by default (``watch_processes``): the Python steps report their
own memory and CPU time through Triton's ``/metrics`` (``sightline.steps.telemetry.
ProcessReport``), so in Kubernetes the pod does not share its process namespace. Where the
sidecar does see Triton's processes, it reads only ``cmdline``, ``stat`` and ``status``,
which the kernel shows to any user (tests/unit/test_security_pod.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sightline import conventions as names
from sightline.procfs import classify, classify_pid, cpu_seconds, read_memory  # noqa: F401 - classify is re-exported

THROTTLE_REASONS = {
    "gpu_idle": 0x1,
    "applications_clocks": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal": 0x20,
    "hw_thermal": 0x40,
    "hw_power_brake": 0x80,
}


class GpuCollector(Collector):
    """GPU utilisation, memory, per-process memory, temperature, power, throttling.

    ``nvml`` is the ``pynvml`` module (``nvidia-ml-py``); tests pass a fake one.
    """

    def __init__(self, nvml: Any = None, process_names: Optional[dict[int, str]] = None) -> None:
        self._nvml = nvml
        self._ready = False
        self.process_names = process_names  # pid -> name, for per-process GPU memory
        self.error: Optional[str] = None
        try:
            if self._nvml is None:
                import pynvml

                self._nvml = pynvml
            self._nvml.nvmlInit()
            self._ready = True
        except Exception as exc:  # noqa: BLE001 - no driver, no library, no GPU: all mean "no GPU"
            self.error = str(exc) or type(exc).__name__

    def collect(self) -> Iterator[Any]:
        available = GaugeMetricFamily(names.GPU_AVAILABLE, "1 when NVML reports at least one GPU.")
        if not self._ready:
            available.add_metric([], 0)
            yield available
            return
        nvml = self._nvml
        try:
            count = nvml.nvmlDeviceGetCount()
        except Exception:  # noqa: BLE001
            count = 0
        available.add_metric([], 1 if count else 0)
        yield available
        if not count:
            return
        labels = ["gpu"]
        util = GaugeMetricFamily(names.GPU_UTILIZATION, "GPU busy fraction over the last sample.", labels=labels)
        used = GaugeMetricFamily(names.GPU_MEMORY_USED, "GPU memory in use.", labels=labels)
        total = GaugeMetricFamily(names.GPU_MEMORY_TOTAL, "GPU memory in total.", labels=labels)
        temp = GaugeMetricFamily(names.GPU_TEMPERATURE, "GPU temperature.", labels=labels)
        power = GaugeMetricFamily(names.GPU_POWER, "GPU power draw.", labels=labels)
        throttle = GaugeMetricFamily(names.GPU_THROTTLE_ACTIVE, "1 while a clock throttle reason is active.",
                                     labels=["gpu", "reason"])
        proc_mem = GaugeMetricFamily(names.GPU_PROCESS_MEMORY, "GPU memory used by a watched process.",
                                     labels=["gpu", "process"])
        for index in range(count):
            gpu = str(index)
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            rates = _try(nvml.nvmlDeviceGetUtilizationRates, handle)
            if rates is not None:
                util.add_metric([gpu], rates.gpu / 100.0)
            memory = _try(nvml.nvmlDeviceGetMemoryInfo, handle)
            if memory is not None:
                used.add_metric([gpu], float(memory.used))
                total.add_metric([gpu], float(memory.total))
            celsius = _try(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            if celsius is not None:
                temp.add_metric([gpu], float(celsius))
            milliwatts = _try(nvml.nvmlDeviceGetPowerUsage, handle)
            if milliwatts is not None:
                power.add_metric([gpu], milliwatts / 1000.0)
            reasons = _try(nvml.nvmlDeviceGetCurrentClocksThrottleReasons, handle)
            if reasons is not None:
                for name, bit in THROTTLE_REASONS.items():
                    throttle.add_metric([gpu, name], 1.0 if reasons & bit else 0.0)
            processes = _try(nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
            watched = self.process_names or {}
            per_name: dict[str, float] = {}
            for process in processes:
                name = watched.get(process.pid)
                if name is not None and process.usedGpuMemory is not None:
                    per_name[name] = per_name.get(name, 0.0) + float(process.usedGpuMemory)
            for name, value in per_name.items():
                proc_mem.add_metric([gpu, name], value)
        yield from (util, used, total, temp, power, throttle, proc_mem)


def _try(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or None when NVML does not support or fails that query."""
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - one unsupported NVML query must not hide the others
        return None


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    name: str  # bounded: "tritonserver" or "stub:<model>"
    rss_bytes: int  # VmRSS = heap + shared + file
    cpu_seconds: float
    heap_bytes: int = 0  # RssAnon: heap, stacks, allocator arenas (where a leak in code shows)
    shared_bytes: int = 0  # RssShmem: the Python backend's /dev/shm pools (grow to a high-water mark)


def scan_processes(proc: Path = Path("/proc")) -> list[ProcessSample]:
    samples = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = classify_pid(entry.name, proc)
            if name is None:
                continue
            memory = read_memory((entry / "status").read_text())
            cpu = cpu_seconds((entry / "stat").read_text())
            samples.append(ProcessSample(int(entry.name), name, memory["VmRSS"], cpu,
                                         memory["RssAnon"], memory["RssShmem"]))
        except (OSError, ValueError, IndexError):
            continue  # the process went away while we read it
    return samples


class ProcessCollector(Collector):
    """RSS and CPU time of tritonserver and each Python-backend stub, summed per label.

    The resident memory is also exported split by kind, because the two kinds mean different
    things: ``heap`` (RssAnon) that keeps growing is a leak in code; ``shared`` (RssShmem) is
    the Python backend's shared-memory pool, which grows in steps to hold the largest backlog
    so far and keeps that high-water mark (tritonserver and the stub map the same pool, so it
    shows in both)."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc

    def pids(self) -> dict[int, str]:
        return {s.pid: s.name for s in scan_processes(self.proc)}

    def collect(self) -> Iterable[Any]:
        rss = GaugeMetricFamily(names.PROCESS_RESIDENT_MEMORY, "Resident memory of Triton's processes.",
                                labels=["process"])
        cpu = CounterMetricFamily(names.PROCESS_CPU_SECONDS.removesuffix("_total"), "CPU time of Triton's processes.",
                                  labels=["process"])
        count = GaugeMetricFamily(names.PROCESS_COUNT, "Running Triton processes of this kind.", labels=["process"])
        split = GaugeMetricFamily(names.PROCESS_MEMORY, "Resident memory of Triton's processes by kind: heap (RssAnon) "
                                  "or shared (RssShmem, the Python backend's shared-memory pools).",
                                  labels=["process", "kind"])
        totals: dict[str, list[float]] = {}
        for sample in scan_processes(self.proc):
            entry = totals.setdefault(sample.name, [0.0, 0.0, 0.0, 0.0, 0.0])
            entry[0] += sample.rss_bytes
            entry[1] += sample.cpu_seconds
            entry[2] += 1
            entry[3] += sample.heap_bytes
            entry[4] += sample.shared_bytes
        for name, (memory, seconds, n, heap, shared) in sorted(totals.items()):
            rss.add_metric([name], memory)
            cpu.add_metric([name], seconds)
            count.add_metric([name], n)
            split.add_metric([name, "heap"], heap)
            split.add_metric([name, "shared"], shared)
        return [rss, cpu, count, split]
