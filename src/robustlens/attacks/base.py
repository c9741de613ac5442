"""The attack interface: a frozen config called as ``attack(model, images, labels)``.

Every attack takes images of shape (B, C, H, W) holding pixels in [0, 1] and true labels
(B,), and returns adversarial images of the same shape, in [0, 1]. ``eps`` is measured in
that pixel scale (``8/255``, ``0.1``, ...; ``inf`` for unbounded minimisation attacks).
During the call every module runs in eval mode (batch-norm statistics frozen, dropout off);
afterwards the model's weights, buffers, modes and hooks are as they were. Randomness comes
only from the ``generator`` passed to the call, or from one seeded with the attack's
``seed``.

:meth:`Attack.run` returns an :class:`AttackResult` with the per-example success and
perturbation norms; calling the attack returns just the images.

Inputs are checked before any work (see :func:`robustlens.validation.check_model_input`):
images float (B, C, H, W) in [0, 1] with the model's dtype and device, labels (B,) class
indices within the model's classes, an image size the model runs on, and ``eps`` within its
threat model for that image size (L2 at most ``sqrt(C*H*W)``, L1 at most ``C*H*W``). An empty
batch (B = 0) is a no-op: the result holds 0 images and the model is not run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from robustlens.attacks._threat import NORMS, Norm, perturbation_norm
from robustlens.errors import ConfigError
from robustlens.validation import check_images, check_labels, check_model_input

__all__ = ["Attack", "AttackResult", "Outcome", "check_eps", "check_norm", "max_eps", "check_positive_int"]


def max_eps(norm: str, n_features: int) -> float:
    """The largest meaningful eps of a threat model on images of ``n_features = C * H * W`` pixels.

    Pixels live in [0, 1], so no perturbation is larger than the all-ones image: L-inf 1,
    L2 ``sqrt(C * H * W)``, L1 ``C * H * W`` (pixel units).
    """
    if norm == "inf":
        return 1.0
    if norm == "2":
        return math.sqrt(n_features)
    if norm == "1":
        return float(n_features)
    raise ConfigError(f"norm must be one of 'inf', '2' or '1'; received {norm!r}.")


def check_eps(eps: float, *, allow_inf: bool = False, norm: str = "inf", n_features: int | None = None) -> None:
    """Raise :class:`ConfigError` unless ``eps`` is a number >= 0 within its threat model's range.

    Args:
        eps: the radius, in pixel units.
        allow_inf: accept ``inf`` (an unbounded minimum-norm attack).
        norm: the threat model, ``"inf"``, ``"2"`` or ``"1"``; L-inf radii above 1 are refused
            (the whole pixel range is 1).
        n_features: ``C * H * W`` of the images, when known: L2 radii above ``sqrt(C*H*W)`` and
            L1 radii above ``C*H*W`` are refused too.
    """
    ok = isinstance(eps, int | float) and not isinstance(eps, bool) and not math.isnan(eps) \
        and eps >= 0 and (allow_inf or math.isfinite(eps))
    if not ok:
        what = "a number >= 0 (or inf)" if allow_inf else "a finite number >= 0"
        raise ConfigError(f"eps must be {what} in pixel units (e.g. 8/255); received {eps!r}.")
    if math.isinf(eps):
        return
    if norm == "inf" and eps > 1:
        raise ConfigError(f"an L-inf eps must be <= 1 in pixel units (pixels are in [0, 1], so eps is a "
                          f"fraction of the pixel range, e.g. 8/255 = {8 / 255:.4f}); received {eps!r}. "
                          f"Did you mean {eps}/255?")
    if n_features is not None and norm in ("2", "1"):
        bound = max_eps(norm, n_features)
        if eps > bound:
            name = "L2" if norm == "2" else "L1"
            raise ConfigError(f"an {name} eps must be <= {bound:.4g} for images of {n_features} pixel values "
                              f"(the {name} norm of the largest possible change); received {eps!r}. "
                              "eps is in pixel units, with pixels in [0, 1].")


def check_norm(norm: object, allowed: tuple[str, ...] = NORMS) -> None:
    """Raise :class:`ConfigError` unless ``norm`` is one of ``allowed`` (default all threat models).

    Args:
        norm: the value to check.
        allowed: the norms the attack supports.
    """
    if norm not in allowed:
        raise ConfigError(f"norm must be one of {', '.join(map(repr, allowed))}; received {norm!r}. "
                          "Use 'inf' for L-inf, '2' for L2 or '1' for L1 (strings).")


def check_positive_int(name: str, value: object) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1; received {value!r}.")


@dataclass(frozen=True)
class AttackResult:
    """The outcome of an attack on a batch.

    Attributes:
        adversarial: (B, C, H, W) adversarial images in [0, 1].
        success: (B,) bool, the attack's criterion at its last check (misclassified, or
            classified as the target); for stochastic models judged on the mean logits over
            the attack's EOT samples; a fresh evaluation pass may disagree.
        targets: (B,) target classes of a targeted attack, else ``None``.
        linf: (B,) L-inf norm of the perturbation ``adversarial - images``, pixel units.
        l2: (B,) L2 norm of the perturbation, pixel units.
        minimal_norm: (B,) in the attack's own norm, the size of the adversarial
            perturbation found (for DeepFool: before any eps restriction), ``inf`` where
            the attack failed.
        l1: (B,) L1 norm of the perturbation, pixel units.
        found_by: per example, the name of the component attack whose image is returned
            (ensembles such as AutoAttack; ``"clean"`` where the clean image is already
            misclassified, ``""`` where none succeeded), else ``None``.
    """

    adversarial: torch.Tensor
    success: torch.Tensor
    targets: torch.Tensor | None
    linf: torch.Tensor
    l2: torch.Tensor
    minimal_norm: torch.Tensor
    l1: torch.Tensor | None = None
    found_by: tuple[str, ...] | None = None

    @classmethod
    def build(cls, images: torch.Tensor, adversarial: torch.Tensor, success: torch.Tensor,
              targets: torch.Tensor | None, norm: Norm,
              found_norm: torch.Tensor | None = None,
              found_by: tuple[str, ...] | None = None) -> AttackResult:
        """Fill in the norms from the clean and adversarial images."""
        delta = (adversarial - images).detach()
        linf, l2 = perturbation_norm(delta, "inf"), perturbation_norm(delta, "2")
        l1 = perturbation_norm(delta, "1")
        # an attack with no threat model (a corruption, norm "none") reports its L2 size
        own = found_norm if found_norm is not None else {"inf": linf, "2": l2, "1": l1}.get(norm, l2)
        minimal = torch.where(success, own, torch.full_like(own, float("inf")))
        return cls(adversarial.detach(), success, targets, linf, l2, minimal, l1, found_by)


class Attack:
    """Base of the attacks: validates the inputs, then runs :meth:`_run`.

    Subclasses are frozen dataclasses with an ``eps`` field (pixel units) and a ``norm``.
    """

    eps: float
    norm: Norm

    @property
    def name(self) -> str:
        """Short lower-case label (``"pgd"``, ``"pgd_l2"``, ``"deepfool"``, ...)."""
        base = type(self).__name__.lower()
        return base + {"2": "_l2", "1": "_l1"}.get(getattr(self, "norm", "inf"), "")

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                 generator: torch.Generator | None = None,
                 targets: torch.Tensor | None = None) -> torch.Tensor:
        """Attack ``model`` on ``images`` (B, C, H, W) in [0, 1] with true ``labels`` (B,).

        Args:
            model: any classifier taking pixels in [0, 1] and returning logits.
            images: clean images.
            labels: true class indices.
            generator: source of randomness (random starts, random targets); by default
                one seeded from the attack's ``seed`` on the images' device.
            targets: target classes (B,) for an attack built with ``targeted="given"``.

        Returns:
            Adversarial images (B, C, H, W) in [0, 1], detached.
        """
        if self._check_inputs(model, images, labels):
            return images.detach().clone()
        return self._run(model, images, labels.to(images.device), generator=generator,
                         targets=targets, early_stop=False, scored=False).adversarial

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
            generator: torch.Generator | None = None, targets: torch.Tensor | None = None,
            early_stop: bool = False) -> AttackResult:
        """Like calling the attack, with the per-example outcome.

        Args:
            early_stop: let examples that are already adversarial keep that image and leave
                the batch between steps and restarts (what a robust-accuracy evaluation
                wants; adversarial training wants full-strength images instead).
        """
        if self._check_inputs(model, images, labels):
            empty = images.new_zeros(0)
            return AttackResult(images.detach().clone(), torch.zeros(0, dtype=torch.bool, device=images.device),
                                None, empty, empty.clone(), empty.clone())
        out = self._run(model, images, labels.to(images.device), generator=generator,
                        targets=targets, early_stop=early_stop, scored=True)
        assert out.success is not None
        return AttackResult.build(images, out.adversarial, out.success, out.targets, self.norm,
                                  out.found_norm, out.found_by)

    def _check_inputs(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> bool:
        """Check the call's inputs (module docstring); return whether the batch is empty."""
        check_images(images)
        check_labels(labels, images.shape[0])
        eps = getattr(self, "eps", math.inf)
        norm = str(getattr(self, "norm", "inf"))
        if isinstance(eps, int | float) and norm in ("inf", "2", "1"):
            check_eps(eps, allow_inf=True, norm=norm, n_features=math.prod(images.shape[1:]))
        check_model_input(model, images, labels)
        surrogate = getattr(self, "surrogate", None)  # a transfer attack crafts on another model
        if isinstance(surrogate, nn.Module):
            check_model_input(surrogate, images, labels, name="images (for the surrogate model)")
        return images.shape[0] == 0

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             generator: torch.Generator | None, targets: torch.Tensor | None,
             early_stop: bool, scored: bool) -> Outcome:
        """Run the attack; ``scored`` asks for ``success`` (may cost a final forward pass)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Outcome:
    """What :meth:`Attack._run` returns (internal).

    Attributes:
        adversarial: (B, C, H, W) images.
        success: (B,) bool, or ``None`` when not asked for.
        targets: (B,) targets of a targeted attack, else ``None``.
        found_norm: (B,) perturbation norm before any eps restriction (DeepFool), or
            ``None`` to use the norm of ``adversarial - images``.
        found_by: per example, the component attack that produced the image (ensembles).
    """

    adversarial: torch.Tensor
    success: torch.Tensor | None
    targets: torch.Tensor | None = None
    found_norm: torch.Tensor | None = None
    found_by: tuple[str, ...] | None = None
