"""The installed package, not the source tree, carries what the monitor needs at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Imports the package from a directory holding only the unpacked wheel (the editable
# install's finder removed), the way the monitor image runs it.
PROBE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__name__.lower()
                    and "editable" not in getattr(f, "__name__", "").lower()]
sys.path.insert(0, sys.argv[1])
import sightline.sidecars.tap_receiver as tap
assert tap.__file__.startswith(sys.argv[1]), tap.__file__
print(tap.DEFAULT_REFERENCE, tap.DEFAULT_REFERENCE.exists())
detector = tap.build_detector(tap.DEFAULT_REFERENCE, permutations=10)
print("reference records", len(tap.load_reference(tap.DEFAULT_REFERENCE)[0]))
# What the Triton image's Python steps import (k8s/images/triton.Dockerfile installs the same wheel).
import sightline.steps.preprocess, sightline.steps.postprocess, sightline.steps.ort_runner, sightline.steps.telemetry
assert sightline.steps.preprocess.__file__.startswith(sys.argv[1])
# What the monitor image's command (`sightline monitor`) imports: every subpackage of the command line.
import sightline.cli, sightline.commands.stack, sightline.commands.incidents, sightline.diagnose, sightline.slo.rules
assert sightline.cli.build_parser().parse_args(["monitor"]).func.__module__ == "sightline.commands.stack"
"""


def test_the_installed_wheel_carries_the_steps_and_the_monitors_drift_reference(tmp_path):
    # Before: the wheel had no sightline.steps (every step of the Triton image failed to import)
    # and no drift reference (the monitor image judged no drift).
    # What k8s/images/monitor.Dockerfile copies and installs, built outside the working tree.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("sightline",):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("sightline-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("daylight_reference.npz", "daylight_reference.json", "daylight_reference.calibration.json"):
        assert f"sightline/export/reference/{name}" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    run = subprocess.run([sys.executable, "-c", PROBE, str(site)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    path, exists = run.stdout.splitlines()[0].rsplit(" ", 1)
    assert path.startswith(str(site)) and exists == "True", run.stdout
    assert int(run.stdout.splitlines()[1].split()[-1]) > 0
