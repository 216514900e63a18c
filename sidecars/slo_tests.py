"""Generated promtool behaviour tests for each SLO: how the rules behave, not what they say.

Scenarios, each a ``promtool test rules`` group with synthetic raw series at 1-minute
resolution:

* healthy traffic: silence;
* outage (every request fails, or the guardrail condition fails): the fast page fires;
* a short blip: the fast page fires, then clears once the short window recovers;
* low traffic with failures: no page (the low-traffic guard);
* sustained burn above budget: the period's remaining budget goes below zero, and the
  period ratio stays a number after an hour without traffic (no NaN poisoning).

Alerts are checked through the ``ALERTS`` series, so a test names the tier that must or
must not fire.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from sightline.sidecars.slo_rules import TIERS, Generator, burn_factor, seconds
from sightline.sidecars.slo_spec import SLOSpec

MINUTES_HEALTHY = 120
RATE = 100  # requests per minute in the synthetic traffic


def counter(rates: Sequence[Tuple[float, int]]) -> str:
    """Cumulative values, one per minute, for segments of (events per minute, minutes)."""
    values, total = ["0"], 0.0
    for rate, minutes in rates:
        for _ in range(minutes):
            total += rate
            values.append(f"{total:g}")
    return " ".join(values)


def gauge(segments: Sequence[Tuple[float, int]]) -> str:
    values = []
    for value, minutes in segments:
        values.extend([f"{value:g}"] * minutes)
    return " ".join(values)


def _series(selector: str, values: str) -> dict:
    return {"series": selector, "values": values}


class Scenarios:
    """Input series for one SLO, from (good, bad) event rates or guardrail segments."""

    def __init__(self, generator: Generator, slo: SLOSpec) -> None:
        self.generator = generator
        self.slo = slo

    def inputs(self, good: Sequence[Tuple[float, int]], bad: Sequence[Tuple[float, int]],
               le_spelling: Optional[str] = None) -> List[dict]:
        slo = self.slo
        if slo.sli.ratio is not None:
            return [_series(slo.tests.good, counter(good)), _series(slo.tests.bad, counter(bad))]
        if slo.sli.latency is not None:
            lat = slo.sli.latency
            le = le_spelling or repr(float(lat.threshold))
            sel = f"{lat.selector}," if lat.selector else ""
            total = [(g + b, m) for (g, m), (b, _) in zip(good, bad)]
            return [_series(f'{lat.histogram}_bucket{{{sel}le="{le}"}}', counter(good)),
                    _series(f'{lat.histogram}_bucket{{{sel}le="+Inf"}}', counter(total)),
                    _series(f"{lat.histogram}_count{{{lat.selector}}}", counter(total))]
        tests = slo.tests
        segments = [(tests.bad_value if b > 0 else tests.ok_value, m) for (_, m), (b, _) in zip(good, bad)]
        return [_series(tests.ok_metric, gauge(segments))]

    def alert_labels(self, tier: str) -> str:
        slo = self.slo
        severity = "critical" if tier.startswith("page") else "warning"  # tier names say which
        labels = {
            "alertname": slo.alerting.name, "alertstate": "firing", "burnrate_tier": tier, "severity": severity,
            "slo": slo.name, **self.generator.base_labels(slo), **slo.alerting.labels,
        }
        return "ALERTS{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"

    def firing(self, tier: str, at_minute: int, expect: bool) -> dict:
        expr = f'ALERTS{{alertname="{self.slo.alerting.name}", alertstate="firing", burnrate_tier="{tier}"}}'
        return {"expr": expr, "eval_time": f"{at_minute}m",
                "exp_samples": [{"labels": self.alert_labels(tier), "value": 1}] if expect else []}

    def no_page(self, at_minute: int) -> dict:
        return {"expr": f'ALERTS{{alertname="{self.slo.alerting.name}", severity="critical"}}',
                "eval_time": f"{at_minute}m", "exp_samples": []}

    def silent(self, at_minute: int) -> dict:
        return {"expr": f'ALERTS{{alertname="{self.slo.alerting.name}"}}', "eval_time": f"{at_minute}m",
                "exp_samples": []}

    def check(self, expr: str, at_minute: int, value: float = 1) -> dict:
        labels = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(self.generator.base_labels(self.slo).items())) + "}"
        return {"expr": f"max without (sloth_window) ({expr})", "eval_time": f"{at_minute}m",
                "exp_samples": [{"labels": labels, "value": value}]}


def test_groups(generator: Generator, slo: SLOSpec) -> List[dict]:
    s = Scenarios(generator, slo)
    h = MINUTES_HEALTHY
    sid = f'sloth_id="{generator.slo_id(slo)}"'
    groups: List[dict] = []

    def group(name: str, good: list, bad: list, promql: List[dict], le: Optional[str] = None) -> None:
        groups.append({"name": f"{slo.name}: {name}", "interval": "1m",
                       "input_series": s.inputs(good, bad, le), "promql_expr_test": promql})

    group("healthy traffic pages nobody", [(RATE, h + 60)], [(0, h + 60)],
          [s.silent(h), s.silent(h + 60)])
    # The fastest enabled tier (the fast page, or the fast ticket for ticket-only SLOs)
    # fires once its long-window error ratio passes factor x budget: for a 95 % SLO that
    # is 43 minutes of total outage in the 1h window, for 99.5 % about 5. Scenarios are
    # sized from it.
    tier = next(t for t in TIERS if (t.severity == "critical" and slo.alerting.page)
                or (t.severity == "warning" and slo.alerting.ticket))
    long_minutes, short_minutes = seconds(tier.long) // 60, seconds(tier.short) // 60
    threshold = burn_factor(tier, slo.period_days) * slo.error_budget
    if threshold >= 1:
        raise ValueError(f"{slo.name}: a {slo.objective}% objective cannot alert on the {tier.long} window")
    fire = int(threshold * long_minutes) + 2  # minutes of failure before the long window crosses
    outage = fire + 10
    group(f"an outage fires the {tier.name} alert", [(RATE, h), (0, outage)], [(0, h), (RATE, outage)],
          [s.firing(tier.name, h - 1, False), s.firing(tier.name, h + fire + 1, True),
           s.firing(tier.name, h + outage, True)], le="0.120" if slo.sli.latency else None)
    # A blip just long enough to cross the long window's threshold: it fires, and clears
    # once the short window has recovered.
    recover = short_minutes + 5
    group(f"a short blip fires the {tier.name} alert, then it clears", [(RATE, h), (0, fire + 1), (RATE, recover + 5)],
          [(0, h), (RATE, fire + 1), (0, recover + 5)],
          [s.firing(tier.name, h + fire + 1, True), s.firing(tier.name, h + fire + 1 + recover, False)])
    if slo.sli.guardrail is None and slo.low_traffic.min_events:
        # Two requests an hour, all failing: a 100 % error ratio on too few events to page.
        group("low traffic does not page", [(0, h + 60)], [(2 / 60, h + 60)],
              [s.no_page(h), s.no_page(h + 60),
               s.check(f"slo:sli_error:ratio_rate5m{{{sid}}} > bool 0.5", h + 60)])
    # Twice the budget for hours (after an hour with no traffic at all): the period ratio is
    # still a number, and the remaining budget is negative.
    twice = 2 * slo.error_budget
    minutes = 12 * 60
    if slo.sli.guardrail is None:
        good = [(0, 60), (RATE * (1 - twice), minutes)]
        bad = [(0, 60), (RATE * twice, minutes)]
    else:
        period = max(2, round(1 / twice))  # one bad minute in every `period`
        cycles = minutes // period
        good = [(RATE, 60)] + [(RATE, period - 1), (RATE, 1)] * cycles
        bad = [(0, 60)] + [(0, period - 1), (1, 1)] * cycles
    end = 60 + minutes - 5
    group("burning twice the budget exhausts it without NaN", good, bad,
          [s.check(f"slo:period_error_budget_remaining:ratio{{{sid}}} < bool 0", end),
           s.check(f"slo:sli_error:ratio_rate{slo.period}{{{sid}}} >= bool 0", end)])
    return groups


def test_file(generator: Generator, slo: SLOSpec, rule_file: str) -> Dict[str, object]:
    return {"rule_files": [rule_file], "evaluation_interval": "1m", "tests": test_groups(generator, slo)}
