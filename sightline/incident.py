"""Incidents on the running stack: traffic, faults, the pages they cause, and their diagnosis.

``drive`` sends closed-loop traffic with an error burst of corrupt frames that Triton
refuses (``INVALID_ARG``): real failures in ``nv_inference_request_failure``, so the
availability SLO burns for real (the alerting and boards tests). ``run_incident`` runs
simulated cameras through a warm-up and a healthy baseline, switches one of the
incident faults on, watches Prometheus's alerts and the pager, and runs ``sightline diagnose`` over
the fault's window while the cameras keep sending (``make demo`` and the scenario tests).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from sightline import conventions as names
from sightline import scenarios
from sightline.client import DetectorClient, InferenceError, encode_frame
from sightline.export.scenes import Conditions, generate_scene
from sightline.http_client import HttpError
from sightline.pager import fetch_notifications

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
    return fetch_notifications(pager_url)


def has(records: list[dict], status: str, channel: str = "page", alertname: Optional[str] = None) -> bool:
    return any(r["status"] == status and r["channel"] == channel and (alertname is None or r["alertname"] == alertname)
               for r in records)


AVAILABILITY_ALERT = names.ALERT_AVAILABILITY_BURN


def open_pages(records: list[dict], alertname: Optional[str] = None) -> set:
    """(alertname, tier) of pages whose latest notification is 'firing'."""
    latest: dict = {}
    for record in records:
        if record["channel"] == "page" and (alertname is None or record["alertname"] == alertname):
            latest[(record["alertname"], record["burnrate_tier"])] = record["status"]
    return {key for key, status in latest.items() if status == "firing"}


def paged_and_resolved(records: list[dict], alertname: Optional[str] = None) -> bool:
    return has(records, "firing", alertname=alertname) and not open_pages(records, alertname)


# -- scenarios on the running stack ---------------------------------------------------------------

@dataclass(frozen=True)
class Expectation:
    alert: str  # the alert the scenario must fire
    cause: str  # the hypothesis key `sightline diagnose` must rank first
    related_pages: tuple = ()  # pages that this incident may rightly cause


def fps_for(scenario: str | None) -> float:
    """Frames per second per camera (four cameras) for a scenario, or for a healthy run."""
    return scenarios.spec(scenario).fps if scenario else DEFAULT_FPS


DEFAULT_FPS = 10.0
# What each scenario must show (sightline.scenarios registers them together).
EXPECTED = {name: Expectation(spec.alert, spec.cause, spec.related_pages) for name, spec in scenarios.SCENARIOS.items()}


def alert_key(labels: dict) -> str:
    """An alert's name, with the process or camera it names when it names one (memory growth
    is per process, a silent camera per camera)."""
    name = labels.get("alertname", "?")
    if "process" in labels:
        return f'{name}{{process="{labels["process"]}"}}'
    if name.startswith(names.ALERT_CAMERA_PREFIX) and "camera" in labels:
        return f'{name}{{camera="{labels["camera"]}"}}'
    return name


@dataclass
class IncidentRun:
    scenario: Optional[str]
    started_at: float
    fault_at: Optional[float] = None
    first_firing: dict = field(default_factory=dict)  # alertname -> unix time first seen firing (after the fault)
    firing_at_fault: set = field(default_factory=set)  # alerts still firing when the fault went live
    pages: list = field(default_factory=list)  # alertnames paged (firing) during the run
    pages_before_fault: list = field(default_factory=list)  # pages while traffic was still healthy
    # every alert seen firing while traffic was still healthy: alert key -> severity
    fired_before_fault: dict = field(default_factory=dict)
    diagnosis: object = None
    report_path: object = None
    load: object = None

    def healthy_alerts(self) -> dict:
        """Pages and tickets (critical and warning) that fired before the fault: a healthy
        system fires none. Info alerts (a model version changed) are not counted."""
        return {name: severity for name, severity in self.fired_before_fault.items() if severity != "info"}

    def fired_after_s(self, alertname: str) -> Optional[float]:
        """Seconds from the fault to the alert; None if it never fired or already fired before."""
        at = self.first_firing.get(alertname)
        if at is None or self.fault_at is None or alertname in self.firing_at_fault or at < self.fault_at:
            return None
        return round(at - self.fault_at, 1)


def render_camera_frames(scenario: Optional[str], cameras: int = 4, fps: float = DEFAULT_FPS) -> None:
    """Render (and cache in this process) the frames ``run_incident`` will send, before the
    stack starts: 512 frames a camera take half a minute, and expected cameras that start
    that late after the server are rightly judged silent."""
    from sightline import loadgen

    specs = [loadgen.CameraSpec(f"cam-{i + 1}", fps) for i in range(cameras)]
    loadgen.camera_frames(specs)
    if scenario:
        loadgen.camera_frames(specs, scenario=loadgen.Scenario(scenario, 0.0))


def run_incident(grpc_url: str, http_url: str, prometheus_url: str, pager_url: Optional[str], scenario: Optional[str],
                 cameras: int = 4, fps: float = 10.0, warmup_s: float = 15.0, baseline_s: float = 60.0,
                 timeout_s: float = 150.0, settle_s: float = 30.0, report_dir=None,
                 on_event: Optional[Callable[[str], None]] = None, stop: Optional[threading.Event] = None) -> IncidentRun:
    """Cameras for ``warmup_s + baseline_s``, then the scenario's fault until its alert fires
    (or ``timeout_s``), then ``sightline diagnose`` over the fault's window, load still running.

    ``scenario=None`` is a healthy run of ``warmup_s + baseline_s + timeout_s`` seconds.
    A poll of Prometheus or the pager that fails is reported and skipped, not fatal.
    """
    import asyncio
    from pathlib import Path

    from sightline import faults, loadgen
    from sightline.boards_cli import Prometheus, PrometheusError
    from sightline.diagnose import diagnose, write_report

    say = on_event or (lambda text: None)
    prom = Prometheus(prometheus_url)
    specs = [loadgen.CameraSpec(f"cam-{i + 1}", fps) for i in range(cameras)]
    done = threading.Event()
    run = IncidentRun(scenario, time.time())
    fault_start = warmup_s + baseline_s
    plan = loadgen.Scenario(scenario, fault_start) if scenario else None
    result: dict = {}

    lock = threading.Lock()  # the load thread marks the fault; the main thread polls alerts
    firing_now: set = set()

    def mark_fault() -> None:
        with lock:
            run.fault_at = time.time()
            run.firing_at_fault = set(firing_now)
            run.first_firing.clear()  # from here on, "first firing" counts from the fault
            already = sorted(firing_now)
        say(f"fault '{scenario}' is live" + (f"; already firing: {', '.join(already)}" if already else ""))

    def load() -> None:
        try:
            result["report"] = asyncio.run(loadgen.run(
                grpc_url, specs, fault_start + timeout_s + settle_s + 30, scenario=plan, admin_url=http_url,
                keep_fault=True, until=done.is_set, on_fault=mark_fault))
        except BaseException as exc:  # noqa: BLE001 - surfaced below, in the caller's thread
            result["error"] = exc

    say(f"rendering {cameras} x 512 camera frames (cached when rendered before the stack started)")
    pools = loadgen.camera_frames(specs)  # cached for the load thread; rendering must not eat into the baseline
    if plan is not None:
        loadgen.camera_frames(specs, scenario=plan)
    # Warm every step up one request at a time first: cold Python stubs and a cold ONNX
    # Runtime session answer their first requests slowly, and on compressed SLO windows an
    # open-loop burst into a cold server is enough to page. The first camera's own daylight
    # frames, the last 32 of its cycle (the load reaches them 48 s later): the tap sends
    # warm-up records to the drift window too, and healthy traffic must be what it compares with.
    say("warming the server up")
    with DetectorClient(grpc_url) as client:
        for frame in pools[0][-32:]:
            client.infer(frame, camera_id="cam-1")
    run.started_at = time.time()
    thread = threading.Thread(target=load, name="sightline-load", daemon=True)
    thread.start()
    expected = EXPECTED[scenario].alert if scenario else None
    deadline = time.monotonic() + fault_start + timeout_s + 10
    try:
        while time.monotonic() < deadline and thread.is_alive():
            if stop is not None and stop.is_set():
                break
            try:
                firing = {alert_key(a["metric"]): a["metric"] for a in prom.query('ALERTS{alertstate="firing"}')}
                records = notifications(pager_url) if pager_url else []
            except (PrometheusError, HttpError, OSError, ValueError) as exc:  # a slow poll on a busy machine
                say(f"poll failed, skipped: {exc}")
                time.sleep(1.0)
                continue
            now = time.time()
            with lock:
                for name, labels in firing.items():
                    if run.fault_at is None:
                        run.fired_before_fault.setdefault(name, labels.get("severity", ""))
                    if name not in run.first_firing:
                        run.first_firing[name] = now
                        if name not in firing_now:
                            say(f"alert firing: {name} ({labels.get('severity', '')})")
                firing_now.clear()
                firing_now.update(firing)
            for record in records:
                if record["channel"] == "page" and record["status"] == "firing" and record["alertname"] not in run.pages:
                    run.pages.append(record["alertname"])
                    if run.fault_at is None:
                        run.pages_before_fault.append(record["alertname"])
                    tier = f" [{record['burnrate_tier']}]" if record.get("burnrate_tier") else ""
                    say(f"PAGE: {record['alertname']}{tier}: {record.get('summary', '')}".rstrip(": "))
            if scenario is None and now - run.started_at >= fault_start + timeout_s:
                break
            if run.fired_after_s(expected or "") is not None and now - run.fault_at >= settle_s:
                break
            time.sleep(1.0)
        if "error" in result:
            raise result["error"]
        stopped = stop is not None and stop.is_set()
        if stopped or (scenario is not None and run.fault_at is None):
            say("stopped before the fault went live: no diagnosis" if stopped else "the fault never went live")
            return run
        end = time.time()
        window_start = run.fault_at if run.fault_at is not None else run.started_at + fault_start
        since = max(10.0, end - window_start - 1)
        baseline = end - (run.started_at + warmup_s)
        say(f"diagnosing: now = the last {since:.0f}s, baseline = the {baseline - since:.0f}s before")
        run.diagnosis = diagnose(prom, since, baseline, now=end)
        run.report_path = write_report(prom, run.diagnosis, Path(report_dir or ".sightline/incidents"))
    finally:
        done.set()
        thread.join(timeout=90)
        run.load = result.get("report")
        if scenario in faults.FAULTS and run.fault_at is not None:
            try:
                faults.clear(http_url, scenario)
            except faults.FaultError as exc:  # never hide the run's own outcome behind the cleanup
                say(f"could not switch the fault off: {exc}")
    return run
