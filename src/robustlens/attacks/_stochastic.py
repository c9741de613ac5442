"""Stochastic models: detection, the no-EOT warning, and freezing a model's noise.

A model is stochastic when two forward passes of the same input differ (VOneNets with their
noise on, dropout kept active at test time, ...). Attacking such a model with the gradient of
a single noise sample is a weak attack: use expectation over transformation (EOT,
``eot_samples > 1``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["FixedNoise", "StochasticModelWarning", "effective_eot", "is_stochastic", "preserve_global_rng",
           "warn_if_stochastic"]

log = logging.getLogger(__name__)


class StochasticModelWarning(UserWarning):
    """A stochastic model is attacked without expectation over transformation."""


@contextmanager
def preserve_global_rng(device: torch.device) -> Iterator[None]:
    """Run a block without consuming the global torch RNG stream of the CPU and ``device``."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        yield


def is_stochastic(model: nn.Module, images: torch.Tensor, *, max_images: int = 2,
                  atol: float = 0.0) -> bool:
    """Whether two forward passes of the same images give different logits.

    Runs the model as it is (call it inside :func:`~robustlens.attacks.eval_mode` to test
    the evaluation behaviour), without gradients, on the first ``max_images`` images, and
    without consuming the global RNG stream (the passes run on a forked RNG).

    Args:
        model: any classifier.
        images: (B, C, H, W) pixels in [0, 1].
        max_images: how many of the images to use.
        atol: largest absolute logit difference still counted as equal.
    """
    x = images[:max_images].detach()
    with torch.inference_mode(), preserve_global_rng(x.device):
        a, b = model(x), model(x)
    return bool(((a - b).abs() > atol).any())


def warn_if_stochastic(model: nn.Module, images: torch.Tensor, attack_name: str) -> bool:
    """Warn (:class:`StochasticModelWarning`) when ``model`` is stochastic; return whether it is."""
    if not is_stochastic(model, images):
        return False
    msg = (f"{attack_name}: the model is stochastic (two passes of the same image differ) and the "
           "attack uses a single noise sample per gradient (eot_samples=1), which "
           "underestimates its vulnerability. Set eot_samples (e.g. 10, the VOneNet protocol) "
           "to average the gradient over the model's noise.")
    log.debug(msg)
    warnings.warn(msg, StochasticModelWarning, stacklevel=4)
    return True


def effective_eot(model: nn.Module, images: torch.Tensor, eot_samples: int, *, warn: bool,
                  attack_name: str) -> int:
    """The EOT samples an attack needs on ``model``: 1 for a deterministic model (k samples of
    it are k copies of one gradient), else ``eot_samples``; with one sample on a stochastic
    model, warn (when ``warn``) that the attack underestimates its vulnerability."""
    if eot_samples == 1:
        if warn:
            warn_if_stochastic(model, images, attack_name)
        return 1
    return eot_samples if is_stochastic(model, images) else 1


class FixedNoise(nn.Module):
    """A stochastic model with its noise frozen to one sample (Popovic et al. 2022's check).

    Every forward pass reseeds a forked global RNG with ``seed`` before running ``model``,
    so a model that draws its noise from the global torch RNG sees the same noise sample on
    every call with the same input shape. The caller's RNG stream is left untouched. Models
    that draw noise from their own generator are not frozen by this wrapper; check with
    :func:`is_stochastic`.

    Args:
        model: the stochastic model.
        seed: which noise sample.
    """

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.seed = seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with preserve_global_rng(x.device):
            torch.manual_seed(self.seed)
            out: torch.Tensor = self.model(x)
        return out
