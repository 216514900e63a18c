"""The tap receiver's record ring: bounded, allocated up front, and it hands back what went in."""

from __future__ import annotations

import tracemalloc

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sightline.sidecars.tap_receiver import Record, RecordRing


def record(i: int, camera: str = "cam-1") -> Record:
    return Record(camera, np.full(128, i, np.float32), {"brightness": i / 1000, "sharpness": 50.0}, [1.0, 0.0, 2.0])


def test_filling_the_ring_and_going_round_it_allocates_nothing_more():
    ring = RecordRing(2000)
    for i in range(100):
        ring.append(record(i), float(i))
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for i in range(100, 10_000):
        ring.append(record(i, f"cam-{i % 4}"), float(i))
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(ring) == 2000
    assert after - before < 20_000, f"the ring grew by {after - before} bytes while it filled"


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 40), cameras=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=120),
       limit=st.integers(1, 50))
def test_latest_is_what_a_list_of_everything_would_say(capacity, cameras, limit):
    ring = RecordRing(capacity)
    everything = []
    for i, camera in enumerate(cameras):
        ring.append(record(i, camera), float(i))
        everything.append((i, camera))
    kept = everything[-capacity:]
    assert [int(r.embedding[0]) for r in ring.latest(limit=limit)] == [i for i, _ in kept][-limit:]
    for camera in "abc":
        expected = [i for i, c in kept if c == camera][-limit:]
        assert [int(r.embedding[0]) for r in ring.latest(camera, limit=limit)] == expected
    assert [int(r.embedding[0]) for r in ring.since(len(cameras) - 3)] == [i for i, _ in kept if i >= len(cameras) - 3]
    assert all(r.quality["sharpness"] == 50.0 and r.by_class == [1.0, 0.0, 2.0] for r in ring.latest())
