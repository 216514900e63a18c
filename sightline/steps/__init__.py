"""Pure, importable logic of the Triton Python-backend steps.

The ``model.py`` files under ``model_repository/`` are thin shells over these modules.
Everything here must stay Python 3.10 compatible: it runs inside the Triton container.
"""

import os

# The pixel limit of one frame. OpenCV reads its own decoder limit once, when cv2 is first
# imported, so it is set here, before any step module can import cv2 (every step module is
# imported through this package): the decoder itself refuses a frame over the limit
# whatever its header says. The Triton shells set it earlier still, from their config.
DEFAULT_MAX_PIXELS = 4096 * 4096
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(DEFAULT_MAX_PIXELS))
