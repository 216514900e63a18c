"""Sightline: observability for computer-vision inference on Triton."""

import os

# The pixel limit of one frame. OpenCV reads its own decoder limit once, when cv2 is first
# imported, so it is set here, when anything of Sightline is first imported and so before
# any Sightline module can import cv2 (the steps, the audit store, the monitor): the decoder
# itself refuses a frame over the limit whatever its header says. The Triton shells set it
# earlier still, from their config; an operator's own setting wins.
DEFAULT_MAX_PIXELS = 4096 * 4096
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(DEFAULT_MAX_PIXELS))
