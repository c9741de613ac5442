"""Smoke mode: the same study, shrunk until it runs in seconds (for CI and for a first try).

:func:`smoke_config` takes a parsed study TOML (a plain dict) and returns a copy that keeps
every model, attack and analysis — so every code path of the study still runs end to end —
but at toy sizes:

- ``[data]``: Fashion-MNIST / digits: ``n_per_class`` at most 2 (20 images). ImageNet-style
  folders keep their root (point it at a small folder: tests use a fake ImageNet):
  ``n_per_class`` becomes 1 and a ``ds_factor`` above 1 (without ``n_per_class``) is
  multiplied by 10;
- ``[study]``: ``expected_passes`` at most 2;
- models: training for 1 epoch of at most 20 batches, PGD adversarial training with at
  most 2 steps;
- attacks: at most 2 eps (the smallest and the largest), at most 2 steps, 2 EOT samples,
  1 restart, 2 noise trials; the ``vonenet`` preset gets explicit ``steps`` / ``eot_samples``;
- analyses: audit on at most 8 images with 2 steps and 2 EOT samples, feature
  visualization of at most 2 channels with at most 8 steps, saliency of at most 2 images
  with 2 SmoothGrad samples, small bootstraps (manifolds, RSA), one PCA image;
- ``[photos]``: one photo (and its entries of per-photo ``target`` and ``labels`` tables), 2 PGD
  steps, a 112-pixel crop, one rendered channel of 8 steps.

The result is a valid config for :func:`robustlens.study.parse_config`; the numbers it
produces mean nothing.
"""

from __future__ import annotations

import copy
from dataclasses import fields
from pathlib import Path
from typing import Any

__all__ = ["smoke_config"]

_TRAIN_BATCHES = 20
_ATTACK_CAPS = {"steps": 2, "eot_samples": 2, "restarts": 1, "trials": 2, "queries": 20, "n_targets": 2}
_ATTACK_DEFAULTS = {  # options whose default is above its cap, per attack type
    "pgd": {"steps": 10}, "transfer": {"steps": 10}, "deepfool": {"steps": 50},
    "vonenet": {"steps": 64, "eot_samples": 10}, "noise": {"trials": 10},
    "apgd": {"steps": 100, "n_targets": 9}, "apgd_t": {"steps": 100, "n_targets": 9},
    "square": {"queries": 5000}, "fab": {"steps": 100, "n_targets": 9},
    "autoattack": {"steps": 100, "queries": 5000, "n_targets": 9},
}
_ANALYSIS_CAPS: dict[str, dict[str, int]] = {
    "audit": {"n_images": 8, "steps": 2, "eot_samples": 2, "restarts": 1, "queries": 20},
    "featurevis": {"top_k": 2, "steps": 8, "eot_samples": 2},
    "saliency": {"n_images": 2, "n_samples": 2},
    "manifolds": {"n_bootstrap": 10},
    "rsa": {"n_bootstrap": 10},
    "pca_images": {"n_images": 1},
    "sensitivity": {"top_k": 5},
}
_PHOTO_CAPS = {"steps": 2, "saliency_samples": 2, "featurevis_top_k": 1, "featurevis_steps": 8,
               "featurevis_size": 32, "resize": 128, "crop": 112, "top_classes": 5}


def _cap(table: dict[str, Any], key: str, cap: int, default: Any = None) -> None:
    """Lower ``table[key]`` (or its ``default`` when absent) to at most ``cap``."""
    value = table.get(key, default)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > cap:
        table[key] = cap


def _smoke_data(data: dict[str, Any]) -> None:
    if data.get("dataset", "fashion_mnist") == "imagenet":
        if "n_per_class" in data:
            data["n_per_class"] = 1
        elif data.get("ds_factor", 1) > 1:
            data["ds_factor"] = data["ds_factor"] * 10
        return
    data["n_per_class"] = min(data.get("n_per_class") or 2, 2)


def _smoke_attack(attack: dict[str, Any]) -> None:
    eps = sorted(attack.get("eps", []))
    if len(eps) > 2:
        attack["eps"] = [eps[0], eps[-1]]
    if attack.get("type") == "corruption":  # two types at their mildest and strongest severity
        severities = sorted(attack.get("severities", [1, 2, 3, 4, 5]))
        attack["severities"] = sorted({severities[0], severities[-1]})
        if isinstance(attack.get("corruptions"), list) and attack["corruptions"] != ["all"]:
            attack["corruptions"] = attack["corruptions"][:2]
    if attack.get("type") == "substitute":  # one augmentation round, two epochs
        attack["rounds"], attack["epochs"] = min(attack.get("rounds", 4), 1), min(attack.get("epochs", 10), 2)
    defaults = _ATTACK_DEFAULTS.get(attack.get("type", ""), {})
    for key, cap in _ATTACK_CAPS.items():
        _cap(attack, key, cap, defaults.get(key))


def smoke_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of the study config ``raw`` (parsed TOML) shrunk for a seconds-long smoke run.

    Args:
        raw: the study config as a dict, e.g. ``tomllib.loads(path.read_text())``; unchanged.

    Returns:
        A new dict with the same models, attacks and analyses at toy sizes (see the module
        docstring); parse it with :func:`robustlens.study.parse_config`.
    """
    from robustlens.study.analyses import ANALYSES

    out = copy.deepcopy(raw)
    if not isinstance(out, dict):
        return out
    data = out.setdefault("data", {})
    if isinstance(data, dict):
        _smoke_data(data)
    study = out.get("study")
    if isinstance(study, dict):
        _cap(study, "expected_passes", 2)
    for model in out.get("models", []) if isinstance(out.get("models"), list) else []:
        train = model.get("train") if isinstance(model, dict) else None
        if isinstance(train, dict):
            train["epochs"] = 1
            train["max_batches"] = min(train.get("max_batches") or _TRAIN_BATCHES, _TRAIN_BATCHES)
            adversarial = train.get("adversarial")
            if isinstance(adversarial, dict):
                _cap(adversarial, "steps", 2, 7)
                _cap(adversarial, "warmup_epochs", 1)
    for attack in out.get("attacks", []) if isinstance(out.get("attacks"), list) else []:
        if isinstance(attack, dict):
            _smoke_attack(attack)
    analyses = out.get("analyses")
    if isinstance(analyses, dict):
        for name, options in analyses.items():
            if isinstance(options, dict) and name in _ANALYSIS_CAPS:
                option_defaults = ANALYSES[name].option_defaults if name in ANALYSES else {}
                for key, cap in _ANALYSIS_CAPS[name].items():
                    if key in option_defaults or key in options:
                        _cap(options, key, cap, option_defaults.get(key))
    photos = out.get("photos")
    if isinstance(photos, dict):
        images = photos.get("images")
        photos["images"] = list(images[:1]) if isinstance(images, list) and images else ["chelsea"]
        kept = {Path(str(i)).stem for i in photos["images"]} | {str(i) for i in photos["images"]}
        for key in ("target", "labels"):  # per-photo tables keep the photo kept
            if isinstance(photos.get(key), dict):
                photos[key] = {p: c for p, c in photos[key].items() if p in kept}
                if not photos[key]:
                    del photos[key]
        from robustlens.study.photos import PhotosConfig

        defaults = {f.name: f.default for f in fields(PhotosConfig)}
        for key, cap in _PHOTO_CAPS.items():
            _cap(photos, key, cap, defaults.get(key))
    return out
