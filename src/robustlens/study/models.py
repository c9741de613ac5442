"""Getting a study's models: load a checkpoint, train (or reuse a cached training), or random."""

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

from robustlens.data import load_dataset
from robustlens.errors import CheckpointError
from robustlens.models import create_model, load_checkpoint, save_checkpoint
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

    The global RNG state is restored afterwards, so nothing else is affected.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(architecture, **options)


def _training_key(mc: ModelConfig, data: DataConfig) -> str:
    assert mc.train is not None
    spec = {"architecture": mc.architecture, "options": mc.options, "seed": mc.seed,
            "train": asdict(mc.train), "dataset": data.dataset, "format": 1}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def obtain_model(mc: ModelConfig, data: DataConfig, *, cache_dir: Path, device: torch.device,
                 progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Return ``mc``'s model (eval mode, on ``device``) and facts about where it came from."""
    if mc.checkpoint is not None:
        model, meta = load_checkpoint(mc.checkpoint)
        if meta["architecture"] != mc.architecture:
            raise CheckpointError(f"checkpoint {mc.checkpoint} holds a {meta['architecture']!r}, "
                                  f"but model {mc.name!r} is configured as {mc.architecture!r}.")
        info = {"source": "checkpoint", "path": mc.checkpoint,
                "clean_test_accuracy": meta.get("clean_test_accuracy")}
        return model.to(device).eval(), info
    if mc.random:
        model = build_seeded(mc.architecture, mc.options, mc.seed)
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
    train_set = load_dataset(data.dataset, "train", data.root)
    test_set = load_dataset(data.dataset, "test", data.root)
    model = build_seeded(mc.architecture, mc.options, mc.seed)
    result = train_model(model, train_set, mc.train, device=device, progress=progress)
    accuracy = evaluate_accuracy(model.eval(), test_set, device=device)
    save_checkpoint(model, path, mc.architecture, mc.options, dataset=data.dataset,
                    training=asdict(mc.train), seed=mc.seed, clean_test_accuracy=accuracy,
                    train_seconds=result.seconds, history=result.history)
    return model.eval(), {"source": "trained", "path": str(weights), "clean_test_accuracy": accuracy,
                          "train_seconds": result.seconds}

