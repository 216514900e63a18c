"""One exception base: every error Sightline raises on purpose is a SightlineError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import sightline
from sightline.cli import main
from sightline.errors import ConfigError, InputError, OperationError, SightlineError


def public_exception_classes() -> list[type]:
    found = []
    for info in pkgutil.walk_packages(sightline.__path__, "sightline."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__
                    and not name.startswith("_")):
                found.append(value)
    for package in ("sightline.sidecars", "sightline.export"):
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if (inspect.isclass(value) and issubclass(value, BaseException)
                        and value.__module__ == module.__name__ and not name.startswith("_")):
                    found.append(value)
    return found


def test_every_public_exception_derives_from_the_one_base_and_from_one_kind():
    classes = public_exception_classes()
    assert len(classes) >= 10
    outside = [c.__qualname__ for c in classes if not issubclass(c, SightlineError)]
    assert not outside, f"not under sightline.errors.SightlineError: {outside}"
    kindless = [c.__qualname__ for c in classes
                if c not in (SightlineError, InputError, OperationError, ConfigError)
                and not issubclass(c, (InputError, OperationError))]
    assert not kindless, f"neither an InputError nor an OperationError: {kindless}"


def test_there_is_one_config_error():
    from sightline.export import triton_config
    from sightline.sidecars import monitor

    assert monitor.ConfigError is ConfigError and triton_config.ConfigError is ConfigError


def test_the_command_line_prints_a_sightline_error_as_one_line_and_exits_1(monkeypatch, capfd):
    import sightline.cli as cli

    def unreachable(args):
        raise OperationError("cannot reach Prometheus at http://127.0.0.1:9: connection refused")

    monkeypatch.setattr(cli, "cmd_status", unreachable)  # the parser takes it from sightline.cli
    assert main(["status"]) == 1
    err = capfd.readouterr().err
    assert "cannot reach Prometheus" in err and "Traceback" not in err


def test_a_bad_monitor_config_is_named_without_a_traceback(tmp_path, capfd):
    bad = tmp_path / "monitor.yaml"
    bad.write_text("otlp_port: -5\n")
    assert main(["monitor", "--config", str(bad)]) == 2
    err = capfd.readouterr().err
    assert "otlp_port" in err and "Traceback" not in err


@pytest.mark.parametrize("kind, builtin", [(InputError, ValueError), (OperationError, RuntimeError)])
def test_each_kind_is_still_the_builtin_it_replaced(kind, builtin):
    assert issubclass(kind, builtin)
