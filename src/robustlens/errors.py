"""Error types.

Every error a user can cause (bad input, a missing file, an invalid config) is a
:class:`RobustlensError`. Its message says what was expected, what was received and
what to do; the CLI prints it on one line and exits with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["CheckpointError", "ConfigError", "DataError", "OutputError", "RobustlensError", "suggest"]


class RobustlensError(Exception):
    """An error caused by the user's input, files or configuration."""


class ConfigError(RobustlensError, ValueError):
    """An invalid study configuration or option."""


class DataError(RobustlensError):
    """Missing or malformed data."""


class CheckpointError(RobustlensError):
    """A missing, corrupt or mismatching checkpoint."""


class OutputError(RobustlensError):
    """An output path that cannot be written (a file in the way, no permission, a bad extension)."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a ``" Did you mean ...?"`` suffix listing close matches of ``name``, or ``""``."""
    matches = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    if not matches:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"
