# The monitor sidecar: a slim Python image with the sidecar's dependencies only.
#   docker build -f k8s/images/monitor.Dockerfile -t ghcr.io/sightline/monitor:0.1.0 .
FROM python:3.11.10-slim-bookworm

RUN python -m pip install --no-cache-dir \
        "numpy==1.26.4" "scipy==1.13.1" "pyyaml==6.0.2" "pydantic==2.9.2" "rich==13.9.4" \
        "prometheus-client==0.21.0" "opentelemetry-proto==1.27.0" "nvidia-ml-py==12.560.30" \
        "opencv-python-headless==4.11.0.86"

WORKDIR /opt/sightline
COPY pyproject.toml README.md ./
COPY sightline/ sightline/
COPY export/ export/
COPY sidecars/ sidecars/
RUN python -m pip install --no-cache-dir --no-deps .

USER 1000:1000
ENV HOME=/tmp
ENTRYPOINT []
