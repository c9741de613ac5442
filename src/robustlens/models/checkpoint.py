"""Checkpoints: weights as safetensors plus a JSON metadata file beside them.

A checkpoint ``PATH.safetensors`` has a sibling ``PATH.json`` holding at least
``{"architecture": <registry name>, "options": {...}}`` and whatever the writer adds
(dataset, training settings, seed, clean test accuracy). Loading rebuilds the
architecture from the registry and checks every key and shape before copying weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from robustlens.errors import CheckpointError, suggest
from robustlens.models._registry import create_model, list_models, upgrade_state_dict
from robustlens.models._weights import check_safetensors_header

__all__ = ["check_checkpoint", "checkpoint_paths", "load_checkpoint", "load_state_dict_checked",
           "save_checkpoint"]

_RESTORE = "Restore the file from a backup or train the model again (`robustlens train`)."


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """Return the (weights, metadata) paths of a checkpoint given either file or the stem."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def save_checkpoint(
    model: nn.Module, path: str | Path, architecture: str, options: dict[str, Any] | None = None,
    **metadata: Any,
) -> Path:
    """Write ``model``'s state dict as safetensors and its metadata as JSON.

    Args:
        model: the model to save.
        path: checkpoint path, with or without the ``.safetensors`` suffix.
        architecture: the registry name that rebuilds the model.
        options: the ``create_model`` overrides used to build it.
        **metadata: JSON-serialisable facts to keep (dataset, training, seed, accuracy...).

    Returns:
        The path of the weights file.
    """
    if architecture not in list_models():
        raise CheckpointError(f"cannot save a checkpoint for unregistered architecture {architecture!r}")
    weights, meta = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(weights)
    record = {"format": "robustlens-checkpoint-1", "architecture": architecture,
              "options": options or {}, **metadata}
    meta.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    return weights


_RELEASED_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".bin", ".pkl", ".h5")


def _check_checkpoint_path(path: str | Path) -> None:
    """Precise errors for a path that cannot be a robustlens checkpoint (a folder, a .pth)."""
    p = Path(path)
    if p.is_dir():
        inside = sorted(q.name for q in p.glob("*.safetensors"))[:3]
        hint = (f" It holds {', '.join(inside)}: give one of those paths." if inside else
                " It holds no .safetensors file.")
        raise CheckpointError(
            f"checkpoint {p} is a folder; a robustlens checkpoint is a file pair NAME.safetensors + NAME.json "
            f"(written by `robustlens train`), given as the path of NAME.safetensors (or NAME).{hint}")
    if p.suffix.lower() in _RELEASED_SUFFIXES or "".join(p.suffixes[-2:]).lower() == ".pth.tar":
        raise CheckpointError(
            f"{p} is a {''.join(p.suffixes[-2:]) if p.suffixes[-2:] == ['.pth', '.tar'] else p.suffix} "
            "weights file, not a robustlens checkpoint (NAME.safetensors + NAME.json). Released weights "
            f"(a paper's .pth) load through the model's `weights` option: in a study config write "
            f"`weights = \"{p}\"` instead of `checkpoint = ...`; in Python create_model(name, weights=PATH).")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint's JSON metadata, with clear errors for missing or corrupt files."""
    _check_checkpoint_path(path)
    weights, meta = checkpoint_paths(path)
    if not weights.is_file():
        given = "" if str(weights) == str(path) else f" (from the path {path})"
        raise CheckpointError(f"checkpoint weights not found: {weights}{given}. Check the path, or train "
                              "a model with `robustlens train --out PATH`.")
    if not meta.is_file():
        raise CheckpointError(f"checkpoint metadata not found: {meta} (expected beside {weights.name}).")
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint metadata {meta} ({err.strerror or err}); "
                              "check its permissions.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint metadata {meta} is truncated or not valid JSON ({err}). "
                              + _RESTORE) from None
    if not isinstance(record, dict) or not isinstance(record.get("architecture"), str):
        raise CheckpointError(f"checkpoint metadata {meta} has no 'architecture' entry (expected a JSON "
                              "object written by save_checkpoint). " + _RESTORE)
    if not isinstance(record.get("options", {}), dict):
        raise CheckpointError(f"checkpoint metadata {meta}: 'options' must be a JSON object; found "
                              f"{type(record['options']).__name__}. " + _RESTORE)
    return record


def check_checkpoint(path: str | Path) -> dict[str, Any]:
    """Cheaply check a checkpoint without loading its tensors or building its model.

    Both files must exist; the JSON must parse and name an architecture; the safetensors
    header must parse and account for the file's exact length (which catches truncation).

    Returns:
        The checkpoint's metadata.

    Raises:
        CheckpointError: a missing, unreadable, truncated or corrupt file.
    """
    record = read_metadata(path)
    weights, meta = checkpoint_paths(path)
    if record["architecture"] not in list_models():
        raise CheckpointError(f"checkpoint metadata {meta} names architecture {record['architecture']!r}, which "
                              f"is not registered.{suggest(record['architecture'], list_models())} Fix the "
                              "'architecture' entry, or import the module that registers it.")
    check_safetensors_header(weights, advice=_RESTORE)
    return record


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` after checking that keys and shapes match exactly."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es) (e.g. {'; '.join(wrong[:3])})")
    if problems:
        raise CheckpointError(f"{source} does not match the architecture: " + "; ".join(problems) + ".")
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Returns:
        ``(model, metadata)``; the model is in eval mode.
    """
    record = read_metadata(path)
    weights, meta = checkpoint_paths(path)
    try:
        model = create_model(record["architecture"], **record.get("options", {}))
    except CheckpointError:
        raise
    except Exception as err:  # an unknown architecture or option
        raise CheckpointError(f"cannot rebuild the model of checkpoint {weights} from its metadata {meta.name}: "
                              f"{err} Fix {meta.name}, or train the model again.") from None
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {weights} is truncated, corrupt or not a safetensors file ({err}). "
                              + _RESTORE) from None
    load_state_dict_checked(model, upgrade_state_dict(model, state), f"checkpoint {weights}")
    model.eval()
    return model, record
