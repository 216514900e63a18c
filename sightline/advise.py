"""`sightline advise batching`: batching and instance counts tuned from observed tail latency.

Two sources of evidence, one proposal:

- **Observed** (always): what Prometheus saw over a window, per step: arrival rate, average
  batch size, mean queue wait and compute time per request (Triton's cumulative counters),
  how busy the step's instances were, and the end-to-end P95 from the steps' stamps. A few
  explicit rules turn that into a first proposal, each with its reason.
- **Measured** (``--sweep``): a short, bounded sweep of a local server run with explicit
  model control (``sightline up --demo-faults``). Each candidate is loaded through Triton's
  model-control API with a config override, then served the same open-loop camera load for
  a fixed time; the client's P95 and throughput and Triton's own batch sizes are recorded.
  Afterwards every model the sweep touched is loaded back with the config it was served with. The candidate
  with the lowest P95 that serves the whole load within the target wins.

The proposal is written as a unified diff against the model repository's config files
(``git apply`` it, or re-run the export with the flags printed for a generated config);
nothing is ever rewritten by this module. Instance counts are measured on this machine's
instance kind only: a count measured on CPU is not written into a GPU profile.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import difflib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from sightline import conventions as names
from sightline import http_client
from sightline.errors import ConfigError, InputError, OperationError

STEPS = ("preprocess", "detector_model", "postprocess")
BATCHED_MODEL = "detector_model"  # the model whose dynamic batcher the sweep tunes
INSTANCE_STEPS = ("preprocess", "postprocess")  # the Python steps whose instance counts it tunes
BUSY_HIGH = 0.7  # a step busier than this queues in bursts: more instances or bigger batches
MAX_DELAY_SHARE = 0.1  # a queue delay of at most a tenth of the latency target
SWEEP_FRAMES = 64  # distinct frames per simulated camera in the sweep (rendered in about 4 s)


class AdviceError(OperationError):
    """The advisor could not observe, sweep or write its proposal; the message says why."""


# --- configs -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepSettings:
    """The settings the advisor tunes for one step."""

    model: str
    instances: int
    kind: str = "KIND_CPU"
    batching: bool = False  # has a dynamic batcher
    preferred: Tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    max_batch_size: int = 0

    @classmethod
    def from_triton(cls, config: Mapping[str, Any]) -> "StepSettings":
        """From Triton's JSON model config (``GET /v2/models/NAME/config``)."""
        groups = config.get("instance_group") or [{}]
        batching = config.get("dynamic_batching")
        return cls(
            model=str(config.get("name", "")),
            instances=sum(int(g.get("count", 1)) for g in groups),
            kind=str(groups[0].get("kind", "KIND_CPU")),
            batching=batching is not None,
            preferred=tuple(int(s) for s in (batching or {}).get("preferred_batch_size", []) or []),
            max_queue_delay_us=int((batching or {}).get("max_queue_delay_microseconds", 0) or 0),
            max_batch_size=int(config.get("max_batch_size", 0) or 0),
        )

    def apply_to(self, config: Mapping[str, Any]) -> dict:
        """Triton's JSON config with these settings, for a load with a config override."""
        out = copy.deepcopy(dict(config))
        groups = out.get("instance_group") or [{"kind": self.kind}]
        groups = [dict(groups[0], count=self.instances)]
        out["instance_group"] = groups
        if self.batching:
            out["dynamic_batching"] = {**(out.get("dynamic_batching") or {}),
                                       "preferred_batch_size": list(self.preferred),
                                       "max_queue_delay_microseconds": str(self.max_queue_delay_us)}
        return out

    def describe(self) -> str:
        text = f"{self.instances} instance{'s' if self.instances != 1 else ''}"
        if self.batching:
            sizes = ",".join(map(str, self.preferred)) if self.preferred else "any"
            text += f", preferred {sizes}, delay {self.max_queue_delay_us} us"
        return text


Settings = Dict[str, StepSettings]


def describe_change(base: Settings, new: Settings) -> str:
    """What ``new`` changes from ``base``, in a line ("committed" when nothing)."""
    parts = []
    for model in STEPS:
        if model in base and model in new and base[model] != new[model]:
            a, b = base[model], new[model]
            if a.instances != b.instances:
                parts.append(f"{model} instances {a.instances} -> {b.instances}")
            if a.preferred != b.preferred:
                parts.append(f"{model} preferred {list(a.preferred) or 'any'} -> {list(b.preferred) or 'any'}")
            if a.max_queue_delay_us != b.max_queue_delay_us:
                parts.append(f"{model} delay {a.max_queue_delay_us} -> {b.max_queue_delay_us} us")
    return "; ".join(parts) or "committed"


_BATCHING_BLOCK = re.compile(r"^dynamic_batching\s*\{[^{}]*\}[ \t]*\n", re.MULTILINE)
_INSTANCE_ONE_LINE = re.compile(r"^(instance_group\s*\[\s*\{[^\n]*?count:\s*)(\d+)", re.MULTILINE)
_INSTANCE_BLOCK = re.compile(r"^(instance_group\s*\{[^{}]*?count:\s*)(\d+)", re.MULTILINE)
_KIND = re.compile(r"^instance_group[^\n]*?(?:\n[^\n]*?)*?kind:\s*(KIND_\w+)", re.MULTILINE)


def edit_pbtxt(text: str, settings: StepSettings, *, batching: bool = True, instances: bool = True) -> str:
    """``text`` (a config.pbtxt) with, as asked, the batcher and the instance count of
    ``settings``; everything else, comments included, is kept as written. The result is
    parsed as Triton's ModelConfig, so a proposal that Triton would refuse raises here."""
    out = text
    if batching and settings.batching:
        lines = [f"  preferred_batch_size: {size}" for size in settings.preferred]
        lines.append(f"  max_queue_delay_microseconds: {settings.max_queue_delay_us}")
        block = "dynamic_batching {\n" + "\n".join(lines) + "\n}\n"
        if _BATCHING_BLOCK.search(out):
            out = _BATCHING_BLOCK.sub(lambda _m: block, out, count=1)
        else:
            out = out.rstrip("\n") + "\n" + block
    if instances:
        pattern = _INSTANCE_ONE_LINE if _INSTANCE_ONE_LINE.search(out) else _INSTANCE_BLOCK
        out, changed = pattern.subn(lambda m: f"{m.group(1)}{settings.instances}", out, count=1)
        if not changed:
            raise AdviceError(f"{settings.model}: no instance_group count to change in its config")
    _parse_model_config(out, settings.model)
    return out


def _parse_model_config(text: str, model: str) -> Any:
    from sightline.export.triton_config import parse

    try:
        return parse(text)
    except ConfigError as exc:
        raise AdviceError(f"{model}: the proposed config does not parse: {exc}") from exc


def config_kind(text: str) -> Optional[str]:
    """The instance kind a config.pbtxt asks for (None when it names none)."""
    match = _KIND.search(text)
    return match.group(1) if match else None


def config_files(repository: Path, model: str) -> List[Path]:
    """Every config file of ``model``: config.pbtxt and the profiles in configs/."""
    folder = repository / model
    files = [folder / "config.pbtxt"] if (folder / "config.pbtxt").exists() else []
    return files + sorted((folder / "configs").glob("*.pbtxt"))


def proposal_diff(repository: Path, current: Settings, proposal: Settings, measured_kind: str = "KIND_CPU",
                  relative_to: Optional[Path] = None) -> str:
    """A unified diff that applies what ``proposal`` changes from ``current`` to every config
    file of the repository. A batcher change goes into every profile of the model; an
    instance count only into the profiles whose instance kind is the one measured."""
    root = relative_to or Path.cwd()
    chunks = []
    for model in STEPS:
        if model not in proposal or model not in current or proposal[model] == current[model]:
            continue
        new_settings, old_settings = proposal[model], current[model]
        batching = (new_settings.preferred, new_settings.max_queue_delay_us) != (
            old_settings.preferred, old_settings.max_queue_delay_us)
        count = new_settings.instances != old_settings.instances
        for path in config_files(repository, model):
            old = path.read_text()
            new = edit_pbtxt(old, new_settings, batching=batching,
                             instances=count and config_kind(old) in (measured_kind, None))
            if new == old:
                continue
            try:
                shown = path.resolve().relative_to(root.resolve())
            except ValueError:
                shown = path.resolve()
            chunks.extend(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                               fromfile=f"a/{shown}", tofile=f"b/{shown}"))
    return "".join(chunks)


# --- observed ---------------------------------------------------------------------------------

@dataclass
class StepObservation:
    model: str
    rate: Optional[float] = None  # requests per second
    batch: Optional[float] = None  # requests per execution
    queue_s: Optional[float] = None  # mean queue wait per request
    compute_s: Optional[float] = None  # mean compute per request

    def busy(self, instances: int) -> Optional[float]:
        """Share of the instances' time spent computing."""
        if self.rate is None or self.compute_s is None or instances <= 0:
            return None
        return self.rate * self.compute_s / instances


@dataclass
class Observation:
    window_s: float
    p95_s: Optional[float]
    steps: Dict[str, StepObservation]


def observe(prometheus_url: str, window_s: float) -> Observation:
    """What Prometheus saw over the last ``window_s`` seconds."""
    from sightline.boards_cli import Prometheus, PrometheusError
    from sightline.durations import prometheus as prom_duration

    prom = Prometheus(prometheus_url)
    w = prom_duration(window_s)
    models = "|".join(STEPS)

    def by_model(expr: str) -> Dict[str, float]:
        try:
            rows = prom.query(expr)
        except PrometheusError as exc:
            raise AdviceError(str(exc)) from exc
        out = {}
        for row in rows:
            value = float(row["value"][1])
            if math.isfinite(value):
                out[row["metric"].get("model", "")] = value
        return out

    def rate(metric: str) -> str:
        return f'sum by (model) (rate({metric}{{model=~"{models}"}}[{w}]))'

    success = rate(names.NV_REQUEST_SUCCESS)
    rates = by_model(success)
    batches = by_model(f"{rate(names.NV_INFERENCE_COUNT)} / ({rate(names.NV_EXEC_COUNT)} > 0)")
    queues = by_model(f"{rate(names.NV_QUEUE_DURATION_US)} / ({success} > 0) / 1e6")
    computes = by_model(f"{rate(names.NV_COMPUTE_INFER_DURATION_US)} / ({success} > 0) / 1e6")
    p95 = by_model(f"histogram_quantile(0.95, sum by (le) (rate({names.REQUEST_DURATION}_bucket[{w}])))")
    steps = {m: StepObservation(m, rates.get(m), batches.get(m), queues.get(m), computes.get(m)) for m in STEPS}
    return Observation(window_s, p95.get(""), steps)


@dataclass
class Reason:
    model: str
    text: str


def rules_proposal(current: Settings, observation: Observation, target_s: float,
                   cpus: Optional[int] = None) -> Tuple[Settings, List[Reason]]:
    """A first proposal from what was observed, each change with its reason."""
    cpus = cpus or os.cpu_count() or 1
    proposal = dict(current)
    reasons: List[Reason] = []
    if observation.p95_s is not None:
        verdict = "within" if observation.p95_s <= target_s else "above"
        reasons.append(Reason("pipeline", f"P95 {observation.p95_s * 1000:.1f} ms is {verdict} the "
                                          f"{target_s * 1000:.0f} ms target"))
    for model in INSTANCE_STEPS:
        seen, settings = observation.steps.get(model), current.get(model)
        if seen is None or settings is None:
            continue
        busy = seen.busy(settings.instances)
        if busy is None:
            reasons.append(Reason(model, "no traffic observed: nothing to tune"))
            continue
        if busy > BUSY_HIGH and settings.instances < cpus:
            proposal[model] = dataclasses.replace(settings, instances=settings.instances + 1)
            reasons.append(Reason(model, f"its {settings.instances} instance(s) are {busy:.0%} busy (over "
                                         f"{BUSY_HIGH:.0%}): requests queue in bursts; one more instance"))
        else:
            reasons.append(Reason(model, f"its {settings.instances} instance(s) are {busy:.0%} busy: kept"))
    seen, settings = observation.steps.get(BATCHED_MODEL), current.get(BATCHED_MODEL)
    if seen is not None and settings is not None and settings.batching:
        cap_us = int(target_s * MAX_DELAY_SHARE * 1e6)
        busy = seen.busy(settings.instances)
        waiting = seen.queue_s is not None and seen.queue_s * 1e6 >= 0.5 * settings.max_queue_delay_us > 0
        if busy is not None and busy > BUSY_HIGH:
            delay = min(cap_us, max(2 * settings.max_queue_delay_us, 1000))
            proposal[BATCHED_MODEL] = dataclasses.replace(settings, preferred=(), max_queue_delay_us=delay)
            reasons.append(Reason(BATCHED_MODEL, f"{busy:.0%} busy with batches of {seen.batch or 0:.2f}: bigger "
                                                 f"batches cost less per request; any batch size, delay {delay} us"))
        elif seen.batch is not None and seen.batch < 1.5 and waiting:
            delay = settings.max_queue_delay_us // 4
            proposal[BATCHED_MODEL] = dataclasses.replace(settings, max_queue_delay_us=delay)
            reasons.append(Reason(BATCHED_MODEL, f"batches of {seen.batch:.2f} while requests wait "
                                                 f"{seen.queue_s * 1e3:.2f} ms for partners that rarely come "
                                                 f"(delay {settings.max_queue_delay_us} us): delay {delay} us"))
        elif seen.batch is None:
            reasons.append(Reason(BATCHED_MODEL, "no traffic observed: nothing to tune"))
        else:
            reasons.append(Reason(BATCHED_MODEL, f"batches of {seen.batch:.2f}, queue wait "
                                                 f"{(seen.queue_s or 0) * 1e3:.2f} ms: kept"))
    return proposal, reasons


# --- measured ---------------------------------------------------------------------------------

@dataclass
class Trial:
    label: str
    settings: Settings
    offered_per_s: float
    served_per_s: float
    p50_ms: Optional[float]
    p95_ms: Optional[float]
    errors: int
    dropped: int
    batch: Optional[float]  # the batched model's requests per execution, from Triton's counters
    queue_ms: Dict[str, Optional[float]] = field(default_factory=dict)

    def serves_all(self) -> bool:
        return self.errors == 0 and self.dropped == 0 and self.served_per_s >= 0.97 * self.offered_per_s

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["settings"] = {m: dataclasses.asdict(s) for m, s in self.settings.items()}
        return out


def candidates(current: Settings, proposal: Settings, limit: int, cpus: Optional[int] = None) -> List[Tuple[str, Settings]]:
    """The committed settings, the observed proposal, then one change at a time; at most ``limit``."""
    cpus = cpus or os.cpu_count() or 1
    out: List[Tuple[str, Settings]] = [("committed", current)]

    def add(label: str, settings: Settings) -> None:
        if all(settings != s for _, s in out):
            out.append((label, settings))

    add("observed proposal", proposal)
    model = current.get(BATCHED_MODEL)
    if model is not None and model.batching:
        add("no queue delay", {**current, BATCHED_MODEL: dataclasses.replace(model, max_queue_delay_us=0)})
        add("any batch size", {**current, BATCHED_MODEL: dataclasses.replace(model, preferred=())})
        add("longer delay", {**current, BATCHED_MODEL: dataclasses.replace(
            model, max_queue_delay_us=max(2 * model.max_queue_delay_us, 1000))})
    for step in INSTANCE_STEPS:
        settings = current.get(step)
        if settings is None:
            continue
        if settings.instances < cpus:
            add(f"{step} +1 instance", {**current, step: dataclasses.replace(settings, instances=settings.instances + 1)})
        if settings.instances > 1:
            add(f"{step} -1 instance", {**current, step: dataclasses.replace(settings, instances=settings.instances - 1)})
    return out[:max(1, limit)]


CHANGE_MARGIN = 0.9  # a change must cut the committed settings' P95 by at least 10 % to be proposed


def choose(trials: Sequence[Trial], target_ms: float) -> Tuple[Trial, bool]:
    """The trial to propose, and whether it meets the target. Among those that served the
    whole load, the lowest P95; unless it is at least 10 % below the committed settings'
    P95, the committed settings stay (a 10-second run's P95 moves by more than 3 % by itself
    on a shared machine)."""
    serving = [t for t in trials if t.serves_all() and t.p95_ms is not None]
    if not serving:
        best = min(trials, key=lambda t: (-(t.served_per_s), t.p95_ms or math.inf))
        return best, False
    best = min(serving, key=lambda t: t.p95_ms or math.inf)
    committed = next((t for t in serving if t.label == "committed"), None)
    if committed is not None and committed.p95_ms is not None and best.p95_ms is not None \
            and best.p95_ms > CHANGE_MARGIN * committed.p95_ms:
        best = committed
    return best, (best.p95_ms or math.inf) <= target_ms


class Triton:
    """The server the sweep reloads: its HTTP API (model control) and its metrics."""

    def __init__(self, http_url: str, metrics_url: str) -> None:
        self.http_url = http_url.rstrip("/")
        self.metrics_url = metrics_url

    def config(self, model: str) -> dict:
        return self._call("GET", f"/v2/models/{model}/config")

    def load(self, model: str, config: Optional[Mapping[str, Any]] = None) -> None:
        body = {"parameters": {"config": json.dumps(config)}} if config is not None else {}
        self._call("POST", f"/v2/repository/models/{model}/load", body, timeout_s=180)

    def _call(self, method: str, path: str, body: Any = None, timeout_s: float = 10) -> dict:
        try:
            return http_client.request_json(f"{self.http_url}{path}", method=method, json_body=body, timeout_s=timeout_s)
        except http_client.HttpStatusError as exc:
            detail = exc.body.decode(errors="replace").strip()
            hint = (" (the sweep reloads models: run Triton with explicit model control, "
                    "`sightline up --demo-faults`)") if "explicit" in detail or "not allowed" in detail else ""
            raise AdviceError(f"{method} {path} answered {exc.status}: {detail}{hint}") from exc
        except http_client.HttpError as exc:
            raise AdviceError(f"cannot reach Triton at {self.http_url}: {exc}") from exc

    def counters(self) -> Dict[Tuple[str, str], float]:
        """(metric, model) -> value of Triton's cumulative per-model counters."""
        from prometheus_client.parser import text_string_to_metric_families

        wanted = {names.NV_INFERENCE_COUNT, names.NV_EXEC_COUNT, names.NV_QUEUE_DURATION_US, names.NV_REQUEST_SUCCESS}
        text = http_client.request(self.metrics_url, timeout_s=10).decode()
        out: Dict[Tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            if family.name not in wanted:
                continue
            for sample in family.samples:  # the parser names a counter's samples NAME_total
                key = (family.name, sample.labels.get("model", ""))
                out[key] = out.get(key, 0.0) + sample.value
        return out


def current_settings(triton: Triton) -> Settings:
    return {model: StepSettings.from_triton(triton.config(model)) for model in STEPS}


def sweep(triton: Triton, grpc_url: str, trials_of: Sequence[Tuple[str, Settings]], rate_per_s: float,
          seconds: float, warmup_s: float = 3.0, cameras: int = 4, rounds: int = 1,
          progress: Optional[Callable[[str], None]] = None) -> List[Trial]:
    """Serve each candidate the same open-loop load, ``rounds`` times in alternating order
    (a candidate's latencies are pooled over its rounds); load every model it touched back
    as it was served."""
    from sightline import loadgen

    if rate_per_s <= 0 or seconds <= 0 or rounds < 1:
        raise InputError(f"the sweep needs a positive rate, duration and rounds, got {rate_per_s} req/s for "
                         f"{seconds} s x {rounds}")
    say = progress or (lambda _text: None)
    base_configs = {model: triton.config(model) for model in STEPS}
    specs = [loadgen.CameraSpec(f"cam-{i + 1}", rate_per_s / cameras) for i in range(cameras)]
    pooled: Dict[str, dict] = {label: {"latencies": [], "offered": 0, "errors": 0, "dropped": 0, "seconds": 0.0,
                                       "counters": {}} for label, _ in trials_of}
    touched: set = set()
    try:
        runs = 0
        for round_ in range(rounds):
            order = list(trials_of) if round_ % 2 == 0 else list(reversed(trials_of))
            for label, settings in order:
                runs += 1
                step = f"[{runs}/{rounds * len(trials_of)}] {label}"
                say(f"{step}: loading")
                for model in STEPS:  # reload only what differs from what is being served
                    served = StepSettings.from_triton(triton.config(model))
                    if served != settings[model]:
                        triton.load(model, settings[model].apply_to(base_configs[model]))
                        touched.add(model)
                asyncio.run(loadgen.run(grpc_url, specs, warmup_s, seed=runs, frames_per_camera=SWEEP_FRAMES))
                say(f"{step}: {seconds:.0f} s at {rate_per_s:.0f} req/s")
                before = triton.counters()
                report = asyncio.run(loadgen.run(grpc_url, specs, seconds, seed=100 + runs,
                                                 frames_per_camera=SWEEP_FRAMES))
                after = triton.counters()
                pool = pooled[label]
                pool["latencies"] += report.latencies_s
                pool["offered"] += report.offered
                pool["errors"] += sum(report.errors.values())
                pool["dropped"] += report.dropped
                pool["seconds"] += report.duration_s
                for key in set(after) | set(before):
                    pool["counters"][key] = pool["counters"].get(key, 0.0) + after.get(key, 0.0) - before.get(key, 0.0)
    finally:
        # Back to what was served before, as an explicit override: a load without one does
        # not reload a model whose files did not change, so the last candidate would stay.
        for model in sorted(touched):
            say(f"reloading {model} as it was served")
            triton.load(model, base_configs[model])
    return [_trial(label, settings, pooled[label]) for label, settings in trials_of]


def _trial(label: str, settings: Settings, pool: dict) -> Trial:
    counters, seconds = pool["counters"], max(pool["seconds"], 1e-9)

    def total(metric: str, model: str) -> float:
        return counters.get((metric, model), 0.0)

    latencies = sorted(pool["latencies"])

    def percentile_ms(q: float) -> Optional[float]:
        return float(np.percentile(latencies, q) * 1000) if latencies else None

    execs = total(names.NV_EXEC_COUNT, BATCHED_MODEL)
    queue = {m: (total(names.NV_QUEUE_DURATION_US, m) / 1000 / n) if (n := total(names.NV_REQUEST_SUCCESS, m)) > 0
             else None for m in STEPS}
    return Trial(label, settings, round(pool["offered"] / seconds, 2), round(len(latencies) / seconds, 2),
                 percentile_ms(50), percentile_ms(95), pool["errors"], pool["dropped"],
                 total(names.NV_INFERENCE_COUNT, BATCHED_MODEL) / execs if execs else None, queue)


# --- the report -------------------------------------------------------------------------------

def chart(trials: Sequence[Trial], target_ms: float, chosen: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_p95, ax_rate) = plt.subplots(1, 2, figsize=(11, 0.55 * len(trials) + 2), sharey=True)
    labels = [t.label for t in trials]
    colours = ["tab:green" if t.label == chosen else "tab:blue" for t in trials]
    ax_p95.barh(labels, [t.p95_ms or 0 for t in trials], color=colours)
    ax_p95.axvline(target_ms, color="tab:red", linestyle="--", label=f"target {target_ms:.0f} ms")
    ax_p95.set_xlabel("client P95 (ms)")
    ax_p95.legend(loc="lower right")
    ax_p95.invert_yaxis()
    ax_rate.barh(labels, [t.served_per_s for t in trials], color=colours, label="served")
    ax_rate.plot([t.offered_per_s for t in trials], labels, "k|", markersize=14, label="offered")
    ax_rate.set_xlabel("requests / s")
    ax_rate.legend(loc="lower right")
    fig.suptitle("sightline advise batching: each candidate under the same open-loop load")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def export_flags(settings: StepSettings) -> str:
    """The `sightline export onnx` flags that write ``settings``' batcher (for generated configs)."""
    sizes = " ".join(map(str, settings.preferred))
    return (f"--preferred-batch-sizes{(' ' + sizes) if sizes else ''} "
            f"--max-queue-delay-us {settings.max_queue_delay_us}")
