"""Traffic with an injected error burst, for the demo and the end-to-end alerting test.

Real requests go to the real server: good frames from the scene generator and, during the
burst, corrupt frames that Triton refuses (``INVALID_ARG``). Those are real failures in
``nv_inference_request_failure``, so the availability SLO burns for real.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from sightline.client import DetectorClient, InferenceError, encode_frame
from sightline.export.scenes import Conditions, generate_scene

CORRUPT_FRAME = b"\xff\xd8 this is not a JPEG, it is an injected fault"


@dataclass
class Phase:
    name: str
    seconds: float
    error_fraction: float = 0.0


@dataclass
class TrafficReport:
    sent: int = 0
    failed: int = 0
    by_phase: dict = field(default_factory=dict)


def frames(count: int = 16) -> List[bytes]:
    lights = ("day", "day", "dusk", "day")
    return [encode_frame(generate_scene(seed=990_000 + i, conditions=Conditions(brightness=lights[i % 4])).image)
            for i in range(count)]


def drive(client: DetectorClient, phases: List[Phase], rate_per_s: float = 10.0,
          on_phase: Optional[Callable[[Phase], None]] = None, stop: Optional[threading.Event] = None,
          until: Optional[Callable[[], bool]] = None) -> TrafficReport:
    """Send requests at about ``rate_per_s``; each phase sets the share of corrupt frames.

    A phase ends after its seconds, or early when ``until()`` turns true.
    """
    good = frames()
    report = TrafficReport()
    interval = 1.0 / rate_per_s
    index = 0
    for phase in phases:
        if on_phase is not None:
            on_phase(phase)
        ended = time.monotonic() + phase.seconds
        errors_due = 0.0
        counts = report.by_phase.setdefault(phase.name, {"sent": 0, "failed": 0})
        while time.monotonic() < ended:
            if (stop is not None and stop.is_set()) or (until is not None and until()):
                break
            started = time.monotonic()
            errors_due += phase.error_fraction
            corrupt = errors_due >= 1.0
            if corrupt:
                errors_due -= 1.0
            camera = f"cam-{index % 4 + 1}"
            try:
                client.infer(CORRUPT_FRAME if corrupt else good[index % len(good)], camera_id=camera)
            except InferenceError:
                report.failed += 1
                counts["failed"] += 1
            report.sent += 1
            counts["sent"] += 1
            index += 1
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    return report


def notifications(pager_url: str) -> list[dict]:
    with urllib.request.urlopen(f"{pager_url}/notifications", timeout=5) as response:
        return json.load(response)


def has(records: list[dict], status: str, channel: str = "page", alertname: Optional[str] = None) -> bool:
    return any(r["status"] == status and r["channel"] == channel and (alertname is None or r["alertname"] == alertname)
               for r in records)


AVAILABILITY_ALERT = "SightlineAvailabilityBudgetBurn"


def open_pages(records: list[dict], alertname: Optional[str] = None) -> set:
    """(alertname, tier) of pages whose latest notification is 'firing'."""
    latest: dict = {}
    for record in records:
        if record["channel"] == "page" and (alertname is None or record["alertname"] == alertname):
            latest[(record["alertname"], record["burnrate_tier"])] = record["status"]
    return {key for key, status in latest.items() if status == "firing"}


def paged_and_resolved(records: list[dict], alertname: Optional[str] = None) -> bool:
    return has(records, "firing", alertname=alertname) and not open_pages(records, alertname)
