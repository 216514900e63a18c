"""A small gRPC client for the ``detector`` ensemble, for scripts, tests and the CLI.

Every request carries a UUID ``request_id``, a ``camera_id`` request parameter (with
``frame_seq`` and ``capture_time_ms`` when the caller knows them) and a W3C
``traceparent`` header, so a slow frame can be followed from the client into Triton's
trace spans and the sidecar's exemplars::

    client = DetectorClient("127.0.0.1:8001")
    result = client.infer(open("frame.jpg", "rb").read(), camera_id="cam-1")
    for det in result.detections:
        print(det.label, det.score, det.box)
"""

from __future__ import annotations

import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import cv2
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from sightline import modelspec
from sightline.errors import OperationError


class InferenceError(OperationError):
    """The server refused or failed one request. ``status`` is the gRPC status name."""

    def __init__(self, status: str, message: str, request_id: str) -> None:
        super().__init__(f"{status}: {message} (request_id={request_id})")
        self.status = status
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original-image pixels
    score: float
    class_id: int

    @property
    def label(self) -> str:
        names = modelspec.CLASS_NAMES
        return names[self.class_id] if 0 <= self.class_id < len(names) else f"class{self.class_id}"

    def as_dict(self) -> dict:
        return {"box": [round(v, 1) for v in self.box], "score": round(self.score, 4), "class": self.label}


@dataclass
class InferenceResult:
    request_id: str
    camera_id: str
    traceparent: str
    latency_s: float
    detections: list[Detection] = field(default_factory=list)
    embedding: np.ndarray | None = None

    @property
    def trace_id(self) -> str:
        return self.traceparent.split("-")[1]


def new_traceparent() -> str:
    """A fresh W3C trace context header (version 00, sampled)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def stream_parameters(camera_id: str, frame_seq: int | None = None, capture_time_ms: int | None = None) -> dict:
    """The request parameters of a camera frame: its camera, and where the gateway knows
    them, the camera's frame counter and the capture time (unix ms) for gap and lateness
    counting on the server."""
    params: dict = {"camera_id": camera_id}
    if frame_seq is not None:
        params["frame_seq"] = int(frame_seq)
    if capture_time_ms is not None:
        params["capture_time_ms"] = int(capture_time_ms)
    return params


def encode_frame(image_bgr: np.ndarray, ext: str = ".jpg", quality: int = 90) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buffer = cv2.imencode(ext, image_bgr, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode the frame as {ext}")
    return buffer.tobytes()


def detections_from_array(rows: np.ndarray) -> list[Detection]:
    return [
        Detection(box=(float(r[0]), float(r[1]), float(r[2]), float(r[3])), score=float(r[4]), class_id=int(r[5]))
        for r in rows
        if r[5] >= 0  # class -1 marks padding in multi-frame requests
    ]


class DetectorClient:
    """Blocking client; thread-safe, so :meth:`infer_many` fans out over a thread pool."""

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        model: str = modelspec.ENSEMBLE_NAME,
        timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(url=url)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> DetectorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_model_ready(self.model))
        except InferenceServerException:
            return False

    def infer_raw(
        self,
        payload: np.ndarray,
        camera_id: str = "cam-1",
        request_id: str | None = None,
        traceparent: str | None = None,
        datatype: str = "BYTES",
        frame_seq: int | None = None,
        capture_time_ms: int | None = None,
    ) -> InferenceResult:
        """Send ``payload`` as ``IMAGE`` unchanged (tests use this to send bad tensors)."""
        request_id = request_id or str(uuid.uuid4())
        traceparent = traceparent or new_traceparent()
        tensor = grpcclient.InferInput(modelspec.ENSEMBLE_INPUT, list(payload.shape), datatype)
        tensor.set_data_from_numpy(payload)
        outputs = [
            grpcclient.InferRequestedOutput(modelspec.ENSEMBLE_DETECTIONS),
            grpcclient.InferRequestedOutput(modelspec.ENSEMBLE_EMBEDDING),
        ]
        started = time.perf_counter()
        try:
            response = self._client.infer(
                self.model,
                [tensor],
                outputs=outputs,
                request_id=request_id,
                parameters=stream_parameters(camera_id, frame_seq, capture_time_ms),
                headers={"traceparent": traceparent},
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise InferenceError(str(exc.status() or "UNKNOWN"), exc.message() or str(exc), request_id) from exc
        latency = time.perf_counter() - started
        detections = response.as_numpy(modelspec.ENSEMBLE_DETECTIONS)
        embedding = response.as_numpy(modelspec.ENSEMBLE_EMBEDDING)
        return InferenceResult(
            request_id=request_id,
            camera_id=camera_id,
            traceparent=traceparent,
            latency_s=latency,
            detections=detections_from_array(detections[0]),
            embedding=embedding[0],
        )

    def infer(self, frame: bytes | np.ndarray, camera_id: str = "cam-1", **kwargs: Any) -> InferenceResult:
        """Detect objects in one frame: encoded bytes, or a BGR array (encoded as JPEG)."""
        data = frame if isinstance(frame, (bytes, bytearray)) else encode_frame(frame)
        payload = np.array([[bytes(data)]], dtype=np.object_)
        return self.infer_raw(payload, camera_id=camera_id, **kwargs)

    def infer_many(
        self,
        frames: Sequence[bytes | np.ndarray],
        camera_ids: Iterable[str] | None = None,
        concurrency: int = 8,
    ) -> list[InferenceResult | InferenceError]:
        """Send frames concurrently; each result is an InferenceResult or its InferenceError."""
        cameras = list(camera_ids) if camera_ids is not None else ["cam-1"] * len(frames)

        def one(args: tuple[bytes | np.ndarray, str]) -> InferenceResult | InferenceError:
            try:
                return self.infer(args[0], camera_id=args[1])
            except InferenceError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(pool.map(one, zip(frames, cameras)))
