"""Saliency maps: which input pixels the target logit depends on.

Every method is constructed with the model and called once:
``Saliency(model).attribute(images, target=labels)`` returns a tensor shaped like
``images`` (B, C, H, W). ``target`` is a class index (for every image), a (B,) tensor of
indices, or ``None`` for each image's predicted class. Images are pixels in [0, 1] (clean or
adversarial alike); attributions are in logit units per pixel unit (gradients) or logit
units (gradient x input, integrated gradients).

``output`` chooses the differentiated score: ``"logit"`` (the target's logit, Captum's
default) or ``"log_softmax"`` (log p(target | x), the log-probability used in the CSC413
lecture; its gradient is the logit's minus the softmax-weighted mean of every logit's
gradient, so it also shows what speaks *against* the other classes).

- :class:`Saliency` — the vanilla gradient d logit / d x (Simonyan et al. 2014);
- :class:`GradientXInput` — gradient times input (Shrikumar et al. 2016);
- :class:`GuidedBackprop` — only positive gradients pass back through ReLUs, and only where
  the forward input was positive (Springenberg et al. 2015);
- :class:`IntegratedGradients` — the path integral of the gradient from a baseline
  (Sundararajan et al. 2017); attributions sum to f(x) - f(baseline) ("completeness");
- :class:`SmoothGrad` — any of these averaged over noisy copies x + N(0, sigma^2), sigma a
  fraction of the pixel range (Smilkov et al. 2017: 10-20% works best).

The model's modes, weights and buffers are untouched and no parameter gradient is computed.
For stochastic models (VOneNets) each call sees one noise draw; wrap the model in
:func:`robustlens.models.vone.without_noise` or average with :class:`SmoothGrad`.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustlens.errors import RobustlensError
from robustlens.validation import check_model_input
from robustlens.visualization._hooks import module_training, resolve_targets
from robustlens.visualization._relu import ReLUGradientMode

__all__ = ["OUTPUTS", "SALIENCY_METHODS", "Attribution", "GradientXInput", "GuidedBackprop", "IntegratedGradients",
           "Output", "Saliency", "SmoothGrad", "Target", "saliency_method"]

Target = int | torch.Tensor | list[int] | None
Output = Literal["logit", "log_softmax"]
OUTPUTS: tuple[str, ...] = ("logit", "log_softmax")


class Attribution:
    """Base class: ``attribute(images, target)`` -> (B, C, H, W) attributions.

    Args:
        model: a classifier taking (B, C, H, W) pixels in [0, 1] and returning logits.
        output: the score differentiated: ``"logit"`` or ``"log_softmax"`` (log p(target | x)).
    """

    def __init__(self, model: nn.Module, output: Output = "logit") -> None:
        if not isinstance(model, nn.Module):
            raise RobustlensError(f"model must be an nn.Module; received {type(model).__name__}.")
        if output not in OUTPUTS:
            raise RobustlensError(f"output must be 'logit' or 'log_softmax'; received {output!r}.")
        self.model = model
        self.output: Output = output

    def attribute(self, images: torch.Tensor, target: Target = None) -> torch.Tensor:
        """Attributions shaped like ``images``.

        Args:
            images: (B, C, H, W) pixels in [0, 1].
            target: class index, (B,) indices, or ``None`` for the predicted classes.

        Returns:
            (B, C, H, W) attributions (detached, on the images' device).
        """
        check_model_input(self.model, images)
        if images.shape[0] == 0:  # an empty batch is a no-op
            return images.detach().clone()
        with module_training(self.model, False):
            return self._attribute(images.detach(), target)

    def _attribute(self, images: torch.Tensor, target: Target) -> torch.Tensor:
        raise NotImplementedError

    def _gradient(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        """d score[target] / d x for a (B, ...) batch (score: logits or log-softmax)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logits = self.model(x)
            t = resolve_targets(target, logits)
            scores = logits.log_softmax(1) if self.output == "log_softmax" else logits
            picked = scores.gather(1, t[:, None]).sum()
            (grad,) = torch.autograd.grad(picked, x)
        return grad.detach()

    def _fixed_targets(self, images: torch.Tensor, target: Target) -> torch.Tensor:
        """(B,) targets, resolved on the images themselves (before any noise or path)."""
        with torch.no_grad():
            logits = self.model(images)
        return resolve_targets(target, logits)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"


class Saliency(Attribution):
    """The vanilla gradient of the target logit with respect to the pixels.

    Args:
        model: the classifier.
        absolute: return |gradient| (the usual saliency map) instead of the signed gradient.
        output: the score differentiated: ``"logit"`` or ``"log_softmax"``.
    """

    def __init__(self, model: nn.Module, absolute: bool = False, output: Output = "logit") -> None:
        super().__init__(model, output)
        self.absolute = absolute

    def _attribute(self, images: torch.Tensor, target: Target) -> torch.Tensor:
        g = self._gradient(images, target)
        return g.abs() if self.absolute else g


class GradientXInput(Attribution):
    """Gradient times input (pixel values in [0, 1]).

    Args:
        model: the classifier.
        output: the score differentiated: ``"logit"`` or ``"log_softmax"``.
    """

    def _attribute(self, images: torch.Tensor, target: Target) -> torch.Tensor:
        return self._gradient(images, target) * images


class GuidedBackprop(Attribution):
    """Guided backpropagation: only positive gradients flow back through ReLUs.

    Covered: ``nn.ReLU`` and ``nn.ReLU6`` modules and the functional ``F.relu``,
    ``torch.relu``, ``Tensor.relu`` (and their in-place forms, computed out of place with
    the same values), ``F.relu6`` and ``F.hardtanh(x, 0, max)`` — every ReLU-like call made
    through PyTorch's function API while :meth:`attribute` runs (a ``TorchFunctionMode``; no
    hooks are registered). ReLU6 passes gradients where 0 < x < 6. Not covered: ReLUs
    written as ``x.clamp(min=0)`` or ``torch.maximum(x, 0)``, and other activations (SiLU,
    GELU), whose gradients pass unchanged.

    Args:
        model: the classifier.
        output: the score differentiated: ``"logit"`` or ``"log_softmax"``.
    """

    def _attribute(self, images: torch.Tensor, target: Target) -> torch.Tensor:
        with ReLUGradientMode("guided"):
            return self._gradient(images, target)


Baseline = Literal["black", "white", "blur"] | float | torch.Tensor


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    y = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad > 0 else x
    y = F.pad(y, (radius - pad,) * 4, mode="replicate") if radius > pad else y
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class IntegratedGradients(Attribution):
    """Integrated gradients from a baseline.

    ``(x - x0) * integral_0^1 grad f(x0 + a (x - x0)) da``; the attributions sum to
    f(x) - f(x0) up to the quadrature error (f: the target's logit, or its log-probability
    with ``output="log_softmax"``). Along the path the gradient of a ReLU network is
    piecewise constant, so the midpoint rule (the default) converges faster than
    Gauss-Legendre there; a trained 8 x 8 digits CNN is within 2% at 64 points and 0.5% at
    256 (check with the sums, as the tests do).

    Args:
        model: the classifier.
        baseline: ``"black"`` (zeros), ``"white"`` (ones), ``"blur"`` (the image blurred by a
            Gaussian of ``blur_sigma`` px), a constant pixel value, or a tensor broadcastable
            to the images.
        n_steps: quadrature points.
        method: ``"midpoint"`` (Riemann sum at the interval midpoints) or
            ``"gausslegendre"`` (better for smooth models).
        batch_size: images x points per forward pass (default: all points of one image).
        blur_sigma: standard deviation of the blur baseline, pixels.
        output: the score differentiated: ``"logit"`` or ``"log_softmax"``.
    """

    def __init__(self, model: nn.Module, baseline: Baseline = "black", n_steps: int = 64,
                 method: Literal["midpoint", "gausslegendre"] = "midpoint",
                 batch_size: int | None = None, blur_sigma: float = 5.0, output: Output = "logit") -> None:
        super().__init__(model, output)
        if method not in ("midpoint", "gausslegendre"):
            raise RobustlensError(f"method must be 'midpoint' or 'gausslegendre'; received "
                                  f"{method!r}.")
        self.method = method
        if n_steps < 1:
            raise RobustlensError(f"n_steps must be >= 1; received {n_steps}.")
        if isinstance(baseline, str) and baseline not in ("black", "white", "blur"):
            raise RobustlensError(f"baseline must be 'black', 'white', 'blur', a number or a "
                                  f"tensor; received {baseline!r}.")
        self.baseline, self.n_steps, self.batch_size = baseline, n_steps, batch_size
        self.blur_sigma = blur_sigma

    def baseline_for(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) the baseline of each image."""
        b = self.baseline
        if isinstance(b, torch.Tensor):
            return b.to(images).expand_as(images)
        if b == "black":
            return torch.zeros_like(images)
        if b == "white":
            return torch.ones_like(images)
        if b == "blur":
            return _gaussian_blur(images, self.blur_sigma)
        return torch.full_like(images, float(b))

    def _attribute(self, images: torch.Tensor, target: Target) -> torch.Tensor:
        base = self.baseline_for(images)
        t = self._fixed_targets(images, target)
        if self.method == "gausslegendre":
            nodes, weights = np.polynomial.legendre.leggauss(self.n_steps)
        else:
            nodes = (np.arange(self.n_steps) + 0.5) / self.n_steps * 2 - 1
            weights = np.full(self.n_steps, 2.0 / self.n_steps)
        alphas = torch.as_tensor((nodes + 1) / 2, dtype=images.dtype, device=images.device)
        w = torch.as_tensor(weights / 2, dtype=images.dtype, device=images.device)
        diff = images - base
        b = images.shape[0]
        per_pass = max(1, (self.batch_size or self.n_steps * b) // b)
        total = torch.zeros_like(images)
        for a, wa in zip(alphas.split(per_pass), w.split(per_pass), strict=True):
            path = (base[None] + a.view(-1, 1, 1, 1, 1) * diff[None]).flatten(0, 1)
            g = self._gradient(path, t.repeat(len(a))).view(len(a), *images.shape)
            total += (g * wa.view(-1, 1, 1, 1, 1)).sum(0)
        return total * diff


class SmoothGrad(Attribution):
    """Any attribution averaged over noisy copies of the images.

    The differentiated score (``output``) is the smoothed method's.

    Args:
        method: the attribution to smooth (e.g. ``Saliency(model)``, ``GuidedBackprop(model)``).
        sigma: noise standard deviation as a fraction of the pixel range [0, 1] (0.15: 15%).
        n_samples: noisy copies per image.
        seed: seeds the noise (an explicit ``torch.Generator`` is made from it per call).
        squared: average the squared attributions (SmoothGrad-Squared) instead.
        batch_size: noisy images per pass of ``method`` (default: all copies at once).
    """

    def __init__(self, method: Attribution, sigma: float = 0.15, n_samples: int = 25, *,
                 seed: int = 0, squared: bool = False, batch_size: int | None = None) -> None:
        if not isinstance(method, Attribution):
            raise RobustlensError(f"method must be an attribution such as Saliency(model); "
                                  f"received {type(method).__name__}.")
        if sigma < 0 or n_samples < 1:
            raise RobustlensError(f"need sigma >= 0 and n_samples >= 1; received sigma={sigma}, "
                                  f"n_samples={n_samples}.")
        super().__init__(method.model, method.output)
        self.method, self.sigma, self.n_samples = method, float(sigma), n_samples
        self.seed, self.squared, self.batch_size = seed, squared, batch_size

    def _attribute(self, images: torch.Tensor, target: Target) -> torch.Tensor:
        b = images.shape[0]
        t = self._fixed_targets(images, target)
        gen = torch.Generator(device=images.device).manual_seed(self.seed)
        per_pass = max(1, (self.batch_size or self.n_samples * b) // b)
        total = torch.zeros_like(images)
        done = 0
        while done < self.n_samples:
            n = min(per_pass, self.n_samples - done)
            noise = torch.randn((n, *images.shape), generator=gen, device=images.device,
                                dtype=images.dtype)
            noisy = (images[None] + self.sigma * noise).flatten(0, 1)
            attr = self.method._attribute(noisy, t.repeat(n)).view(n, *images.shape)
            total += (attr ** 2 if self.squared else attr).sum(0)
            done += n
        return total / self.n_samples

    def __repr__(self) -> str:
        return f"SmoothGrad({self.method!r}, sigma={self.sigma}, n_samples={self.n_samples})"


SALIENCY_METHODS = ("gradient", "gradient_x_input", "guided_backprop", "smoothgrad", "integrated_gradients")
"""The names :func:`saliency_method` knows (config files and the CLI use them)."""


_PASS = 16  # images per backward pass of the multi-pass methods: ~0.1 GB each for a ResNet50 at 224 px


def saliency_method(name: str, model: nn.Module, sigma: float, n_samples: int, *, ig_steps: int = 64,
                    seed: int | None = None, output: Output = "logit") -> Attribution:
    """The attribution method named ``name`` (one of :data:`SALIENCY_METHODS`) for ``model``.

    Args:
        name: the method's name.
        model: the classifier.
        sigma: SmoothGrad's noise, a fraction of the pixel range.
        n_samples: SmoothGrad's noisy copies.
        ig_steps: integrated gradients' path steps.
        seed: SmoothGrad's noise seed (``None``: its default).
        output: the score differentiated: ``"logit"`` or ``"log_softmax"``.

    Raises:
        RobustlensError: an unknown name.
    """
    if name == "gradient":
        return Saliency(model, output=output)
    if name == "gradient_x_input":
        return GradientXInput(model, output=output)
    if name == "guided_backprop":
        return GuidedBackprop(model, output=output)
    if name == "integrated_gradients":
        return IntegratedGradients(model, n_steps=ig_steps, output=output, batch_size=_PASS)
    if name != "smoothgrad":
        raise RobustlensError(f"unknown saliency method {name!r}; expected one of {', '.join(SALIENCY_METHODS)}.")
    if seed is None:
        return SmoothGrad(Saliency(model, output=output), sigma=sigma, n_samples=n_samples, batch_size=_PASS)
    return SmoothGrad(Saliency(model, output=output), sigma=sigma, n_samples=n_samples, seed=seed,
                      batch_size=_PASS)
