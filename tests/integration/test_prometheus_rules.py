"""The real promtool and amtool over every rule file, rule test and the Alertmanager config."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from sightline.runtime import REPO_ROOT, ServerOptions
from sightline.stack import StackOptions, render_alertmanager_config, render_prometheus_config

PROMETHEUS = REPO_ROOT / "prometheus"
pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is installed by `make`")


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_every_rule_file_passes_promtool_check():
    result = run("promtool", "check", "rules", *map(str, sorted((PROMETHEUS / "rules").glob("*.yaml"))))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", sorted((PROMETHEUS / "tests").glob("*.test.yaml")), ids=lambda p: p.name)
def test_rule_behaviour_tests_pass(path):
    result = run("promtool", "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alertmanager_config_passes_amtool():
    result = run("amtool", "check-config", str(PROMETHEUS / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rendered_time_scaled_stack_configs_are_valid(tmp_path):
    options = StackOptions(triton=ServerOptions(state_dir=tmp_path), time_scale=60)
    prometheus = render_prometheus_config(options, tmp_path / "prometheus.yml")
    alertmanager = render_alertmanager_config(options, tmp_path / "alertmanager.yml")
    checked = run("promtool", "check", "config", str(prometheus))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "evaluation_interval: 1s" in prometheus.read_text()
    assert run("amtool", "check-config", str(alertmanager)).returncode == 0
    assert "group_interval: 2s" in alertmanager.read_text()
