"""Triton shell for the postprocess step; the logic lives in sightline.steps."""

import json
import time

import triton_python_backend_utils as pb_utils

from sightline import modelspec
from sightline.steps.postprocess import postprocess_request, strip_padding
from sightline.steps.telemetry import CameraLabels, StepTelemetry, model_parameters


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(json.loads(args["model_config"]))
        self.score_threshold = float(params.get("score_threshold", modelspec.SCORE_THRESHOLD))
        self.iou_threshold = float(params.get("nms_iou_threshold", modelspec.NMS_IOU_THRESHOLD))
        self.max_detections = int(params.get("max_detections", modelspec.MAX_DETECTIONS))
        self.telemetry = StepTelemetry(pb_utils, args["model_name"], args["model_version"], "postprocess",
                                       CameraLabels.from_parameters(params))

    def execute(self, requests):
        self.telemetry.batch(len(requests))
        responses = []
        for request in requests:
            camera = self.telemetry.camera(request)
            predictions = pb_utils.get_input_tensor_by_name(request, "predictions").as_numpy()
            letterbox = pb_utils.get_input_tensor_by_name(request, "LETTERBOX").as_numpy()
            try:
                detections = postprocess_request(
                    predictions, letterbox, self.score_threshold, self.iou_threshold, self.max_detections
                )
            except Exception as exc:
                self.telemetry.rejected("internal", camera)
                error = pb_utils.TritonError(f"postprocess failed: {exc!r} [reason=internal]")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            started = time.perf_counter()
            for frame in detections:
                self.telemetry.detections(strip_padding(frame), camera)
            self.telemetry.cost(started)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("DETECTIONS", detections)]))
        return responses
