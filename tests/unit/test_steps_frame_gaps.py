"""Frame gaps from the steps' own counters: refused frames are never gaps.

A camera's frames go through both steps as they do inside Triton (two preprocess
instances, one postprocess with the sequence tracker); the counters the steps export
are read back once a second, as Prometheus would scrape them, and the recording rule's
arithmetic (sent - processed - refused over a 5-minute window) is applied to them.
"""

from __future__ import annotations

import random

import numpy as np

from sightline import conventions as names
from sightline.steps.telemetry import CameraLabels, SequenceTracker, StepTelemetry

WINDOW_S = 300
FPS = 10


class Metric:
    def __init__(self, labels):
        self.labels, self.value = labels, 0.0

    def increment(self, value):
        self.value += value

    def set(self, value):
        self.value = value

    observe = increment


class Family:
    COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

    def __init__(self, name, description, kind):
        self.name, self.metrics = name, []
        Pb.families.append(self)

    def Metric(self, labels, buckets=None):  # noqa: N802 - Triton's spelling
        metric = Metric(labels)
        self.metrics.append(metric)
        return metric


class Pb:
    MetricFamily = Family
    families: list = []


def exported(name: str, camera: str) -> float | None:
    """Sum over steps of a counter's value, None while no series exists (as Triton shows it)."""
    found = [m for f in Pb.families if f.name == name for m in f.metrics if m.labels.get("camera") == camera]
    return sum(m.value for m in found) if found else None


def run_camera(seqs_refused: set, seqs_lost: set, seconds: int, instances: int = 2, seed: int = 0) -> list[dict]:
    """One 10-frame/s camera through the steps, each frame to either preprocess instance at
    random; the exported counters once a second."""
    Pb.families = []
    cameras = CameraLabels.from_parameters({"cameras": "cam-1=1"})
    pre = [StepTelemetry(Pb, "preprocess", "1", "preprocess", cameras, flush_interval_s=0) for _ in range(instances)]
    pre[0].expect_streams()
    post = StepTelemetry(Pb, "postprocess", "1", "postprocess", cameras, flush_interval_s=0)
    tracker = SequenceTracker()
    rng = random.Random(seed)
    scrapes = []
    for seq in range(seconds * FPS):
        if seq not in seqs_lost:
            step = rng.choice(pre)
            params = {"camera_id": "cam-1", "frame_seq": seq}
            step.frame_arrived(params, step.camera_of(params), late_after_s=2.0)
            if seq in seqs_refused:
                step.rejected("not_an_image", "cam-1")
            else:
                post.frames_sent("cam-1", tracker.observe("cam-1", seq))
                post.detections(np.zeros((0, 6), np.float32), "cam-1")
            step.flush()
            post.flush()
        if seq % FPS == FPS - 1:
            scrapes.append({name: exported(name, "cam-1") for name in (
                "sightline_camera_frames_sent_total", "sightline_detections_per_frame_count",
                "sightline_rejected_requests_total", names.CAMERA_FRAMES_REFUSED)})
    return scrapes


def increase(scrapes: list[dict], name: str, start: int, end: int) -> float:
    """What rate() * window sees: a series that did not exist at the start of the window
    counts from its first sample, so the value it appeared with is lost."""
    values = [s[name] for s in scrapes[start:end + 1] if s[name] is not None]
    return values[-1] - values[0] if values else 0.0


def gap_ratios(scrapes: list[dict], refused: str) -> list[float]:
    ratios = []
    for end in range(WINDOW_S, len(scrapes)):
        start = end - WINDOW_S
        sent = increase(scrapes, "sightline_camera_frames_sent_total", start, end)
        gaps = (sent - increase(scrapes, "sightline_detections_per_frame_count", start, end)
                - increase(scrapes, refused, start, end))
        if sent > 0:
            ratios.append(max(gaps, 0.0) / sent)
    return ratios


def test_a_run_of_refused_frames_is_not_counted_as_gaps():
    """Six minutes of a camera sending nothing but corrupt frames, then good ones again:
    postprocess's sequence jumps past all of them at the first good frame."""
    refused = set(range(600 * FPS, 960 * FPS))
    scrapes = run_camera(refused, set(), seconds=1800)
    assert max(gap_ratios(scrapes, names.CAMERA_FRAMES_REFUSED)) <= 0.01
    # the refusal counter itself counts them when they happen: compared with the jump in
    # "sent", the run read as up to 100 % gaps for a window (the defect this fixes)
    assert max(gap_ratios(scrapes, "sightline_rejected_requests_total")) > 0.5


def test_scattered_refused_frames_are_not_gaps_and_the_first_ones_are_not_lost():
    """Every third frame refused from minute 10 on: the refused-frame series exists at zero
    before the first refusal, so rate() sees every one of them."""
    refused = {s for s in range(600 * FPS, 1800 * FPS) if s % 3 == 0}
    scrapes = run_camera(refused, set(), seconds=1800)
    assert scrapes[0][names.CAMERA_FRAMES_REFUSED] == 0.0  # published at start, for the allow-listed camera
    assert max(gap_ratios(scrapes, names.CAMERA_FRAMES_REFUSED)) <= 0.01


def test_frames_that_never_arrived_are_still_gaps_beside_refused_ones():
    refused = {s for s in range(0, 1800 * FPS) if s % 5 == 0}
    lost = {s for s in range(0, 1800 * FPS) if s % 10 == 3}  # 10 % never reach Triton
    ratios = gap_ratios(run_camera(refused, lost, seconds=1800), names.CAMERA_FRAMES_REFUSED)
    assert min(ratios) >= 0.09 and max(ratios) <= 0.11


def test_a_refused_frame_without_a_sequence_number_is_not_counted_and_postprocess_counts_its_own_at_once():
    Pb.families = []
    cameras = CameraLabels.from_parameters({"cameras": "cam-1"})
    pre = StepTelemetry(Pb, "preprocess", "1", "preprocess", cameras, flush_interval_s=0)
    for params, refused in (({"camera_id": "cam-1"}, True), ({"camera_id": "cam-1"}, False),
                            ({"camera_id": "cam-1"}, False)):
        pre.frame_arrived(params, "cam-1", 2.0)
        if refused:
            pre.rejected("empty", "cam-1")
    pre.flush()
    assert exported(names.CAMERA_FRAMES_REFUSED, "cam-1") == 0.0  # postprocess never counted it as sent
    assert exported("sightline_rejected_requests_total", "cam-1") == 1.0
    post = StepTelemetry(Pb, "postprocess", "1", "postprocess", cameras, flush_interval_s=0)
    post.rejected("internal", "cam-1")
    post.flush()
    assert exported(names.CAMERA_FRAMES_REFUSED, "cam-1") == 1.0
