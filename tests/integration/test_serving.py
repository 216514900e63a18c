"""The real Triton server from the wheel, serving the detector ensemble over gRPC."""

from __future__ import annotations

import re
import time
import urllib.request

import numpy as np
import pytest
from corpus import good_jpeg

from sightline import modelspec, vision
from sightline.client import DetectorClient, InferenceError
from sightline.export.scenes import Conditions, generate_scene

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[tuple[str, str], float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    samples = {}
    for match in re.finditer(r'^(nv_inference_(?:exec_)?count)\{model="([^"]+)",version="\d+"\} (\S+)$', text, re.M):
        samples[(match.group(1), match.group(2))] = float(match.group(3))
    return samples


def test_most_objects_in_generated_street_scenes_are_found_over_grpc(triton):
    matched = total = false_positives = 0
    with DetectorClient(triton.grpc_url) as client:
        for seed in range(20):
            scene = generate_scene(seed=5_000_000 + seed, conditions=Conditions(brightness="day"))
            result = client.infer(scene.image, camera_id="cam-1")
            boxes = np.array([d.box for d in result.detections], np.float32).reshape(-1, 4)
            classes = np.array([d.class_id for d in result.detections])
            total += len(scene.boxes)
            used = set()
            for box, cls in zip(scene.boxes, scene.classes):
                if len(boxes) == 0:
                    continue
                ious = vision.box_iou(box[None], boxes)[0]
                ious[classes != cls] = 0
                ious[list(used)] = 0
                best = int(np.argmax(ious))
                if ious[best] >= 0.5:
                    matched += 1
                    used.add(best)
            false_positives += len(boxes) - len(used)
            assert result.embedding.shape == (modelspec.EMBEDDING_DIM,)
    assert total > 40
    assert matched / total >= 0.7, f"only {matched}/{total} ground-truth objects matched at IoU>=0.5"
    assert false_positives <= 0.3 * total


def test_detections_come_back_in_original_image_pixels(triton):
    scene = generate_scene(seed=42, conditions=Conditions(width=1280, height=540))
    with DetectorClient(triton.grpc_url) as client:
        result = client.infer(scene.image)
    boxes = np.array([d.box for d in result.detections]).reshape(-1, 4)
    assert len(boxes) > 0
    assert boxes[:, 2].max() > modelspec.INPUT_SIZE  # beyond the model's own frame
    assert (boxes[:, [0, 2]] <= 1280).all() and (boxes[:, [1, 3]] <= 540).all()


def test_dynamic_batching_groups_concurrent_requests(triton):
    frames = [generate_scene(seed=s).image for s in range(16)] * 4
    before = scrape(triton.metrics_url)
    with DetectorClient(triton.grpc_url) as client:
        results = client.infer_many(frames, concurrency=16)
    assert not [r for r in results if isinstance(r, InferenceError)]
    after = scrape(triton.metrics_url)
    inferences = after[("nv_inference_count", "detector_model")] - before.get(("nv_inference_count", "detector_model"), 0)
    executions = after[("nv_inference_exec_count", "detector_model")] - before.get(("nv_inference_exec_count", "detector_model"), 0)
    assert inferences == len(frames)
    assert executions < inferences, f"{executions} executions for {inferences} requests: no batching"


def test_each_bad_input_fails_alone_while_the_rest_of_its_batch_is_served(triton, bad_frames):
    good = [good_jpeg(320, 240, seed=s) for s in range(12)]
    payloads = []
    for i, frame in enumerate(good):
        payloads.append(("good", frame))
        reasons = list(bad_frames)
        payloads.append((reasons[i % len(reasons)], bad_frames[reasons[i % len(reasons)]]))
    with DetectorClient(triton.grpc_url) as client:
        results = client.infer_many([p for _, p in payloads], concurrency=16)
        for (expected, _), result in zip(payloads, results):
            if expected == "good":
                assert not isinstance(result, InferenceError), f"a good frame failed: {result}"
            else:
                assert isinstance(result, InferenceError), f"{expected} was accepted"
                assert "INVALID_ARGUMENT" in result.status
                assert f"[reason={expected}]" in result.message
        # wrong dtype and wrong shape are refused by Triton's own input checks
        with pytest.raises(InferenceError, match="INVALID_ARGUMENT.*data-type is 'FP32'"):
            client.infer_raw(np.zeros((1, 1), np.float32), datatype="FP32")
        with pytest.raises(InferenceError, match="INVALID_ARGUMENT.*shape"):
            client.infer_raw(np.array([[b"a", b"b"]], dtype=np.object_))
        # and the server keeps serving
        assert client.is_ready()
        assert client.infer(good[0]).request_id


def test_thousands_of_unknown_camera_ids_do_not_create_series(triton):
    frame = good_jpeg(160, 120)
    with DetectorClient(triton.grpc_url) as client:
        client.infer_many([frame] * 400, camera_ids=[f"rogue-{i}" for i in range(400)], concurrency=16)
    time.sleep(2.5)  # the steps flush their metrics once a second
    text = urllib.request.urlopen(triton.metrics_url, timeout=5).read().decode()
    cameras = set(re.findall(r'camera="([^"]+)"', text))
    assert "other" in cameras
    assert not [c for c in cameras if c.startswith("rogue-")]
    assert len(cameras) <= 5  # the allow-list (cam-1..cam-4) and "other"


def test_the_open_loop_load_generator_measures_rate_latency_and_errors(triton):
    import asyncio

    from sightline.loadgen import CameraSpec, run

    cams = [CameraSpec("cam-1", 10.0), CameraSpec("cam-4", 10.0, Conditions(brightness="night"))]
    report = asyncio.run(run(triton.grpc_url, cams, duration_s=4.0, arrivals="poisson", error_fraction=0.2, seed=2))
    summary = report.as_dict()
    assert summary["completed"] == summary["offered"] > 40
    assert 0.1 < summary["errors_by_code"].get("INVALID_ARGUMENT", 0) / summary["offered"] < 0.35
    assert summary["succeeded"] + sum(summary["errors_by_code"].values()) == summary["offered"]
    assert 0 < summary["latency_ms_from_schedule"]["p50"] <= summary["latency_ms_from_schedule"]["p99"]
    assert set(summary["per_camera"]) == {"cam-1", "cam-4"}


def latency_samples(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {}
    for match in re.finditer(r'^(sightline_(?:request|stage)_duration_seconds_(?:count|sum))\{([^}]*)\} (\S+)$', text, re.M):
        stage = re.search(r'stage="([^"]+)"', match.group(2)).group(1)
        out[f"{match.group(1)}/{stage}"] = float(match.group(3))
    return out


def test_every_request_is_in_the_latency_histograms_without_tracing(triton):
    """No trace is configured on this server: the latency SLI still counts every request,
    and the three stages add up to the end-to-end time."""
    assert not any(arg.startswith("--trace-config") for arg in triton.process.args)
    time.sleep(1.5)  # let earlier requests' observations flush
    before = latency_samples(triton.metrics_url)
    frames = [generate_scene(seed=6_100_000 + i).image for i in range(40)]
    with DetectorClient(triton.grpc_url) as client:
        results = client.infer_many(frames, concurrency=8)
    assert not [r for r in results if isinstance(r, InferenceError)]

    def delta(key: str) -> float:
        return latency_samples(triton.metrics_url).get(key, 0.0) - before.get(key, 0.0)

    deadline = time.monotonic() + 10
    while delta("sightline_request_duration_seconds_count/pipeline") < len(frames) and time.monotonic() < deadline:
        time.sleep(0.25)  # the steps flush their metrics once a second
    assert delta("sightline_request_duration_seconds_count/pipeline") == len(frames)
    for stage in ("preprocess", "detector_model", "postprocess"):
        assert delta(f"sightline_stage_duration_seconds_count/{stage}") == len(frames)
    total = delta("sightline_request_duration_seconds_sum/pipeline")
    stages = sum(delta(f"sightline_stage_duration_seconds_sum/{s}") for s in ("preprocess", "detector_model", "postprocess"))
    assert total > 0 and abs(total - stages) < 1e-6 * len(frames)


def test_every_triton_process_reports_its_own_memory_and_cpu_without_the_monitor(triton):
    """The steps read their own /proc (postprocess also tritonserver's, its parent), so the
    memory alert and diagnose need no sidecar that can see Triton's processes."""
    from sightline.procfs import memory_of

    with DetectorClient(triton.grpc_url) as client:
        client.infer_many([good_jpeg(320, 240)] * 16, concurrency=4)
    time.sleep(2.5)  # reported once a second, on the steps' metrics thread
    text = urllib.request.urlopen(triton.metrics_url, timeout=5).read().decode()

    def series(name: str) -> dict[tuple[str, ...], float]:
        found = {}
        for match in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            found[(labels["process"], labels.get("kind", ""))] = found.get((labels["process"], labels.get("kind", "")), 0.0) \
                + float(match.group(2))
        return found

    memory, cpu = series("sightline_process_memory_bytes"), series("sightline_process_cpu_seconds_total")
    processes = {"tritonserver", "stub:preprocess", "stub:detector_model", "stub:postprocess"}
    assert {p for p, _ in memory} == processes
    for process in processes:
        assert memory[(process, "heap")] > 10e6, process  # an interpreter at least
        assert (process, "shared") in memory, process
        assert cpu[(process, "")] > 0, process
    # what tritonserver reports is what the kernel says of it (heap moves a little between reads)
    actual = memory_of(triton.process.pid)["RssAnon"]
    assert abs(memory[("tritonserver", "heap")] - actual) < 0.25 * actual
    counts = series("sightline_process_count")
    assert counts[("stub:postprocess", "")] == 1 and counts[("tritonserver", "")] == 1
