"""Triton shell for the preprocess step; the logic lives in sightline.steps."""

import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from sightline.conventions import QUALITY_FIELDS, TIMING_TENSOR
from sightline.quality import quality_features
from sightline.steps.audit import AuditSampler
from sightline.steps.images import DEFAULT_MAX_PIXELS, InvalidInput
from sightline.steps.preprocess import preprocess_request
from sightline.steps.telemetry import CameraLabels, StepTelemetry, model_parameters, request_parameters


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(json.loads(args["model_config"]))
        self.max_pixels = int(params.get("max_pixels", DEFAULT_MAX_PIXELS))
        self.telemetry = StepTelemetry(pb_utils, args["model_name"], args["model_version"], "preprocess",
                                       CameraLabels.from_parameters(params))
        self.telemetry.expect_streams()
        self.telemetry.start_background_flush()
        self.late_after_s = float(params.get("late_after_s", "2.0"))
        host, _, port = os.environ.get("SIGHTLINE_TAP_ADDRESS", params.get("tap_address", "127.0.0.1:9411")).rpartition(":")
        self.audit = AuditSampler(
            (host, int(port)),
            rate=float(os.environ.get("SIGHTLINE_AUDIT_RATE", params.get("audit_rate", "0.01"))),
            per_minute=float(params.get("audit_per_minute", "6")),
        )

    def execute(self, requests):
        # Latency of every request without tracing: this execution's start and end on
        # CLOCK_MONOTONIC (shared by the host's processes) travel to postprocess in TIMING.
        started_ns = time.monotonic_ns()
        self.telemetry.batch(len(requests))
        responses = []
        timings = []
        for request in requests:
            params = request_parameters(request)
            camera = self.telemetry.camera_of(params)
            self.telemetry.frame_arrived(params, camera, self.late_after_s)
            image = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
            try:
                images, letterbox, frames = preprocess_request(image, self.max_pixels)
            except InvalidInput as exc:
                self.telemetry.rejected(exc.reason, camera)
                self._log_rejection(request, camera, exc.reason, str(exc))
                error = pb_utils.TritonError(f"{exc} [reason={exc.reason}]", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            except Exception as exc:  # one broken frame must not take the batch down
                self.telemetry.rejected("internal", camera)
                error = pb_utils.TritonError(f"preprocess failed: {exc!r} [reason=internal]")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            started = time.perf_counter()
            quality = np.zeros((len(frames), len(QUALITY_FIELDS)), np.float32)
            for row, frame in enumerate(frames):
                if not self.telemetry.enabled:
                    break  # observability off: no features (the overhead benchmark's baseline)
                features = quality_features(frame)
                quality[row] = [features[name] for name in QUALITY_FIELDS]
                self.telemetry.quality(features, camera)
            self.telemetry.cost(started)
            self._audit(request, frames[0], camera)
            timing = np.empty((len(frames), 2), np.int64)
            timings.append(timing)
            responses.append([
                pb_utils.Tensor("images", images),
                pb_utils.Tensor("LETTERBOX", np.ascontiguousarray(letterbox)),
                pb_utils.Tensor("QUALITY", quality),
                timing,
            ])
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

    def _log_rejection(self, request, camera, reason, message):
        logger = getattr(pb_utils, "Logger", None)
        if logger is None:
            return
        line = {"request_id": request.request_id(), "stage": "preprocess", "severity": "warning",
                "camera": camera, "reason": reason, "message": message}
        logger.log_warn(json.dumps(line))

    def _audit(self, request, frame, camera):
        request_id = request.request_id()
        if not self.audit.wants(request_id):
            return
        try:
            outcome = self.audit.send(frame, request_id, camera)
        except Exception:  # auditing is best effort; it never fails a request
            outcome = "dropped"
        self.telemetry.audit(outcome)

    def finalize(self):
        self.telemetry.close()
        self.audit.close()
