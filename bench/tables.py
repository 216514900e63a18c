"""Splice a generated table into bench/README.md between its begin and end markers; and
what every benchmark that starts servers does on SIGTERM."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"


def splice(table: str, begin: str, end: str, heading: str = "", readme: Path = README) -> None:
    """Replace the text between ``begin`` and ``end`` (the table includes both), or append it."""
    text = readme.read_text() if readme.exists() else ""
    if begin in text:
        text = text[: text.index(begin)] + table + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + (f"{heading}\n\n" if heading else "") + table + "\n"
    readme.write_text(text)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so the servers a benchmark started stop with it:
    their context managers unwind as on Ctrl-C. Without this, a benchmark killed with
    ``kill`` (or by a CI timeout) left tritonserver, its stubs and their /dev/shm segments
    running."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
