"""Reading third-party weight files safely (PyTorch pickles and safetensors).

``torch.load(weights_only=True)`` first; arbitrary pickles are refused unless the caller
explicitly opts in (DESIGN contract 10). Every failure is a :class:`CheckpointError` that
names the file and the problem; :func:`check_weights_file` tells a broken file from a good
one cheaply (signatures, zip directory, safetensors header) without reading the tensors.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from robustlens.errors import CheckpointError

__all__ = ["UnsafePickleError", "WeightsFormat", "check_safetensors_header", "check_weights_file",
           "extract_state_dict", "read_weights_file", "strip_prefix"]

log = logging.getLogger(__name__)

WeightsFormat = Literal["safetensors", "zip", "pickle"]
_REDOWNLOAD = "Download or copy it again and compare its size with the original."


class UnsafePickleError(CheckpointError):
    """A weights file that needs full unpickling (it holds Python objects besides tensors).

    Attributes:
        path: the file.
        global_name: the first class or function the safe loader refused (e.g.
            ``"argparse.Namespace"``), when PyTorch names it.
    """

    def __init__(self, message: str, path: Path, global_name: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.global_name = global_name


def check_safetensors_header(path: str | Path, advice: str = _REDOWNLOAD) -> dict[str, Any]:
    """Parse a safetensors file's header and check that the file is as long as it says.

    Reads only the header (the 8-byte length and the JSON that follows), never the tensors.

    Args:
        path: the ``.safetensors`` file.
        advice: what to do, appended to the messages about a broken file.

    Returns:
        The header: ``{tensor name: {"dtype", "shape", "data_offsets"}}`` (plus
        ``"__metadata__"`` when present).

    Raises:
        CheckpointError: unreadable, truncated or not a safetensors file.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{p} is not a safetensors file: it is only {size} bytes long. "
                                      + advice)
            (n_header,) = struct.unpack("<Q", head)
            if n_header > size - 8:
                raise CheckpointError(f"{p} is truncated or not a safetensors file: its header claims "
                                      f"{n_header} bytes but the file has {size}. " + advice)
            raw = f.read(n_header)
    except OSError as err:
        raise CheckpointError(f"cannot read {p} ({err.strerror or err}). Check the path and its "
                              "permissions.") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{p} is corrupt or not a safetensors file: its header is not JSON. "
                              + advice) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{p} is corrupt: its safetensors header is not a table. " + advice)
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise CheckpointError(f"{p} is corrupt: tensor {name!r} has no valid data_offsets in its "
                                  "safetensors header. " + advice)
        end = max(end, offsets[1])
    if 8 + n_header + end != size:
        raise CheckpointError(f"{p} is truncated or corrupt: its safetensors header describes "
                              f"{8 + n_header + end} bytes but the file has {size}. " + advice)
    return header


def check_weights_file(path: str | Path, how_to_get: str = "") -> WeightsFormat:
    """Cheaply check that ``path`` looks like a weights file, without loading its tensors.

    ``.safetensors`` files get their header parsed and their length checked; other files must
    be a PyTorch zip archive (``torch.save``'s format since 1.6: its central directory must be
    intact, which catches truncation, and it must hold a ``data.pkl``) or a legacy pickle
    (protocol 2 or newer).

    Args:
        path: the file.
        how_to_get: appended to the "not found" message (where to download the file).

    Returns:
        ``"safetensors"``, ``"zip"`` or ``"pickle"``.

    Raises:
        CheckpointError: missing, unreadable, empty, truncated or foreign file.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"weights file not found: {p}. {how_to_get}".strip())
    if not p.is_file():
        raise CheckpointError(f"{p} is not a file (expected a weights file such as .pth, .pth.tar "
                              "or .safetensors); check the path.")
    if p.suffix == ".safetensors":
        check_safetensors_header(p)
        return "safetensors"
    try:
        with p.open("rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise CheckpointError(f"cannot read {p} ({err.strerror or err}). Check its permissions.") from None
    if not magic:
        raise CheckpointError(f"{p} is empty (0 bytes), so it is not a PyTorch weights file. " + _REDOWNLOAD)
    if magic.startswith(b"PK"):
        try:
            with zipfile.ZipFile(p) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            raise CheckpointError(f"{p} is truncated or corrupt: it starts like a PyTorch zip archive but "
                                  "its zip directory is missing or damaged. " + _REDOWNLOAD) from None
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise CheckpointError(f"{p} is a zip archive but not a PyTorch weights file (it holds no "
                                  "data.pkl); expected a file written by torch.save.")
        return "zip"
    if magic[0] == 0x80 and len(magic) > 1 and 2 <= magic[1] <= pickle.HIGHEST_PROTOCOL:
        return "pickle"
    raise CheckpointError(f"{p} is not a PyTorch weights file: it starts with {magic!r}, neither a zip "
                          "archive (torch.save) nor a pickle nor safetensors. Check that the path names "
                          "the weights file itself.")


def read_weights_file(path: str | Path, *, map_location: str | torch.device = "cpu",
                      allow_pickle: bool = False, how_to_get: str = "") -> Any:
    """Load a ``torch.save``d object or a safetensors file from a local path.

    Args:
        path: the file.
        map_location: device to load tensors onto.
        allow_pickle: fall back to a full (unsafe) unpickle when the file holds objects other
            than tensors and primitive containers. Only for files you trust.
        how_to_get: appended to the "not found" message (where to download the file).

    Returns:
        The loaded object (usually a dict).

    Raises:
        UnsafePickleError: the file needs full unpickling and ``allow_pickle`` is False.
        CheckpointError: missing, truncated, corrupt or foreign file.
    """
    p = Path(path).expanduser()
    kind = check_weights_file(p, how_to_get)
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{p} is not a valid safetensors file ({err}). {_REDOWNLOAD}") from None
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise CheckpointError(
                f"{p} is not a PyTorch weights file or is corrupt ({_first_line(err)}). {_REDOWNLOAD}"
            ) from None
        if not allow_pickle:
            match = re.search(r"GLOBAL ([\w.]+)", str(err))
            what = f" (e.g. {match.group(1)})" if match else ""
            raise UnsafePickleError(
                f"{p} contains Python objects other than tensors{what}, so loading it would run "
                "arbitrary code; robustlens refuses it. If you trust the file, pass "
                "allow_pickle=True (or convert it to a plain state dict / safetensors).",
                p, match.group(1) if match else None,
            ) from None
    except Exception as err:  # zip / legacy-format readers raise many types
        raise CheckpointError(
            f"{p} is truncated, corrupt or not a PyTorch weights file ({_first_line(err)}). {_REDOWNLOAD}"
        ) from None
    log.warning("loading %s with full unpickling (allow_pickle=True)", p)
    try:
        return torch.load(p, map_location=map_location, weights_only=False)
    except Exception as err:
        raise CheckpointError(f"{p} could not be unpickled ({_first_line(err)}). It may be corrupt, or "
                              "need a Python package that is not installed.") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def extract_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint object.

    Accepts a bare ``{name: tensor}`` mapping or a dict holding one under ``state_dict``,
    ``model_state_dict`` or ``model``.

    Raises:
        CheckpointError: no state dict found, or it holds non-tensor values.
    """
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{source} holds no state dict: expected a {{name: tensor}} mapping or a dict with a "
            f"'state_dict' entry; found {type(obj).__name__}"
            + (f" with keys {sorted(map(str, obj))[:5]}" if isinstance(obj, Mapping) else "") + "."
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: state dict entries that are not tensors: {bad[:5]}.")
    return {str(k): v for k, v in obj.items()}


def strip_prefix(state: dict[str, torch.Tensor], prefix: str = "module.",
                 ) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key when all keys carry it (DataParallel checkpoints)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state
