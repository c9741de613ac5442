"""Random image transforms applied at every step of feature visualization.

A transform is a callable ``(images, generator) -> images`` on (B, C, H, W) pixels; the
random choices come from the CPU ``torch.Generator`` it is given (never the global RNG) and
are made once per call for the whole batch. :func:`standard_transforms` builds Lucid's
default chain, with pixel amounts scaled to the image size (its numbers are for 128 px).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from robustlens.errors import RobustlensError

__all__ = ["Transform", "compose", "jitter", "pad", "random_rotate", "random_scale",
           "standard_transforms"]

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

#: Lucid's scales and rotation angles (degrees; 0 is listed five extra times).
STANDARD_SCALES = tuple(1 + (i - 5) / 50 for i in range(11))
STANDARD_ANGLES = tuple(range(-10, 11)) + (0,) * 5


def _pick(options: Sequence[float], generator: torch.Generator) -> float:
    return float(options[int(torch.randint(len(options), (), generator=generator))])


def pad(width: int, value: float = 0.5) -> Transform:
    """Pad every side by ``width`` pixels with the constant ``value`` (pixel units)."""
    if width < 0:
        raise RobustlensError(f"pad width must be >= 0; received {width}.")

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return F.pad(x, (width,) * 4, value=value) if width else x

    return apply


def jitter(pixels: int) -> Transform:
    """Crop a random (H - d) x (W - d) window, d = ``pixels``: a shift of up to d pixels."""
    if pixels < 0:
        raise RobustlensError(f"jitter must be >= 0 pixels; received {pixels}.")

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if pixels == 0:
            return x
        h, w = x.shape[-2:]
        dy, dx = (int(v) for v in torch.randint(pixels + 1, (2,), generator=generator))
        return x[..., dy:h - pixels + dy, dx:w - pixels + dx]

    return apply


def random_scale(scales: Sequence[float] = STANDARD_SCALES) -> Transform:
    """Resize (bilinear) by a factor drawn from ``scales``."""
    if not scales or min(scales) <= 0:
        raise RobustlensError(f"scales must be positive numbers; received {scales!r}.")

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        s = _pick(scales, generator)
        if s == 1:
            return x
        h, w = x.shape[-2:]
        size = (max(1, round(h * s)), max(1, round(w * s)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    return apply


def random_rotate(angles: Sequence[float] = STANDARD_ANGLES, fill: float = 0.5) -> Transform:
    """Rotate about the centre by an angle (degrees) drawn from ``angles``.

    Pixels rotated in from outside take the value ``fill``.
    """
    if not angles:
        raise RobustlensError("angles must not be empty.")

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        a = math.radians(_pick(angles, generator))
        if a == 0:
            return x
        c, s = math.cos(a), math.sin(a)
        theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        # rotate x - fill so that the zeros brought in from outside become ``fill``
        return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False) + fill

    return apply


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply ``transforms`` in order."""
    chain = list(transforms)

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for t in chain:
            x = t(x, generator)
        return x

    return apply


def standard_transforms(image_size: int = 128) -> list[Transform]:
    """Lucid's chain, its pixel amounts scaled to ``image_size`` (numbers for 128 px).

    pad 12 px (constant 0.5), jitter 8 px, scale from {0.90, 0.92, ..., 1.10}, rotate by
    -10..+10 degrees (extra weight on 0), jitter 4 px. At 28 px: pad 3, jitter 2 and 1.
    """
    f = image_size / 128
    return [pad(max(1, round(12 * f))), jitter(max(1, round(8 * f))), random_scale(),
            random_rotate(), jitter(max(1, round(4 * f)))]
