"""The two images install what their processes import, at the locked versions, and nothing else."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"

# What each image's processes import when they start, and what they import later, on first
# use, with the reason.
IMAGES = {
    "triton": {
        "dockerfile": ROOT / "k8s/images/triton.Dockerfile",
        # the Triton shells under model_repository/ import these (tests/unit/test_layers.py)
        "modules": ["sightline.steps.preprocess", "sightline.steps.postprocess", "sightline.steps.ort_runner",
                    "sightline.steps.telemetry", "sightline.steps.tap", "sightline.steps.audit",
                    "sightline.steps.demo_fault", "sightline.modelspec", "sightline.vision", "sightline.quality"],
        "later": {"onnxruntime": "the local profile's runner imports it when the model loads"},
    },
    "monitor": {
        "dockerfile": ROOT / "k8s/images/monitor.Dockerfile",
        # the container runs `sightline monitor --config ...`
        "modules": ["sightline.cli", "sightline.sidecars.monitor"],
        "later": {"nvidia-ml-py": "the GPU collector imports it when it starts"},
    },
}
# Not distributions an image installs: the interpreter's own tooling.
TOOLING = {"setuptools", "pip", "wheel"}

PROBE = """
import importlib, json, sys
from importlib.metadata import packages_distributions
for name in sys.argv[1:]:
    importlib.import_module(name)
dists = packages_distributions()
tops = {name.split(".")[0] for name in list(sys.modules)}
print(json.dumps(sorted({d for t in tops if t not in sys.stdlib_module_names for d in dists.get(t, [])})))
"""


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_by(dockerfile: Path) -> set[str]:
    """Distribution names of the `pip install -c requirements.lock ...` line of a Dockerfile."""
    text = dockerfile.read_text().replace("\\\n", " ")
    match = re.search(r"pip install [^\n]*-c requirements\.lock([^\n]*)", text)
    assert match, f"{dockerfile.name} does not install its dependencies under -c requirements.lock"
    return {normal(word) for word in match.group(1).split() if not word.startswith("-")}


def closure(names: set[str]) -> set[str]:
    """The names and everything they require, as installed here."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            needs = requires(name) or []
        except PackageNotFoundError:
            continue
        for need in needs:
            if "extra ==" in need:
                continue
            todo.append(normal(re.match(r"[A-Za-z0-9._-]+", need).group(0)))
    return seen


def imported(modules: list[str]) -> set[str]:
    run = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    import json
    return {normal(d) for d in json.loads(run.stdout)} - {"sightline"} - TOOLING


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_image_installs_what_its_processes_import_and_nothing_else(image):
    spec = IMAGES[image]
    installs = installed_by(spec["dockerfile"])
    needs = imported(spec["modules"])
    later = {normal(name) for name in spec["later"]}
    missing = needs - closure(installs)
    assert not missing, f"the {image} image does not install {sorted(missing)}, which its processes import"
    unused = installs - needs - later
    assert not unused, f"the {image} image installs {sorted(unused)}, which none of its processes imports"


def test_every_package_an_image_installs_is_pinned_by_the_lock():
    locked = {normal(line.split("==")[0]) for line in LOCK.read_text().splitlines() if "==" in line}
    for spec in IMAGES.values():
        assert installed_by(spec["dockerfile"]) <= locked, spec["dockerfile"].name
        assert {normal(n) for n in spec["later"]} <= installed_by(spec["dockerfile"])
