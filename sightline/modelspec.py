"""The demo detector's contract: tensor names, input geometry and classes.

Every part that touches the model (export, the Triton steps, the config writer, the
client, the benchmarks) reads these names from here rather than repeating them.
"""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = ("car", "truck", "pedestrian")
NUM_CLASSES = len(CLASS_NAMES)

# Square model input, letterboxed. RGB, NCHW. The served graph takes uint8 (0..255) and its
# first two nodes cast and scale it to float32 in 0..1 (UINT8_INPUT_NODES), where the
# detector itself starts: a quarter of the bytes cross the ensemble, and the scaling is the
# graph's, on whatever device runs it.
INPUT_SIZE = 256
INPUT_SCALE = 1.0 / 255.0
UINT8_INPUT_NODES = ("uint8_input_cast", "uint8_input_scale")
LETTERBOX_PAD_VALUE = 114  # grey, as in the YOLO family

ONNX_INPUT = "images"
ONNX_PREDICTIONS = "predictions"
ONNX_EMBEDDING = "embedding"
EMBEDDING_DIM = 128
ONNX_OPSET = 18

# Ensemble-facing names (what clients send and receive).
ENSEMBLE_NAME = "detector"
ENSEMBLE_INPUT = "IMAGE"
ENSEMBLE_DETECTIONS = "DETECTIONS"
ENSEMBLE_EMBEDDING = "EMBEDDING"
MODEL_NAME = "detector_model"
PREPROCESS_NAME = "preprocess"
POSTPROCESS_NAME = "postprocess"

# Post-processing defaults.
SCORE_THRESHOLD = 0.3
NMS_IOU_THRESHOLD = 0.5
MAX_DETECTIONS = 100
