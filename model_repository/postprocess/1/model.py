"""Triton shell for the postprocess step; the logic lives in sightline.steps.postprocess."""

import json

import triton_python_backend_utils as pb_utils

from sightline import modelspec
from sightline.steps.postprocess import postprocess_request


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.score_threshold = float(params.get("score_threshold", modelspec.SCORE_THRESHOLD))
        self.iou_threshold = float(params.get("nms_iou_threshold", modelspec.NMS_IOU_THRESHOLD))
        self.max_detections = int(params.get("max_detections", modelspec.MAX_DETECTIONS))

    def execute(self, requests):
        responses = []
        for request in requests:
            predictions = pb_utils.get_input_tensor_by_name(request, "predictions").as_numpy()
            letterbox = pb_utils.get_input_tensor_by_name(request, "LETTERBOX").as_numpy()
            try:
                detections = postprocess_request(
                    predictions, letterbox, self.score_threshold, self.iou_threshold, self.max_detections
                )
            except Exception as exc:
                error = pb_utils.TritonError(f"postprocess failed: {exc!r} [reason=internal]")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("DETECTIONS", detections)]))
        return responses
