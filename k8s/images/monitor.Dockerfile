# The monitor sidecar: a slim Python image with the sidecar's dependencies only.
# Build and push from the repository root (docs/cluster.md):
#   docker buildx build -f k8s/images/monitor.Dockerfile -t "$REGISTRY/sightline/monitor:0.1.0" --push .
FROM python:3.11.10-slim-bookworm

# Pinned to what the local stack tests, the same versions as k8s/images/triton.Dockerfile
# (numpy < 2, so opencv-python-headless stays at 4.11).
RUN python -m pip install --no-cache-dir \
        "numpy==1.26.4" "scipy==1.17.1" "pyyaml==6.0.4" "pydantic==2.14.4" "rich==15.0.0" \
        "prometheus-client==0.26.0" "opentelemetry-proto==1.45.2" "protobuf==6.33.6" \
        "nvidia-ml-py==13.615.71" "opencv-python-headless==4.11.0.86"

WORKDIR /opt/sightline
COPY pyproject.toml README.md ./
COPY sightline/ sightline/
COPY export/ export/
COPY sidecars/ sidecars/
RUN python -m pip install --no-cache-dir --no-deps .

# Not Triton's user: with the pod's shared process namespace, another user cannot read
# Triton's environment or memory (the Deployment sets the same).
USER 1001:1001
ENV HOME=/tmp
ENTRYPOINT []
