"""A process's memory and CPU time as Linux's /proc shows them.

Read by the Python steps about themselves (and the postprocess step about tritonserver, its
parent), so that no other container needs to see Triton's processes, and by the benchmarks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

# VmRSS = RssAnon (heap, stacks, allocator arenas) + RssShmem (shared memory: the Python
# backend's /dev/shm pools) + RssFile (mapped files: libraries, the model).
MEMORY_FIELDS = ("VmRSS", "RssAnon", "RssShmem", "RssFile")


def read_memory(status_text: str) -> dict[str, int]:
    """Resident memory from the text of /proc/PID/status, in bytes; a field the kernel does
    not show is 0.

    >>> read_memory("Name:\\tx\\nVmRSS:\\t  300 kB\\nRssAnon:\\t  200 kB\\nRssShmem:\\t 100 kB\\n")["RssAnon"]
    204800
    """
    out = dict.fromkeys(MEMORY_FIELDS, 0)
    for line in status_text.splitlines():
        key, _, rest = line.partition(":")
        if key in out:
            out[key] = int(rest.split()[0]) * 1024  # the kernel writes kB
    return out


def memory_of(pid: int | str, proc: Path = Path("/proc")) -> dict[str, int]:
    return read_memory((proc / str(pid) / "status").read_text())


def cpu_seconds(stat_text: str, ticks: int | None = None) -> float:
    """User plus system CPU time from the text of /proc/PID/stat.

    >>> cpu_seconds("42 (a b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0", ticks=100)
    3.0
    """
    fields = stat_text[stat_text.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / (ticks or os.sysconf("SC_CLK_TCK"))


def cpu_seconds_of(pid: int | str, proc: Path = Path("/proc")) -> float:
    return cpu_seconds((proc / str(pid) / "stat").read_text())


_STUB_MODEL = re.compile(r"/([^/\s]+)/\d+/model\.py")


def classify(cmdline: list[str]) -> Optional[str]:
    """The bounded process label of a Triton process, or None for other processes.

    >>> classify(["/opt/bin/tritonserver", "--model-repository=/m"])
    'tritonserver'
    """
    if not cmdline:
        return None
    program = os.path.basename(cmdline[0])
    if program == "tritonserver":
        return "tritonserver"
    if program == "triton_python_backend_stub":
        match = _STUB_MODEL.search(" ".join(cmdline[1:2]))
        return f"stub:{match.group(1)}" if match else "stub:unknown"
    return None


def classify_pid(pid: int | str, proc: Path = Path("/proc")) -> Optional[str]:
    """:func:`classify` of a running process's command line; None when it cannot be read."""
    try:
        parts = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return classify([part.decode(errors="replace") for part in parts if part])
