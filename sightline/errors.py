"""The errors Sightline raises on purpose: one base, two kinds, one for configuration.

``SightlineError`` is the base of every error whose message is meant for the user: the
command line prints it as one line and exits 1 instead of showing a traceback. Each kind
also derives from the built-in it replaces (``ValueError``, ``RuntimeError``), so code that
catches those keeps working.

- ``InputError``: what was given is not acceptable: a frame, a request parameter, an SLO
  spec, a span, an export, a datagram. The message names the problem.
- ``ConfigError``: an ``InputError`` about a configuration file or setting.
- ``OperationError``: something Sightline depends on (Triton, Prometheus, the monitor, the
  network, a file) did not do what was asked. The message says what and where.

>>> issubclass(ConfigError, InputError) and issubclass(ConfigError, ValueError)
True
"""

from __future__ import annotations


class SightlineError(Exception):
    """Base of every error Sightline raises on purpose; its message is for the user."""


class InputError(SightlineError, ValueError):
    """What was given is not acceptable; the message names the problem."""


class ConfigError(InputError):
    """A configuration file or setting is invalid; the message names the file or the setting."""


class OperationError(SightlineError, RuntimeError):
    """Something Sightline depends on did not do what was asked; the message says what and where."""
