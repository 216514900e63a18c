"""The serving side of the demo's leak fault: read the switch, nothing else.

The operations side (``sightline.faults``: the admin HTTP client that reloads a model with a
faulty config) sets a model parameter; this module only reads it, so the serving path
imports nothing from the operations layer. The parameter is honoured only when the demo
profile put ``SIGHTLINE_DEMO_FAULTS=1`` in Triton's environment; a production server ignores
it and says so in its log.
"""

from __future__ import annotations

import os
from typing import Mapping

LEAK_PARAMETER = "demo_fault_leak_bytes_per_request"
DEMO_FAULTS_ENV = "SIGHTLINE_DEMO_FAULTS"


def leak_bytes_from(parameters: Mapping[str, str]) -> tuple[int, str | None]:
    """(bytes to leak per request, warning) for a step's parameters and environment."""
    raw = parameters.get(LEAK_PARAMETER)
    if raw is None:
        return 0, None
    if os.environ.get(DEMO_FAULTS_ENV) != "1":
        return 0, f"{LEAK_PARAMETER} ignored: fault switches only work in the demo profile"
    try:
        return max(0, int(raw)), None
    except ValueError:
        return 0, f"{LEAK_PARAMETER}={raw!r} is not an integer; ignored"
