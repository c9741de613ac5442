"""Image parameterizations for feature visualization: what the optimiser actually changes.

Each parameterization is a small ``nn.Module`` whose ``forward()`` (no argument) returns a
(B, C, H, W) batch of pixels in [0, 1]; its parameters are what :func:`~.render.render`
optimises. Two are provided:

- :class:`FourierImage` — Lucid's default: a random spectrum scaled by 1 / frequency, an
  orthonormal inverse real FFT, a fixed colour decorrelation (RGB only) and a sigmoid.
  Grayscale (C = 1) images skip the colour step.
- :class:`PixelImage` — the pixels themselves behind a sigmoid (optionally colour-decorrelated);
  :meth:`PixelImage.from_images` starts from given images (e.g. a photograph).

Olah, Mordvintsev & Schubert (2017), *Feature Visualization*, Distill.
"""

from __future__ import annotations

import torch
from torch import nn

from robustlens.errors import RobustlensError

__all__ = ["COLOR_CORRELATION_SQRT", "FourierImage", "ImageParam", "PixelImage",
           "decorrelated_to_rgb"]

#: Square root of the colour correlation of natural images (Lucid's fixed 3 x 3 matrix, rows
#: are R, G, B). Decorrelated parameters are mapped to RGB with it (normalised by the largest
#: column norm).
COLOR_CORRELATION_SQRT = ((0.26, 0.09, 0.02),
                          (0.27, 0.00, -0.05),
                          (0.27, -0.09, 0.03))

_FOURIER_MAGIC = 4.0  # Lucid divides the inverse FFT by 4


def decorrelated_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Map (B, 3, H, W) decorrelated colour values to correlated RGB (before the sigmoid)."""
    m = torch.tensor(COLOR_CORRELATION_SQRT, dtype=x.dtype, device=x.device)
    m = m / m.norm(dim=0).max()
    return torch.einsum("bchw,rc->brhw", x, m)


def _check_shape(size: int | tuple[int, int], channels: int, batch_size: int) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1 or channels < 1 or batch_size < 1:
        raise RobustlensError(f"image size, channels and batch size must be positive; received "
                              f"size={size}, channels={channels}, batch_size={batch_size}.")
    return int(h), int(w)


class ImageParam(nn.Module):
    """Base class: ``forward()`` returns (B, C, H, W) pixels in [0, 1].

    Attributes:
        shape: (B, C, H, W) of the images it produces.
        decorrelate: whether RGB values pass through the colour decorrelation.
    """

    shape: tuple[int, int, int, int]
    decorrelate: bool

    def _to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        if self.decorrelate and x.shape[1] == 3:
            x = decorrelated_to_rgb(x)
        return torch.sigmoid(x)


class FourierImage(ImageParam):
    """Images parameterised by their (colour-decorrelated) Fourier spectrum.

    Args:
        size: side (or (H, W)) of the images, pixels.
        channels: 3 for RGB (colour-decorrelated when ``decorrelate``), 1 for grayscale.
        batch_size: images optimised together.
        sd: standard deviation of the initial random spectrum.
        decay_power: frequencies are scaled by 1 / max(f, 1 / max(H, W)) ** decay_power
            (f in cycles per pixel).
        decorrelate: use Lucid's colour decorrelation for RGB.
        generator: draws the initial spectrum (its device is the parameters' device).
    """

    def __init__(self, size: int | tuple[int, int], channels: int = 3, batch_size: int = 1, *,
                 sd: float = 0.01, decay_power: float = 1.0, decorrelate: bool = True,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        h, w = _check_shape(size, channels, batch_size)
        self.shape = (batch_size, channels, h, w)
        self.decorrelate = decorrelate
        device = generator.device if generator is not None else torch.device("cpu")
        fy = torch.fft.fftfreq(h, device=device)[:, None]
        fx = torch.fft.rfftfreq(w, device=device)[None, :]
        freq = (fx ** 2 + fy ** 2).sqrt()
        scale = 1.0 / freq.clamp_min(1.0 / max(h, w)) ** decay_power
        self.register_buffer("scale", scale, persistent=False)
        spectrum = torch.randn((batch_size, channels, h, w // 2 + 1, 2), generator=generator,
                               device=device) * sd
        self.spectrum = nn.Parameter(spectrum)

    def forward(self) -> torch.Tensor:
        """(B, C, H, W) pixels in [0, 1]."""
        _, _, h, w = self.shape
        scale: torch.Tensor = self.scale  # type: ignore[assignment]
        spec = torch.view_as_complex(self.spectrum) * scale
        x = torch.fft.irfft2(spec, s=(h, w), norm="ortho") / _FOURIER_MAGIC
        return self._to_pixels(x)


class PixelImage(ImageParam):
    """Images parameterised pixel by pixel, behind a sigmoid.

    Args:
        size: side (or (H, W)) of the images, pixels.
        channels: 3 (RGB) or 1 (grayscale), or any count.
        batch_size: images optimised together.
        sd: standard deviation of the initial (pre-sigmoid) values.
        decorrelate: use Lucid's colour decorrelation for RGB.
        generator: draws the initial values (its device is the parameters' device).
    """

    def __init__(self, size: int | tuple[int, int], channels: int = 3, batch_size: int = 1, *,
                 sd: float = 0.01, decorrelate: bool = False,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        h, w = _check_shape(size, channels, batch_size)
        self.shape = (batch_size, channels, h, w)
        self.decorrelate = decorrelate
        device = generator.device if generator is not None else torch.device("cpu")
        self.pixels = nn.Parameter(torch.randn(self.shape, generator=generator, device=device) * sd)

    @classmethod
    def from_images(cls, images: torch.Tensor, eps: float = 1e-3) -> PixelImage:
        """Start from given (B, C, H, W) pixels in [0, 1] (clipped to [eps, 1 - eps])."""
        if images.ndim != 4:
            raise RobustlensError(f"images must be (B, C, H, W); received {tuple(images.shape)}.")
        b, c, h, w = images.shape
        param = cls((h, w), c, b, sd=0.0, decorrelate=False)
        p = images.detach().to(torch.float32).clamp(eps, 1 - eps)
        param.pixels = nn.Parameter(torch.log(p) - torch.log1p(-p))
        return param

    def forward(self) -> torch.Tensor:
        """(B, C, H, W) pixels in [0, 1]."""
        return self._to_pixels(self.pixels)


def default_size(channels: int, input_size: int | None) -> int:
    """128 px for RGB images (Lucid), the model's own size for small grayscale models."""
    if input_size is not None and (channels != 3 or input_size < 128):
        return input_size
    return 128
