"""The stages of an AutoAttack cascade, read back from per-example results.

An :class:`~robustlens.attacks.AutoAttack` cascade records, for every example, the stage that
broke it (the per-example table's ``found_by``: ``"clean"`` when the model misclassifies the
clean image already, a stage's attack name such as ``"apgd_ce"`` or ``"square"``, ``""`` when
no stage did). Every stage runs only on the examples still standing, so these labels alone
give the whole course of the cascade: the examples a stage attacked are those no earlier
stage broke, and the robust accuracy after stage k is the fraction of examples that neither
the clean stage nor stages 1..k broke. :func:`cascade_stages` turns a per-example table into
that table (one row per stage); :func:`resolved_stages` says which stages a cascade runs on a
model.

The accuracies are the cascade's own verdicts (for a stochastic model, judged on logits
averaged over the noise samples of its attacks); the study's accuracy table reads each
adversarial image again in a fresh forward pass, which for a deterministic model agrees.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from robustlens.attacks import Attack, AutoAttack, StochasticModelWarning, eval_mode
from robustlens.errors import DataError

__all__ = ["CASCADE_COLUMNS", "cascade_stages", "reference_stage_order", "resolved_stages"]

CASCADE_COLUMNS: tuple[str, ...] = ("attack", "norm", "eps", "stage", "stage_attack", "n_images",
                                    "attacked", "broken", "robust", "accuracy")
"""Columns of :func:`cascade_stages` (after ``model`` when the per-example table has one)."""

_REFERENCE_EPS = {"inf": 1 / 255, "2": 0.1, "1": 1.0}


def reference_stage_order(norm: str) -> tuple[str, ...]:
    """The stage names of AutoAttack's ``"standard"`` then ``"rand"`` cascades at ``norm``.

    The order an inferred cascade is put in when its stage list is not given.

    Args:
        norm: ``"inf"``, ``"2"`` or ``"1"``.
    """
    if norm not in _REFERENCE_EPS:
        return ()
    aa = AutoAttack(_REFERENCE_EPS[norm], norm)  # type: ignore[arg-type]
    names = [a.name for version in ("standard", "rand") for a in aa.cascade(version)]
    return tuple(dict.fromkeys(names))


def resolved_stages(attack: AutoAttack, model: nn.Module, images: torch.Tensor) -> tuple[Attack, ...]:
    """The stages ``attack`` runs on ``model``: its version, ``None`` decided by the model.

    ``version=None`` runs ``"rand"`` on a stochastic model and ``"standard"`` otherwise
    (:meth:`AutoAttack.resolve`; the probe does not consume the global RNG). No warning is
    repeated here for ``"standard"`` forced on a stochastic model: the attack warned when it ran.

    Args:
        attack: the cascade.
        model: the classifier it attacked.
        images: a few of the images (B, C, H, W) in [0, 1], to probe the model.
    """
    with warnings.catch_warnings(), eval_mode(model):
        warnings.simplefilter("ignore", StochasticModelWarning)
        version = attack.resolve(model, images[:2])
    return attack.cascade(version)


def _order(names: Sequence[str], norm: str, given: Sequence[str] | None) -> list[str]:
    observed = [n for n in dict.fromkeys(names) if n not in ("", "clean")]
    if given is not None:
        return list(given) + [n for n in observed if n not in given]
    reference = reference_stage_order(norm)
    known = sorted((n for n in observed if n in reference), key=reference.index)
    return known + [n for n in observed if n not in reference]


def cascade_stages(per_example: pd.DataFrame,
                   stages: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Accuracy after each stage of every cascade in a per-example table.

    A condition (attack label x norm x eps, and model when there is a ``model`` column) is a
    cascade when its label is in ``stages`` or some of its rows have a non-empty ``found_by``.
    Stage 0 is ``"clean"`` (the model's own mistakes); then the cascade's stages in order: the
    order of ``stages[label]`` when given, else AutoAttack's own order
    (:func:`reference_stage_order`) of the stages seen in ``found_by`` (a stage that broke
    nothing is then missing), and any other name in order of appearance.

    Args:
        per_example: rows ``attack, norm, eps, found_by`` (one per example x condition; e.g.
            :attr:`RobustnessResults.per_example` or a study's ``per_example`` table).
        stages: attack label -> its stage names in order (``[a.name for a in aa.cascade(v)]``;
            see :func:`resolved_stages`), for cascades whose stages are known.

    Returns:
        One row per cascade x stage: ``[model,] attack, norm, eps, stage`` (0: clean),
        ``stage_attack`` (the stage's attack name), ``n_images``, ``attacked`` (images the
        stage ran on: those still standing before it), ``broken`` (images it broke, i.e. whose
        ``found_by`` is its name), ``robust`` and ``accuracy`` (still standing after it, as a
        count and a fraction of ``n_images``).

    Raises:
        DataError: a column is missing.
    """
    need = {"attack", "norm", "eps", "found_by"}
    missing = sorted(need - set(per_example.columns))
    if missing:
        raise DataError(f"cascade_stages needs a per-example table with columns {sorted(need)}; it lacks "
                        f"{missing}. Pass RobustnessResults.per_example or a study's per_example table.")
    stages = stages or {}
    keys = (["model"] if "model" in per_example.columns else []) + ["attack", "norm", "eps"]
    columns = (["model"] if "model" in per_example.columns else []) + list(CASCADE_COLUMNS)
    rows: list[dict[str, object]] = []
    for key, g in per_example.groupby(keys, sort=False, dropna=False):
        values = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        label, norm = str(values["attack"]), str(values["norm"])
        found = g["found_by"].fillna("").astype(str)
        if label not in stages and not (found != "").any():
            continue
        n = len(g)
        counts = found.value_counts()
        names = ["clean", *_order(list(found), norm, stages.get(label))]
        robust = n
        for i, name in enumerate(names):
            broken = int(counts.get(name, 0))
            attacked = n if i == 0 else robust
            robust -= broken
            rows.append({**values, "stage": i, "stage_attack": name, "n_images": n,
                         "attacked": attacked, "broken": broken, "robust": robust,
                         "accuracy": robust / n if n else math.nan})
    out = pd.DataFrame(rows, columns=columns)
    for col in ("stage", "n_images", "attacked", "broken", "robust"):
        out[col] = out[col].astype(int)
    out["eps"] = out["eps"].astype(float)
    out["accuracy"] = out["accuracy"].astype(float)
    return out
