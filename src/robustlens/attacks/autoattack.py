"""AutoAttack (Croce and Hein 2020): a cascade of complementary attacks, worst case per example.

Each attack of the cascade runs only on the examples that every earlier one failed to break
(and that the model classifies correctly to begin with); an example's answer is the first
adversarial image found, so the robust accuracy after each stage can only go down, and the
cost of a stage is proportional to the examples still standing.

Versions:

* ``"standard"`` (deterministic models), the published cascade: APGD-CE (100 steps),
  APGD-T (targeted DLR towards the 9 most likely other classes, 100 steps each), FAB-T
  (:class:`~robustlens.attacks.FAB`, targeted minimum-norm, the 9 most likely other
  classes, 100 steps each; an image counts when the smallest perturbation found is within
  eps) and Square (5,000 queries). L-inf and L2; L1 runs APGD-CE, APGD-T and FAB-T (Square
  has no L1 version).
* ``"rand"`` (stochastic models, e.g. VOneNets): APGD-CE and APGD-DLR, each with the loss
  gradient averaged over 20 noise samples per step (EOT).
* ``"custom"``: the attacks you pass.
* ``None``: ``"rand"`` when the model is stochastic (two forward passes of the same images
  differ), ``"standard"`` otherwise.

The built-in versions use the DLR loss, so "standard" needs a model with at least 4
classes and "rand" at least 3 (checked on the clean pass, before any attack runs). On a
model with fewer than ``n_targets + 1`` classes the targeted stages use every other class.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from robustlens.attacks._loop import eval_mode, expected_logits
from robustlens.attacks._stochastic import StochasticModelWarning, is_stochastic
from robustlens.attacks._threat import Norm
from robustlens.attacks.apgd import APGD
from robustlens.attacks.base import Attack, Outcome, check_eps, check_norm
from robustlens.attacks.fab import FAB
from robustlens.attacks.square import Square
from robustlens.attacks.transfer import Transfer
from robustlens.errors import ConfigError

__all__ = ["VERSIONS", "AutoAttack", "CascadeResult", "Version"]

Version = Literal["standard", "rand", "custom"] | None
VERSIONS: tuple[str, ...] = ("standard", "rand", "custom")
_RAND_EOT = 20


def _at_eps(attack: Attack, eps: float) -> Attack:
    """``attack`` at the cascade's eps (so that an eps sweep moves every stage)."""
    if attack.eps == eps:
        return attack
    if isinstance(attack, Transfer):
        return Transfer(_at_eps(attack.attack, eps), attack.surrogate)
    return dataclasses.replace(attack, eps=eps)  # type: ignore[type-var]


@dataclass(frozen=True)
class CascadeResult:
    """What each stage of a cascade did.

    Attributes:
        stages: names of the attacks, in order (``"clean"`` first: the clean images).
        accuracy: robust accuracy after each stage (the first: clean accuracy), fractions.
        attacked: number of images each stage was run on (the clean stage: all).
        broken: number of images each stage broke.
        seconds: wall time of each stage.
        found_by: per example, the stage that broke it (``"clean"`` if misclassified
            already, ``""`` if none did).
        version: the version run (``"standard"``, ``"rand"`` or ``"custom"``).
    """

    stages: tuple[str, ...]
    accuracy: tuple[float, ...]
    attacked: tuple[int, ...]
    broken: tuple[int, ...]
    seconds: tuple[float, ...]
    found_by: tuple[str, ...]
    version: str


@dataclass(frozen=True)
class AutoAttack(Attack):
    """The AutoAttack ensemble: a cascade on the surviving examples, worst case per example.

    Args:
        eps: radius in pixel units, in ``norm``.
        norm: ``"inf"``, ``"2"`` or ``"1"``.
        version: ``None`` (choose by the model: ``"rand"`` if stochastic, else
            ``"standard"``), ``"standard"``, ``"rand"`` or ``"custom"`` (see the module
            docstring). Forcing ``"standard"`` on a stochastic model warns.
        attacks: the cascade of ``version="custom"``, in order (robustlens attacks, at the
            same norm; each is run at the cascade's ``eps``); only for ``"custom"``.
        seed: seed of the default generator (shared by the stages, in order).
        steps: APGD iterations of the built-in versions.
        queries: Square's query budget in ``"standard"``.
        n_targets: target classes of APGD-T and FAB-T in ``"standard"`` (at most the number
            of classes minus one are used).
        eot_samples: gradient samples per step of ``"rand"``.
    """

    eps: float
    norm: Norm = "inf"
    version: Version = None
    attacks: tuple[Attack, ...] | None = None
    seed: int = 0
    steps: int = field(default=100, kw_only=True)
    queries: int = field(default=5000, kw_only=True)
    n_targets: int = field(default=9, kw_only=True)
    eot_samples: int = field(default=_RAND_EOT, kw_only=True)

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_eps(self.eps, norm=self.norm)
        if self.version is not None and self.version not in VERSIONS:
            raise ConfigError(f"AutoAttack version must be None, 'standard', 'rand' or 'custom'; "
                              f"received {self.version!r}.")
        if self.version == "custom":
            if not self.attacks:
                raise ConfigError("AutoAttack(version='custom') needs attacks=[...]: the cascade "
                                  "of robustlens attacks to run.")
            if isinstance(self.attacks, Sequence) and not isinstance(self.attacks, tuple):
                object.__setattr__(self, "attacks", tuple(self.attacks))
            bad = [a for a in self.attacks if not isinstance(a, Attack)]
            if bad:
                raise ConfigError("AutoAttack attacks must be robustlens attacks; received "
                                  f"{type(bad[0]).__name__}.")
            other = [a.name for a in self.attacks if a.norm != self.norm]
            if other:
                raise ConfigError(f"every attack of the cascade must use its norm {self.norm!r}; "
                                  f"received {', '.join(other)}.")
        elif self.attacks is not None:
            raise ConfigError(f"attacks=[...] is only for version='custom'; version "
                              f"{self.version!r} runs its own cascade.")
        # the component attacks check the other settings
        self.cascade("standard")
        self.cascade("rand")

    @property
    def name(self) -> str:
        """``autoattack`` (``_rand`` / ``_custom`` for those versions, ``_l2`` / ``_l1``)."""
        version = "" if self.version in (None, "standard") else f"_{self.version}"
        return "autoattack" + version + {"inf": "", "2": "_l2", "1": "_l1"}[self.norm]

    def cascade(self, version: str) -> tuple[Attack, ...]:
        """The attacks that ``version`` (``"standard"``, ``"rand"`` or ``"custom"``) runs."""
        if version == "custom":
            assert self.attacks is not None
            return tuple(_at_eps(a, self.eps) for a in self.attacks)
        e, n, s = self.eps, self.norm, self.seed
        if version == "rand":
            return (APGD(e, n, "ce", steps=self.steps, eot_samples=self.eot_samples, seed=s),
                    APGD(e, n, "dlr", steps=self.steps, eot_samples=self.eot_samples, seed=s))
        out: list[Attack] = [APGD(e, n, "ce", steps=self.steps, seed=s),
                             APGD(e, n, "dlr", targeted="top", n_targets=self.n_targets,
                                  steps=self.steps, seed=s),
                             FAB(e, n, targeted="top", n_targets=self.n_targets,
                                 steps=self.steps, seed=s)]
        if n != "1":
            out.append(Square(e, n, queries=self.queries, seed=s))
        return tuple(out)

    def resolve(self, model: nn.Module, images: torch.Tensor) -> str:
        """The version run on ``model`` (``None`` is decided by :func:`is_stochastic`)."""
        if self.version is not None:
            if self.version == "standard":
                with eval_mode(model):
                    if is_stochastic(model, images):
                        warnings.warn(
                            "AutoAttack(version='standard') on a stochastic model: its attacks "
                            "use one noise sample per gradient; version='rand' (or None) "
                            "averages 20.", StochasticModelWarning, stacklevel=4)
            return self.version
        with eval_mode(model):
            return "rand" if is_stochastic(model, images) else "standard"

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             generator: torch.Generator | None, targets: torch.Tensor | None,
             early_stop: bool, scored: bool) -> Outcome:
        res, adv, success = self._cascade(model, images, labels, generator, targets, early_stop)
        return Outcome(adv, success, None, None, res.found_by)

    def run_cascade(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                    generator: torch.Generator | None = None, early_stop: bool = False
                    ) -> tuple[torch.Tensor, CascadeResult]:
        """Run the cascade and report each stage.

        Args:
            model: the classifier (pixels in [0, 1] in, logits out).
            images: clean images (B, C, H, W) in [0, 1].
            labels: true classes (B,).
            generator: randomness of the stages (default: seeded with ``seed``).
            early_stop: let examples leave each stage's iterations as soon as they are
                broken (deterministic models).

        Returns:
            ``(adversarial images (B, C, H, W), CascadeResult)``.
        """
        res, adv, _ = self._cascade(model, images.detach(), labels.to(images.device), generator,
                                    None, early_stop)
        return adv, res

    def _fit_classes(self, stages: tuple[Attack, ...], version: str, n_classes: int
                     ) -> tuple[Attack, ...]:
        """Check the built-in versions' class count; cap FAB-T's targets at the other classes."""
        need = {"standard": 4, "rand": 3}.get(version, 0)
        if n_classes < need:
            what = "APGD-T (targeted DLR)" if version == "standard" else "APGD-DLR"
            raise ConfigError(f"AutoAttack version {version!r} runs {what} and needs a model with "
                              f"at least {need} classes; this one has {n_classes}. Use "
                              "version='custom' with cross-entropy attacks (e.g. APGD(loss='ce')).")
        return tuple(dataclasses.replace(a, n_targets=n_classes - 1)
                     if isinstance(a, FAB) and a.targeted == "top" and a.n_targets >= n_classes
                     else a for a in stages)

    def _cascade(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator | None, targets: torch.Tensor | None,
                 early_stop: bool) -> tuple[CascadeResult, torch.Tensor, torch.Tensor]:
        if targets is not None:
            raise ConfigError("AutoAttack is untargeted (APGD-T picks its own targets); it "
                              "takes no targets.")
        if generator is None:
            generator = torch.Generator(device=images.device).manual_seed(self.seed)
        version = self.resolve(model, images)
        stages = self.cascade(version)
        b = images.shape[0]
        start = time.perf_counter()
        with eval_mode(model), torch.inference_mode():
            k = self.eot_samples if version == "rand" else 1
            clean_logits = expected_logits(model, images, k)
            clean_pred = clean_logits.argmax(1)
        if b:
            stages = self._fit_classes(stages, version, clean_logits.shape[1])
        broken = clean_pred.clone() != labels
        adv = images.detach().clone()
        found = ["clean" if bool(v) else "" for v in broken.tolist()]
        names, accs = ["clean"], [1.0 - float(broken.float().mean()) if b else 0.0]
        attacked, n_broken, seconds = [b], [int(broken.sum())], [time.perf_counter() - start]
        first = True
        for attack in stages:
            todo = (~broken).nonzero().squeeze(1)
            t0 = time.perf_counter()
            hit_count = 0
            if todo.numel() > 0:
                out = attack.run(model, images[todo], labels[todo], generator=generator,
                                 early_stop=early_stop)
                hit = out.success
                # an example no stage breaks keeps the first stage's image
                keep = hit | first
                adv[todo[keep]] = out.adversarial[keep]
                broken[todo[hit]] = True
                for i in todo[hit].tolist():
                    found[i] = attack.name
                hit_count = int(hit.sum())
            first = False
            names.append(attack.name)
            attacked.append(int(todo.numel()))
            n_broken.append(hit_count)
            accs.append(1.0 - float(broken.float().mean()) if b else 0.0)
            seconds.append(time.perf_counter() - t0)
        result = CascadeResult(tuple(names), tuple(accs), tuple(attacked), tuple(n_broken),
                               tuple(seconds), tuple(found), version)
        return result, adv, broken
