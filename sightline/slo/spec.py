"""The SLO spec, ``prometheus/slo.yaml`` (``version: sightline/v1``).

A public, versioned spec validated with pydantic (``extra="forbid"``), then a set of small
named checks whose errors carry the path, e.g. ``slos[1].sli.latency.threshold: 0.125 is
not a bucket of sightline_request_duration_seconds``.

SLI kinds:

* ``ratio``: error and total queries with a ``{{window}}`` placeholder;
* ``latency``: the share of a histogram's events above a threshold that must be an exact
  bucket bound; the ``le`` label is matched robustly (``0.12`` = ``0.120``);
* ``guardrail``: a time slice; the fraction of evaluations at which ``query op threshold``
  fails. An evaluation where the query is NaN or absent (idle: nothing to judge) counts
  neither as good nor as bad.

A ratio SLI may name an ``outage``: the scrape targets of the server that produces its
counters. A server that is down emits no failures, so while a target is down its share of
the traffic served before the outage counts as failed requests.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sightline import conventions as names
from sightline.errors import ConfigError

SPEC_VERSION = "sightline/v1"
PERIODS_DAYS = {"7d": 7, "28d": 28, "30d": 30}
ALLOWED_GROUP_LABELS = (names.LABEL_MODEL, names.LABEL_VERSION, names.LABEL_STAGE, names.LABEL_CAMERA)
# Histograms whose buckets Sightline owns: a latency threshold must be one of them.
KNOWN_BUCKETS = {
    names.REQUEST_DURATION: names.LATENCY_BUCKETS_SECONDS,
    names.STAGE_DURATION: names.LATENCY_BUCKETS_SECONDS,
}
WINDOW = "{{window}}"
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


class SpecError(ConfigError):
    """The spec is invalid; ``problems`` lists ``path: message`` lines."""

    def __init__(self, problems: List[str]) -> None:
        super().__init__("invalid SLO spec:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RatioSLI(Strict):
    error_query: str
    total_query: str


class Outage(Strict):
    """While ``up`` reads 0, the down share of the targets fails the traffic served before."""

    up: str  # the server's scrape targets, e.g. up{job="triton"}


class LatencySLI(Strict):
    histogram: str  # base name, without _bucket
    threshold: float = Field(gt=0)  # seconds, must be a bucket bound
    selector: str = ""  # label matchers, e.g. model="detector"


class GuardrailSLI(Strict):
    """Good while ``query op threshold`` holds. A NaN or absent query (idle) is neither good
    nor bad, so an idle pipeline neither burns nor earns a guardrail's budget; the no-data
    alert fires only while the query returns nothing at all (its inputs are gone)."""

    query: str  # one series, e.g. min(sightline:detection_confidence:mean10m)
    op: Literal[">", ">=", "<", "<="]
    threshold: float


class SLI(Strict):
    ratio: Optional[RatioSLI] = None
    latency: Optional[LatencySLI] = None
    guardrail: Optional[GuardrailSLI] = None

    @property
    def kind(self) -> str:
        return next(k for k in ("ratio", "latency", "guardrail") if getattr(self, k) is not None)


class LowTraffic(Strict):
    """The explicit floor of each tier's low-traffic guard (0: no guard). A tier also needs
    enough events that a single failure cannot exceed its threshold: 1 / (factor x budget)."""

    min_events: int = Field(0, ge=0)  # minimum events in an alert's long window; below it, silence


class NoData(Strict):
    policy: Literal["alert", "ignore"] = "alert"


class Alerting(Strict):
    name: str  # CamelCase, shared prefix
    labels: Dict[str, str] = Field(default_factory=dict)
    annotations: Dict[str, str] = Field(default_factory=dict)
    page: bool = True
    ticket: bool = True


class TestInputs(Strict):
    """Raw series the generated promtool tests feed (latency SLIs need none)."""

    good: Optional[str] = None  # a counter of good events, e.g. nv_inference_request_success{...}
    bad: Optional[str] = None  # a counter of bad events
    bad_per_event: int = Field(1, ge=1)  # how many times that counter counts one bad event
    ok_metric: Optional[str] = None  # guardrail: the metric its condition reads
    ok_value: Optional[float] = None
    bad_value: Optional[float] = None
    up: Optional[str] = None  # outage: the `up` series to feed (default: outage.up)
    constants: Dict[str, float] = Field(default_factory=dict)  # other series the query reads, held constant


class SLOSpec(Strict):
    name: str
    description: str = ""
    objective: float = Field(gt=0, lt=100)  # percent
    period: str = "30d"
    sli: SLI
    group_by: List[str] = Field(default_factory=list)
    max_series: int = Field(10, ge=1)  # cardinality budget of the grouped SLI
    outage: Optional[Outage] = None
    low_traffic: LowTraffic = LowTraffic()
    no_data: NoData = NoData()
    alerting: Alerting
    tests: TestInputs = TestInputs()

    @property
    def period_days(self) -> int:
        return PERIODS_DAYS[self.period]

    @property
    def error_budget(self) -> float:
        return 1.0 - self.objective / 100.0


class Spec(Strict):
    version: str
    service: str
    slos: List[SLOSpec]

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value != SPEC_VERSION:
            raise ValueError(f"must be {SPEC_VERSION!r}")
        return value


# --- named checks ------------------------------------------------------------------------

def check_names(spec: Spec) -> List[str]:
    problems, seen = [], set()
    for i, slo in enumerate(spec.slos):
        if not _NAME.match(slo.name):
            problems.append(f"slos[{i}].name: {slo.name!r} must be lower-case letters, digits and dashes")
        if slo.name in seen:
            problems.append(f"slos[{i}].name: {slo.name!r} is used twice")
        seen.add(slo.name)
        if not re.match(rf"^{re.escape(names.ALERT_PREFIX)}[A-Z][A-Za-z0-9]*$", slo.alerting.name):
            problems.append(f"slos[{i}].alerting.name: {slo.alerting.name!r} must be CamelCase starting with "
                            f"{names.ALERT_PREFIX!r}")
    return problems


def check_period(spec: Spec) -> List[str]:
    return [f"slos[{i}].period: {s.period!r} is not one of {', '.join(PERIODS_DAYS)}"
            for i, s in enumerate(spec.slos) if s.period not in PERIODS_DAYS]


def check_one_sli_kind(spec: Spec) -> List[str]:
    problems = []
    for i, slo in enumerate(spec.slos):
        kinds = [k for k in ("ratio", "latency", "guardrail") if getattr(slo.sli, k) is not None]
        if len(kinds) != 1:
            problems.append(f"slos[{i}].sli: exactly one of ratio, latency, guardrail is needed, got {kinds or 'none'}")
    return problems


def check_window_placeholders(spec: Spec) -> List[str]:
    problems = []
    for i, slo in enumerate(spec.slos):
        ratio = slo.sli.ratio
        if ratio is None:
            continue
        for field in ("error_query", "total_query"):
            if WINDOW not in getattr(ratio, field):
                problems.append(f"slos[{i}].sli.ratio.{field}: must contain {WINDOW}")
    return problems


def check_latency_buckets(spec: Spec) -> List[str]:
    problems = []
    for i, slo in enumerate(spec.slos):
        latency = slo.sli.latency
        if latency is None:
            continue
        buckets = KNOWN_BUCKETS.get(latency.histogram)
        if buckets is not None and not any(abs(b - latency.threshold) < 1e-12 for b in buckets):
            problems.append(
                f"slos[{i}].sli.latency.threshold: {latency.threshold} is not a bucket of {latency.histogram} "
                f"(buckets: {', '.join(str(b) for b in buckets)})"
            )
        if latency.histogram.endswith(("_bucket", "_count", "_sum")):
            problems.append(f"slos[{i}].sli.latency.histogram: give the base name, without {latency.histogram.rsplit('_', 1)[1]}")
    return problems


def check_grouping(spec: Spec) -> List[str]:
    problems = []
    for i, slo in enumerate(spec.slos):
        unknown = [label for label in slo.group_by if label not in ALLOWED_GROUP_LABELS]
        if unknown:
            problems.append(f"slos[{i}].group_by: {unknown} are not bounded labels ({', '.join(ALLOWED_GROUP_LABELS)})")
        if len(slo.group_by) > 2:
            problems.append(f"slos[{i}].group_by: at most 2 labels fit the cardinality budget")
        if "request_id" in slo.group_by:
            problems.append(f"slos[{i}].group_by: request_id is never a label")
    return problems


def check_test_inputs(spec: Spec) -> List[str]:
    problems = []
    for i, slo in enumerate(spec.slos):
        kind = slo.sli.kind if len([k for k in ("ratio", "latency", "guardrail") if getattr(slo.sli, k)]) == 1 else None
        if kind == "ratio" and not (slo.tests.good and slo.tests.bad):
            problems.append(f"slos[{i}].tests: a ratio SLI needs good and bad series for its generated tests")
        if kind == "guardrail" and (slo.tests.ok_metric is None or slo.tests.ok_value is None or slo.tests.bad_value is None):
            problems.append(f"slos[{i}].tests: a guardrail SLI needs ok_metric, ok_value and bad_value")
    return problems


def check_outage(spec: Spec) -> List[str]:
    problems = []
    for i, slo in enumerate(spec.slos):
        if slo.outage is None:
            continue
        if slo.sli.ratio is None:
            problems.append(f"slos[{i}].outage: only a ratio SLI counts requests an outage fails")
        if not re.fullmatch(r"up\{[^}]*\}|up", slo.outage.up.strip()):
            problems.append(f"slos[{i}].outage.up: {slo.outage.up!r} must select the `up` series of scrape targets")
        if slo.tests.up is None and re.search(r"=~|!=|!~", slo.outage.up):
            problems.append(f"slos[{i}].tests.up: outage.up has a regex or negative matcher; name a series to feed")
    return problems


CHECKS = (check_names, check_period, check_one_sli_kind, check_window_placeholders, check_latency_buckets,
          check_grouping, check_test_inputs, check_outage)


def parse(data: object) -> Spec:
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([f"{_path(e['loc'])}: {e['msg']}" for e in exc.errors()]) from exc
    problems = [p for check in CHECKS for p in check(spec)]
    if problems:
        raise SpecError(problems)
    return spec


def load(path: Path) -> Spec:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError([f"{path}: cannot read: {exc}"]) from exc
    return parse(data)


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
