"""A monitor without a drift reference says so: in its log at start and in a metric that pages."""

from __future__ import annotations

import logging

from sightline import conventions as names
from sightline.sidecars.monitor import Monitor, MonitorConfig


def config(tmp_path, **overrides):
    return MonitorConfig(otlp_port=0, metrics_port=0, tap_port=0, audit_dir=tmp_path / "audit",
                         reference_dir=tmp_path / "drift", triton_url="http://127.0.0.1:9", **overrides)


def test_a_monitor_without_a_reference_logs_an_error_and_exports_drift_enabled_0(tmp_path, caplog):
    missing = tmp_path / "no-such-reference.npz"
    with caplog.at_level(logging.ERROR):
        monitor = Monitor(config(tmp_path, reference=missing))
    assert monitor.drift is None
    assert monitor.registry.get_sample_value(names.DRIFT_ENABLED) == 0
    logged = [r for r in caplog.records if "drift is off" in r.getMessage()]
    assert logged and logged[0].levelno == logging.ERROR
    assert str(missing) in str(getattr(logged[0], "fields", {}))


def test_the_shipped_reference_turns_drift_on_without_a_word(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        monitor = Monitor(config(tmp_path))
    assert monitor.drift is not None
    assert monitor.registry.get_sample_value(names.DRIFT_ENABLED) == 1
    assert not [r for r in caplog.records if "drift is off" in r.getMessage()]
