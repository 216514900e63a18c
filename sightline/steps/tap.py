"""The tap: a lossy, never-blocking sample of served requests, sent to the sidecar.

Postprocess decides per request, by an independent random draw, whether to sample it
(default 5 %, configurable per camera). The draw does not read ``request_id``: a default
tritonclient call sends an empty id and clients may reuse one, and a decision keyed on the id
left the first unsampled forever and sampled the second all or nothing. A sampled record carries the request
id, camera, model version, time, embedding, quality features and a detection summary, and
goes out as one UDP datagram on loopback. ``sendto`` on a non-blocking socket never waits:
if the kernel buffer is full the record is dropped and counted. Each record has a
per-sender sequence number so the receiver counts what got lost on the way.
"""

from __future__ import annotations

import os
import random
import socket
import time
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from sightline import datagrams, modelspec

DEFAULT_RATE = 0.05
DEFAULT_ADDRESS = ("127.0.0.1", 9411)
MAX_DATAGRAM = datagrams.MAX_DATAGRAM_BYTES


def sampled(rate: float, rng: Optional[random.Random] = None) -> bool:
    """One independent draw at ``rate``, whatever the request's id (empty, reused or unique)."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    return (rng or _RNG).random() < rate


_RNG = random.Random()  # seeded from the OS per process; each Triton model instance is its own process


def parse_rates(spec: str, default: float = DEFAULT_RATE) -> Dict[str, float]:
    """``"0.05"`` or ``"default=0.05,cam-4=0.5"`` -> per-camera rates (key ``*`` = default)."""
    rates = {"*": default}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        key, _, value = part.rpartition("=")
        name = key.strip()
        rates["*" if name in ("", "default", "*") else name] = float(value)
    for key, rate in rates.items():
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"tap rate for {key!r} must be within 0..1, got {rate}")
    return rates


def detection_summary(rows: np.ndarray) -> Dict[str, object]:
    classes = rows[:, 5].astype(np.int64) if len(rows) else np.zeros(0, np.int64)
    counts = [int(np.sum(classes == c)) for c in range(modelspec.NUM_CLASSES)]
    return {
        "count": int(len(rows)),
        "by_class": counts,
        "mean_confidence": float(rows[:, 4].mean()) if len(rows) else None,
    }


@dataclass
class TapRecord:
    request_id: str
    camera: str
    model_version: str
    timestamp: float
    embedding: np.ndarray
    quality: Mapping[str, float]
    detections: Mapping[str, object]

    def to_datagram(self, sender: str, seq: int) -> bytes:
        """The record as a tap datagram (the format is in sightline.datagrams)."""
        return datagrams.tap_datagram(sender=sender, seq=seq, request_id=self.request_id, camera=self.camera,
                                      model_version=self.model_version, ts=self.timestamp, embedding=self.embedding,
                                      quality=self.quality, detections=self.detections)


class TapSender:
    """One non-blocking UDP socket; counts what it sent and what it had to drop."""

    def __init__(self, address: Sequence = DEFAULT_ADDRESS, rates: Optional[Mapping[str, float]] = None,
                 rng: Optional[random.Random] = None) -> None:
        self.address = (str(address[0]), int(address[1]))
        self.rates = dict(rates or {"*": DEFAULT_RATE})
        self.rng = rng or random.Random()
        self.sender = f"{socket.gethostname()}:{os.getpid()}"
        self.seq = 0
        self.sent = 0
        self.dropped = 0
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def rate(self, camera: str) -> float:
        return self.rates.get(camera, self.rates.get("*", DEFAULT_RATE))

    def wants(self, request_id: str, camera: str) -> bool:
        """Whether to tap this request; ``request_id`` is carried in the record, never decides."""
        return sampled(self.rate(camera), self.rng)

    def send(self, record: TapRecord) -> bool:
        self.seq += 1
        datagram = record.to_datagram(self.sender, self.seq)
        if len(datagram) > MAX_DATAGRAM:
            self.dropped += 1
            return False
        try:
            self._socket.sendto(datagram, self.address)
        except OSError:  # buffer full, no route, ...: never wait, never fail the request
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._socket.close()


def now() -> float:
    return time.time()
