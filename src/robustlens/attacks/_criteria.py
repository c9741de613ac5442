"""Criteria: what an attack tries to achieve (untargeted or targeted) and its loss.

A :class:`Criterion` holds, per example, the true class and, in targeted mode, the class to
reach. It gives the loss the attack *ascends* (per example and summed), whether a prediction
counts as a success, and a margin (negative exactly when the example is adversarial) to rank
candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from robustlens.errors import ConfigError

__all__ = ["LOSSES", "TARGET_MODES", "Criterion", "Loss", "TargetMode", "Targeted",
           "check_targeted", "choose_targets", "dlr_loss"]

TargetMode = Literal["random", "least_likely", "given"]
TARGET_MODES: tuple[str, ...] = ("random", "least_likely", "given")
Targeted = int | TargetMode | None
"""``None``: untargeted; an int: every image towards that class; ``"random"``: a uniformly
random class other than the true one (from the attack's generator); ``"least_likely"``: the
class with the lowest clean logit; ``"given"``: targets passed to the call."""

Loss = Literal["ce", "margin", "dlr"]
LOSSES: tuple[str, ...] = ("ce", "margin", "dlr")

_DLR_TINY = 1e-12


def check_targeted(targeted: object) -> None:
    """Raise :class:`ConfigError` unless ``targeted`` is a valid :data:`Targeted` value."""
    if targeted is None or targeted in TARGET_MODES:
        return
    if isinstance(targeted, int) and not isinstance(targeted, bool) and targeted >= 0:
        return
    raise ConfigError(
        "targeted must be None (untargeted), a class index >= 0, or one of "
        f"{', '.join(map(repr, TARGET_MODES))}; received {targeted!r}."
    )


def _other_max(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Largest logit among the classes other than ``cls`` (B,)."""
    return logits.scatter(1, cls[:, None], float("-inf")).amax(dim=1)


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None
             ) -> torch.Tensor:
    """Difference-of-logits-ratio loss (Croce and Hein 2020), per example (B,), to ascend.

    With ``z`` sorted decreasingly as ``z_pi1 >= z_pi2 >= ...``: untargeted
    ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)``; targeted
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``. Invariant to shifting and scaling the
    logits, so it does not saturate with the softmax. Needs at least 3 classes (untargeted)
    or 4 (targeted).

    Args:
        logits: (B, K) logits.
        labels: true classes (B,).
        targets: classes to reach (B,), or ``None`` for the untargeted loss.
    """
    need = 3 if targets is None else 4
    if logits.shape[1] < need:
        kind = "an untargeted" if targets is None else "a targeted"
        raise ConfigError(f"{kind} DLR loss needs a model with at least {need} classes; this "
                          f"one has {logits.shape[1]}. Use loss='ce' or loss='margin'.")
    top = logits.topk(need, dim=1).values
    own = logits.gather(1, labels[:, None]).squeeze(1)
    if targets is None:
        return -(own - _other_max(logits, labels)) / (top[:, 0] - top[:, 2] + _DLR_TINY)
    tgt = logits.gather(1, targets[:, None]).squeeze(1)
    return -(own - tgt) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_TINY)


@dataclass(frozen=True)
class Criterion:
    """The per-example goal of an attack.

    Attributes:
        labels: true classes (B,).
        targets: classes to reach (B,), or ``None`` for an untargeted attack.
        loss: ``"ce"`` (cross-entropy: ascend CE(true) untargeted, descend CE(target)
            targeted), ``"margin"`` (Carlini-Wagner logit margin, which does not saturate
            with the softmax) or ``"dlr"`` (:func:`dlr_loss`).
        any_class: with targets, count any misclassification as a success (the targets
            only steer the loss, as in APGD-T) instead of reaching the target.
    """

    labels: torch.Tensor
    targets: torch.Tensor | None = None
    loss: Loss = "ce"
    any_class: bool = False

    @property
    def targeted(self) -> bool:
        return self.targets is not None

    @property
    def _judged_targeted(self) -> bool:
        return self.targets is not None and not self.any_class

    def subset(self, index: torch.Tensor) -> Criterion:
        """The criterion of the examples at ``index``."""
        return Criterion(self.labels[index],
                         None if self.targets is None else self.targets[index], self.loss,
                         self.any_class)

    def tile(self, k: int) -> Criterion:
        """The criterion repeated ``k`` times along the batch (for k stacked copies)."""
        targets = None if self.targets is None else self.targets.repeat(k)
        return Criterion(self.labels.repeat(k), targets, self.loss, self.any_class)

    def margin(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-example margin (B,): negative exactly when the example is adversarial.

        Untargeted (or ``any_class``): ``z_y - max_{j != y} z_j``; targeted:
        ``max_{j != t} z_j - z_t``.
        """
        targeted = self._judged_targeted
        cls = self.targets if targeted and self.targets is not None else self.labels
        own = logits.gather(1, cls[:, None]).squeeze(1)
        other = _other_max(logits, cls)
        return other - own if targeted else own - other

    def is_adversarial(self, logits: torch.Tensor) -> torch.Tensor:
        """Boolean (B,): prediction differs from the label (untargeted) or equals the target."""
        pred = logits.argmax(dim=1)
        if self._judged_targeted and self.targets is not None:
            return pred == self.targets
        return pred != self.labels

    def losses(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-example loss (B,) an attack maximises."""
        if self.loss == "dlr":
            return dlr_loss(logits, self.labels, self.targets)
        if self.loss == "margin":
            if self.targets is None:
                return -self.margin(logits)
            own = logits.gather(1, self.targets[:, None]).squeeze(1)
            return own - _other_max(logits, self.targets)
        if self.targets is None:
            return F.cross_entropy(logits, self.labels, reduction="none")
        return -F.cross_entropy(logits, self.targets, reduction="none")

    def ascent_loss(self, logits: torch.Tensor) -> torch.Tensor:
        """The summed loss an attack maximises (a scalar)."""
        return self.losses(logits).sum()


def choose_targets(targeted: Targeted, labels: torch.Tensor, clean_logits: torch.Tensor | None,
                   num_classes: int, given: torch.Tensor | None,
                   generator: torch.Generator | None) -> torch.Tensor | None:
    """Resolve a :data:`Targeted` mode into target classes (B,), or ``None`` if untargeted.

    Args:
        targeted: the mode.
        labels: true classes (B,).
        clean_logits: logits of the clean images (B, num_classes); needed for
            ``"least_likely"``.
        num_classes: number of classes of the model.
        given: targets passed to the call (B,), required by ``"given"`` only.
        generator: randomness of ``"random"``.
    """
    if given is not None and targeted != "given":
        raise ConfigError(
            f"targets were passed to an attack configured with targeted={targeted!r}; "
            "construct it with targeted='given' to use per-call targets."
        )
    if targeted is None:
        return None
    if targeted == "given":
        if given is None:
            raise ConfigError("targeted='given' needs targets: call attack(model, images, labels, "
                              "targets=...) with one class index per image.")
        if given.shape != labels.shape or given.is_floating_point():
            raise ConfigError("targets must be integer class indices shaped "
                              f"{tuple(labels.shape)}; "
                              f"received {given.dtype} {tuple(given.shape)}.")
        t = given.to(labels.device)
    elif targeted == "random":
        if num_classes < 2:
            raise ConfigError("targeted='random' needs a model with at least 2 classes.")
        shift = torch.randint(1, num_classes, labels.shape, generator=generator,
                              device=labels.device if generator is None else generator.device)
        t = (labels + shift.to(labels.device)) % num_classes
    elif targeted == "least_likely":
        assert clean_logits is not None
        t = clean_logits.argmin(dim=1)
    else:
        t = torch.full_like(labels, int(targeted))
    if bool(((t < 0) | (t >= num_classes)).any()):
        raise ConfigError(f"target classes must lie in [0, {num_classes - 1}] for this "
                          f"model; received values in [{int(t.min())}, {int(t.max())}].")
    return t
