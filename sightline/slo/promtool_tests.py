"""Generated promtool behaviour tests for each SLO: how the rules behave, not what they say.

Scenarios, each a ``promtool test rules`` group with synthetic raw series at 1-minute
resolution:

* healthy traffic: silence;
* outage (every request fails, or the guardrail condition fails): the fast page fires;
* everything failing: every tier fires, and its description names the tier and windows;
* a short blip: the fast page fires, then clears once the short window recovers;
* low traffic with failures: no page (the low-traffic guard); one failure among 60
  requests in a day: no ticket; a real burn at low traffic: each ticket tier fires once
  its long window holds the events its guard asks for, not before;
* no traffic at all: the period's error ratio is 0 and the whole budget is left;
* the server's scrape target down for 30 minutes (SLOs with an ``outage``): a ticket, no page (the outage pages as SightlineTritonDown), and
  the outage's share of the budget is gone; down while idle: nothing;
* a guardrail idle (NaN, then absent) for half an hour: no ticket, no no-data alert while
  NaN; absent long enough: the no-data alert;
* sustained burn above budget: the period's remaining budget goes below zero, and the
  period ratio stays a number after an hour without traffic (no NaN poisoning).

Alerts are checked through the ``ALERTS`` series, so a test names the tier that must or
must not fire.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

from sightline import conventions as names
from sightline.slo.rules import (
    RUNBOOK,
    TIERS,
    Generator,
    Tier,
    burn_factor,
    min_events,
    seconds,
    tier_threshold,
)
from sightline.slo.spec import SLOSpec

MINUTES_HEALTHY = 120
RATE = 100  # requests per minute in the synthetic traffic
DOWN_MINUTES = 30  # the scrape-target outage scenario

Value = Union[float, str, None]  # a number, "NaN", "stale", or None (no sample)


def _exact(value: float) -> bool:
    """promtool adds a run's step repeatedly: keep runs to values that add exactly."""
    return float(value * 1024).is_integer() and abs(value) < 2 ** 40


def _fmt(value: float) -> str:
    return format(value, ".12g")


def notation(values: Sequence[Value]) -> str:
    """One sample a minute in promtool's series notation, runs compressed (``0+100x59``)."""
    out: List[str] = []
    i = 0
    while i < len(values):
        value = values[i]
        if value is None:
            j = i
            while j < len(values) and values[j] is None:
                j += 1
            out.append("_" if j - i == 1 else f"_x{j - i}")
            i = j
            continue
        if isinstance(value, str):
            out.append(value)
            i += 1
            continue
        j = i + 1
        step = None
        while j < len(values) and isinstance(values[j], float):
            delta = values[j] - values[j - 1]
            if step is None:
                if not (delta == 0 or (_exact(value) and _exact(delta))):
                    break
                step = delta
            elif delta != step:
                break
            j += 1
        if j - i >= 3:
            step = step or 0.0
            out.append(f"{_fmt(value)}x{j - i - 1}" if step == 0 else f"{_fmt(value)}+{_fmt(step)}x{j - i - 1}")
            i = j
        else:
            out.append(_fmt(value))
            i += 1
    return " ".join(out)


def counter(rates: Sequence[Tuple[float, int]]) -> str:
    """Cumulative values, one per minute, for segments of (events per minute, minutes)."""
    values, total = [0.0], 0.0
    for rate, minutes in rates:
        for _ in range(minutes):
            total += rate
            values.append(total)
    return notation(values)


def gauge(segments: Sequence[Tuple[float, int]]) -> str:
    values: List[Value] = []
    for value, minutes in segments:
        values.extend([float(value)] * minutes)
    return notation(values)


def _series(selector: str, values: str) -> dict:
    return {"series": selector, "values": values}


class Traffic:
    """Minutes of traffic: good and bad events per minute, or the server down (no counters,
    ``up`` 0; the counters restart from 0 when it is back)."""

    def __init__(self, good: float, bad: float, minutes: int, down: bool = False) -> None:
        self.good, self.bad, self.minutes, self.down = good, bad, minutes, down


class Scenarios:
    """Input series for one SLO, from (good, bad) event rates or guardrail segments."""

    def __init__(self, generator: Generator, slo: SLOSpec) -> None:
        self.generator = generator
        self.slo = slo

    # -- inputs -----------------------------------------------------------------------------
    def inputs(self, good: Sequence[Tuple[float, int]], bad: Sequence[Tuple[float, int]],
               le_spelling: Optional[str] = None) -> List[dict]:
        if self.slo.sli.guardrail is not None:
            tests = self.slo.tests
            segments = [(tests.bad_value if b > 0 else tests.ok_value, m) for (_, m), (b, _) in zip(good, bad)]
            return self.guardrail(segments)
        return self.traffic([Traffic(g, b, m) for (g, m), (b, _) in zip(good, bad)], le_spelling)

    def traffic(self, segments: Sequence[Traffic], le_spelling: Optional[str] = None) -> List[dict]:
        """Ratio and latency SLIs: counters (and ``up``) from traffic segments."""
        slo = self.slo
        good: List[Value] = [0.0]
        bad: List[Value] = [0.0]
        up: List[Value] = [1.0]
        g_total = b_total = 0.0
        for seg in segments:
            for minute in range(seg.minutes):
                if seg.down:
                    good.append("stale" if minute == 0 else None)
                    bad.append("stale" if minute == 0 else None)
                    g_total = b_total = 0.0  # a restarted server counts from 0
                else:
                    g_total += seg.good
                    b_total += seg.bad
                    good.append(g_total)
                    bad.append(b_total)
                up.append(0.0 if seg.down else 1.0)
        total = [g + b if isinstance(g, float) and isinstance(b, float) else g for g, b in zip(good, bad)]
        if slo.sli.ratio is not None:
            weight = slo.tests.bad_per_event  # the server's counter counts a bad event that often
            counted = [b * weight if isinstance(b, float) else b for b in bad]
            series = [_series(slo.tests.good, notation(good)), _series(slo.tests.bad, notation(counted))]
        else:
            lat = slo.sli.latency
            le = le_spelling or repr(float(lat.threshold))
            sel = f"{lat.selector}," if lat.selector else ""
            series = [_series(f'{lat.histogram}_bucket{{{sel}le="{le}"}}', notation(good)),
                      _series(f'{lat.histogram}_bucket{{{sel}le="+Inf"}}', notation(total)),
                      _series(f"{lat.histogram}_count{{{lat.selector}}}", notation(total))]
        if slo.outage is not None:
            series.append(_series(slo.tests.up or slo.outage.up, notation(up)))
        return series + self.constants(len(good))

    def guardrail(self, segments: Sequence[Tuple[Value, int]]) -> List[dict]:
        """Guardrail SLIs: the value its query reads, per segment: a number, "NaN" (idle) or
        None (the series is gone: a staleness marker, then no sample)."""
        values: List[Value] = []
        for value, minutes in segments:
            for minute in range(minutes):
                if value is None:
                    values.append("stale" if minute == 0 else None)
                else:
                    values.append(value if isinstance(value, str) else float(value))
        return [_series(self.slo.tests.ok_metric, notation(values))] + self.constants(len(values))

    def constants(self, samples: int) -> List[dict]:
        return [_series(selector, gauge([(value, samples)])) for selector, value in self.slo.tests.constants.items()]

    # -- expectations -------------------------------------------------------------------------
    def labels(self, tier: str) -> Dict[str, str]:
        slo = self.slo
        severity = "critical" if tier.startswith("page") else "warning"  # tier names say which
        return {"burnrate_tier": tier, "severity": severity, "slo": slo.name,
                **self.generator.base_labels(slo), **slo.alerting.labels}

    def alert_labels(self, tier: str) -> str:
        labels = {"alertname": self.slo.alerting.name, "alertstate": "firing", **self.labels(tier)}
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

    def nothing(self, at_minute: int) -> dict:
        """No alert of this SLO at all, pending or firing, burn or no-data."""
        return {"expr": f'ALERTS{{sloth_slo="{self.slo.name}"}}', "eval_time": f"{at_minute}m", "exp_samples": []}

    def no_data_alert(self, at_minute: int, expect: bool) -> dict:
        name = names.no_data_alert(self.slo.alerting.name)
        labels = {"alertname": name, "alertstate": "firing", "severity": "warning", "slo": self.slo.name,
                  "sloth_slo": self.slo.name, **self.slo.alerting.labels}
        return {"expr": f'ALERTS{{alertname="{name}", alertstate="firing"}}', "eval_time": f"{at_minute}m",
                "exp_samples": [{"labels": "ALERTS{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}",
                                 "value": 1}] if expect else []}

    def check(self, expr: str, at_minute: int, value: float = 1) -> dict:
        labels = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(self.generator.base_labels(self.slo).items())) + "}"
        return {"expr": f"max without (sloth_window) ({expr})", "eval_time": f"{at_minute}m",
                "exp_samples": [{"labels": labels, "value": value}]}

    def description(self, tier: Tier, value: str) -> str:
        """What a tier's description must read once Prometheus has expanded it."""
        slo, window = self.slo, self.generator.window
        return (f"{slo.name} SLO ({slo.objective:g}% over {slo.period}), tier {tier.name} "
                f"({window(tier.long)} and {window(tier.short)} windows): error ratio {value} over "
                f"{window(tier.long)}, above {burn_factor(tier, slo.period_days):g}x the error budget.")


def enabled_tiers(slo: SLOSpec) -> List[Tier]:
    return [t for t in TIERS if (t.severity == "critical" and slo.alerting.page)
            or (t.severity == "warning" and slo.alerting.ticket)]


def test_groups(generator: Generator, slo: SLOSpec) -> List[dict]:
    s = Scenarios(generator, slo)
    h = MINUTES_HEALTHY
    sid = f'sloth_id="{generator.slo_id(slo)}"'
    groups: List[dict] = []

    def group(name: str, good: list, bad: list, promql: List[dict], le: Optional[str] = None) -> None:
        groups.append({"name": f"{slo.name}: {name}", "interval": "1m",
                       "input_series": s.inputs(good, bad, le), "promql_expr_test": promql})

    def raw_group(name: str, series: List[dict], promql: List[dict], alerts: Optional[List[dict]] = None) -> None:
        entry = {"name": f"{slo.name}: {name}", "interval": "1m", "input_series": series}
        if alerts:
            entry["alert_rule_test"] = alerts
        entry["promql_expr_test"] = promql
        groups.append(entry)

    group("healthy traffic pages nobody", [(RATE, h + 60)], [(0, h + 60)],
          [s.silent(h), s.silent(h + 60)])
    # The fastest enabled tier (the fast page, or the fast ticket for ticket-only SLOs)
    # fires once its long-window error ratio passes factor x budget: for a 95 % SLO that
    # is 43 minutes of total outage in the 1h window, for 99.5 % about 5. Scenarios are
    # sized from it.
    tiers = enabled_tiers(slo)
    tier = tiers[0]
    long_minutes, short_minutes = seconds(tier.long) // 60, seconds(tier.short) // 60
    threshold = tier_threshold(tier, slo)
    if threshold >= 1:
        raise ValueError(f"{slo.name}: a {slo.objective}% objective cannot alert on the {tier.long} window")
    fire = int(threshold * long_minutes) + 2  # minutes of failure before the long window crosses
    outage = fire + 10
    group(f"an outage fires the {tier.name} alert", [(RATE, h), (0, outage)], [(0, h), (RATE, outage)],
          [s.firing(tier.name, h - 1, False), s.firing(tier.name, h + fire + 1, True),
           s.firing(tier.name, h + outage, True)], le="0.120" if slo.sli.latency else None)
    # Everything failing from the start: every tier fires, and Prometheus's expansion of its
    # description names the tier and its windows (a rule's own labels are not in $labels).
    raw_group("everything failing fires every tier, each naming its windows",
              s.inputs([(0, h)], [(RATE, h)]),
              [s.firing(t.name, h, True) for t in tiers],
              alerts=[{"eval_time": f"{h}m", "alertname": slo.alerting.name, "exp_alerts": [
                  {"exp_labels": {k: v for k, v in s.labels(t.name).items()},
                   "exp_annotations": {
                       "summary": slo.alerting.annotations.get("summary",
                                                               f"The {slo.name} SLO is burning its error budget."),
                       "description": s.description(t, "100%"),
                       "runbook_url": f"{RUNBOOK}#{slo.alerting.name.lower()}",
                       **{k: v for k, v in slo.alerting.annotations.items() if k != "summary"}}}
                  for t in tiers]}])
    # A blip just long enough to cross the long window's threshold: it fires, and clears
    # once the short window has recovered.
    recover = short_minutes + 5
    group(f"a short blip fires the {tier.name} alert, then it clears", [(RATE, h), (0, fire + 1), (RATE, recover + 5)],
          [(0, h), (RATE, fire + 1), (0, recover + 5)],
          [s.firing(tier.name, h + fire + 1, True), s.firing(tier.name, h + fire + 1 + recover, False)])
    if slo.sli.guardrail is None:
        ratio_groups(s, slo, sid, raw_group, group)
    else:
        guardrail_groups(s, generator, slo, sid, raw_group)
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
          [s.check(f"{names.SLO_BUDGET_REMAINING}{{{sid}}} < bool 0", end),
           s.check(f"{names.SLI_ERROR_RATIO}{slo.period}{{{sid}}} >= bool 0", end)])
    return groups


def ratio_groups(s: Scenarios, slo: SLOSpec, sid: str, raw_group, group) -> None:
    h = MINUTES_HEALTHY
    period = f"{names.SLI_ERROR_RATIO}{slo.period}{{{sid}}}"
    budget = f"{names.SLO_BUDGET_REMAINING}{{{sid}}}"
    # No traffic at all yet: nothing has failed, the whole budget is left (not 0/0 = NaN).
    raw_group("no traffic yet reads no error and the full budget", s.traffic([Traffic(0, 0, h)]),
              [s.silent(h), s.check(f"{period} == bool 0", h), s.check(f"{budget} == bool 1", h)])
    # A cold start: the first minute of a new server (or a new Prometheus) has 20 % bad
    # events. Every window holds only that minute, so without the startup guard each tier
    # would judge it as its whole short window and fire within two minutes.
    raw_group("a cold start's first bad minute fires nothing",
              s.traffic([Traffic(RATE * 0.8, RATE * 0.2, 1), Traffic(RATE, 0, h)]),
              [s.silent(m) for m in (1, 2, 3, 5, 6, 30, 61, 90)])
    if slo.low_traffic.min_events:
        # Two requests an hour, all failing: a 100 % error ratio on too few events to page.
        group("low traffic does not page", [(0, h + 60)], [(2 / 60, h + 60)],
              [s.no_page(h), s.no_page(h + 60),
               s.check(f"{names.SLI_ERROR_RATIO_5M}{{{sid}}} > bool 0.5", h + 60)])
        low_traffic_groups(s, slo, sid, raw_group)
    if slo.outage is not None:
        outage_groups(s, slo, sid, raw_group)


def low_traffic_groups(s: Scenarios, slo: SLOSpec, sid: str, raw_group) -> None:
    tickets = [t for t in enabled_tiers(slo) if t.severity == "warning"]
    if not tickets:
        return
    # One request every 24 minutes for a day, one of them failed (the 59th): 1 in 59 is over
    # the ticket thresholds of a 99.5 % SLO, but one failure never opens a ticket.
    segments, failed_at = [], 59 * 24
    for k in range(1, 61):
        segments += [Traffic(0, 0, 23), Traffic(0, 1, 1) if k == 59 else Traffic(1, 0, 1)]
    checks = [s.nothing(failed_at + 1), s.nothing(failed_at + 10), s.nothing(24 * 60)]
    for tier in tickets:
        over = 1 / 59 > tier_threshold(tier, slo)  # the ratio alone would fire this tier
        checks.append(s.check(f"{names.SLI_ERROR_RATIO}{tier.long}{{{sid}}} > bool {tier_threshold(tier, slo):.6g}",
                              failed_at + 1, 1 if over else 0))
    raw_group("one failed request among 60 in a day opens no ticket", s.traffic(segments), checks)
    # A real burn at low traffic: 1.5x the fast ticket's threshold (under the slow page's),
    # at a rate that reaches the fast ticket's guard after 100 minutes. Each ticket tier
    # stays silent until its long window holds its guard's events, and fires right after.
    fast, page_slow = tickets[0], next((t for t in TIERS if t.name == "page_slow"), None)
    guard = min_events(fast, slo)
    rate = math.ceil(guard / 100 * 1024) / 1024
    bad_rate = round(rate * 1.5 * tier_threshold(fast, slo) * 1024) / 1024
    ratio = bad_rate / rate
    ceiling = tier_threshold(page_slow, slo) if page_slow else 1.0
    if not (1.2 * tier_threshold(fast, slo) < ratio < ceiling / 1.1):
        raise ValueError(f"{slo.name}: no low-traffic burn between the ticket and page thresholds")
    crossings = {t.name: min_events(t, slo) / rate for t in tickets}
    end = math.ceil(max(crossings.values())) + 10
    checks = [s.no_page(end)]
    for tier in tickets:
        at = crossings[tier.name]
        checks += [s.firing(tier.name, math.floor(at) - 5, False), s.firing(tier.name, math.ceil(at) + 5, True)]
    raw_group(f"a burn at low traffic fires each ticket tier once its guard's events are in (guards "
              f"{', '.join(str(min_events(t, slo)) for t in tickets)})",
              s.traffic([Traffic(rate - bad_rate, bad_rate, end)]), checks)


def outage_groups(s: Scenarios, slo: SLOSpec, sid: str, raw_group) -> None:
    """The server's scrape target down: its counters vanish, yet the budget burns."""
    h, down = MINUTES_HEALTHY, DOWN_MINUTES
    page = next((t for t in enabled_tiers(slo) if t.severity == "critical"), None)
    if page is None:
        return
    long_minutes = seconds(page.long) // 60
    # After k minutes down, the long window's ratio is about k / long (the outage counts
    # at the rate served before it).
    k = math.floor(tier_threshold(page, slo) * (long_minutes + 0.5)) + 1
    period = f"{names.SLI_ERROR_RATIO}{slo.period}{{{sid}}}"
    # Ten minutes after it is back (the 5-minute event rates have caught the whole outage),
    # the period has counted the down minutes as failed requests: down / (h + down + 10).
    expected = down / (h + down + 10)
    ticket = next((t for t in enabled_tiers(slo) if t.severity == "warning"), None)
    # SightlineTritonDown is the outage's one page: the burn tiers do not page during it nor
    # after the server is back (the outage still inside their short windows), but the budget
    # is spent and the first ticket tier opens.
    checks = [s.silent(h), s.no_page(h + k + 1), s.no_page(h + down), s.no_page(h + down + 3),
              s.no_page(h + down + 15), s.no_page(h + down + 40),
              s.check(f"abs({period} - {expected:.6g}) < bool {0.05 * expected:.6g}", h + down + 10),
              s.check(f"{names.SLO_BUDGET_REMAINING}{{{sid}}} < bool 0", h + down + 60)]
    if ticket is not None:
        checks.append(s.firing(ticket.name, h + down + 10, True))
    raw_group(f"{down} minutes with the server's target down burn the budget and open a ticket, but page only "
              f"as {names.ALERT_TRITON_DOWN}, during the outage and after it",
              s.traffic([Traffic(RATE, 0, h), Traffic(0, 0, down, down=True), Traffic(RATE, 0, 60)]), checks)
    raw_group("the server's target down while nothing was served burns nothing",
              s.traffic([Traffic(0, 0, h), Traffic(0, 0, down, down=True), Traffic(0, 0, 30)]),
              [s.silent(h + 10), s.silent(h + down), s.silent(h + down + 30),
               s.check(f"{names.SLO_BUDGET_REMAINING}{{{sid}}} == bool 1", h + down + 30)])


def guardrail_groups(s: Scenarios, generator: Generator, slo: SLOSpec, sid: str, raw_group) -> None:
    h, tests = MINUTES_HEALTHY, slo.tests
    # Idle: the query is NaN (nothing to judge, e.g. no detections) for half an hour, then
    # traffic again: neither bad nor good, so no ticket, no no-data alert, and the window
    # ratios only count the judged minutes.
    # A noisy first evaluation (a drift window of the first few records, say): every window
    # holds it and little else, so without the judged-evaluations guard the slowest tier
    # tickets once its SLI has existed for an hour.
    raw_group("a single bad first evaluation opens no ticket",
              s.guardrail([(tests.bad_value, 1), (tests.ok_value, h)]),
              [s.silent(m) for m in (2, 30, 61, 90)])
    raw_group("idle (NaN) for 30 minutes, then traffic, opens no ticket",
              s.guardrail([(tests.ok_value, h), ("NaN", 30), (tests.ok_value, 60)]),
              [s.nothing(h + 12), s.nothing(h + 30), s.nothing(h + 31), s.nothing(h + 60), s.nothing(h + 90),
               {"expr": f"absent({names.SLI_GUARDRAIL_OK}{{{sid}}})", "eval_time": f"{h + 15}m",
                "exp_samples": [{"labels": f"{{{sid}}}", "value": 1}]},
               s.check(f"{names.SLI_ERROR_RATIO}1d{{{sid}}} == bool 0", h + 90)])
    # Absent: the series is gone. Still no burn; the no-data alert says the SLO is blind
    # once its `for` has passed, not before.
    if slo.no_data.policy == "alert":
        wait = math.ceil(seconds(generator.no_data_for(slo)) / 60)
        gone = wait + 10
        raw_group("its series gone: no burn, and the no-data alert once its `for` has passed",
                  s.guardrail([(tests.ok_value, h), (None, gone), (tests.ok_value, 30)]),
                  [s.silent(h + gone), s.silent(h + gone + 30),
                   s.no_data_alert(h + wait - 1, False), s.no_data_alert(h + wait + 1, True),
                   s.no_data_alert(h + gone + 5, False)])
    else:
        raw_group("its series gone for 30 minutes: no burn",
                  s.guardrail([(tests.ok_value, h), (None, 30), (tests.ok_value, 30)]),
                  [s.silent(h + 30), s.silent(h + 60)])


def test_file(generator: Generator, slo: SLOSpec, rule_file: str) -> Dict[str, object]:
    return {"rule_files": [rule_file], "evaluation_interval": "1m", "tests": test_groups(generator, slo)}
