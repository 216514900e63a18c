"""Server-side faults for the demo profile: a misconfigured batcher and a leaking postprocess.

Both go through Triton's own model-control API (``POST /v2/repository/models/NAME/load``
with a config override), so the fault is real: Triton reloads the model with the bad
config and serves with it. That API only answers when Triton runs with explicit model
control, which only the demo profile turns on (``ServerOptions.demo_faults``,
``sightline up --demo-faults``). The leak is honoured by the postprocess only when
``SIGHTLINE_DEMO_FAULTS=1`` is in its environment, which the same profile sets; a
production server ignores the parameter and says so in its log.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Mapping

from sightline import http_client
from sightline.errors import OperationError
from sightline.scenarios import SCENARIOS as ALL_SCENARIOS
from sightline.scenarios import SERVER_FAULTS
from sightline.steps.demo_fault import DEMO_FAULTS_ENV, LEAK_PARAMETER  # noqa: F401 - re-exported for callers

# The scenarios switched inside Triton; every scenario of `sightline load` is registered in
# sightline.scenarios (the others are made by the camera simulator).
FAULTS = SERVER_FAULTS
SCENARIOS = tuple(ALL_SCENARIOS)
BATCHER_MODEL = "detector_model"
LEAK_MODEL = "postprocess"
DEFAULT_LEAK_BYTES = 64 * 1024
# The batcher misconfiguration: a preferred batch size of 1 and no queue delay dispatch every
# request alone, however many are waiting.
BAD_BATCHING = {"preferred_batch_size": [1], "max_queue_delay_microseconds": "0"}
# The config a model was served with before its fault, kept inside the faulty config: a
# load without a config override does not reload a model whose files did not change, so
# `clear` loads this one back (and `sightline fault clear` needs no state of its own).
PRE_FAULT_PARAMETER = "pre_fault_config"


class FaultError(OperationError):
    """A fault could not be switched; the message says why."""


def _call(url: str, method: str, path: str, body: Mapping[str, Any] | None = None, timeout_s: float = 120.0) -> dict:
    try:
        return http_client.request_json(f"{url.rstrip('/')}{path}", method=method, json_body=body,
                                        headers={"Content-Type": "application/json"}, timeout_s=timeout_s)
    except http_client.HttpStatusError as exc:
        detail = exc.body.decode(errors="replace")
        hint = (" (fault switches need the demo profile: `sightline up --demo-faults`, which runs "
                "Triton with explicit model control)") if "explicit" in detail or "not allowed" in detail else ""
        raise FaultError(f"{method} {path} answered {exc.status}: {detail.strip()}{hint}") from exc
    except http_client.HttpError as exc:
        raise FaultError(f"cannot reach Triton at {url}: {exc}") from exc


def model_config(url: str, model: str) -> dict:
    return _call(url, "GET", f"/v2/models/{model}/config", timeout_s=10)


def load(url: str, model: str, config: Mapping[str, Any] | None = None) -> None:
    """(Re)load ``model``, with ``config`` overriding the repository's config if given."""
    body = {"parameters": {"config": json.dumps(config)}} if config is not None else {}
    _call(url, "POST", f"/v2/repository/models/{model}/load", body)


def faulty_config(name: str, config: Mapping[str, Any], leak_bytes: int = DEFAULT_LEAK_BYTES) -> dict:
    """The served ``config`` with fault ``name`` applied, and the config before any fault
    kept in it (:data:`PRE_FAULT_PARAMETER`)."""
    original = pre_fault_config(config) or dict(config)
    out = copy.deepcopy(dict(config))
    if name == "batcher":
        out["dynamic_batching"] = {**out.get("dynamic_batching", {}), **BAD_BATCHING}
    elif name == "leak":
        if leak_bytes <= 0:
            raise FaultError(f"leak_bytes must be positive, got {leak_bytes}")
        out.setdefault("parameters", {})[LEAK_PARAMETER] = {"string_value": str(int(leak_bytes))}
    else:
        raise FaultError(f"unknown fault {name!r}; choose one of {', '.join(FAULTS)}")
    out.setdefault("parameters", {})[PRE_FAULT_PARAMETER] = {"string_value": json.dumps(original)}
    return out


def pre_fault_config(config: Mapping[str, Any]) -> dict | None:
    """The config kept in a faulty ``config``; None when it carries none (no fault on)."""
    kept = ((config.get("parameters") or {}).get(PRE_FAULT_PARAMETER) or {}).get("string_value")
    return json.loads(kept) if kept else None


def target_model(name: str) -> str:
    if name not in FAULTS:
        raise FaultError(f"unknown fault {name!r}; choose one of {', '.join(FAULTS)}")
    return BATCHER_MODEL if name == "batcher" else LEAK_MODEL


def inject(url: str, name: str, leak_bytes: int = DEFAULT_LEAK_BYTES) -> str:
    """Reload the fault's model with the faulty config; returns the model's name."""
    model = target_model(name)
    load(url, model, faulty_config(name, model_config(url, model), leak_bytes))
    return model


def clear(url: str, name: str) -> str:
    """Load the fault's model back with the config it was served with before the fault
    (from the repository when no fault is on)."""
    model = target_model(name)
    load(url, model, pre_fault_config(model_config(url, model)))
    return model
