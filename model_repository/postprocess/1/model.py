"""Triton shell for the postprocess step; the logic lives in sightline.steps."""

import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from sightline import modelspec
from sightline.conventions import OTHER_CAMERA, PARAM_FRAME_SEQ, QUALITY_FIELDS, TIMING_TENSOR
from sightline.images import InvalidInput
from sightline.steps import demo_fault, tap
from sightline.steps.postprocess import postprocess_request, strip_padding
from sightline.steps.preprocess import check_parameters
from sightline.steps.telemetry import (
    CameraLabels,
    SequenceTracker,
    StepTelemetry,
    int_parameter,
    model_parameters,
    request_parameters,
)


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(json.loads(args["model_config"]))
        self.score_threshold = float(params.get("score_threshold", modelspec.SCORE_THRESHOLD))
        self.iou_threshold = float(params.get("nms_iou_threshold", modelspec.NMS_IOU_THRESHOLD))
        self.max_detections = int(params.get("max_detections", modelspec.MAX_DETECTIONS))
        self.version = args["model_version"]
        self.telemetry = StepTelemetry(pb_utils, args["model_name"], self.version, "postprocess",
                                       CameraLabels.from_parameters(params))
        self.telemetry.start_background_flush(args.get("model_instance_name", ""), report_server=True)  # one step reports tritonserver
        # Gaps need one tracker that sees every frame of a camera: with more than one
        # instance each would count the whole sequence, so tracking switches off.
        config = json.loads(args["model_config"])
        instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
        self.sequences = SequenceTracker() if instances == 1 else None
        if self.sequences is None and hasattr(pb_utils, "Logger"):
            pb_utils.Logger.log_warn(f"postprocess runs {instances} instances: frame gap counting is off "
                                     "(it needs one instance to see every frame of a camera)")
        host, _, port = os.environ.get("SIGHTLINE_TAP_ADDRESS", params.get("tap_address", "127.0.0.1:9411")).rpartition(":")
        rates = tap.parse_rates(os.environ.get("SIGHTLINE_TAP_RATE", params.get("tap_rate", "0.05")))
        self.tap = tap.TapSender((host, int(port)), rates)
        # Demo profile only: keep memory per request: a leaking postprocess for the `leak` incident.
        self.leak_bytes, warning = demo_fault.leak_bytes_from(params)
        self.leaked = []
        if warning and hasattr(pb_utils, "Logger"):
            pb_utils.Logger.log_warn(warning)

    def execute(self, requests):
        started_ns = time.monotonic_ns()
        self.telemetry.batch(len(requests))
        responses = []
        stamps = []
        for request in requests:
            # Each request in its own try: whatever it carries, it gets its own result or its
            # own error, and the rest of the batch is served.
            self._camera = OTHER_CAMERA
            try:
                response, stamp = self._serve(request)
                responses.append(response)
                stamps.append(stamp)
                continue
            except InvalidInput as exc:
                reason, message, invalid = exc.reason, str(exc), True
            except Exception as exc:  # noqa: BLE001 - a bug or a resource error: this request fails alone
                reason, message, invalid = "internal", f"postprocess failed: {exc!r}"[:500], False
            try:
                self.telemetry.rejected(reason, self._camera)
            except Exception:  # noqa: BLE001 - the refusal itself is still sent
                pass
            text = f"{message} [reason={reason}]"
            error = pb_utils.TritonError(text, pb_utils.TritonError.INVALID_ARG) if invalid else pb_utils.TritonError(text)
            responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        if self.leak_bytes:
            self.leaked.append(np.ones(self.leak_bytes * len(requests), np.uint8))  # touched, so resident
        finished_ns = time.monotonic_ns()
        for row in stamps:
            self.telemetry.latency(row, started_ns, finished_ns)
        self.telemetry.flush()
        return responses

    def _serve(self, request):
        """One request's response and its TIMING row (None without one)."""
        params = request_parameters(request)
        self._camera = camera = self.telemetry.camera_of(params)
        params = check_parameters(params)
        seq = int_parameter(params, PARAM_FRAME_SEQ) if self.sequences is not None else None
        self.telemetry.frames_sent(camera, self.sequences.observe(camera, seq) if self.sequences is not None else 1)
        inputs = {}
        for name in ("predictions", "LETTERBOX"):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise InvalidInput("bad_shape", f"missing input: the request has no {name} tensor")
            inputs[name] = tensor.as_numpy()
        detections = postprocess_request(
            inputs["predictions"], inputs["LETTERBOX"], self.score_threshold, self.iou_threshold, self.max_detections
        )
        started = time.perf_counter()
        frames = [strip_padding(frame) for frame in detections]
        for rows in frames:
            self.telemetry.detections(rows, camera)
        self._tap(request, camera, frames)
        timing = pb_utils.get_input_tensor_by_name(request, TIMING_TENSOR)
        stamp = None if timing is None else timing.as_numpy()[0]
        self.telemetry.cost(started)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("DETECTIONS", detections)]), stamp

    def _tap(self, request, camera, frames):
        request_id = request.request_id()
        if not self.tap.wants(request_id, camera):
            return
        try:
            embedding = pb_utils.get_input_tensor_by_name(request, "embedding").as_numpy()
            quality = pb_utils.get_input_tensor_by_name(request, "QUALITY").as_numpy()
            record = tap.TapRecord(
                request_id=request_id,
                camera=camera,
                model_version=self.version,
                timestamp=tap.now(),
                embedding=embedding[0],
                quality=dict(zip(QUALITY_FIELDS, (float(v) for v in quality[0]))),
                detections=tap.detection_summary(frames[0]),
            )
            outcome = "sent" if self.tap.send(record) else "dropped"
        except Exception:  # noqa: BLE001 - the tap is lossy by design; it never fails a request
            outcome = "dropped"
        self.telemetry.tap(outcome)

    def finalize(self):
        self.telemetry.close()
        self.tap.close()
