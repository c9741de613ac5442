"""The black-box check of the masking audit, read from per-example results at every eps.

A score-based attack (Square) or a transfer / substitute attack never sees the model's
gradients. When one of them breaks an example that every white-box gradient attack run at
the same norm and eps failed on, those gradients mislead (masked, shattered or noisy): the
white-box numbers overstate the robustness (Athalye et al. 2018; AutoAttack includes Square
for this reason). :func:`black_box_check` counts such examples per (model,) norm and eps from
a per-example table, with no extra attack: in an AutoAttack cascade, an example whose
``found_by`` is ``"square"`` is exactly one that every earlier (white-box) stage failed on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import pandas as pd

from robustlens.attacks import (
    Attack,
    AutoAttack,
    Corruption,
    RandomNoise,
    Square,
    Substitute,
    Transfer,
)
from robustlens.errors import DataError
from robustlens.evaluation.audit import AUDIT_COLUMNS

__all__ = ["BLACK_BOX_CHECK", "Kind", "attack_components", "attack_kind", "black_box_check"]

Kind = Literal["white", "black", "other"]
"""``"white"``: a gradient attack; ``"black"``: no gradients of the model (score-based or
transfer); ``"other"``: not an attack in a threat model (noise, corruptions)."""

BLACK_BOX_CHECK = "beats_black_box_per_eps"
"""The ``check`` name of :func:`black_box_check`'s rows in an audit table."""

_NORM_LABEL = {"inf": "L-inf", "2": "L2", "1": "L1"}


def attack_kind(attack: Attack) -> Kind:
    """Whether ``attack`` uses the model's gradients (``"white"``), only its outputs or another
    model (``"black"``: :class:`Square`, :class:`Transfer`, :class:`Substitute`), or is no
    adversarial attack (``"other"``: random noise, corruptions, ensembles as a whole).

    Args:
        attack: any robustlens attack.
    """
    if isinstance(attack, Square | Transfer | Substitute):
        return "black"
    if isinstance(attack, RandomNoise | Corruption | AutoAttack) or attack.norm not in _NORM_LABEL:
        return "other"
    return "white"


def attack_components(attack: Attack, stages: Sequence[Attack] | None = None) -> dict[str, Kind]:
    """What can break an example under ``attack``: name -> kind (see :func:`attack_kind`).

    A single attack is its own component; an :class:`AutoAttack` cascade has its stages
    (``found_by`` names them in a per-example table).

    Args:
        attack: the attack of a condition.
        stages: the stages a cascade ran (:func:`~robustlens.evaluation.cascade.resolved_stages`);
            default: those of its version, or of both ``"standard"`` and ``"rand"`` when the
            version is decided by the model.
    """
    if not isinstance(attack, AutoAttack):
        return {attack.name: attack_kind(attack)}
    if stages is None:
        versions = [attack.version] if attack.version is not None else ["standard", "rand"]
        stages = [s for v in versions for s in attack.cascade(v)]
    return {s.name: attack_kind(s) for s in stages}


def black_box_check(per_example: pd.DataFrame, components: Mapping[str, Mapping[str, Kind]], *,
                    tolerance: float = 0.01) -> pd.DataFrame:
    """Per (model,) norm and eps: images a black-box attack broke and no white-box attack did.

    An example counts when the model classifies it correctly clean, some black-box component
    broke it and no white-box component run at the same norm and eps did. What broke an
    example under a condition is its ``found_by`` (a cascade's stage) or, for a single
    attack, the attack itself when the example is misclassified (``correct`` false). A (norm,
    eps) is checked only where both a white-box and a black-box component ran; noise and
    corruptions are left out.

    Args:
        per_example: rows ``example, attack, norm, eps, clean_correct, correct, found_by``
            (and ``model``): a study's ``per_example`` table or
            :attr:`RobustnessResults.per_example`.
        components: attack label -> its components' kinds (:func:`attack_components`);
            conditions whose label is missing are left out.
        tolerance: the fraction of images above which the check flags.

    Returns:
        Audit rows (:data:`~robustlens.evaluation.audit.AUDIT_COLUMNS` plus ``count`` and
        ``n_images``), one per (model,) norm x eps checked: ``check`` is
        :data:`BLACK_BOX_CHECK`, ``status`` ``"flag"`` when ``value`` (``count / n_images``)
        exceeds ``tolerance``, ``attack`` the black-box components.

    Raises:
        DataError: a column is missing.
    """
    need = {"example", "attack", "norm", "eps", "clean_correct", "correct", "found_by"}
    missing = sorted(need - set(per_example.columns))
    if missing:
        raise DataError(f"black_box_check needs a per-example table with columns {sorted(need)}; it "
                        f"lacks {missing}.")
    columns = (["model"] if "model" in per_example.columns else []) + list(AUDIT_COLUMNS) + ["count", "n_images"]
    df = per_example[per_example["attack"].isin(list(components))
                     & per_example["norm"].isin(list(_NORM_LABEL))]
    df = df[pd.Series([isinstance(e, int | float) and math.isfinite(e) for e in df["eps"]], index=df.index,
                      dtype=bool)]
    kinds = []
    for label, found, correct in zip(df["attack"], df["found_by"].fillna(""), df["correct"], strict=True):
        own = components[label]
        if found not in ("", "clean"):
            kinds.append(own.get(str(found), "other"))
        elif found == "" and not bool(correct) and len(own) == 1:
            kinds.append(next(iter(own.values())))
        else:
            kinds.append("other")
    df = df.assign(_kind=kinds)
    keys = (["model"] if "model" in df.columns else []) + ["norm", "eps"]
    rows: list[dict[str, object]] = []
    for key, g in df.groupby(keys, sort=True):
        values = dict(zip(keys, key, strict=True))
        ran = {name: kind for label in dict.fromkeys(g["attack"]) for name, kind in components[label].items()}
        white = [n for n, k in ran.items() if k == "white"]
        black = [n for n, k in ran.items() if k == "black"]
        if not white or not black:
            continue
        per = g.groupby("example").agg(clean=("clean_correct", "all"),
                                       w=("_kind", lambda s: (s == "white").any()),
                                       b=("_kind", lambda s: (s == "black").any()))
        n = len(per)
        count = int((per["clean"] & per["b"] & ~per["w"]).sum())
        rate = count / n if n else 0.0
        norm, eps = str(values["norm"]), float(values["eps"])
        rows.append({**values, "check": BLACK_BOX_CHECK, "status": "flag" if rate > tolerance else "pass",
                     "attack": ",".join(black), "eps": eps, "value": rate, "threshold": float(tolerance),
                     "evidence": (f"{count} of {n} images ({rate:.3f}) broken at {_NORM_LABEL[norm]} eps {eps:g} "
                                  f"by {', '.join(black)} but by none of the white-box attacks "
                                  f"({', '.join(white)})"),
                     "suggestion": ("a black-box attack succeeding where the gradients fail means they mislead "
                                    "(masked, shattered or noisy): report the worst case over both (e.g. "
                                    "AutoAttack) and check the model's gradients") if rate > tolerance else "",
                     "count": count, "n_images": n})
    out = pd.DataFrame(rows, columns=columns)
    out["count"] = out["count"].astype(int)
    out["n_images"] = out["n_images"].astype(int)
    return out
