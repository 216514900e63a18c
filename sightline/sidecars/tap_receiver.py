"""Receive tap records over UDP and score drift per camera and globally.

The receiver only parses and appends to one preallocated ring of records (the sliding
windows are views of it); a separate thread
evaluates drift every few seconds, so a slow statistic never backs up the socket. Lost
datagrams are counted from gaps in each sender's sequence numbers.

Recent records are also kept, with their arrival time, so the reference can be rebuilt
from live traffic (``rebaseline``) after a lasting, accepted change.
"""

from __future__ import annotations

import binascii
import json
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Dict, Literal, Mapping, Optional, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from threadpoolctl import threadpool_limits

from sightline import conventions as names
from sightline import datagrams, modelspec
from sightline.errors import OperationError
from sightline.redaction import background_priority
from sightline.sidecars import logs
from sightline.sidecars.audit_store import AuditStore
from sightline.sidecars.drift import DriftDecision, DriftDetector, DriftThresholds
from sightline.sidecars.reference import ReferenceInfo, new_version, stored_calibration, write_reference

ALL_CAMERAS = names.ALL_CAMERAS
DEFAULT_REFERENCE = Path(__file__).resolve().parent.parent / "export" / "reference" / "daylight_reference.npz"
DEFAULT_REFERENCE_DIR = Path(".sightline/drift")
QUALITY_DRIFT_FEATURES = ("brightness", "sharpness", "contrast")
MIN_REFERENCE_RECORDS = 20  # DriftDetector refuses a smaller reference
MAX_DATAGRAM_BYTES = 65_000  # the sender drops anything over 60 000 bytes
MAX_SENDERS = 512  # senders whose sequence numbers are followed (least recently heard forgotten first)
MAX_SEQ = 2**63 - 1
# A sender's sequence that jumps by more than this (either way) restarted, or is not who it says:
# follow it from there, and count nothing lost for the jump.
MAX_SEQ_GAP = 1_000_000
# Detections one tap record may count: far above the model's default per frame (100), which an
# operator may raise in postprocess's config, and far below what would skew the class test.
MAX_TAP_DETECTIONS = 10_000

# Tap datagrams refused at accept(), by reason (the values of sightline_tap_rejected_total's label).
REJECT_TOO_LARGE = "too_large"
REJECT_DECODE = "decode_error"  # not JSON, or not a JSON object
REJECT_VERSION = "unsupported_version"
REJECT_FIELD = "invalid_field"  # a field of the wrong type or size, or missing
REJECT_NOT_FINITE = "not_finite"  # NaN or infinity in a number or in the embedding
REJECT_EMBEDDING = "embedding_shape"
REJECT_INTERNAL = "internal_error"  # reading the datagram raised: logged, and the receive thread goes on
TAP_REJECT_REASONS = (REJECT_TOO_LARGE, REJECT_DECODE, REJECT_VERSION, REJECT_FIELD, REJECT_NOT_FINITE,
                      REJECT_EMBEDDING, REJECT_INTERNAL)


@dataclass
class Record:
    camera: str
    embedding: np.ndarray
    quality: Dict[str, float]
    by_class: list


class _Detections(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    count: Optional[int] = Field(None, ge=0, le=MAX_TAP_DETECTIONS)
    # detections per class: one count a class, whole numbers, together no more than a frame can hold
    by_class: list[Annotated[int, Field(ge=0, le=MAX_TAP_DETECTIONS)]] = Field(
        default_factory=list, max_length=modelspec.NUM_CLASSES)
    mean_confidence: Optional[float] = None


class TapDatagram(BaseModel):
    """One tap datagram as :func:`sightline.datagrams.tap_datagram` writes it.

    Every field a sender sets is checked for type and size here, and every number for
    being finite, so a bad datagram is refused alone at the socket, never later inside
    the evaluation thread. ``v`` is the format's version: absent (older senders) or 1.
    """

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    kind: Literal["tap"] = "tap"
    v: Literal[1] = 1
    sender: str = Field("", max_length=256)
    seq: int = Field(0, ge=0, le=MAX_SEQ)
    camera: str = Field(min_length=1, max_length=128)
    embedding: str = Field(max_length=16_384)
    quality: Dict[str, float] = Field(default_factory=dict, max_length=32)
    detections: _Detections = Field(default_factory=_Detections)
    request_id: Optional[str] = Field(None, max_length=256)
    model_version: Optional[str] = Field(None, max_length=64)


def _reject_reason(exc: ValidationError) -> str:
    """The one reason a datagram is refused for, from pydantic's first error."""
    error = exc.errors()[0]
    if error["loc"][:1] == ("v",):
        return REJECT_VERSION
    if error["type"] == "finite_number":
        return REJECT_NOT_FINITE
    if error["type"] == "model_type" and not error["loc"]:
        return REJECT_DECODE  # JSON, but not an object
    return REJECT_FIELD


class RecordRing:
    """The latest ``capacity`` tap records, in arrays allocated and touched up front.

    A deque of Python objects grows the sidecar's heap for as long as it fills (about
    15 minutes for 5000 records at a 5 % tap of 110 req/s), which reads as a leak on a
    memory board. Here the memory is all resident from the start and stays flat.
    Records come back out as :class:`Record` objects, oldest first.

    >>> ring = RecordRing(3, dim=2)
    >>> for i in range(5):
    ...     ring.append(Record(f"cam-{i % 2}", np.full(2, i, np.float32), {"brightness": i / 10}, []), arrived=float(i))
    >>> [int(r.embedding[0]) for r in ring.latest()], [int(r.embedding[0]) for r in ring.latest("cam-0")]
    ([2, 3, 4], [2, 4])
    >>> [r.quality for r in ring.since(3.0)]
    [{'brightness': 0.3}, {'brightness': 0.4}]
    """

    def __init__(self, capacity: int, dim: int = modelspec.EMBEDDING_DIM,
                 quality_fields: Sequence[str] = names.QUALITY_FIELDS, classes: int = modelspec.NUM_CLASSES) -> None:
        self.capacity = capacity
        self.quality_fields = tuple(quality_fields)
        self.classes = classes
        # np.full writes every page: resident now, not as the ring fills.
        self.embeddings = np.full((capacity, dim), np.nan, np.float32)
        self.quality = np.full((capacity, len(self.quality_fields)), np.nan, np.float64)
        self.by_class = np.full((capacity, classes), np.nan, np.float64)
        self.arrived = np.full(capacity, -np.inf, np.float64)
        self.camera = np.full(capacity, -1, np.int32)
        self._codes: Dict[str, int] = {}
        self._names: list = []
        self.count = 0  # records ever appended
        self.evicted_arrival = -np.inf  # arrival time of the newest record overwritten so far

    def __len__(self) -> int:
        return min(self.count, self.capacity)

    def cameras(self) -> list:
        return list(self._names)

    def append(self, record: Record, arrived: float) -> None:
        """Store one record (the caller validated it: a float embedding of the ring's dim)."""
        slot = self.count % self.capacity
        if self.count >= self.capacity:
            self.evicted_arrival = float(self.arrived[slot])
        code = self._codes.get(record.camera)
        if code is None:
            code = self._codes[record.camera] = len(self._names)
            self._names.append(record.camera)
        self.embeddings[slot] = record.embedding
        self.quality[slot] = [float(record.quality.get(f, np.nan)) for f in self.quality_fields]
        has_classes = len(record.by_class) == self.classes
        self.by_class[slot] = np.asarray(record.by_class, np.float64) if has_classes else np.nan
        self.arrived[slot] = arrived
        self.camera[slot] = code
        self.count += 1

    def _order(self) -> np.ndarray:
        """Slots from oldest to newest."""
        n = len(self)
        start = self.count % self.capacity if self.count > self.capacity else 0
        return (start + np.arange(n)) % self.capacity

    def _records(self, slots: np.ndarray) -> list:
        out = []
        for slot in slots:
            quality = {f: float(v) for f, v in zip(self.quality_fields, self.quality[slot]) if not np.isnan(v)}
            row = self.by_class[slot]
            by_class = [] if np.isnan(row).any() else [float(v) for v in row]
            out.append(Record(self._names[self.camera[slot]], self.embeddings[slot].copy(), quality, by_class))
        return out

    def latest(self, camera: Optional[str] = None, limit: Optional[int] = None) -> list:
        """The newest ``limit`` records (of one camera, or of all), oldest first."""
        slots = self._order()
        if camera is not None:
            code = self._codes.get(camera)
            slots = slots[self.camera[slots] == code] if code is not None else slots[:0]
        if limit is not None:
            slots = slots[-limit:]
        return self._records(slots)

    def since(self, arrived: float) -> list:
        slots = self._order()
        return self._records(slots[self.arrived[slots] >= arrived])

    def since_timed(self, arrived: float) -> list:
        slots = self._order()
        slots = slots[self.arrived[slots] >= arrived]
        return list(zip((float(self.arrived[s]) for s in slots), self._records(slots)))


def load_reference(path: Path = DEFAULT_REFERENCE) -> tuple[np.ndarray, Dict[str, np.ndarray], Optional[np.ndarray]]:
    """Embeddings, quality features and class proportions of a reference.

    Other keys (a refreshed reference's ``version``, ``created_at`` ...) are ignored.
    """
    with np.load(path) as data:
        return reference_parts({key: data[key] for key in data.files})


def reference_parts(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Dict[str, np.ndarray], Optional[np.ndarray]]:
    """(embeddings, quality features, class proportions) from a reference's arrays."""
    embeddings = arrays["embeddings"].astype(np.float32)
    quality = {key[len("quality_"):]: value.astype(np.float64) for key, value in arrays.items() if key.startswith("quality_")}
    classes = arrays["class_counts"].astype(np.float64) if "class_counts" in arrays else None
    if classes is not None and classes.ndim == 2:
        classes = classes.sum(axis=0)
    return embeddings, quality, classes


def reference_arrays(records: Sequence[Record]) -> Dict[str, np.ndarray]:
    """The arrays of a reference built from tap records (the keys ``load_reference`` reads)."""
    arrays = {"embeddings": np.stack([r.embedding for r in records]).astype(np.float32)}
    for feature in QUALITY_DRIFT_FEATURES:
        values = [r.quality[feature] for r in records if feature in r.quality]
        if values:
            arrays[f"quality_{feature}"] = np.asarray(values, dtype=np.float32)
    by_class = [r.by_class for r in records if len(r.by_class) == modelspec.NUM_CLASSES]
    if by_class:
        arrays["class_counts"] = np.sum(by_class, axis=0).astype(np.int64)
    return arrays


class RebaselineRefused(OperationError):
    """A reference refresh was refused. ``kind``: ``drift`` (force overrides it) or ``too_few_records``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class DriftService:
    """Windows of tap records, drift scores, and the metrics that expose both."""

    def __init__(
        self,
        registry: CollectorRegistry,
        detector: DriftDetector,
        window: int = 500,
        max_cameras: int = 64,
        reference: Optional[ReferenceInfo] = None,
        reference_dir: Path = DEFAULT_REFERENCE_DIR,
        recent: int = 5000,
    ) -> None:
        self.detector = detector
        self.reference = reference
        self.reference_dir = reference_dir
        self.window = window
        self.max_cameras = max_cameras
        self._lock = threading.Lock()
        self._rebaseline_lock = threading.Lock()  # one refresh at a time
        # Preallocated rings: one for every record (the "all" window and the rebaseline
        # buffer are views of it) and one per camera, made when the camera first sends,
        # so each camera keeps its own latest `window` records whatever the others send.
        self._ring = RecordRing(max(recent, window), dim=detector.reference.shape[1])
        self._camera_rings: Dict[str, RecordRing] = {}
        self.rebaseline_buffer = recent  # a refresh sees at most the latest `recent` records
        # Latest sequence number per sender, least recently heard first; at most MAX_SENDERS.
        self._last_seq: OrderedDict[str, int] = OrderedDict()
        self.max_senders = MAX_SENDERS
        # Records received per camera (and "all") since that window was last counted in
        # DRIFT_WINDOWS: a window is counted once every record in it is new.
        self._fresh: Dict[str, int] = {}
        # The latest verdict per camera, against the reference of this generation only.
        self._decisions: Dict[str, DriftDecision] = {}
        self._generation = 0
        camera = [names.LABEL_CAMERA]
        self.received = Counter(names.TAP_RECEIVED, "Tap records received by the sidecar.", registry=registry)
        self.lost = Counter(names.TAP_LOST, "Tap records lost in transit (sender sequence gaps).",
                            registry=registry)
        self.rejected = Counter(names.TAP_REJECTED, "Tap datagrams that could not be read, by reason.",
                                [names.LABEL_REASON], registry=registry)
        for reason in TAP_REJECT_REASONS:
            self.rejected.labels(reason)
        self.evaluation_errors = Counter(names.DRIFT_EVALUATION_ERRORS, "Drift evaluations that raised (the "
                                         "evaluation thread logs them and goes on), per camera window.",
                                         [names.LABEL_CAMERA], registry=registry)
        self.mmd2 = Gauge(names.DRIFT_MMD2, "MMD² between the live window and the daylight reference.", camera,
                          registry=registry)
        self.p_value = Gauge(names.DRIFT_P_VALUE, "Drift test p-value (mmd: permutation; ks: Bonferroni; "
                             "class: chi-square).", [names.LABEL_CAMERA, "test"], registry=registry)
        self.distance_ratio = Gauge(names.DRIFT_DISTANCE_RATIO, "Mean-embedding distance to the reference, "
                                    "as a multiple of its same-size daylight baseline.", camera, registry=registry)
        self.distance_limit = Gauge(names.DRIFT_DISTANCE_LIMIT, "The distance ratio a healthy window of the current "
                                    "size exceeds with the calibrated false-alarm probability.", camera,
                                    registry=registry)
        self.windows = Counter(names.DRIFT_WINDOWS, "Full, disjoint drift windows judged against the distance limit, "
                               "by result (the drift SLO's events).", [names.LABEL_CAMERA, names.LABEL_RESULT],
                               registry=registry)
        for result in (names.DRIFT_WITHIN_LIMIT, names.DRIFT_OVER_LIMIT):
            self.windows.labels(ALL_CAMERAS, result)  # the SLO's series exist from the start, at 0
        self.window_size = Gauge(names.DRIFT_WINDOW_SIZE, "Records in the drift window.", camera, registry=registry)
        self.evaluated = Gauge(names.DRIFT_LAST_EVALUATION, "When drift was last evaluated.",
                               camera, registry=registry)
        self.detected = Gauge(names.DRIFT_DETECTED, "1 when the last evaluation found drift.", camera,
                              registry=registry)
        self.quality_psi = Gauge(names.DRIFT_QUALITY_PSI, "PSI of a quality feature against the reference.",
                                 [names.LABEL_CAMERA, "feature"], registry=registry)
        self.evaluation_seconds = Gauge(names.DRIFT_EVALUATION_SECONDS, "Time the last drift evaluation took.",
                                        camera, registry=registry)
        self.reference_info = Info(names.DRIFT_REFERENCE, "The drift reference in use, by version.",
                                   registry=registry)
        # For a reference without created_at (the committed one) this is its file's
        # modification time: when that reference was deployed.
        self.reference_created = Gauge(names.DRIFT_REFERENCE_CREATED,
                                       "When the drift reference was built (unix time).", registry=registry)
        self.reference_records = Gauge(names.DRIFT_REFERENCE_RECORDS, "Embeddings in the drift reference.",
                                       registry=registry)
        if reference is not None:
            self._show_reference(reference)

    # -- ingestion ----------------------------------------------------------------------------
    def accept(self, datagram: bytes) -> bool:
        """Validate one tap datagram and add its record; a bad one is counted by reason and refused alone."""
        if len(datagram) > MAX_DATAGRAM_BYTES:
            return self._reject(REJECT_TOO_LARGE, f"datagram of {len(datagram)} bytes, at most {MAX_DATAGRAM_BYTES}")
        try:
            body = TapDatagram.model_validate_json(datagram)
        except ValidationError as exc:
            reason = REJECT_DECODE if exc.errors()[0]["type"] == "json_invalid" else _reject_reason(exc)
            return self._reject(reason, "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                                                  for e in exc.errors()[:3]))
        try:
            # validate=True: stray characters are an error, not silently skipped
            embedding = datagrams.decode_embedding(body.embedding)
        except (ValueError, binascii.Error) as exc:
            return self._reject(REJECT_FIELD, f"embedding: {exc}")
        if embedding.shape != (self.detector.reference.shape[1],):
            return self._reject(REJECT_EMBEDDING, f"embedding of {embedding.size} values, expected "
                                                  f"{self.detector.reference.shape[1]}")
        if not np.isfinite(embedding).all():
            return self._reject(REJECT_NOT_FINITE, "embedding: NaN or infinity")
        detections = body.detections
        counted = detections.count if detections.count is not None else MAX_TAP_DETECTIONS
        if sum(detections.by_class) > counted:
            return self._reject(REJECT_FIELD, f"detections.by_class: {sum(detections.by_class)} detections by class, "
                                              f"more than the {counted} counted")
        # "all" names the pooled window: a camera that calls itself that is one of the others
        camera = names.OTHER_CAMERA if body.camera == ALL_CAMERAS else body.camera
        record = Record(camera, embedding, dict(body.quality), [float(v) for v in detections.by_class])
        sender, seq = body.sender, body.seq
        self.received.inc()
        logs.event("info", "sampled request", request_id=body.request_id, stage="postprocess",
                   camera=record.camera, model_version=body.model_version,
                   detections=body.detections.count, mean_confidence=body.detections.mean_confidence,
                   brightness=record.quality.get("brightness"), sharpness=record.quality.get("sharpness"))
        with self._lock:
            last = self._last_seq.get(sender)
            if last is not None and last + 1 < seq <= last + MAX_SEQ_GAP:
                self.lost.inc(seq - last - 1)
            if last is None or seq > last or seq < last - MAX_SEQ_GAP:  # a late datagram moves nothing back
                self._last_seq[sender] = seq
            self._last_seq.move_to_end(sender)
            while len(self._last_seq) > self.max_senders:
                self._last_seq.popitem(last=False)
            if record.camera not in self._camera_rings and len(self._camera_rings) >= self.max_cameras:
                record.camera = names.OTHER_CAMERA
            ring = self._camera_rings.get(record.camera)
            if ring is None:
                ring = self._camera_rings[record.camera] = RecordRing(self.window, dim=self._ring.embeddings.shape[1])
            arrived = time.monotonic()
            ring.append(record, arrived)
            self._ring.append(record, arrived)
            for key in (ALL_CAMERAS, record.camera):
                self._fresh[key] = self._fresh.get(key, 0) + 1
        return True

    def _reject(self, reason: str, error: str) -> bool:
        self.rejected.labels(reason).inc()
        logs.limited(f"tap-rejected:{reason}", "error", "unreadable tap record", stage="tap", reason=reason,
                     error=error[:500])
        return False

    def senders(self) -> int:
        """Senders whose sequence numbers are followed now (at most ``max_senders``)."""
        with self._lock:
            return len(self._last_seq)

    # -- evaluation ---------------------------------------------------------------------------
    def snapshot(self) -> Dict[str, list]:
        return self._snapshot()[0]

    def _snapshot(self) -> tuple[Dict[str, list], set]:
        """The latest window per camera, and the cameras whose window is full and entirely
        new since their last counted one (counted now: their fresh count starts again)."""
        with self._lock:
            out = {ALL_CAMERAS: self._ring.latest(limit=self.window)}
            for camera, ring in self._camera_rings.items():
                out[camera] = ring.latest()
            whole = {camera for camera, records in out.items()
                     if len(records) >= self.window and self._fresh.get(camera, 0) >= self.window}
            for camera in whole:
                self._fresh[camera] = 0
            return out, whole

    def evaluate(self) -> Dict[str, DriftDecision]:
        with self._lock:
            detector, generation = self.detector, self._generation
        decisions = {}
        windows, whole = self._snapshot()
        for camera, records in windows.items():
            self.window_size.labels(camera).set(len(records))
            if len(records) < detector.thresholds.min_window:
                continue
            started = time.perf_counter()
            try:
                decision = self.decide(records, detector)
            except Exception as exc:  # noqa: BLE001 - one window's failure never stops the others
                self.evaluation_errors.labels(camera).inc()
                logs.event("error", "drift evaluation failed", stage="drift", camera=camera, error=repr(exc)[:500])
                continue
            score = decision.score
            self.mmd2.labels(camera).set(score.mmd2)
            self.p_value.labels(camera, "mmd").set(score.mmd_p_value)
            self.p_value.labels(camera, "ks").set(score.ks_p_value)
            if score.class_p_value is not None:
                self.p_value.labels(camera, "class").set(score.class_p_value)
            self.distance_ratio.labels(camera).set(score.distance_ratio)
            self.distance_limit.labels(camera).set(score.distance_limit)
            if camera in whole:
                over = score.distance_ratio >= score.distance_limit
                self.windows.labels(camera, names.DRIFT_OVER_LIMIT if over else names.DRIFT_WITHIN_LIMIT).inc()
            for feature, value in score.quality_psi.items():
                self.quality_psi.labels(camera, feature).set(value)
            self.detected.labels(camera).set(1.0 if decision.drift else 0.0)
            self.evaluated.labels(camera).set(time.time())
            self.evaluation_seconds.labels(camera).set(time.perf_counter() - started)
            decisions[camera] = decision
            if decision.drift:
                logs.event("warning", "drift detected", stage="drift", camera=camera, reasons=decision.reasons,
                           window=score.window_size, p_value=score.mmd_p_value, distance_ratio=score.distance_ratio,
                           distance_limit=score.distance_limit)
        with self._lock:
            if generation == self._generation:  # not judged against a reference replaced meanwhile
                self._decisions.update(decisions)
        return decisions

    def decide(self, records: Sequence[Record], detector: Optional[DriftDetector] = None) -> DriftDecision:
        """The verdict on one window of records (embeddings, quality features, class counts)."""
        detector = detector or self.detector
        embeddings = np.stack([r.embedding for r in records])
        quality = {f: np.array([r.quality[f] for r in records if f in r.quality]) for f in QUALITY_DRIFT_FEATURES}
        counts = np.sum([r.by_class for r in records if len(r.by_class) == modelspec.NUM_CLASSES], axis=0)
        return detector.predict(embeddings, quality, counts if np.ndim(counts) else None)

    def drifting(self) -> list[str]:
        """Cameras (``all`` included) whose latest evaluation found drift."""
        with self._lock:
            return sorted(camera for camera, decision in self._decisions.items() if decision.drift)

    # -- reference refresh ----------------------------------------------------------------------
    def recent(self, window_s: float) -> list[Record]:
        """Records that arrived within the last ``window_s`` seconds."""
        return [record for _, record in self._recent_timed(window_s)[0]]

    def _recent_timed(self, window_s: float) -> tuple[list[tuple[float, Record]], bool]:
        """(arrival, record) of the last ``window_s`` seconds, and whether the buffer cut that window short.

        Cut short means records that arrived within the window are gone: overwritten in the
        ring, or beyond the latest ``rebaseline_buffer``. Traffic that simply ran for less
        than the window is not cut short.
        """
        since = time.monotonic() - window_s
        with self._lock:
            timed = self._ring.since_timed(since)
            truncated = len(timed) > self.rebaseline_buffer or self._ring.evicted_arrival >= since
            return timed[-self.rebaseline_buffer:], truncated

    def rebaseline(self, window_s: float, force: bool = False, reason: str = "", min_records: int = 200,
                   alerts: Sequence[str] = ()) -> Dict[str, object]:
        """Rebuild the reference from the records of the last ``window_s`` seconds and use it.

        Refused while the latest evaluation found drift, or while ``alerts`` (drift alerts
        the caller saw firing) is not empty, unless ``force``: a reference built from
        drifted traffic hides that drift. Always refused with fewer than ``min_records``.
        """
        if not window_s > 0:
            raise ValueError(f"window_s must be a positive number of seconds, got {window_s}")
        if min_records < MIN_REFERENCE_RECORDS:
            raise ValueError(f"min_records must be at least {MIN_REFERENCE_RECORDS}, got {min_records}")
        with self._rebaseline_lock:
            request = {"window_s": window_s, "forced": force, "reason": reason, "alerts": list(alerts)}
            drifting = self.drifting()
            if not force and (drifting or alerts):
                found = ([f"the latest evaluation found drift for camera(s) {', '.join(drifting)}"] if drifting else [])
                found += [f"drift alerts are firing: {', '.join(alerts)}"] if alerts else []
                self._refuse("drift", f"{'; '.join(found)}: a reference rebuilt now would hide that drift", request)
            timed, truncated = self._recent_timed(window_s)
            records = [record for _, record in timed]
            # The buffer keeps the latest `rebaseline_buffer` records: at a high tap rate they
            # may cover less than the asked-for window. Say how much they really cover.
            covered_s = time.monotonic() - timed[0][0] if timed else 0.0
            if len(records) < min_records:
                self._refuse("too_few_records", f"only {len(records)} tap records arrived in the last {window_s:g} s; "
                                                f"a reference needs at least {min_records} (wait for more traffic "
                                                "or widen the window)", request)
            return self._replace_reference(records, window_s, force, reason, alerts, covered_s, truncated)

    def _refuse(self, kind: str, message: str, request: Dict[str, object]) -> None:
        logs.event("warning", "drift reference refresh refused", stage="drift", refusal=kind, error=message,
                   version=self.reference.version if self.reference else None, **request)
        raise RebaselineRefused(kind, message)

    def _replace_reference(self, records: Sequence[Record], window_s: float, force: bool, reason: str,
                           alerts: Sequence[str], covered_s: float, truncated: bool = False) -> Dict[str, object]:
        created_at = time.time()
        version = new_version(self.reference_dir, created_at)
        arrays = reference_arrays(records)
        # Build the detector first: a reference that cannot be used is never written, so
        # current.json never points a restart at something the running sidecar refused.
        detector = DriftDetector(*reference_parts(arrays), permutations=self.detector.permutations,
                                 thresholds=self.detector.thresholds)
        arrays.update(detector.calibration.arrays())  # the distance limit travels with the reference
        arrays.update(created_at=np.array(created_at), version=np.array(version), records=np.array(len(records)),
                      window_s=np.array(float(window_s)), covered_s=np.array(float(covered_s)),
                      forced=np.array(bool(force)), reason=np.array(reason))
        info = write_reference(self.reference_dir, arrays, version, created_at)
        with self._lock:
            previous = self.reference
            self.detector, self.reference = detector, info
            self._generation += 1
            self._decisions.clear()
        self._show_reference(info)
        previous_version = previous.version if previous else None
        # Only a window the buffer cut short is worth a warning: traffic that ran for less
        # than the window (a sidecar started 10 minutes ago) gave everything there was.
        logs.event("warning" if force or truncated else "info", "drift reference rebuilt", stage="drift",
                   version=version, records=len(records), window_s=window_s, covered_s=round(covered_s, 1),
                   truncated=truncated, forced=force, reason=reason, previous_version=previous_version,
                   alerts=list(alerts), path=str(info.path))
        summary = {"version": version, "previous_version": previous_version, "records": len(records),
                   "window_s": window_s, "covered_s": round(covered_s, 1), "truncated": truncated, "forced": force,
                   "reason": reason, "created_at": created_at, "path": str(info.path)}
        if truncated:
            summary["warning"] = (f"the records cover only the last {covered_s:.0f} s of the {window_s:g} s asked for: "
                                  f"the sidecar keeps the latest {self.rebaseline_buffer} records (rebaseline_buffer)")
        return summary

    def _show_reference(self, info: ReferenceInfo) -> None:
        self.reference_info.info({"version": info.version})
        self.reference_created.set(info.created_at)
        self.reference_records.set(info.records)


class TapReceiver:
    """A UDP socket on loopback: tap records go to the drift service, audit frames to the store.

    Runs a receive thread and, with a drift service, an evaluation thread.
    """

    def __init__(self, service: Optional[DriftService], host: str = "127.0.0.1", port: int = 9411,
                 evaluate_every_s: float = 10.0, audit: Optional["AuditStore"] = None) -> None:
        self.service = service
        self.audit = audit
        self.evaluate_every_s = evaluate_every_s
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self._socket.bind((host, port))
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._receive_loop, name="tap-receive", daemon=True),
            threading.Thread(target=self._evaluate_loop, name="drift-evaluate", daemon=True),
        ]

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def start(self) -> "TapReceiver":
        for thread in self._threads:
            thread.start()
        return self

    def _receive_loop(self) -> None:
        while not self._stop.is_set():
            try:
                datagram, _ = self._socket.recvfrom(65_536)
            except socket.timeout:
                continue
            except OSError as exc:
                if not self._stop.is_set():  # not a stop: say why tap records stop arriving
                    logs.event("error", "the tap socket failed; no more tap records are received", stage="tap",
                               error=repr(exc)[:500])
                return
            try:
                self.dispatch(datagram)
            except Exception as exc:  # noqa: BLE001 - no datagram may stop the receive thread
                if self.service is not None:
                    self.service.rejected.labels(REJECT_INTERNAL).inc()
                logs.limited("tap-unreadable", "error", "cannot read a tap datagram", stage="tap", error=repr(exc)[:500])

    def dispatch(self, datagram: bytes) -> None:
        if datagrams.kind_of(datagram) == datagrams.AUDIT:
            if self.audit is None:
                return
            try:
                body = json.loads(datagram)
            except (ValueError, RecursionError):
                self.audit.refused.labels("decode_error").inc()
                return
            self.audit.accept(body)
        elif self.service is not None:
            self.service.accept(datagram)

    def _evaluate_loop(self) -> None:
        # Nobody waits on a drift verdict, and Triton shares the node: a pass (per camera a
        # 1000 x 1000 kernel and 100 permutations) is a burst of about 0.4 s of CPU. At
        # normal priority, and with numpy's BLAS pool (one thread per core) beside this
        # thread, each burst queued the detector: P95 spikes at 70 % load on two cores. So
        # the pass runs at nice 19, and its matrix products in this thread alone.
        background_priority()
        with threadpool_limits(limits=1, user_api="blas"):
            while not self._stop.wait(self.evaluate_every_s):
                self.evaluate_once()

    def evaluate_once(self) -> None:
        """One pass of the evaluation thread: drift, then audit expiry. Neither failure stops
        the other or the thread (logged and counted, and the next pass tries again)."""
        if self.service is not None:
            try:
                self.service.evaluate()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any record
                self.service.evaluation_errors.labels(ALL_CAMERAS).inc()
                logs.event("error", "drift evaluation failed", stage="drift", error=repr(exc)[:500])
        if self.audit is not None:
            try:
                self.audit.sweep()
            except Exception as exc:  # noqa: BLE001
                logs.event("error", "audit expiry failed", stage="audit", error=repr(exc)[:500])

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._socket.close()


def build_detector(reference_path: Path = DEFAULT_REFERENCE, permutations: int = 100,
                   thresholds: DriftThresholds = DriftThresholds()) -> DriftDetector:
    embeddings, quality, classes = load_reference(reference_path)
    return DriftDetector(embeddings, quality, classes, permutations=permutations, thresholds=thresholds,
                         calibration=stored_calibration(reference_path))
