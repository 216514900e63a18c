# The monitor sidecar: a slim Python image with the sidecar's dependencies only.
# Build and push from the repository root (docs/cluster.md):
#   docker buildx build -f k8s/images/monitor.Dockerfile -t "$REGISTRY/sightline/monitor:0.1.0" --push .
FROM python:3.11.10-slim-bookworm

# What the sidecar imports, and nothing else (tests/unit/test_container_images.py runs the
# monitor's imports and compares); nvidia-ml-py is imported by the GPU collector when it
# starts. Versions come from requirements.lock, the same as the local stack's (numpy < 2,
# so opencv-python-headless stays at 4.11).
WORKDIR /opt/sightline
COPY requirements.lock ./
RUN python -m pip install --no-cache-dir -c requirements.lock \
        numpy scipy threadpoolctl pyyaml pydantic rich prometheus-client opentelemetry-proto protobuf \
        nvidia-ml-py opencv-python-headless

COPY pyproject.toml README.md ./
COPY sightline/ sightline/
RUN python -m pip install --no-cache-dir --no-deps .

# Not Triton's user, and the pod does not share its process namespace: the sidecar cannot read
# Triton's command line, environment or memory (the Deployment sets the same user).
USER 1001:1001
ENV HOME=/tmp
ENTRYPOINT []
