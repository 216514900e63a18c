"""A real page, end to end: Triton, sidecar, Prometheus, Alertmanager and the local pager.

SLO windows are compressed 60x (a 30-day SLO in 12 hours, the 1h page window in one
minute). Healthy traffic pages nobody; an error burst of corrupt frames (real
INVALID_ARG failures) pages within the scaled window; recovery resolves the page.
"""

from __future__ import annotations

import pytest

from sightline.client import DetectorClient
from sightline.incident import AVAILABILITY_ALERT, Phase, drive, notifications, open_pages, paged_and_resolved
from sightline.stack import LocalStack

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_healthy_traffic_pages_nobody_a_burst_pages_and_recovery_resolves(scaled_stack_options):
    options = scaled_stack_options
    pager = f"http://127.0.0.1:{options.pager_port}"
    with LocalStack(options) as stack, DetectorClient(stack.triton.grpc_url) as client:
        healthy = drive(client, [Phase("healthy", 40)])
        assert healthy.failed == 0
        assert not [r for r in notifications(pager) if r["channel"] == "page"], notifications(pager)

        burst = drive(client, [Phase("burst", 60, 1.0)],
                      until=lambda: bool(open_pages(notifications(pager), AVAILABILITY_ALERT)))
        assert open_pages(notifications(pager), AVAILABILITY_ALERT), "no page within the scaled 1h window"
        assert burst.by_phase["burst"]["sent"] < 600  # paged well before the burst timed out

        drive(client, [Phase("recovery", 150)],
              until=lambda: paged_and_resolved(notifications(pager), AVAILABILITY_ALERT))
        records = notifications(pager)
    assert paged_and_resolved(records, AVAILABILITY_ALERT), records
    page = next(r for r in records if r["channel"] == "page" and r["status"] == "firing")
    assert page["severity"] == "critical" and page["runbook_url"].endswith("#sightlineavailabilitybudgetburn")
