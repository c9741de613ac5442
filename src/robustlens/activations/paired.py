"""Clean and adversarial recordings that share the model's noise (stochastic models).

A stochastic model (VOneNet's Poisson-like noise, dropout left on) gives a different
activation at every forward pass, so comparing one clean and one adversarial pass mostly
measures the noise. :func:`record_paired` runs both passes from the same random state, so
they see the same noise sample, and can average each over several samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustlens.activations.layers import LayerSpec, layer_aliases
from robustlens.activations.recorder import Recording, record
from robustlens.errors import RobustlensError

__all__ = ["record_paired"]


def _seeded_forward(model: nn.Module, images: torch.Tensor, layers: LayerSpec | Sequence[LayerSpec]
                    | None, seed: int) -> Recording:
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.manual_seed(seed)
        with record(model, layers) as rec:
            model(images)
    return rec


def _accumulate(total: dict[str, torch.Tensor], rec: Recording) -> None:
    for name, value in rec.items():
        if name in total:
            total[name] += value.double()
        else:
            total[name] = value.double()


@torch.no_grad()
def record_paired(model: nn.Module, clean: torch.Tensor, adversarial: torch.Tensor,
                  layers: LayerSpec | Sequence[LayerSpec] | None = None, *, n_samples: int = 1,
                  seed: int = 0) -> tuple[Recording, Recording]:
    """Record clean and adversarial activations under the same noise samples.

    Pass ``s`` (0 <= s < ``n_samples``) of both inputs starts from ``torch.manual_seed(seed + s)``
    inside :func:`torch.random.fork_rng`, so the caller's random state is untouched and a model
    drawing its noise from PyTorch's default generators (CPU, and the inputs' CUDA device)
    draws the same noise for both inputs. With ``n_samples > 1`` each activation is the mean
    over the samples (computed in float64, returned in the activation's dtype). For a
    deterministic model the result equals a plain :func:`record`.

    Args:
        model: any ``nn.Module`` (left in its current mode).
        clean: (B, ...) clean inputs.
        adversarial: (B, ...) adversarial inputs, the same shape as ``clean``.
        layers: as in :func:`record`.
        n_samples: noise samples to average, >= 1.
        seed: seed of the first sample.

    Returns:
        The clean and the adversarial :class:`Recording`, with the same names.
    """
    if clean.shape != adversarial.shape:
        raise RobustlensError(f"clean and adversarial inputs differ in shape: {tuple(clean.shape)} "
                              f"vs {tuple(adversarial.shape)}.")
    if n_samples < 1:
        raise RobustlensError(f"n_samples must be >= 1; received {n_samples}.")
    results = []
    for images in (clean, adversarial):
        if n_samples == 1:
            results.append(_seeded_forward(model, images, layers, seed))
            continue
        total: dict[str, torch.Tensor] = {}
        dtypes: dict[str, torch.dtype] = {}
        for s in range(n_samples):
            rec = _seeded_forward(model, images, layers, seed + s)
            dtypes.update({k: v.dtype for k, v in rec.items()})
            _accumulate(total, rec)
        mean = Recording(layer_aliases(model))
        for name, value in total.items():
            mean._put(name, (value / n_samples).to(dtypes[name]))
        results.append(mean)
    return results[0], results[1]
