"""DeepDream: amplify what a layer already sees in a photograph, octave by octave.

Mordvintsev, Olah & Tyka (2015), *Inceptionism: Going Deeper into Neural Networks*. The image
is processed from its coarsest octave (scale ``octave_scale ** -(octaves - 1)``) to full
size; at each octave a few normalised gradient-ascent steps on the objective (by default the
mean squared activation of a layer) are taken on a randomly rolled (jittered) copy, and the
detail added so far is carried up to the next octave.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.activations.layers import ChannelRef
from robustlens.errors import RobustlensError
from robustlens.models.device import model_device
from robustlens.visualization._hooks import check_images, module_training
from robustlens.visualization.objectives import Objective, channel, layer
from robustlens.visualization.render import _evaluate, _forked_rng, _resize

__all__ = ["deepdream"]


def deepdream(model: nn.Module, images: torch.Tensor, objective: Objective | str | ChannelRef,
              *, octaves: int = 4, octave_scale: float = 1.4, steps: int = 10,
              step_size: float = 0.01, jitter: int = 8,
              input_size: int | tuple[int, int] | None = None, seed: int = 0) -> torch.Tensor:
    """Dream on ``images``.

    Args:
        model: any module taking (B, C, H, W) pixels in [0, 1].
        images: (B, C, H, W) pixels in [0, 1], e.g. a photograph.
        objective: an :class:`~.objectives.Objective`; a layer call name (``"layer3"``,
            ``"layer1.0.relu:2"``): maximise its mean squared activation; or a channel
            ``"layer#C"``: maximise its mean.
        octaves: number of scales.
        octave_scale: ratio between successive scales (> 1).
        steps: gradient steps per octave.
        step_size: each step moves pixels by ``step_size`` times the gradient divided by its
            mean absolute value (pixel units).
        jitter: maximum random roll per step, pixels (at full scale).
        input_size: resize every view to this side before the model (for models with a
            fixed input size); default: the view's own size.
        seed: seeds the jitter and the model's noise.

    Returns:
        (B, C, H, W) the dreamed images in [0, 1], detached.
    """
    check_images(images)
    if octaves < 1 or octave_scale <= 1 or steps < 0 or step_size <= 0 or jitter < 0:
        raise RobustlensError(f"need octaves >= 1, octave_scale > 1, steps >= 0, step_size > 0 and "
                              f"jitter >= 0; received octaves={octaves}, octave_scale="
                              f"{octave_scale}, steps={steps}, step_size={step_size}, "
                              f"jitter={jitter}.")
    if isinstance(objective, Objective):
        obj = objective
    elif isinstance(objective, str) and "#" not in objective:
        obj = layer(objective)  # text without "#" names a layer call (DeepDream's unit)
    else:
        obj = channel(objective)
    h, w = images.shape[-2:]
    sizes = [(max(1, round(h / octave_scale ** i)), max(1, round(w / octave_scale ** i)))
             for i in reversed(range(octaves))]
    base = images.detach()
    gen = torch.Generator().manual_seed(seed)
    detail = torch.zeros_like(F.interpolate(base, size=sizes[0], mode="bilinear",
                                            align_corners=False))
    device = model_device(model)
    with module_training(model, False), _forked_rng(device), torch.enable_grad():
        torch.manual_seed(seed)
        for size in sizes:
            octave_base = F.interpolate(base, size=size, mode="bilinear", align_corners=False,
                                        antialias=True)
            detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
            x = (octave_base + detail).clamp(0, 1)
            shift = max(0, round(jitter * size[0] / h))
            for _ in range(steps):
                dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=gen))
                rolled = x.roll((dy, dx), dims=(-2, -1)).requires_grad_(True)
                value = _evaluate(model, obj, _resize(rolled, input_size)).sum()
                (g,) = torch.autograd.grad(value, rolled)
                g = g.roll((-dy, -dx), dims=(-2, -1))
                g = g / (g.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-8)
                x = (x + step_size * g).clamp(0, 1).detach()
            detail = x - octave_base
    return x.detach()
