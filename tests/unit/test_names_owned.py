"""One owner for every name: Sightline's metric, recording-rule and alert names are spelt
only in ``sightline/conventions.py``; every other module refers to its constants.

The scan reads the Python sources with ``ast``: every string constant, the constant parts of
f-strings included, except module, class and function docstrings (prose may name a metric).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import yaml

from sightline import conventions
from sightline.runtime import REPO_ROOT

SOURCES = ("sightline",)  # the monitor (sightline/sidecars) and export (sightline/export) included
OWNER = REPO_ROOT / "sightline" / "conventions.py"

METRIC = r"\bsightline_[a-z][a-z0-9_]*"  # a letter after the prefix: "sightline_1_ab12_" is a shm segment
RULE = r"(?<![\w:])[a-z][a-z0-9_]*:[a-z0-9_]+:[a-z0-9_]+\b"  # level:metric:operations
ALERT = r"\bSightline[A-Z][A-Za-z0-9]*"
NAME = re.compile(f"{RULE}|{METRIC}|{ALERT}")

# Constants of conventions that hold the same value on purpose (none yet).
INTENDED_DUPLICATES: frozenset = frozenset()


def _docstrings(tree: ast.AST) -> set:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def literal_names(source: str) -> Iterator[tuple[int, str]]:
    """(line, name) of every Sightline name in a string constant of ``source``, docstrings aside."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):  # reaches the Constant parts of every JoinedStr (f-string) too
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            for name in NAME.findall(node.value):
                yield node.lineno, name


def python_sources() -> list[Path]:
    return sorted(path for top in SOURCES for path in (REPO_ROOT / top).rglob("*.py")
                  if path != OWNER and "__pycache__" not in path.parts)


def test_no_module_but_conventions_spells_a_sightline_name():
    found = [f"{path.relative_to(REPO_ROOT)}:{line}: {name}"
             for path in python_sources() for line, name in literal_names(path.read_text())]
    assert not found, ("Sightline names written as string literals outside sightline/conventions.py; "
                       "use (or add) a constant there:\n" + "\n".join(found))


def test_the_scan_sees_strings_and_f_strings_but_not_docstrings():
    source = '''
"""Module prose may name sightline_request_duration_seconds."""
def f(w):
    """And so may SightlineTritonDown's runbook."""
    plain = "sum(rate(sightline_detections_total[5m]))"
    formatted = f"max by (camera) (camera:sightline_camera_fps:ratio_1m{{camera}}) [{w}] SightlineCameraSilent"
    shm = "sightline_1_abcdef_"
'''
    assert sorted(literal_names(source)) == [
        (5, "sightline_detections_total"), (6, "SightlineCameraSilent"), (6, "camera:sightline_camera_fps:ratio_1m")]
    assert python_sources() and OWNER not in python_sources()


# --- the names conventions owns follow Prometheus's rules (module docstring) ----------------------

def _string_constants() -> dict:
    return {key: value for key, value in vars(conventions).items() if key.isupper() and isinstance(value, str)}


def _rules() -> tuple[set, set]:
    records, alerts = set(), set()
    for path in (REPO_ROOT / "prometheus" / "rules").glob("*.yaml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            records |= {rule["record"] for rule in group["rules"] if "record" in rule}
            alerts |= {rule["alert"] for rule in group["rules"] if "alert" in rule}
    return records, alerts


def test_metric_names_are_lower_snake_case_in_base_units():
    metrics = {key: value for key, value in _string_constants().items()
               if value.startswith(conventions.PREFIX) and value != conventions.PREFIX}
    assert len(metrics) > 50
    bad = [f"{key} = {value!r}" for key, value in metrics.items()
           if not re.fullmatch(r"sightline_[a-z0-9_]+", value) or "__" in value or value.endswith("_")
           # base units: seconds and bytes, a unit suffix last (before _total on counters)
           or re.search(r"_(milliseconds|ms|us|microseconds|percent|kb|mb|kilobytes|megabytes)(_|$)", value)
           or any(f"_{unit}_" in value and not value.endswith(f"_{unit}_total") for unit in ("seconds", "bytes"))]
    assert not bad, "metric names that break the naming rules:\n" + "\n".join(bad)


def test_recording_rule_and_alert_names_exist_in_the_rules():
    records, alerts = _rules()
    constants = _string_constants()
    rules = {key: value for key, value in constants.items() if re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", value)}
    rules["SLO_INFO"] = conventions.SLO_INFO  # Sloth's info series has no colons
    # a name or a windowed family's stem (slo:sli_error:ratio_rate + 5m, 30d, ...)
    missing = [f"{key} = {value!r}" for key, value in rules.items()
               if value not in records and not any(re.fullmatch(re.escape(value) + r"\d+[mhd]", r) for r in records)]
    assert not missing, "recording-rule names no rule in prometheus/rules/ records:\n" + "\n".join(missing)
    named = {key: value for key, value in constants.items() if key.startswith("ALERT_")}
    prefixes = {"ALERT_PREFIX", "ALERT_CAMERA_PREFIX"}
    assert all(re.fullmatch(r"Sightline[A-Z][A-Za-z0-9]*", value) for key, value in named.items() if key not in prefixes)
    missing = [f"{key} = {value!r}" for key, value in named.items() if key not in prefixes and value not in alerts]
    assert not missing, "alert names no rule in prometheus/rules/ defines:\n" + "\n".join(missing)
    assert all(any(a.startswith(named[key]) for a in alerts) for key in prefixes)
    # every no-data alert is named after its SLO's burn-rate alert
    no_data = {a for a in alerts if a.endswith(conventions.NO_DATA_ALERT_SUFFIX)}
    burn = {a for a in alerts if a.endswith(conventions.BURN_ALERT_SUFFIX)}
    assert no_data and no_data <= {conventions.no_data_alert(a) for a in burn}


def test_no_two_name_constants_hold_the_same_name():
    pattern = re.compile(rf"{conventions.PREFIX}[a-z0-9_]+|[a-z_]+:[a-z0-9_]+:[a-z0-9_]+|Sightline[A-Z][A-Za-z0-9]*|nv_[a-z_]+")
    holders = defaultdict(list)
    for key, value in _string_constants().items():
        if pattern.fullmatch(value):
            holders[value].append(key)
    shared = [f"{value!r}: {', '.join(sorted(keys))}" for value, keys in holders.items()
              if len(keys) > 1 and frozenset(keys) not in INTENDED_DUPLICATES]
    assert not shared, "constants that hold the same name:\n" + "\n".join(shared)
