"""Atomic file writes: a reader (or a run killed mid-write) never sees a partial file.

Each write goes to a temporary file in the same folder, is flushed to disk, and then
replaces the target with :func:`os.replace` (atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "check_output_dir"]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    On an error the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def check_output_dir(path: str | Path, what: str = "output folder") -> None:
    """Check that ``path`` is a folder that exists and is writable, or can be created.

    Nothing is created: the first existing folder on the way up must be writable.

    Args:
        path: the folder to write into.
        what: how the message names it (e.g. ``"--out"``).

    Raises:
        ConfigError: ``path`` is a file, lies under a file, or cannot be written.
    """
    from robustlens.errors import ConfigError

    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{what} {target} is a file; expected a folder to write into. "
                          "Choose another path (or move the file).")
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} {target} lies under the file {existing}; expected a folder path. "
                          "Choose another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {target} cannot be written: {existing} is not writable by this user. "
                          "Choose a writable path.")
