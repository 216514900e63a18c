"""Durations as people and Prometheus write them: ``45s``, ``30m``, ``2h``, ``1d``.

One parser and one writer for the command line (``--since 30m``), scenario starts
(``outage@2m``), SLO windows and rule files.

>>> parse_seconds("30m"), parse_seconds("1.5h"), parse_seconds("90")
(1800.0, 5400.0, 90.0)
>>> prometheus(5400), prometheus(86400), prometheus(61)
('90m', '1d', '61s')
"""

from __future__ import annotations

import re

from sightline.errors import InputError

UNITS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|[smhd]?)\s*$")


def parse_seconds(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit (ms, s, m, h, d); a bare number is seconds.

    >>> parse_seconds("120ms"), parse_seconds("2m"), parse_seconds("45")
    (0.12, 120.0, 45.0)
    """
    match = _DURATION.match(str(text))
    if not match:
        raise InputError(f"{text!r} is not a duration like 120ms, 45s, 30m, 2h or 1d")
    return float(match.group(1)) * UNITS[match.group(2)]


def prometheus(total_seconds: float) -> str:
    """A Prometheus duration for ``total_seconds`` (at least 1 s), in the coarsest unit that stays exact."""
    value = max(1, int(round(total_seconds)))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value % size == 0:
            return f"{value // size}{unit}"
    return f"{value}s"
