"""Seeing the boards without Grafana: a terminal SLO board and PNG snapshots.

Both run the dashboards' own queries (``sightline.dashboards``) against Prometheus, so
what they show is what the Grafana panels show.
"""

from __future__ import annotations

import math
import time
import urllib.parse
from pathlib import Path
from typing import Dict, List, Optional

from rich.console import Console
from rich.table import Table

from sightline import conventions as names
from sightline import dashboards, http_client
from sightline.errors import OperationError

WINDOWS = ("5m", "1h", "6h", "1d", "3d")


class PrometheusError(OperationError):
    """Prometheus could not answer; the message says which query and why."""


class Prometheus:
    def __init__(self, url: str = "http://127.0.0.1:9090", timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            body = http_client.request_json(url, timeout_s=self.timeout_s)
        except http_client.HttpStatusError as exc:
            detail = exc.body.decode(errors="replace")[:300]
            raise PrometheusError(f"{params.get('query')}: HTTP {exc.status}: {detail}") from exc
        except http_client.HttpError as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{params.get('query')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: Optional[float] = None) -> List[dict]:
        params = {"query": expr} if at is None else {"query": expr, "time": at}
        return self._get("/api/v1/query", params)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> List[dict]:
        return self._get("/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step})["result"]

    def scalar(self, expr: str) -> Optional[float]:
        result = self.query(expr)
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    def metric_names(self) -> set:
        return set(self._get("/api/v1/label/__name__/values", {}))


def _pct(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{100 * value:.{digits}g}%"


def _num(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3g}"


def slo_rows(prom: Prometheus) -> List[Dict[str, object]]:
    rows = []
    for info in prom.query(names.SLO_INFO):
        labels = info["metric"]
        slo, service = labels["sloth_slo"], labels["sloth_service"]
        sel = f'sloth_service="{service}", sloth_slo="{slo}"'
        budget = f"on(sloth_id, sloth_slo, sloth_service) group_left {names.SLO_ERROR_BUDGET}{{{sel}}}"
        period_days = prom.scalar(f"{names.SLO_PERIOD_DAYS}{{{sel}}}")
        alerts = prom.query(f'ALERTS{{sloth_slo="{slo}", alertstate="firing"}}')
        rows.append({
            "slo": slo,
            "objective": prom.scalar(f"{names.SLO_OBJECTIVE}{{{sel}}}"),
            "sli_5m": prom.scalar(f"1 - max without (sloth_window) ({names.SLI_ERROR_RATIO_5M}{{{sel}}})"),
            "period": f"{period_days:g}d" if period_days else "-",
            "budget_remaining": prom.scalar(f"{names.SLO_BUDGET_REMAINING}{{{sel}}}"),
            "burn": {w: prom.scalar(f"max without (sloth_window) ({names.SLI_ERROR_RATIO}{w}{{{sel}}}) / {budget}")
                     for w in WINDOWS},
            "alerts": sorted(f"{a['metric'].get('severity', '')}:{a['metric'].get('burnrate_tier', a['metric']['alertname'])}"
                             for a in alerts),
        })
    return rows


def status_table(rows: List[Dict[str, object]]) -> Table:
    table = Table(title="Sightline SLOs (the SLO board's numbers)")
    for column in ("SLO", "objective", "SLI 5m", "budget left", *(f"burn {w}" for w in WINDOWS), "firing"):
        table.add_column(column, justify="right" if column != "SLO" else "left")
    for row in rows:
        remaining = row["budget_remaining"]
        style = "red" if remaining is not None and remaining < 0 else ("yellow" if row["alerts"] else "green")
        burn = row["burn"]
        table.add_row(
            f"[{style}]{row['slo']}[/]", _pct(row["objective"], 4), _pct(row["sli_5m"], 4),
            f"{_pct(remaining)} of {row['period']}", *(_num(burn[w]) for w in WINDOWS),
            ", ".join(row["alerts"]) or "none",
        )
    return table


def status(prom: Prometheus, console: Console) -> int:
    rows = slo_rows(prom)
    if not rows:
        console.print("[yellow]no SLO series yet: is Prometheus loading prometheus/rules/slo-*.yaml?")
        return 1
    console.print(status_table(rows))
    return 0


# -- snapshots ----------------------------------------------------------------------------------

SNAPSHOT_PANELS = {
    "slo": ["availability: SLI vs objective", "availability: burn rate by window",
            "availability: error budget burn-down (30d)", "latency: SLI vs objective",
            "latency: burn rate by window", "latency: error budget burn-down (30d)"],
    "pipeline": ["End-to-end latency P50 / P95 / P99", "Stage latency P95", "Mean queue wait per stage",
                 "Average batch size", "Requests per second", "Errors by reason"],
}


def snapshot(prom: Prometheus, board: str, out: Path, minutes: float = 15.0, step_s: float = 5.0) -> Path:
    """Render the board's key panels to a PNG from the panels' own queries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = {spec.title: spec for spec in dashboards.all_boards()[board].panels}
    titles = SNAPSHOT_PANELS[board]
    end = time.time()
    start = end - minutes * 60
    fig, axes = plt.subplots(len(titles) // 2, 2, figsize=(14, 3.2 * (len(titles) // 2)), squeeze=False)
    for ax, title in zip(axes.flat, titles):
        spec = specs[title]
        plotted = 0
        for query in spec.queries:
            for series in prom.query_range(dashboards.substitute(query.expr), start, end, step_s):
                points = [(float(t) - end, float(v)) for t, v in series["values"] if v not in ("NaN", "+Inf", "-Inf")]
                if not points:
                    continue
                label = _legend(query.legend, series["metric"])
                ax.plot([p[0] / 60 for p in points], [p[1] for p in points], label=label, linewidth=1.4)
                plotted += 1
        for value, colour in spec.thresholds:
            if value is not None:
                ax.axhline(value, color={"red": "#d62728", "orange": "#ff7f0e", "green": "#2ca02c"}.get(colour, "grey"),
                           linestyle="--", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("minutes before the snapshot", fontsize=8)
        ax.set_ylabel(spec.unit, fontsize=8)
        ax.tick_params(labelsize=8)
        if plotted:
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "no data in this window", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"Sightline / {board} board, {time.strftime('%Y-%m-%d %H:%M')} (from Prometheus, same queries as Grafana)",
                 fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _legend(template: str, labels: Dict[str, str]) -> str:
    if not template or template == "__auto":
        return ",".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"
    return template.replace("{{", "{").replace("}}", "}").format_map(_Missing(labels))


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "?"
