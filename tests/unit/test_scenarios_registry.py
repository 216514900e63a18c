"""Each incident scenario is registered once, with its fault, load, alert and diagnosis, and
each of those exists where it must."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from sightline import faults, loadgen
from sightline.diagnosis import rules
from sightline.incident import EXPECTED, fps_for
from sightline.scenarios import SCENARIOS, ScenarioSpec

ROOT = Path(__file__).resolve().parents[2]
CAMERAS = [loadgen.CameraSpec(f"cam-{i}", 10.0) for i in range(1, 5)]


def alerts_in_rules() -> set[str]:
    found = set()
    for path in (ROOT / "prometheus" / "rules").glob("*.yaml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            found |= {rule["alert"] for rule in group["rules"] if "alert" in rule}
    return found


def diagnosis_keys() -> set[str]:
    """The first argument of every Hypothesis(...) that the rules of sightline diagnose build."""
    tree = ast.parse(Path(rules.__file__).read_text())
    return {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Hypothesis"
            and node.args and isinstance(node.args[0], ast.Constant)}


@pytest.mark.parametrize("name", SCENARIOS)
def test_each_scenario_names_an_alert_that_exists_and_a_diagnosis_rule_that_exists(name):
    spec = SCENARIOS[name]
    assert spec.alert.split("{")[0] in alerts_in_rules()
    assert spec.cause in diagnosis_keys()
    assert EXPECTED[name].alert == spec.alert and EXPECTED[name].cause == spec.cause
    assert fps_for(name) == spec.fps


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_readme_lists_each_scenario_with_its_alert(name):
    row = re.search(rf"^\| `{re.escape(name)}` \|.*$", (ROOT / "README.md").read_text(), re.MULTILINE)
    assert row, f"README's incident table has no row for {name}"
    assert SCENARIOS[name].alert.split("{")[0] in row.group(0)


@pytest.mark.parametrize("name", SCENARIOS)
def test_each_scenario_changes_something(name):
    spec = SCENARIOS[name]
    if spec.server_fault:
        assert name in faults.FAULTS and faults.target_model(name)
    else:
        default = ScenarioSpec(name, spec.fault, spec.alert, spec.cause)
        behaviour = ("dark_every_other_camera", "pixels_scale", "corrupt_share", "rate_factor", "last_camera_delivers")
        assert any(getattr(spec, f) != getattr(default, f) for f in behaviour), f"{name} makes the cameras do nothing"


def sends(name: str | None) -> list[loadgen.Send]:
    scenario = loadgen.Scenario.parse(f"{name}@0") if name else None
    return loadgen.schedule(CAMERAS, 60.0, seed=3, scenario=scenario)


def test_the_cameras_do_what_each_scenario_says():
    healthy = sends(None)
    last = len(CAMERAS) - 1
    assert len(healthy) == 4 * 600 and not any(s.corrupt or s.skipped for s in healthy)
    assert not [s for s in sends("camera-drop") if s.camera == last]
    stutter = [s for s in sends("camera-stutter") if s.camera == last]
    assert len(stutter) == 600 and 0.3 < sum(not s.skipped for s in stutter) / 600 < 0.5
    assert not [s for s in sends("camera-stutter") if s.camera != last and s.skipped]
    assert 0.4 < sum(s.corrupt for s in sends("outage")) / 2400 < 0.6
    assert 0.99 * 8 * len(healthy) <= len(sends("saturation")) <= 8 * len(healthy)  # each camera starts at a random phase
    assert sends("lowlight") == healthy and sends("resolution") == healthy  # same cadence; other frames
    dark = loadgen.scenario_conditions(1, CAMERAS[1], loadgen.Scenario.parse("lowlight"))
    assert dark.brightness == "night" and loadgen.scenario_conditions(0, CAMERAS[0], loadgen.Scenario.parse("lowlight")) == CAMERAS[0].conditions
    big = loadgen.scenario_conditions(0, CAMERAS[0], loadgen.Scenario.parse("resolution"))
    assert (big.width, big.height) == (2 * CAMERAS[0].conditions.width, 2 * CAMERAS[0].conditions.height)


def test_an_unknown_scenario_names_the_known_ones():
    with pytest.raises(ValueError, match="choose one of batcher, lowlight"):
        loadgen.Scenario.parse("meteor")
