"""Triton shell for the preprocess step; the logic lives in sightline.steps."""

import os
import re
from pathlib import Path


def _configured_max_pixels(default=4096 * 4096):
    """This model's max_pixels parameter, read from config.pbtxt before OpenCV is imported."""
    try:
        text = (Path(__file__).resolve().parents[1] / "config.pbtxt").read_text()
    except OSError:
        return default
    found = re.search(r'key:\s*"max_pixels"\s*value:\s*\{\s*string_value:\s*"(\d{1,12})"', text)
    return int(found.group(1)) if found else default


# OpenCV reads its decoder limit once, on import: set it before anything imports cv2, so
# the decoder itself refuses a frame over the pixel limit whatever its header claims.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(_configured_max_pixels()))

import json  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from sightline.conventions import OTHER_CAMERA, QUALITY_FIELDS, TIMING_TENSOR  # noqa: E402
from sightline.images import DEFAULT_MAX_PIXELS, InvalidInput, decode_frame  # noqa: E402
from sightline.redaction import DETECT_WIDTH  # noqa: E402
from sightline.steps.audit import AuditSampler  # noqa: E402
from sightline.steps.preprocess import INT_PARAMETERS, check_parameters, preprocess_request  # noqa: E402
from sightline.steps.telemetry import CameraLabels, StepTelemetry, model_parameters, request_parameters  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(json.loads(args["model_config"]))
        self.max_pixels = int(params.get("max_pixels", DEFAULT_MAX_PIXELS))
        # OpenCV's own thread pool: one thread per instance by default. The instances already
        # run side by side, and a pool per process fights them for the same cores.
        cv2.setNumThreads(int(params.get("opencv_threads", "1")))
        # A JPEG at least twice the model input on both sides is decoded at 1/2, 1/4 or 1/8 scale.
        self.reduced_decode = os.environ.get("SIGHTLINE_REDUCED_DECODE", params.get("reduced_decode", "1")) != "0"
        self.telemetry = StepTelemetry(pb_utils, args["model_name"], args["model_version"], "preprocess",
                                       CameraLabels.from_parameters(params))
        self.telemetry.expect_streams()
        self.telemetry.start_background_flush(args.get("model_instance_name", ""))
        self.late_after_s = float(params.get("late_after_s", "2.0"))
        host, _, port = os.environ.get("SIGHTLINE_TAP_ADDRESS", params.get("tap_address", "127.0.0.1:9411")).rpartition(":")
        self.audit = AuditSampler(
            (host, int(port)),
            rate=float(os.environ.get("SIGHTLINE_AUDIT_RATE", params.get("audit_rate", "0.01"))),
            per_minute=float(os.environ.get("SIGHTLINE_AUDIT_PER_MINUTE", params.get("audit_per_minute", "0.25"))),
        )
        if self.audit.rate > 0:
            self.audit.start()  # the detectors load and warm up now, not at the first audited frame

    def execute(self, requests):
        # Latency of every request without tracing: this execution's start and end on
        # CLOCK_MONOTONIC (shared by the host's processes) travel to postprocess in TIMING.
        started_ns = time.monotonic_ns()
        self.telemetry.batch(len(requests))
        responses = []
        for request in requests:
            # Everything a request carries is read inside its own try: whatever it holds
            # (bytes, parameters of any type or size), it gets its own result or its own
            # error, and the rest of the batch is served.
            try:
                responses.append(self._serve(request))
                continue
            except InvalidInput as exc:
                reason, message, invalid = exc.reason, str(exc), True
            except Exception as exc:  # noqa: BLE001 - a bug or a resource error: this request fails alone
                reason, message, invalid = "internal", f"preprocess failed: {exc!r}"[:500], False
            try:
                self.telemetry.rejected(reason, self._camera)
                self._log_rejection(request, self._camera, reason, message)
            except Exception:  # noqa: BLE001 - the refusal itself is still sent
                pass
            text = f"{message} [reason={reason}]"
            error = pb_utils.TritonError(text, pb_utils.TritonError.INVALID_ARG) if invalid else pb_utils.TritonError(text)
            responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        self.telemetry.flush()
        # The responses leave together when execute returns: that is the end of this stage.
        finished_ns = time.monotonic_ns()
        out = []
        for response in responses:
            if isinstance(response, list):
                timing = response.pop()
                timing[:, 0], timing[:, 1] = started_ns, finished_ns
                response = pb_utils.InferenceResponse(output_tensors=[*response, pb_utils.Tensor(TIMING_TENSOR, timing)])
            out.append(response)
        return out

    def _serve(self, request):
        """One request's output tensors (TIMING last, filled once the batch is done)."""
        self._camera = OTHER_CAMERA
        params = request_parameters(request)
        self._camera = camera = self.telemetry.camera_of(params)
        try:
            params, refused = check_parameters(params), None
        except InvalidInput as exc:
            params, refused = {k: v for k, v in params.items() if k not in INT_PARAMETERS}, exc
        self.telemetry.frame_arrived(params, camera, self.late_after_s)  # refused frames arrive too
        if refused is not None:
            raise refused
        tensor = pb_utils.get_input_tensor_by_name(request, "IMAGE")
        if tensor is None:
            raise InvalidInput("bad_shape", "missing input: the request has no IMAGE tensor")
        result = preprocess_request(tensor.as_numpy(), self.max_pixels, with_features=self.telemetry.enabled,
                                    reduce=self.reduced_decode)
        started = time.perf_counter()
        # observability off: no features (the overhead benchmark's baseline), zeros sent on
        quality = np.zeros((len(result.shapes), len(QUALITY_FIELDS)), np.float32)
        for row, features in enumerate(result.features):
            quality[row] = [features[name] for name in QUALITY_FIELDS]
            self.telemetry.quality(features, camera)
        self.telemetry.cost(started)
        self._audit(request, result, camera)
        timing = np.empty((len(result.shapes), 2), np.int64)
        return [
            pb_utils.Tensor("images", result.images),
            pb_utils.Tensor("LETTERBOX", np.ascontiguousarray(result.letterbox)),
            pb_utils.Tensor("QUALITY", quality),
            timing,
        ]

    def _log_rejection(self, request, camera, reason, message):
        logger = getattr(pb_utils, "Logger", None)
        if logger is None:
            return
        line = {"request_id": request.request_id(), "stage": "preprocess", "severity": "warning",
                "camera": camera, "reason": reason, "message": message}
        logger.log_warn(json.dumps(line))

    def _audit(self, request, result, camera):
        lost = self.audit.take_lost()  # frames queued earlier that the worker could not send
        if lost:
            self.telemetry.audit("lost", lost)
        request_id = request.request_id()
        if not self.audit.wants(request_id):
            return
        try:
            frame = result.first_frame
            if result.first_factor > 1:
                # Served at reduced scale; the redaction's detectors look at 640 px, so an
                # audited frame (at most one a minute) is decoded again at a scale that keeps them.
                frame = decode_frame(result.first_encoded, self.max_pixels, min_side=DETECT_WIDTH).image
            outcome = self.audit.send(frame, request_id, camera)
        except Exception:  # noqa: BLE001 - auditing is best effort; it never fails a request
            outcome = "dropped"
        self.telemetry.audit(outcome)

    def finalize(self):
        self.telemetry.close()
        self.audit.close()
