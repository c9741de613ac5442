"""Reading third-party weight files safely (PyTorch pickles and safetensors).

``torch.load(weights_only=True)`` first; arbitrary pickles are refused unless the caller
explicitly opts in (DESIGN contract 10). Every failure is a :class:`CheckpointError` that
names the file and the problem.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from robustlens.errors import CheckpointError

__all__ = ["extract_state_dict", "read_weights_file", "strip_prefix"]

log = logging.getLogger(__name__)


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
        CheckpointError: missing, truncated, corrupt or foreign file, or an unsafe pickle
            without ``allow_pickle``.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"weights file not found: {p}. {how_to_get}".strip())
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{p} is not a valid safetensors file ({err}).") from None
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise CheckpointError(
                f"{p} is not a PyTorch weights file or is corrupt ({str(err).splitlines()[0]})."
            ) from None
        if not allow_pickle:
            raise CheckpointError(
                f"{p} contains Python objects other than tensors, so loading it would run "
                "arbitrary code; robustlens refuses it. If you trust the file, pass "
                "allow_pickle=True (or convert it to a plain state dict / safetensors)."
            ) from None
    except Exception as err:  # zip / legacy-format readers raise many types
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{p} is truncated, corrupt or not a PyTorch weights file ({first}). "
            "Download it again and check its size."
        ) from None
    log.warning("loading %s with full unpickling (allow_pickle=True)", p)
    try:
        return torch.load(p, map_location=map_location, weights_only=False)
    except Exception as err:
        raise CheckpointError(f"{p} could not be unpickled ({err}).") from None


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
