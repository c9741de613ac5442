"""Named attack settings from papers, so a study says ``"vonenet"`` instead of six numbers."""

from __future__ import annotations

from collections.abc import Callable

from robustlens.attacks.base import Attack
from robustlens.attacks.gradient import PGD
from robustlens.errors import ConfigError, suggest

__all__ = ["PRESETS", "create_preset", "vonenet_pgd"]


def vonenet_pgd(eps: float = 1 / 255, *, norm: str = "inf", steps: int = 64,
                eot_samples: int = 10) -> PGD:
    """The VOneNet authors' white-box protocol (Dapello et al. 2020; vonenet PR #12).

    PGD, untargeted, L-inf by default, ``eps = 1/255`` (pixel units), 64 iterations,
    step ``eps / 4``, no random start and no restarts, the loss gradient averaged over
    ``k = 10`` noise samples per step (the reference's ensemble of k copies of the model).
    Accuracy is then read from a fresh stochastic forward pass.
    """
    return PGD(eps=eps, steps=steps, step_size=eps / 4, norm=norm,  # type: ignore[arg-type]
               random_start=False, eot_samples=eot_samples)


PRESETS: dict[str, Callable[..., Attack]] = {"vonenet": vonenet_pgd}


def create_preset(name: str, **overrides: object) -> Attack:
    """The attack named ``name`` (see :data:`PRESETS`), with keyword overrides (e.g. ``eps``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown attack preset {name!r}.{suggest(name, PRESETS)} "
                          f"Known: {', '.join(sorted(PRESETS))}.")
    try:
        return PRESETS[name](**overrides)
    except TypeError as err:
        raise ConfigError(f"preset {name!r} does not accept {sorted(overrides)}: {err}") from None
