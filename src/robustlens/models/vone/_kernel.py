"""The Gabor kernel of a VOneBlock filter (spec section 5)."""

from __future__ import annotations

import math

import numpy as np
import torch

from robustlens.errors import ConfigError

__all__ = ["gabor_bank", "gabor_kernel"]


def _check_ksize(ksize: int) -> int:
    valid = isinstance(ksize, int | np.integer) and not isinstance(ksize, bool)
    if not valid or ksize < 1 or ksize % 2 == 0:
        raise ConfigError(
            f"ksize must be a positive odd integer (the kernel is centred on a pixel); "
            f"received {ksize!r} (the reference uses 25)."
        )
    return int(ksize)


def gabor_bank(
    frequency: np.ndarray,
    sigma_x: np.ndarray,
    sigma_y: np.ndarray,
    theta: np.ndarray,
    phase: np.ndarray,
    ksize: int,
) -> torch.Tensor:
    """Evaluate N Gabor kernels at once (vectorised :func:`gabor_kernel`).

    Args:
        frequency: (N,) carrier frequency, cycles/pixel.
        sigma_x: (N,) envelope s.d. along the carrier, pixels.
        sigma_y: (N,) envelope s.d. across the carrier, pixels.
        theta: (N,) orientation, radians; 0 = carrier along rows (horizontal stripes).
        phase: (N,) carrier phase, radians.
        ksize: odd kernel side k, pixels.

    Returns:
        (N, k, k) float32 tensor, computed in float64.
    """
    k = _check_ksize(ksize)
    arrays = [np.atleast_1d(np.asarray(a, dtype=np.float64))
              for a in (frequency, sigma_x, sigma_y, theta, phase)]
    f, sx, sy, th, ph = (a[:, None, None] for a in np.broadcast_arrays(*arrays))
    if np.any(sx <= 0) or np.any(sy <= 0):
        raise ConfigError("sigma_x and sigma_y must be positive (pixels).")
    w = k // 2
    offsets = np.arange(k, dtype=np.float64) - w
    r = offsets[None, :, None]  # row offset, grows downwards
    c = offsets[None, None, :]  # column offset, grows rightwards
    cos_t, sin_t = np.cos(th), np.sin(th)
    x_rot = r * cos_t + c * sin_t
    y_rot = -r * sin_t + c * cos_t
    envelope = np.exp(-0.5 * (x_rot**2 / sx**2 + y_rot**2 / sy**2)) / (2.0 * math.pi * sx * sy)
    kernel = envelope * np.cos(2.0 * math.pi * f * x_rot + ph)
    return torch.from_numpy(kernel.astype(np.float32))


def gabor_kernel(
    frequency: float,
    sigma_x: float,
    sigma_y: float,
    theta: float,
    phase: float,
    ksize: int,
) -> torch.Tensor:
    """One Gabor kernel ``K[a, b]`` as the VOneBlock uses it (spec section 5).

    With offsets r = a - k//2 (row, downwards) and c = b - k//2 (column, rightwards),
    x' = r cos(theta) + c sin(theta), y' = -r sin(theta) + c cos(theta) and

        K = exp(-(x'^2 / sigma_x^2 + y'^2 / sigma_y^2) / 2) / (2 pi sigma_x sigma_y)
            * cos(2 pi frequency x' + phase).

    No zero-mean correction and no renormalisation after truncation to k x k.
    A VOneBlock filter with peak spatial frequency ``sf`` (cycles/degree) at ``ppd`` pixels
    per degree has ``frequency = sf / ppd``, ``sigma_x = nx / frequency`` and
    ``sigma_y = ny / frequency``.

    Args:
        frequency: carrier frequency, cycles/pixel.
        sigma_x: envelope s.d. along the carrier, pixels.
        sigma_y: envelope s.d. across the carrier, pixels.
        theta: orientation, radians; 0 gives horizontal stripes, pi/2 vertical ones.
        phase: carrier phase, radians.
        ksize: odd kernel side k, pixels.

    Returns:
        (k, k) float32 tensor.

    Raises:
        ConfigError: even or non-positive ``ksize``, non-positive sigmas.
    """
    return gabor_bank(np.array([frequency]), np.array([sigma_x]), np.array([sigma_y]),
                      np.array([theta]), np.array([phase]), ksize)[0]
