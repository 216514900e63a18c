"""``sightline load``: an open-loop camera-stream simulator.

N cameras each send frames at a set FPS, on a fixed cadence or with Poisson arrivals. The
schedule is computed up front and every request is sent at its scheduled time whether or
not earlier ones have answered (open loop), and its latency is measured from that
scheduled time, so a slow server cannot hide its queue (no coordinated omission). When
more than ``max_in_flight`` requests are outstanding the frame is dropped and counted, as
a camera whose gateway is backed up would drop it.

Requests go through tritonclient's asyncio gRPC client with a ``request_id``, a W3C
``traceparent`` and the stream parameters a camera gateway sends: ``camera_id``,
``frame_seq`` (the camera's frame counter) and ``capture_time_ms`` (the scheduled capture
time), so the server can count gaps and late frames.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from sightline import modelspec, scenarios
from sightline.client import encode_frame, new_traceparent
from sightline.durations import parse_seconds
from sightline.export.scenes import Conditions, generate_scene

CORRUPT_FRAME = b"\xff\xd8 an injected fault, not a JPEG"


@dataclass(frozen=True)
class CameraSpec:
    camera_id: str
    fps: float
    conditions: Conditions = Conditions()




@dataclass(frozen=True)
class Scenario:
    """A fault from ``start_s`` on: upstream (the simulator changes what it sends) or, for
    ``batcher`` and ``leak``, inside the server through the demo profile's fault switches."""

    name: str
    start_s: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "Scenario":
        name, _, start = text.partition("@")
        scenarios.spec(name)  # an unknown name is a ValueError naming the known ones
        try:
            seconds = parse_seconds(start) if start else 0.0
        except ValueError as exc:
            raise ValueError(f"{text!r}: start must look like 30, 30s or 2m") from exc
        return cls(name, seconds)

    def active(self, at_s: float) -> bool:
        return at_s >= self.start_s

    @property
    def server_side(self) -> bool:
        return self.spec.server_fault  # switched inside Triton (sightline.faults), demo profile only

    @property
    def spec(self) -> scenarios.ScenarioSpec:
        """What the cameras do while this scenario is active (sightline.scenarios)."""
        return scenarios.spec(self.name)


@dataclass(frozen=True)
class Send:
    at_s: float  # offset from the start of the run
    camera: int
    frame: int
    corrupt: bool = False
    skipped: bool = False  # captured, never sent (a stuttering camera)


def schedule(cameras: Sequence[CameraSpec], duration_s: float, arrivals: str = "constant", seed: int = 0,
             error_fraction: float = 0.0, scenario: Optional[Scenario] = None) -> List[Send]:
    """Every send of the run, in time order. Constant cadence starts each camera at a
    random phase so cameras do not fire in lockstep, unless the scenario's cameras are
    synchronized (one shared phase)."""
    if arrivals not in ("constant", "poisson"):
        raise ValueError(f"arrivals must be 'constant' or 'poisson', got {arrivals!r}")
    rng = np.random.default_rng(seed)
    sends: List[Send] = []
    synchronized = scenario is not None and scenario.spec.synchronized
    shared_phase = float(rng.uniform(0, 1)) if synchronized else 0.0  # in periods
    for index, camera in enumerate(cameras):
        if camera.fps <= 0:
            raise ValueError(f"{camera.camera_id}: fps must be positive, got {camera.fps}")
        period = 1.0 / camera.fps
        if arrivals == "constant":
            t = shared_phase * period if synchronized else float(rng.uniform(0, period))
        else:
            t = float(rng.exponential(period))
        frame = 0
        affected = index == len(cameras) - 1
        while t < duration_s:
            faulty = scenario is not None and scenario.active(t)
            fault = scenario.spec if faulty else None
            delivers = fault.last_camera_delivers if fault is not None and affected else 1.0
            if delivers == 0.0:  # the camera went silent
                break
            share = fault.corrupt_share if fault is not None and fault.corrupt_share > 0 else error_fraction
            # it captures every frame, but only a share reaches the network (its counter still advances)
            skipped = delivers < 1.0 and rng.random() > delivers
            sends.append(Send(t, index, frame, bool(rng.random() < share), skipped))
            frame += 1
            step = period / fault.rate_factor if fault is not None else period
            t += step if arrivals == "constant" else float(rng.exponential(step))
    return sorted(sends, key=lambda s: s.at_s)


@dataclass
class LoadReport:
    duration_s: float
    offered: int = 0
    completed: int = 0
    dropped: int = 0
    skipped: int = 0  # captured by a stuttering camera, never sent
    late: int = 0  # sent more than one frame interval after capture (the client fell behind)
    latencies_s: List[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    per_camera: Dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    fault_switched_at_s: Optional[float] = None  # when a server-side fault went live

    def percentile_ms(self, q: float) -> Optional[float]:
        if not self.latencies_s:
            return None
        return float(np.percentile(np.asarray(self.latencies_s), q) * 1000)

    def as_dict(self) -> dict:
        ok = len(self.latencies_s)
        return {
            "duration_s": round(self.duration_s, 3),
            "offered": self.offered,
            "offered_rate_per_s": round(self.offered / self.duration_s, 2) if self.duration_s else 0.0,
            "completed": self.completed,
            "succeeded": ok,
            "achieved_rate_per_s": round(ok / self.duration_s, 2) if self.duration_s else 0.0,
            "dropped_client_backlog": self.dropped,
            "skipped_by_camera": self.skipped,
            "sent_late": self.late,
            "errors_by_code": dict(self.errors),
            "latency_ms_from_schedule": {
                f"p{q:g}": (round(v, 2) if (v := self.percentile_ms(q)) is not None else None) for q in (50, 90, 95, 99, 100)
            },
            "fault_switched_at_s": self.fault_switched_at_s,
            "per_camera": {camera: dict(counts) for camera, counts in sorted(self.per_camera.items())},
        }


def scenario_conditions(camera_index: int, camera: CameraSpec, scenario: Optional[Scenario]) -> Conditions:
    """What a camera sees while the scenario is active."""
    if scenario is None:
        return camera.conditions
    fault = scenario.spec
    if fault.dark_every_other_camera and camera_index % 2 == 1:  # every other camera goes dark and wet
        return Conditions(brightness="night", motion_blur=9, rain=1.5)
    if fault.pixels_scale != 1:  # the gateway starts sending more pixels
        c = camera.conditions
        return c.model_copy(update={"width": c.width * fault.pixels_scale, "height": c.height * fault.pixels_scale})
    return camera.conditions


@functools.lru_cache(maxsize=64)
def _camera_pool(conditions: Conditions, count: int, seed: int) -> tuple:
    return tuple(encode_frame(generate_scene(seed=seed + j, conditions=conditions).image) for j in range(count))


def camera_frames(cameras: Sequence[CameraSpec], per_camera: int = 512, seed: int = 1_200_000,
                  scenario: Optional[Scenario] = None) -> List[Sequence[bytes]]:
    """Distinct frames per camera, encoded once per process, sent in a cycle. A drift window
    (500 tap records) must hold mostly distinct frames: the drift limit is calibrated for
    independent frames, and a window that repeats 128 frames eight times (the demo's 50 %
    tap) has the spread of 128, not 500, so a healthy camera crossed its limit."""
    return [_camera_pool(scenario_conditions(i, camera, scenario), per_camera, seed + 1000 * i)
            for i, camera in enumerate(cameras)]


async def _infer(client, data: bytes, camera_id: str, frame_seq: int, capture_time_ms: int):  # noqa: ANN001
    import tritonclient.grpc.aio as grpcclient

    tensor = grpcclient.InferInput(modelspec.ENSEMBLE_INPUT, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    return await client.infer(
        modelspec.ENSEMBLE_NAME, [tensor], request_id=str(uuid.uuid4()),
        parameters={"camera_id": camera_id, "frame_seq": frame_seq, "capture_time_ms": capture_time_ms}, headers={"traceparent": new_traceparent()},
        client_timeout=30.0,
    )


async def run(url: str, cameras: Sequence[CameraSpec], duration_s: float, arrivals: str = "constant",
              error_fraction: float = 0.0, max_in_flight: int = 256, seed: int = 0,
              on_progress: Optional[Callable[[LoadReport, float], None]] = None,
              scenario: Optional[Scenario] = None, admin_url: str = "http://127.0.0.1:8000",
              keep_fault: bool = False, until: Optional[Callable[[], bool]] = None,
              on_fault: Optional[Callable[[], None]] = None, frames_per_camera: int = 512) -> LoadReport:
    """Run the schedule; ``until()`` turning true ends the run early. A server-side fault
    is switched on at its start time and, unless ``keep_fault``, off again at the end.
    ``frames_per_camera`` distinct frames are rendered per camera, once per process (512
    take half a minute; fewer do where no drift window is judged)."""
    import tritonclient.grpc.aio as grpcclient
    from tritonclient.utils import InferenceServerException

    from sightline import faults

    sends = schedule(cameras, duration_s, arrivals, seed, error_fraction, scenario)
    frames = camera_frames(cameras, per_camera=frames_per_camera)
    faulty_frames = (camera_frames(cameras, per_camera=frames_per_camera, scenario=scenario)
                     if scenario and scenario.name in ("lowlight", "resolution") else frames)
    report = LoadReport(duration_s=duration_s, offered=sum(not s.skipped for s in sends))
    client = grpcclient.InferenceServerClient(url=url)
    in_flight = 0
    tasks = []
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    wall_start = time.time() + 0.2  # capture times are wall-clock, for the server's lateness check

    async def one(send: Send) -> None:
        nonlocal in_flight
        camera = cameras[send.camera]
        pool = faulty_frames if scenario is not None and scenario.active(send.at_s) else frames
        data = CORRUPT_FRAME if send.corrupt else pool[send.camera][send.frame % len(pool[send.camera])]
        scheduled = start + send.at_s
        if loop.time() - scheduled > 1.0 / camera.fps:
            report.late += 1
            report.per_camera[camera.camera_id]["late"] += 1
        try:
            await _infer(client, data, camera.camera_id, send.frame, int((wall_start + send.at_s) * 1000))
            report.latencies_s.append(loop.time() - scheduled)
            report.per_camera[camera.camera_id]["ok"] += 1
        except InferenceServerException as exc:
            code = str(exc.status() or "UNKNOWN").replace("StatusCode.", "")
            report.errors[code] += 1
            report.per_camera[camera.camera_id][code] += 1
        finally:
            report.completed += 1
            in_flight -= 1

    fault_task = None
    switching: dict = {}  # the executor future of the inject, once it started
    if scenario is not None and scenario.server_side:
        async def switch_on() -> None:
            await asyncio.sleep(max(0.0, start + scenario.start_s - loop.time()))
            switching["future"] = loop.run_in_executor(None, faults.inject, admin_url, scenario.name)
            await asyncio.shield(switching["future"])
            report.fault_switched_at_s = round(loop.time() - start, 2)
            if on_fault is not None:
                on_fault()
        fault_task = asyncio.ensure_future(switch_on())

    try:
        last_progress = last_until = 0.0
        for index, send in enumerate(sends):
            if until is not None and loop.time() - last_until > 0.5:
                last_until = loop.time()
                if until():  # checked twice a second: it may be a blocking query
                    report.duration_s = max(0.001, loop.time() - start)
                    report.offered = sum(not s.skipped for s in sends[:index])
                    break
            if fault_task is not None and fault_task.done() and fault_task.exception() is not None:
                raise fault_task.exception()
            delay = start + send.at_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if (scenario is not None and not scenario.server_side and report.fault_switched_at_s is None
                    and scenario.active(send.at_s)):
                report.fault_switched_at_s = round(loop.time() - start, 2)
                if on_fault is not None:
                    on_fault()
            if send.skipped:
                report.skipped += 1
                report.per_camera[cameras[send.camera].camera_id]["skipped"] += 1
                continue
            if in_flight >= max_in_flight:
                report.dropped += 1
                report.per_camera[cameras[send.camera].camera_id]["dropped"] += 1
                continue
            in_flight += 1
            tasks.append(asyncio.ensure_future(one(send)))
            if on_progress is not None and loop.time() - last_progress > 0.25:
                last_progress = loop.time()
                on_progress(report, min(1.0, send.at_s / duration_s))
        if tasks:
            await asyncio.wait(tasks, timeout=60)
    finally:
        await client.close()
        if fault_task is not None:
            if not fault_task.done():
                fault_task.cancel()
            future = switching.get("future")
            if future is not None:  # an inject that started finishes either way: wait, then undo it
                await asyncio.gather(future, return_exceptions=True)
                if future.exception() is None and not keep_fault:
                    await asyncio.to_thread(faults.clear, admin_url, scenario.name)
    if on_progress is not None:
        on_progress(report, 1.0)
    return report


def parse_conditions(spec: str) -> Dict[str, Conditions]:
    """``"cam-3=dusk,cam-4=night"`` -> per-camera conditions (brightness presets)."""
    out = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        camera, _, light = part.partition("=")
        if light not in ("day", "dusk", "night"):
            raise ValueError(f"{part!r}: condition must be day, dusk or night")
        out[camera.strip()] = Conditions(brightness=light)
    return out


def write_report(report: LoadReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"generated_by": "sightline load", "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                **report.as_dict()}, indent=2) + "\n")
    return path
