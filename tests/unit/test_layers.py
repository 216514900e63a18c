"""Import layers: the serving path, which runs inside Triton, never imports the operations layer."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Modules the Triton shells may import: the steps and the floor they stand on.
SERVING = ("sightline.steps", "sightline.images", "sightline.redaction", "sightline.errors", "sightline.datagrams", "sightline.conventions", "sightline.modelspec", "sightline.vision",
           "sightline.quality", "sightline.procfs")


def lint_imports(config: Path) -> subprocess.CompletedProcess:
    executable = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert executable, "import-linter is not installed (it is in the test extras)"
    return subprocess.run([executable, "--config", str(config), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_no_layer_imports_one_above_it():
    result = lint_imports(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout and "2 kept" in result.stdout


def test_the_contract_catches_an_upward_import(tmp_path):
    # The same checker, told that the steps may not import the names module (they do):
    # it must say the contract is broken, so the test above can fail.
    config = tmp_path / "contract.ini"
    config.write_text("[importlinter]\nroot_package = sightline\n\n"
                      "[importlinter:contract:probe]\nname = probe\ntype = forbidden\n"
                      "source_modules = sightline.steps\nforbidden_modules = sightline.conventions\n")
    result = lint_imports(config)
    assert result.returncode == 1 and "BROKEN" in result.stdout, result.stdout[-2000:]


@pytest.mark.parametrize("shell", sorted(ROOT.glob("model_repository/*/1/model.py")), ids=lambda p: p.parts[-3])
def test_the_triton_shells_import_only_the_serving_path(shell):
    imported = set()
    for node in ast.walk(ast.parse(shell.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sightline"):
            imported |= {node.module} if node.module != "sightline" else {f"sightline.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names if a.name.startswith("sightline")}
    outside = sorted(m for m in imported if not any(m == s or m.startswith(s + ".") for s in SERVING))
    assert not outside, f"{shell.relative_to(ROOT)} imports {outside}, outside the serving path"
