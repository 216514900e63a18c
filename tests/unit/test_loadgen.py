"""The open-loop schedule: the right number of frames, on time, with the asked-for faults."""

import numpy as np
import pytest

from sightline.export.scenes import Conditions
from sightline.loadgen import CameraSpec, LoadReport, parse_conditions, schedule


def cameras(n=4, fps=15.0):
    return [CameraSpec(f"cam-{i + 1}", fps) for i in range(n)]


def test_constant_arrivals_send_each_camera_at_its_fps_in_time_order():
    sends = schedule(cameras(4, 15), duration_s=10)
    assert len(sends) == pytest.approx(4 * 15 * 10, abs=4)
    assert [s.at_s for s in sends] == sorted(s.at_s for s in sends)
    gaps = np.diff([s.at_s for s in sends if s.camera == 0])
    assert np.allclose(gaps, 1 / 15)
    starts = {round(next(s.at_s for s in sends if s.camera == c), 6) for c in range(4)}
    assert len(starts) == 4  # cameras are not in lockstep


def test_poisson_arrivals_average_the_requested_rate():
    sends = schedule(cameras(1, 20), duration_s=200, arrivals="poisson", seed=3)
    assert len(sends) / 200 == pytest.approx(20, rel=0.05)
    gaps = np.diff([s.at_s for s in sends])
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.15)  # exponential gaps


def test_an_error_fraction_marks_that_share_of_frames_corrupt():
    sends = schedule(cameras(2, 50), duration_s=20, error_fraction=0.2, seed=1)
    assert sum(s.corrupt for s in sends) / len(sends) == pytest.approx(0.2, abs=0.03)


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="arrivals"):
        schedule(cameras(), 1, arrivals="bursty")
    with pytest.raises(ValueError, match="cam-1: fps must be positive"):
        schedule([CameraSpec("cam-1", 0)], 1)
    with pytest.raises(ValueError, match="day, dusk or night"):
        parse_conditions("cam-4=foggy")
    assert parse_conditions("cam-4=night")["cam-4"] == Conditions(brightness="night")


def test_the_report_gives_rates_percentiles_and_errors_by_code():
    report = LoadReport(duration_s=2.0, offered=10, completed=10, latencies_s=[0.01] * 8)
    report.errors["INVALID_ARGUMENT"] = 2
    summary = report.as_dict()
    assert summary["achieved_rate_per_s"] == 4.0 and summary["offered_rate_per_s"] == 5.0
    assert summary["latency_ms_from_schedule"]["p95"] == 10.0
    assert summary["errors_by_code"] == {"INVALID_ARGUMENT": 2}


def test_scenarios_parse_with_a_start_and_refuse_unknown_names():
    from sightline.loadgen import Scenario

    assert Scenario.parse("lowlight@30s") == Scenario("lowlight", 30.0)
    assert Scenario.parse("outage@2m").start_s == 120.0
    assert Scenario.parse("saturation").start_s == 0.0
    with pytest.raises(ValueError, match="unknown scenario 'meteor'"):
        Scenario.parse("meteor@1m")


def test_an_outage_corrupts_half_the_frames_and_saturation_multiplies_the_rate_by_eight_after_start():
    from sightline.loadgen import Scenario

    outage = schedule(cameras(2, 20), 20, scenario=Scenario("outage", 10), seed=4)
    before = [s for s in outage if s.at_s < 10]
    after = [s for s in outage if s.at_s >= 10]
    assert not any(s.corrupt for s in before)
    assert sum(s.corrupt for s in after) / len(after) == pytest.approx(0.5, abs=0.08)
    saturated = schedule(cameras(2, 10), 20, scenario=Scenario("saturation", 10))
    assert len([s for s in saturated if s.at_s >= 10]) == pytest.approx(8 * len([s for s in saturated if s.at_s < 10]), rel=0.05)


def test_lowlight_darkens_every_other_camera_and_resolution_quadruples_pixels():
    from sightline.loadgen import Scenario, scenario_conditions

    cams = cameras(2)
    assert scenario_conditions(1, cams[1], Scenario("lowlight")).brightness == "night"
    assert scenario_conditions(0, cams[0], Scenario("lowlight")) == cams[0].conditions
    bigger = scenario_conditions(0, cams[0], Scenario("resolution"))
    assert bigger.width * bigger.height == 4 * cams[0].conditions.width * cams[0].conditions.height


def test_camera_drop_stops_the_last_camera_and_stutter_skips_frames_but_advances_its_counter():
    from sightline.loadgen import Scenario

    drop = schedule(cameras(4, 10), duration_s=20, scenario=Scenario("camera-drop", 10.0))
    last = [s for s in drop if s.camera == 3]
    assert last and max(s.at_s for s in last) < 10.0  # nothing after the drop
    assert sum(1 for s in drop if s.camera == 0) == pytest.approx(200, abs=1)  # the others keep going

    stutter = schedule(cameras(4, 10), duration_s=40, scenario=Scenario("camera-stutter", 10.0), seed=2)
    after = [s for s in stutter if s.camera == 3 and s.at_s >= 10.0]
    delivered = [s for s in after if not s.skipped]
    assert len(delivered) / len(after) == pytest.approx(0.4, abs=0.08)
    assert [s.frame for s in after] == list(range(after[0].frame, after[0].frame + len(after)))  # counter advances
    assert not any(s.skipped for s in stutter if s.camera != 3 or s.at_s < 10.0)


def test_stream_parameters_carry_the_frame_counter_and_capture_time_only_when_known():
    from sightline.client import stream_parameters

    assert stream_parameters("cam-1") == {"camera_id": "cam-1"}
    assert stream_parameters("cam-1", 7, 1_800_000_000_000) == {
        "camera_id": "cam-1", "frame_seq": 7, "capture_time_ms": 1_800_000_000_000}


def test_the_batcher_scenarios_cameras_fire_together_from_the_start_and_others_at_random_phases():
    from sightline.loadgen import Scenario

    def instants(sends):
        return sorted({round(s.at_s, 9) for s in sends})

    synced = schedule(cameras(4, 15), 2, scenario=Scenario("batcher", 30), seed=5)
    assert len(synced) == 4 * len(instants(synced))  # four frames at each instant, before the fault too
    loose = schedule(cameras(4, 15), 2, scenario=Scenario("lowlight", 30), seed=5)
    assert len(instants(loose)) == len(loose)
