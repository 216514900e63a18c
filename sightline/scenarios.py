"""Every incident scenario in one place: its fault, its load, the alert it must fire and the
diagnosis `sightline diagnose` must rank first.

The load generator (``sightline.loadgen``) reads what the cameras do from here, the fault
switch (``sightline.faults``) which scenarios it switches inside Triton, and the incident
runner (``sightline.incident``) what to expect. ``tests/unit/test_scenarios_registry.py``
checks that each alert exists in the rules, each cause is a rule of ``sightline diagnose``,
and the README's table lists each scenario; ``tests/e2e/test_scenarios.py`` runs them all.
To add a scenario: add it here, give the cameras or the fault switch its behaviour, and the
tests say what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sightline import conventions as names


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    fault: str  # what goes wrong, in a line (the README's incident table)
    alert: str  # the alert it must fire, with the label it names where it names one
    cause: str  # the hypothesis key `sightline diagnose` must rank first
    related_pages: tuple[str, ...] = ()  # pages this incident may rightly cause too
    server_fault: bool = False  # switched inside Triton (sightline.faults; the demo profile only)
    fps: float = 10.0  # frames per second per camera (four cameras)
    # The cameras share one trigger (a synchronized rig), for the whole run: their frames
    # arrive together instead of at random phases.
    synchronized: bool = False
    # What the simulated cameras do while the scenario is active:
    dark_every_other_camera: bool = False  # night, motion blur and rain on cameras 2 and 4
    pixels_scale: int = 1  # width and height multiplied
    corrupt_share: float = 0.0  # share of frames sent corrupt
    rate_factor: float = 1.0  # frames sent per frame due
    last_camera_delivers: float = 1.0  # share of the last camera's numbered frames that arrive; 0 = silent


# Pages a latency incident may rightly cause.
LATENCY_PAGES = (names.ALERT_LATENCY_BURN, names.ALERT_LATENCY_P95_HIGH)

_ALL = (
    # The batcher bug only shows where requests could share a batch. Cameras at random
    # phases at 60 frames/s gave batches of 1.1 to 1.2, and the faulty 1.0 came within a
    # hair of that on a faster serving path (a flaky diagnosis). So the scenario's four
    # cameras share one trigger, as a synchronized rig does: their frames arrive together,
    # a healthy batcher runs them in batches of two or more, and the fault makes it exactly
    # 1 while requests wait in the model's queue. At 80 frames/s and more the healthy
    # baseline of the whole local stack already breaks the 120 ms latency SLO on two cores.
    ScenarioSpec("batcher", "detector_model reloaded with preferred batch size 1 and no queue delay",
                 names.ALERT_BATCH_SIZE_COLLAPSED, "batcher", LATENCY_PAGES, server_fault=True, fps=15.0,
                 synchronized=True),
    ScenarioSpec("lowlight", "every other camera goes dark, with motion blur and rain",
                 names.ALERT_EMBEDDING_DRIFT, "lowlight", dark_every_other_camera=True),
    # the leaking process by name: warm-up growth elsewhere must not count
    ScenarioSpec("leak", "postprocess reloaded with a parameter that keeps 64 KiB per request",
                 f'{names.ALERT_PROCESS_MEMORY_GROWING}{{process="stub:postprocess"}}', "leak", server_fault=True),
    ScenarioSpec("resolution", "the cameras send 4x the pixels",
                 names.ALERT_INPUT_RESOLUTION_DRIFT, "resolution", LATENCY_PAGES, pixels_scale=2),
    ScenarioSpec("outage", "half the frames are corrupt",
                 names.ALERT_AVAILABILITY_BURN, "outage", corrupt_share=0.5),
    # 8x: past capacity on any machine like this one. At 4x (160 frames/s) the faster uint8
    # path kept up well enough that only the slow-burn ticket fired and no page arrived.
    ScenarioSpec("saturation", "the cameras send 8x the frames",
                 names.ALERT_LATENCY_BURN, "saturation", LATENCY_PAGES, rate_factor=8.0),
    # the simulator's last camera (cam-4 of four) stops, or delivers 40 % of its frames: it
    # captures every frame, so its frame counter still advances (server-side gaps)
    ScenarioSpec("camera-drop", "the last camera stops sending",
                 f'{names.ALERT_CAMERA_SILENT}{{camera="cam-4"}}', "camera-drop", last_camera_delivers=0.0),
    ScenarioSpec("camera-stutter", "the last camera delivers 40 % of its numbered frames",
                 f'{names.ALERT_CAMERA_FRAME_GAPS}{{camera="cam-4"}}', "camera-drop", last_camera_delivers=0.4),
)
SCENARIOS: dict[str, ScenarioSpec] = {spec.name: spec for spec in _ALL}
SERVER_FAULTS: tuple[str, ...] = tuple(spec.name for spec in _ALL if spec.server_fault)


def spec(name: str) -> ScenarioSpec:
    """The scenario called ``name``; an unknown name is a ValueError listing the known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}") from None
