# Triton 2.71.0 (NGC container 26.07: Ubuntu 24.04, Python 3.12) with Sightline's Python
# steps and their dependencies. Build and push from the repository root (docs/cluster.md):
#   docker buildx build -f k8s/images/triton.Dockerfile -t "$REGISTRY/sightline/triton:0.1.0-26.07" --push .
# 26.07 carries the fix for the tracing crash under load (server issue #7795, PR #8144,
# first released in 2.57 / 25.04) and --metrics-config=histogram_latencies=true for
# non-decoupled models (core PR #464, first released in 2.65 / 26.01).
FROM nvcr.io/nvidia/tritonserver:26.07-py3

# The Python backend's stub runs the image's system Python (3.12), so the steps'
# dependencies go there. Ubuntu 24.04 marks that Python externally managed (PEP 668); the
# base image already sets this, restated so the install below does not depend on it.
ENV PIP_BREAK_SYSTEM_PACKAGES=1

# What the Python steps import, and nothing else (tests/unit/test_container_images.py runs
# the steps' imports and compares): numpy and OpenCV, and onnxruntime, which the local (CPU)
# profile's runner imports when it loads; the gpu profile uses Triton's own onnxruntime
# backend instead. Versions come from requirements.lock, the same as the local stack's.
# numpy stays below 2 (the base image installs "numpy<2" for the Python backend), which
# holds opencv-python-headless at 4.11: 4.12 requires numpy 2.
WORKDIR /opt/sightline
COPY requirements.lock ./
RUN python3 -m pip install --no-cache-dir -c requirements.lock numpy opencv-python-headless onnxruntime

COPY pyproject.toml README.md ./
COPY sightline/ sightline/
# Install the package without its heavy local-only dependencies (torch, the pytriton wheel).
RUN python3 -m pip install --no-cache-dir --no-deps .

# A baked-in copy of the model repository; the Deployment mounts the real one at /models.
COPY model_repository/ /models/

USER 1000:1000
ENV HOME=/tmp
ENTRYPOINT []
