# Triton 2.51 (the same server as the local stack's wheel; Python 3.10) with Sightline's
# Python steps and their dependencies. Build from the repository root:
#   docker build -f k8s/images/triton.Dockerfile -t ghcr.io/sightline/triton:0.1.0-24.10 .
FROM nvcr.io/nvidia/tritonserver:24.10-py3

# The steps' dependencies, pinned to what the local stack tests (numpy < 2 for the stub).
RUN python3 -m pip install --no-cache-dir \
        "numpy==1.26.4" "opencv-python-headless==4.11.0.86" "onnxruntime==1.19.2" \
        "scipy==1.13.1" "pyyaml==6.0.2" "pydantic==2.9.2" "rich==13.9.4" \
        "prometheus-client==0.21.0" "opentelemetry-proto==1.27.0" "nvidia-ml-py==12.560.30"

WORKDIR /opt/sightline
COPY pyproject.toml README.md ./
COPY sightline/ sightline/
COPY export/ export/
COPY sidecars/ sidecars/
# Install the package without its heavy local-only dependencies (torch, the pytriton wheel).
RUN python3 -m pip install --no-cache-dir --no-deps .

# A baked-in copy of the model repository; the Deployment mounts the real one at /models.
COPY model_repository/ /models/

USER 1000:1000
ENV HOME=/tmp
ENTRYPOINT []
