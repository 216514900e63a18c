"""The local pager records and serves Alertmanager's webhook notifications."""

from __future__ import annotations

import io
import json
import urllib.request

from sightline.incident import open_pages, paged_and_resolved
from sightline.pager import Pager, fetch_notifications


def webhook(status: str, tier: str = "page_fast") -> dict:
    return {"status": status, "alerts": [{
        "status": status,
        "labels": {"alertname": "SightlineAvailabilityBudgetBurn", "severity": "critical", "sloth_slo": "availability",
                   "burnrate_tier": tier},
        "annotations": {"summary": "burning", "runbook_url": "https://example/runbook.md#x"},
    }]}


def post(url: str, payload: dict) -> int:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


def test_a_page_and_its_resolution_are_printed_logged_and_served(tmp_path):
    out = io.StringIO()
    pager = Pager(port=0, log_path=tmp_path / "pages.jsonl", out=out).start()
    try:
        base = f"http://127.0.0.1:{pager.port}"
        assert post(f"{base}/page", webhook("firing")) == 200
        records = fetch_notifications(base)
        assert open_pages(records) == {("SightlineAvailabilityBudgetBurn", "page_fast")}
        assert post(f"{base}/page", webhook("resolved")) == 200
        records = fetch_notifications(base)
    finally:
        pager.stop()
    assert paged_and_resolved(records)
    assert "PAGE" in out.getvalue() and "RESOLVED" in out.getvalue()
    logged = [json.loads(line) for line in (tmp_path / "pages.jsonl").read_text().splitlines()]
    assert [r["status"] for r in logged] == ["firing", "resolved"]
