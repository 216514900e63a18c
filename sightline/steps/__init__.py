"""Pure, importable logic of the Triton Python-backend steps.

The ``model.py`` files under ``model_repository/`` are thin shells over these modules.
Everything here must stay Python 3.10 compatible: it runs inside the Triton container.
"""

# OpenCV's decoder limit is set by the package root (sightline/__init__.py) before any step
# module can import cv2.
from sightline import DEFAULT_MAX_PIXELS  # noqa: F401
