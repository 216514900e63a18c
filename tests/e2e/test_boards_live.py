"""Every panel query of every board, against the real Prometheus over the live stack under load."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from sightline import dashboards
from sightline.boards_cli import Prometheus, slo_rows, snapshot, status
from sightline.client import DetectorClient
from sightline.incident import AVAILABILITY_ALERT, Phase, drive, notifications, open_pages
from sightline.stack import LocalStack

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def panels():
    for board_name, board in dashboards.all_boards().items():
        for spec in board.panels:
            yield board_name, spec


def empty_queries(prom: Prometheus, incident: bool) -> list[str]:
    empty = []
    for board_name, spec in panels():
        if spec.gpu_only or spec.incident_only != incident:
            continue
        for query in spec.queries:
            if "sightline_traced_" in query.expr:
                continue  # exemplars from sampled traces: tracing is off by default, so no data is right
            if not prom.query(dashboards.substitute(query.expr)):
                empty.append(f"{board_name}/{spec.title}: {query.expr}")
    return empty


def test_every_panel_query_returns_data_from_the_live_stack(tmp_path, monkeypatch, scaled_stack_options):
    monkeypatch.setenv("SIGHTLINE_TAP_RATE", "1.0")
    monkeypatch.setenv("SIGHTLINE_AUDIT_RATE", "1.0")
    monkeypatch.setenv("SIGHTLINE_MONITOR_DRIFT_EVERY_S", "1")
    monkeypatch.setenv("SIGHTLINE_MONITOR_DRIFT_MIN_WINDOW", "20")
    options = scaled_stack_options
    prom = Prometheus(f"http://127.0.0.1:{options.prometheus_port}")
    pager = f"http://127.0.0.1:{options.pager_port}"
    with LocalStack(options) as stack, DetectorClient(stack.triton.grpc_url) as client:
        drive(client, [Phase("healthy", 45)])
        assert empty_queries(prom, incident=False) == []
        # GPU panels have data only where NVML finds a GPU; here the board says so.
        assert prom.scalar("sightline_gpu_available") == 0

        drive(client, [Phase("burst", 60, 1.0)], until=lambda: bool(open_pages(notifications(pager), AVAILABILITY_ALERT)))
        drive(client, [Phase("burst continues", 6, 1.0)])  # rate() needs two scrapes of the new series
        assert empty_queries(prom, incident=True) == []

        names = prom.metric_names()
        for path in dashboards.OUT_DIR.glob("*.json"):
            missing = {m for m in dashboards.referenced_metrics(json.loads(path.read_text())) - names
                       if not m.startswith(("sightline_gpu_", "sightline_traced_"))}  # no GPU here; tracing off
            assert not missing, f"{path.name} queries metrics Prometheus never saw: {sorted(missing)}"

        out = io.StringIO()
        assert status(prom, Console(file=out, width=200)) == 0
        text = out.getvalue()
        assert "availability" in text and "critical:page_fast" in text
        assert {row["slo"] for row in slo_rows(prom)} == {"availability", "latency", "confidence", "drift", "stream-freshness"}
        png = snapshot(prom, "slo", tmp_path / "slo-board.png", minutes=3, step_s=2)
    assert png.stat().st_size > 20_000
