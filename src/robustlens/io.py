"""Output paths: checked before the work, written atomically.

:func:`check_output_dir` and :func:`check_output_file` prove, before any training or attack,
that a result can be written where the user asked (so an hour of work is never lost to a
typo in ``--out``). Each write goes to a temporary file in the same folder, is flushed to
disk, and then replaces the target with :func:`os.replace` (atomic on POSIX and Windows): a
reader, or a run killed mid-write, never sees a partial file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from robustlens.errors import OutputError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "check_output_dir",
           "check_output_file"]


def _existing_ancestor(path: Path, what: str) -> Path:
    """The nearest existing folder at or above ``path``; an error if a file is in the way."""
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise OutputError(f"{what} {path}: {probe} is a broken symbolic link; remove it or choose "
                              "another path.")
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(f"{what} {path} cannot be created: {probe} is a file, not a folder. Choose a "
                          "path whose parent folders are folders (or move the file).")
    return probe


def _try_write(folder: Path, path: Path, what: str) -> None:
    """Create and remove a temporary file in ``folder`` (``os.access`` is not proof: root, ACLs, mounts)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".robustlens-write-test.", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise OutputError(f"{what} {path} is not writable: cannot create files in {folder} ({reason}). "
                          "Choose a folder you can write to (e.g. under your home directory), or fix "
                          "its permissions.") from None


def check_output_dir(path: str | Path, *, what: str = "output folder") -> Path:
    """Check, without creating anything, that ``path`` is or can become a writable folder.

    ``path`` may exist (it must then be a folder) or not (every existing ancestor must be a
    folder, and the nearest one writable). Writability is proven by creating and removing a
    temporary file. Call it before long work whose results go to ``path``.

    Args:
        path: the folder results will be written to.
        what: how the message names it (e.g. ``"--out"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputError: ``path`` is a file, lies under a file, or cannot be written.
    """
    target = Path(path).expanduser()
    if str(path) == "":
        raise OutputError(f"{what} is empty; give a folder path.")
    if target.exists() and not target.is_dir():
        raise OutputError(f"{what} {target} is a file, not a folder. Give a folder path (a new one is "
                          "created), or move the file.")
    folder = _existing_ancestor(target, what)
    _try_write(folder, target, what)
    return target


def check_output_file(path: str | Path, *, what: str = "output file",
                      suffixes: tuple[str, ...] | None = None) -> Path:
    """Check, without creating anything, that the file ``path`` can be written.

    Its folder must be (or be able to become) a writable folder, ``path`` itself must not
    be a folder, and, when ``suffixes`` is given, its extension must be one of them.

    Args:
        path: the file to be written.
        what: how the message names it (e.g. ``"--out"``).
        suffixes: accepted extensions, lower case with the dot (``(".png", ".pdf")``), or ``None``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputError: a folder, an unsupported extension, or an unwritable place.
    """
    target = Path(path).expanduser()
    if str(path) == "" or target.name in ("", ".", ".."):
        raise OutputError(f"{what} must name a file; received {str(path)!r}.")
    if target.is_dir():
        raise OutputError(f"{what} {target} is a folder; give a file path inside it (e.g. "
                          f"{target / ('out' + (suffixes[0] if suffixes else ''))}).")
    if suffixes is not None and target.suffix.lower() not in suffixes:
        got = f"{target.suffix!r} is not supported" if target.suffix else "it has none"
        raise OutputError(f"{what} {target}: the file extension decides the format and {got}; "
                          f"use one of {', '.join(suffixes)}.")
    folder = _existing_ancestor(target.parent, what)
    _try_write(folder, target, what)
    return target


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

