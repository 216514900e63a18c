"""Triton shell for the preprocess step; the logic lives in sightline.steps.preprocess."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from sightline.steps.images import DEFAULT_MAX_PIXELS, InvalidInput
from sightline.steps.preprocess import preprocess_request


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.max_pixels = int(params.get("max_pixels", DEFAULT_MAX_PIXELS))

    def execute(self, requests):
        responses = []
        for request in requests:
            image = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
            try:
                images, letterbox, _ = preprocess_request(image, self.max_pixels)
            except InvalidInput as exc:
                error = pb_utils.TritonError(f"{exc} [reason={exc.reason}]", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            except Exception as exc:  # one broken frame must not take the batch down
                error = pb_utils.TritonError(f"preprocess failed: {exc!r} [reason=internal]")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("images", images),
                        pb_utils.Tensor("LETTERBOX", np.ascontiguousarray(letterbox)),
                    ]
                )
            )
        return responses
