"""``sightline diagnose``: compare "now" with a baseline in Prometheus and explain what changed.

Every signal is one PromQL expression evaluated twice: over the last ``since`` seconds
("now") and over the ``baseline`` before that. Explicit rules then encode an on-call engineer's
reasoning: which signal moved, which stayed flat, and what a flat signal rules out. A
request rate that did not move rules out overload; frame sizes that did not move rule
out an upstream resolution change; and so on. Each rule that matches is a hypothesis
with a score, its evidence (the PromQL and both numbers) and what to do about it.

The report is Markdown with PNG charts of the key series, written next to each other.
"""

from __future__ import annotations

from sightline.diagnosis.report import Diagnosis, diagnose, render_charts, render_markdown, write_report  # noqa: F401
from sightline.diagnosis.rules import Evidence, Hypothesis, hypotheses, ruled_out  # noqa: F401
from sightline.diagnosis.signals import BY_KEY, SIGNALS, Reading, Signal, parse_duration, read_signals  # noqa: F401
