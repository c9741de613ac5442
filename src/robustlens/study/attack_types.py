"""The attack types a study config knows: one table entry per ``type``.

Each entry of :data:`ATTACK_TYPES` says which keys an ``[[attacks]]`` table of that type may
have (beyond ``name``, ``type`` and ``eps``) and their TOML types, how to build the attack at
one eps, and optionally an extra check of the options and whether ``eps = inf`` is allowed.
To add an attack type, add one entry::

    ATTACK_TYPES["square"] = AttackType(
        options={"queries": int, "seed": int},
        build=lambda eps, opts, surrogate: SquareAttack(eps=eps, **opts),
    )

Options are checked at parse time: key names and TOML types here, values by building the
attack once at the largest eps (the attack's own constructor refuses bad values).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from robustlens.attacks import (
    APGD,
    FAB,
    FGSM,
    PGD,
    Attack,
    AutoAttack,
    Corruption,
    DeepFool,
    RandomNoise,
    Square,
    Substitute,
    Transfer,
)
from robustlens.attacks.presets import vonenet_pgd
from robustlens.errors import ConfigError, suggest

__all__ = ["ATTACK_TYPES", "AttackType", "Builder", "OptionTypes"]

OptionTypes = Mapping[str, type | tuple[type, ...]]
"""Option key -> the TOML type(s) it takes (``float`` accepts integers too)."""

Builder = Callable[[float, dict[str, Any], nn.Module | None], Attack]
"""``(eps, options, surrogate) -> Attack``; ``surrogate`` is ``None`` when only validating."""


@dataclass(frozen=True)
class AttackType:
    """One ``type`` of ``[[attacks]]``.

    Attributes:
        options: the keys an attack of this type may set, with their TOML types.
        build: makes the attack at one eps from the options.
        check: extra validation ``(options, where, model_names)``, raising :class:`ConfigError`.
        unbounded: ``eps = inf`` is allowed (minimal-perturbation attacks).
        surrogate_key: the option naming a study model the attack needs (transfer attacks).
    """

    options: OptionTypes
    build: Builder
    check: Callable[[dict[str, Any], str, Sequence[str]], None] | None = None
    unbounded: bool = False
    surrogate_key: str | None = None


_TARGETED = (str, int)


def _build_transfer(eps: float, opts: dict[str, Any], surrogate: nn.Module | None) -> Attack:
    inner_opts = {k: v for k, v in opts.items() if k not in ("surrogate", "via")}
    inner = FGSM(eps=eps, **inner_opts) if opts.get("via", "pgd") == "fgsm" else PGD(eps=eps, **inner_opts)
    return inner if surrogate is None else Transfer(inner, surrogate)


def _check_transfer(opts: dict[str, Any], where: str, model_names: Sequence[str]) -> None:
    surrogate = opts.get("surrogate")
    if surrogate not in model_names:
        raise ConfigError(f"{where}: a transfer attack needs `surrogate = \"NAME\"` naming one of "
                          f"this study's models ({', '.join(model_names)}); received {surrogate!r}."
                          f"{suggest(str(surrogate), model_names)}")
    if opts.get("via", "pgd") not in ("pgd", "fgsm"):
        raise ConfigError(f"{where}.via must be 'pgd' or 'fgsm'; received {opts['via']!r}.")
    if opts.get("via") == "fgsm" and set(opts) - {"surrogate", "via", "seed", "eot_samples"}:
        raise ConfigError(f"{where}: with via = 'fgsm' only seed and eot_samples apply.")


def _build_substitute(eps: float, opts: dict[str, Any], surrogate: nn.Module | None) -> Attack:
    from robustlens.study.models import default_cache_dir  # not at import: study.models imports the config

    o = dict(opts)
    via, steps = o.pop("via", "fgsm"), o.pop("steps", 10)
    inner = FGSM(eps=eps, seed=o.get("seed", 0)) if via == "fgsm" else PGD(eps=eps, steps=steps, seed=o.get("seed", 0))
    o.setdefault("n_seed", 100)
    return Substitute(inner, cache_dir=str(default_cache_dir()), **o)


def _check_substitute(opts: dict[str, Any], where: str, model_names: Sequence[str]) -> None:
    if opts.get("via", "fgsm") not in ("pgd", "fgsm"):
        raise ConfigError(f"{where}.via must be 'fgsm' or 'pgd'; received {opts['via']!r}.")


def _build_corruption(eps: float, opts: dict[str, Any], surrogate: nn.Module | None) -> Attack:
    # a corruption's "eps" slot in the runner holds its severity (1..5); tables show it as `severity`
    return Corruption(opts["corruption"], severity=int(eps), seed=opts.get("seed", 0))


ATTACK_TYPES: dict[str, AttackType] = {
    "fgsm": AttackType({"targeted": _TARGETED, "eot_samples": int, "seed": int},
                       lambda eps, o, _: FGSM(eps=eps, **o)),
    "pgd": AttackType({"steps": int, "step_size": float, "random_start": bool, "norm": str, "seed": int,
                       "targeted": _TARGETED, "eot_samples": int, "restarts": int},
                      lambda eps, o, _: PGD(eps=eps, **o)),
    "deepfool": AttackType({"norm": str, "overshoot": float, "steps": int, "candidates": int,
                            "eot_samples": int, "eot_chunk": int},
                           lambda eps, o, _: DeepFool(eps=eps, **o), unbounded=True),
    "vonenet": AttackType({"norm": str, "steps": int, "eot_samples": int},
                          lambda eps, o, _: vonenet_pgd(eps, **o)),
    "noise": AttackType({"norm": str, "trials": int, "seed": int},
                        lambda eps, o, _: RandomNoise(eps=eps, **o)),
    "transfer": AttackType({"surrogate": str, "via": str, "steps": int, "step_size": float,
                            "random_start": bool, "norm": str, "seed": int, "eot_samples": int},
                           _build_transfer, check=_check_transfer, surrogate_key="surrogate"),
    # Papernot et al.'s black-box attack: a substitute trained on the target's labels (the
    # training budget: rounds, epochs, lam, ...), cached in the model cache; FGSM or PGD on it
    "substitute": AttackType({"architecture": str, "via": str, "steps": int, "rounds": int, "epochs": int,
                              "lam": float, "tau": int, "lr": float, "batch_size": int, "n_seed": int,
                              "seed": int},
                             _build_substitute, check=_check_substitute),
    # common corruptions: written in a config with `corruptions` and `severities` in place of
    # eps; the config expands them to one entry per corruption (see study.config)
    "corruption": AttackType({"corruption": str, "seed": int}, _build_corruption),
}
"""Attack type name -> its :class:`AttackType` (the ``type`` key of ``[[attacks]]``)."""


def _check_autoattack(opts: dict[str, Any], where: str, model_names: Sequence[str]) -> None:
    if opts.get("version") == "custom":
        raise ConfigError(f"{where}: version 'custom' needs attack objects and is Python-only; in a "
                          "study config use version = 'standard' or 'rand', or leave it out (chosen "
                          "by the model).")


_APGD_OPTIONS: OptionTypes = {"norm": str, "loss": str, "n_targets": int, "steps": int,
                              "restarts": int, "eot_samples": int, "seed": int}
ATTACK_TYPES.update({
    "apgd": AttackType({**_APGD_OPTIONS, "targeted": _TARGETED},
                       lambda eps, o, _: APGD(eps, **o)),
    "apgd_t": AttackType(_APGD_OPTIONS,  # APGD-T: the targeted DLR sweep over the top classes
                         lambda eps, o, _: APGD(eps, **{"loss": "dlr", **o, "targeted": "top"})),
    "square": AttackType({"norm": str, "queries": int, "seed": int, "p_init": float,
                          "eot_samples": int},
                         lambda eps, o, _: Square(eps, **o)),
    # FAB-T (targeted = true, the default) or untargeted FAB; a minimum-norm attack judged at
    # eps (eps = inf: the smallest adversarial found, however large)
    "fab": AttackType({"norm": str, "targeted": bool, "n_targets": int, "steps": int, "restarts": int,
                       "seed": int, "alpha_max": float, "eta": float, "beta": float, "eot_samples": int},
                      lambda eps, o, _: FAB(eps, **{**o, "targeted": "top" if o.get("targeted", True) else None}),
                      unbounded=True),
    "autoattack": AttackType({"norm": str, "version": str, "seed": int, "steps": int,
                              "queries": int, "n_targets": int, "eot_samples": int},
                             lambda eps, o, _: AutoAttack(eps, **o), check=_check_autoattack),
})
