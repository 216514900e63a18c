"""Tap and audit sampling run at the configured rate whatever the request ids: empty (what a
default tritonclient call sends), reused, or unique."""

from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st

from sightline.steps.audit import AuditSampler
from sightline.steps.tap import TapSender

N = 4000


def within(count: int, rate: float, n: int = N) -> bool:
    """Six standard deviations of a binomial draw: fails by chance about once in 10^9 runs."""
    sd = (n * rate * (1 - rate)) ** 0.5
    return abs(count - n * rate) <= 6 * sd


def tapped(ids, rate=0.25) -> int:
    sender = TapSender(("127.0.0.1", 9), rates={"*": rate})
    try:
        return sum(sender.wants(request_id, "cam-1") for request_id in ids)
    finally:
        sender.close()


def audited(ids, rate=0.25) -> int:
    sampler = AuditSampler(("127.0.0.1", 9), rate=rate, per_minute=1e12)
    sampler.bucket.burst = sampler.bucket.tokens = float(N)  # the rate, not the bucket, is under test
    try:
        return sum(sampler.wants(request_id) for request_id in ids)
    finally:
        sampler.close()


def test_requests_without_an_id_are_tapped_and_audited_at_the_configured_rate():
    assert within(tapped([""] * N), 0.25)
    assert within(audited([""] * N), 0.25)


def test_a_client_reusing_one_id_gets_the_configured_share_sampled_not_all_or_none():
    for request_id in ("1", "frame", "same-id-every-time"):
        assert within(tapped([request_id] * N), 0.25), request_id
        assert within(audited([request_id] * N), 0.25), request_id


def test_unique_ids_keep_the_configured_rate_and_per_camera_rates_still_apply():
    assert within(tapped([f"req-{i}" for i in range(N)]), 0.25)
    sender = TapSender(("127.0.0.1", 9), rates={"*": 0.0, "cam-4": 1.0})
    try:
        assert not any(sender.wants("", "cam-1") for _ in range(200))
        assert all(sender.wants("", "cam-4") for _ in range(200))
    finally:
        sender.close()


def test_tap_and_audit_samples_are_independent():
    tap = TapSender(("127.0.0.1", 9), rates={"*": 0.5}, rng=random.Random(1))
    sampler = AuditSampler(("127.0.0.1", 9), rate=0.5, per_minute=1e12, rng=random.Random(2))
    sampler.bucket.burst = sampler.bucket.tokens = float(N)
    try:
        both = sum(tap.wants("", "cam-1") and sampler.wants("") for _ in range(N))
    finally:
        tap.close()
        sampler.close()
    assert within(both, 0.25)


@settings(max_examples=40, deadline=None)
@given(ids=st.lists(st.text(max_size=12), min_size=1, max_size=8), rate=st.sampled_from([0.1, 0.5, 0.9]))
def test_whatever_ids_a_client_sends_the_sampled_share_is_the_rate(ids, rate):
    stream = [ids[i % len(ids)] for i in range(2000)]
    assert within(tapped(stream, rate), rate, 2000)
