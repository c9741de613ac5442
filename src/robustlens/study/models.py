"""Getting a study's models: a robustlens checkpoint, a released weights file (torchvision,
VOneNet, CORnet formats), weights shipped by a package, a training (or its cached result), or
random initial weights.

Released weights files load safely (``torch.load(weights_only=True)`` or safetensors); a file
that needs full unpickling is refused unless its model says ``allow_pickle = true``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlens.data import load_dataset, to_memory
from robustlens.errors import CheckpointError, ConfigError
from robustlens.models import (
    UnsafePickleError,
    VOneNet,
    check_weights_file,
    create_model,
    load_checkpoint,
    model_defaults,
    pretrained_weights_path,
    save_checkpoint,
)
from robustlens.models.checkpoint import checkpoint_paths
from robustlens.study.config import DataConfig, ModelConfig
from robustlens.training import evaluate_accuracy, train_model

__all__ = ["build_seeded", "default_cache_dir", "obtain_model"]

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$ROBUSTLENS_CACHE``, else ``~/.cache/robustlens``."""
    env = os.environ.get("ROBUSTLENS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "robustlens"


def build_seeded(architecture: str, options: dict[str, Any], seed: int) -> nn.Module:
    """Build a registered model with its initial weights drawn from ``seed``.

    ``create_model(architecture, seed=seed, **options)``: the global RNG state is left as
    it was, so nothing else is affected.
    """
    return create_model(architecture, seed=seed, **options)


def _scratch_options(mc: ModelConfig) -> dict[str, Any]:
    """``mc.options`` for a build without loaded weights: an architecture whose packaged weights
    load by default (``pretrained = True``) starts untrained unless its options ask for them."""
    options = dict(mc.options)
    if "pretrained" in model_defaults(mc.architecture) and "pretrained" not in options:
        options["pretrained"] = False
    return options


def _load_released(mc: ModelConfig) -> tuple[nn.Module, dict[str, Any]]:
    """Build ``mc``'s architecture with its weights file, read by the loader its family registered
    (torchvision, VOneNet or CORnet-S releases, robustlens checkpoints)."""
    assert mc.weights is not None
    check_weights_file(mc.weights)  # a missing or broken file fails before anything is built
    model = create_model(mc.architecture, weights=mc.weights, allow_pickle=mc.allow_pickle, seed=mc.seed,
                         **_scratch_options(mc))
    facts: dict[str, Any] = {}
    if isinstance(model, VOneNet):  # where its Gabor banks came from
        params = model.gabor_params
        facts = {"gabor_verified": params.get("verified"), "sf_max_detected": params.get("sf_max_detected")}
    return model, facts


def _training_key(mc: ModelConfig, data: DataConfig) -> str:
    assert mc.train is not None
    train = {k: v for k, v in asdict(mc.train).items() if not (k == "max_batches" and v is None)}
    spec = {"architecture": mc.architecture, "options": _scratch_options(mc), "seed": mc.seed,
            "train": train, "dataset": data.dataset, "format": 1}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def obtain_model(mc: ModelConfig, data: DataConfig, *, cache_dir: Path, device: torch.device,
                 progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Return ``mc``'s model (eval mode, on ``device``) and facts about where it came from.

    The facts always hold ``source`` (``"checkpoint"``, ``"weights"``, ``"pretrained"``,
    ``"random"``, ``"cache"`` or ``"trained"``) and, where a file was read or written, ``path``.

    Raises:
        CheckpointError: a missing, corrupt or mismatching file, or a weights file that needs
            full unpickling while ``mc.allow_pickle`` is false (the message says how to opt in).
        ConfigError: contradictory settings (``random`` with ``options.pretrained = true``).
    """
    if mc.weights is not None:
        try:
            model, extra = _load_released(mc)
        except UnsafePickleError as err:
            what = f" (e.g. {err.global_name})" if err.global_name else ""
            raise CheckpointError(
                f"model {mc.name!r}: the weights file {err.path} holds Python objects besides tensors{what}, "
                "and unpickling it could run arbitrary code, so robustlens refused it. Only if you trust "
                "this file, set `allow_pickle = true` for this model in the study config (or pass "
                "--allow-pickle on the command line); otherwise convert it to a plain state dict or "
                "safetensors."
            ) from None
        except CheckpointError as err:
            raise CheckpointError(f"model {mc.name!r}: {err}") from None
        return model.to(device).eval(), {"source": "weights", "path": mc.weights, **extra}
    if mc.pretrained:
        model = create_model(mc.architecture, **{**mc.options, "pretrained": True})
        packaged = pretrained_weights_path(mc.architecture)
        return model.to(device).eval(), {"source": "pretrained",
                                         "path": None if packaged is None else str(packaged)}
    if mc.checkpoint is not None:
        model, meta = load_checkpoint(mc.checkpoint)
        if meta["architecture"] != mc.architecture:
            raise CheckpointError(f"checkpoint {mc.checkpoint} holds a {meta['architecture']!r}, "
                                  f"but model {mc.name!r} is configured as {mc.architecture!r}.")
        info = {"source": "checkpoint", "path": mc.checkpoint,
                "clean_test_accuracy": meta.get("clean_test_accuracy")}
        return model.to(device).eval(), info
    if mc.random:
        if mc.options.get("pretrained"):
            raise ConfigError(f"model {mc.name!r}: `random = true` contradicts options.pretrained = true; "
                              "use `pretrained = true` for the packaged weights, or drop the option.")
        model = build_seeded(mc.architecture, _scratch_options(mc), mc.seed)
        return model.to(device).eval(), {"source": "random", "seed": mc.seed}
    assert mc.train is not None
    path = cache_dir / "models" / f"{mc.architecture}-{_training_key(mc, data)}"
    weights, _ = checkpoint_paths(path)
    if weights.is_file():
        try:
            model, meta = load_checkpoint(path)
            log.info("reusing cached model %s from %s", mc.name, weights)
            return model.to(device).eval(), {"source": "cache", "path": str(weights),
                                             "clean_test_accuracy": meta.get("clean_test_accuracy"),
                                             "train_seconds": meta.get("train_seconds")}
        except CheckpointError as err:
            log.warning("ignoring a broken cached model (%s); training again", err)
    train_set = to_memory(load_dataset(data.dataset, "train", data.root))
    test_set = to_memory(load_dataset(data.dataset, "test", data.root))
    model = build_seeded(mc.architecture, _scratch_options(mc), mc.seed)
    result = train_model(model, train_set, mc.train, device=device, progress=progress)
    accuracy = evaluate_accuracy(model.eval(), test_set, device=device)
    save_checkpoint(model, path, mc.architecture, mc.options, dataset=data.dataset,
                    training=asdict(mc.train), seed=mc.seed, clean_test_accuracy=accuracy,
                    train_seconds=result.seconds, history=result.history)
    return model.eval(), {"source": "trained", "path": str(weights), "clean_test_accuracy": accuracy,
                          "train_seconds": result.seconds}

