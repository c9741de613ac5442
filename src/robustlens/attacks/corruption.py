"""Common corruptions (Hendrycks & Dietterich 2019, ImageNet-C) as an attack-like object.

``Corruption("fog", severity=3)(model, images, labels)`` returns corrupted images; it never
asks the model for gradients (the model only judges the result in :meth:`Attack.run`).
Every corruption is a batched torch function of (B, C, H, W) pixels in [0, 1] (grayscale,
C = 1, or RGB, C = 3) on the images' device, drawing its randomness from one
``torch.Generator``: the same seed gives the same images.

Parameters. Hendrycks & Dietterich published two tables of severities: ImageNet-C's for 224
px images and CIFAR-10-C's for 32 px images. Images whose shorter side is at most 84 px
(about the geometric mean of 32 and 224; Fashion-MNIST's 28 px, the 8 px digits) use the
CIFAR-10-C table as it stands: its lengths in pixels (blur radii and sigmas, glass-blur
displacement, motion-blur length) were chosen by the authors for images where one pixel is
already a sizeable part of the object, and scaling them below one pixel would make the blurs
vanish; its elastic-transform parameters are fractions of the image side and stay fractions.
Larger images use the ImageNet-C table with every length multiplied by ``side / 224`` (so a
448 px image is blurred over twice as many pixels as a 224 px one); the fog fractal is drawn
at the reference resolution and resized. Intensities (noise levels, contrast, brightness,
JPEG quality, pixelation factor, zoom factors) do not depend on size. The reference's
elastic severities trade displacement size against smoothness, so its pixel change is not
monotone in the severity (its effect on accuracy is); at ImageNet-C sizes the same holds for
glass blur, whose stronger blur averages the displaced pixels back.

Deviations from the reference code, all for batching on any device: glass blur's sequential
local pixel swaps are replaced by one parallel random local displacement per iteration (the
same neighbourhood); elastic transform's affine warp and displacement field are composed
into one bilinear resampling; motion blur (ImageMagick's one-sided Gaussian line kernel) is
rebuilt from bilinear samples along the line. ``frost`` is left out: it blends six
photographs of frost that ship with the reference code, and a synthetic texture would be a
different corruption.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.attacks._loop import eval_mode
from robustlens.attacks.base import Attack, Outcome
from robustlens.errors import ConfigError, suggest

__all__ = ["CORRUPTIONS", "Corruption", "corrupt"]

Table = tuple[tuple[Any, ...], tuple[Any, ...]]  # (CIFAR-10-C, ImageNet-C), 5 severities each

# (small images, reference 32 px), (large images, reference 224 px): Hendrycks & Dietterich's
# make_cifar_c.py and make_imagenet_c.py.
_PARAMS: dict[str, Table] = {
    "gaussian_noise": ((0.04, 0.06, 0.08, 0.09, 0.10), (0.08, 0.12, 0.18, 0.26, 0.38)),
    "shot_noise": ((500, 250, 100, 75, 50), (60, 25, 12, 5, 3)),
    "impulse_noise": ((0.01, 0.02, 0.03, 0.05, 0.07), (0.03, 0.06, 0.09, 0.17, 0.27)),
    "defocus_blur": (((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
                     ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))),
    "glass_blur": (((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
                   ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))),
    "motion_blur": (((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
                    ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))),
    "zoom_blur": (((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
                  ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))),
    "snow": (((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
              (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
              (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
             ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
              (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
              (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))),
    "fog": (((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
            ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4))),
    "brightness": ((0.05, 0.1, 0.15, 0.2, 0.3), (0.1, 0.2, 0.3, 0.4, 0.5)),
    "contrast": ((0.75, 0.5, 0.4, 0.3, 0.15), (0.4, 0.3, 0.2, 0.1, 0.05)),
    "elastic_transform": (((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                           (0.1, 0.03, 0.03)),  # fractions of the 32 px side
                          ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02),
                           (0.12, 0.01, 0.02))),  # fractions of 244 px (the reference's constant)
    "pixelate": ((0.95, 0.9, 0.85, 0.75, 0.65), (0.6, 0.5, 0.4, 0.3, 0.25)),
    "jpeg_compression": ((80, 65, 58, 50, 40), (25, 18, 15, 10, 7)),
}

CORRUPTIONS: tuple[str, ...] = tuple(_PARAMS)
"""The corruption names, in ImageNet-C's order (noise, blur, weather, digital; no ``frost``)."""

_SMALL_SIDE = 84  # about the geometric mean of the two reference sizes, 32 and 224


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma (ITU-R 601 weights for RGB; the image itself for grayscale)."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel of ``x`` with a 2-D ``kernel`` (kh, kw), reflected borders."""
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    mode = "reflect" if ph < x.shape[2] and pw < x.shape[3] else "replicate"
    b, c, h, w = x.shape
    padded = F.pad(x.reshape(b * c, 1, h, w), (pw, pw, ph, ph), mode=mode)
    return F.conv2d(padded, kernel.to(x)[None, None]).view(b, c, h, w)


def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """1-D normalised Gaussian of ``sigma`` pixels, radius ``ceil(truncate * sigma)``."""
    radius = max(1, math.ceil(truncate * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / max(sigma, 1e-6)) ** 2)
    return (k / k.sum()).float()


def _gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    k = _gaussian_kernel(sigma, truncate)
    return _filter(_filter(x, k[None, :]), k[:, None])


def _resample(x: torch.Tensor, grid: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """Bilinear samples of ``x`` at ``grid`` (B, H, W, 2), normalised (x, y) coordinates."""
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode=padding, align_corners=False)


def _pixel_grid(b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """(B, H, W, 2) pixel-centre coordinates (x, y) in pixels."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys], dim=-1).expand(b, h, w, 2)


def _to_normalised(p: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pixel coordinates (x, y) -> grid_sample's [-1, 1] coordinates (align_corners=False)."""
    scale = torch.tensor([2.0 / w, 2.0 / h], device=p.device)
    return (p + 0.5) * scale - 1.0


def _motion_blur(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick's motion blur: a one-sided line of ``2 * ceil(radius) + 1`` taps weighted by a
    Gaussian of ``sigma`` pixels, along ``angles`` (B,) degrees, edge pixels repeated."""
    b, _, h, w = x.shape
    taps = 2 * math.ceil(radius) + 1
    kernel = torch.exp(-0.5 * (torch.arange(taps, dtype=torch.float64) / max(sigma, 1e-6)) ** 2)
    weights = (kernel / kernel.sum()).tolist()
    rad = angles.to(x.device, torch.float32) * (math.pi / 180)
    direction = torch.stack([torch.cos(rad), torch.sin(rad)], dim=1).view(b, 1, 1, 2)
    base = _pixel_grid(b, h, w, x.device)
    out = torch.zeros_like(x)
    for i, wt in enumerate(weights):
        if wt < 1e-8:
            break
        out += wt * _resample(x, _to_normalised(base + i * direction, h, w))
    return out


def _zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom into the centre by ``factor`` >= 1, keeping the size (the reference's clipped zoom)."""
    theta = torch.tensor([[1 / factor, 0, 0], [0, 1 / factor, 0]], device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return _resample(x, grid)


def _plasma(b: int, size: int, decay: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """(B, size, size) diamond-square fractals in [0, 1] (``size`` a power of two)."""
    m = torch.zeros(b, size, size, device=device, dtype=torch.float64)
    step, wibble = size, 100.0

    def wibbled(a: torch.Tensor) -> torch.Tensor:
        u = torch.rand(a.shape, generator=g, device=device, dtype=torch.float64)
        return a / 4 + wibble * (2 * u - 1) * wibble

    while step >= 2:
        half = step // 2
        corners = m[:, 0:size:step, 0:size:step]
        sq = corners + corners.roll(-1, 1)
        sq = sq + sq.roll(-1, 2)
        m[:, half:size:step, half:size:step] = wibbled(sq)
        centres = m[:, half:size:step, half:size:step]
        corners = m[:, 0:size:step, 0:size:step]
        m[:, 0:size:step, half:size:step] = wibbled(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        m[:, half:size:step, 0:size:step] = wibbled(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step //= 2
        wibble /= decay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return (m / m.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)).float()


# --- JPEG (baseline, 4:2:0 chroma subsampling, libjpeg's quality scaling) -------------------
_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
         14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
           47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32


def _quant_table(base: list[int], quality: int) -> torch.Tensor:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    q = [min(255, max(1, (v * scale + 50) // 100)) for v in base]
    return torch.tensor(q, dtype=torch.float32).view(8, 8)


def _dct_matrix() -> torch.Tensor:
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.float()


def _jpeg_plane(p: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Quantise one (B, H, W) plane in [0, 255] through the 8 x 8 block DCT."""
    b, h, w = p.shape
    ph, pw = -h % 8, -w % 8
    p = F.pad(p[:, None], (0, pw, 0, ph), mode="replicate")[:, 0] - 128
    blocks = p.unfold(1, 8, 8).unfold(2, 8, 8)  # (B, h/8, w/8, 8, 8)
    d = _dct_matrix().to(p)
    q = table.to(p)
    coef = torch.round(d @ blocks @ d.T / q) * q
    back = (d.T @ coef @ d).permute(0, 1, 3, 2, 4).reshape(b, h + ph, w + pw)
    return back[:, :h, :w] + 128


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    y255 = x * 255
    if x.shape[1] == 1:
        out = _jpeg_plane(y255[:, 0], _quant_table(_LUMA, quality))[:, None]
        return (torch.round(out) / 255).clamp(0, 1)
    r, g_, b_ = y255.unbind(1)
    y = 0.299 * r + 0.587 * g_ + 0.114 * b_
    cb = 128 - 0.168736 * r - 0.331264 * g_ + 0.5 * b_
    cr = 128 + 0.5 * r - 0.418688 * g_ - 0.081312 * b_
    h, w = x.shape[2:]
    y = _jpeg_plane(y, _quant_table(_LUMA, quality))
    chroma = []
    for plane in (cb, cr):
        small = F.avg_pool2d(F.pad(plane[:, None], (0, w % 2, 0, h % 2), mode="replicate"), 2)[:, 0]
        small = _jpeg_plane(small, _quant_table(_CHROMA, quality))
        up = F.interpolate(small[:, None], scale_factor=2, mode="bilinear", align_corners=False)
        chroma.append(up[:, 0, :h, :w])  # libjpeg's "fancy" (triangle) upsampling
    cb, cr = chroma[0] - 128, chroma[1] - 128
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], dim=1)
    return (torch.round(rgb.clamp(0, 255)) / 255).clamp(0, 1)


# --- the corruptions: (x, parameter, scale, generator) -> corrupted x --------------------------
def _gaussian_noise(x: torch.Tensor, c: Any, s: float, g: torch.Generator) -> torch.Tensor:
    return x + float(c) * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)


def _shot_noise(x: torch.Tensor, c: Any, s: float, g: torch.Generator) -> torch.Tensor:
    lam = float(c)
    return torch.poisson(x * lam, generator=g) / lam


def _impulse_noise(x: torch.Tensor, c: Any, s: float, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape, generator=g, device=x.device) < float(c)
    salt = torch.rand(x.shape, generator=g, device=x.device) < 0.5
    return torch.where(flip, salt.to(x.dtype), x)


def _defocus_blur(x: torch.Tensor, c: Any, s: float, g: torch.Generator) -> torch.Tensor:
    radius, alias = (float(v) * s for v in c)
    r = max(1, math.ceil(radius)) + 1
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    disk = ((t[None, :] ** 2 + t[:, None] ** 2) <= radius ** 2).float()
    disk /= disk.sum()
    taps = torch.arange(-2, 3.0) if radius > 8 else torch.arange(-1, 2.0)  # the reference's 3 x 3 or 5 x 5
    k = torch.exp(-0.5 * (taps / max(alias, 1e-6)) ** 2)
    k = k / k.sum()
    p = len(taps) // 2
    disk = F.conv2d(F.pad(disk[None, None], (p, p, p, p)), (k[:, None] * k[None, :])[None, None])[0, 0]
    return _filter(x, disk / disk.sum())


def _glass_blur(x: torch.Tensor, c: Any, s: float, g: torch.Generator) -> torch.Tensor:
    sigma, delta, iterations = c
    sigma = float(sigma) * s
    d = max(1, round(delta * s))
    b, ch, h, w = x.shape
    x = _gaussian_blur(x, sigma)
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    for _ in range(int(iterations)):
        dy = torch.randint(-d, d, (b, h, w), generator=g, device=x.device)
        dx = torch.randint(-d, d, (b, h, w), generator=g, device=x.device)
        src = (ys + dy).clamp(0, h - 1) * w + (xs + dx).clamp(0, w - 1)
        x = x.flatten(2).gather(2, src.flatten(1)[:, None].expand(b, ch, h * w)).view(b, ch, h, w)
    return _gaussian_blur(x, sigma)


def _motion(x: torch.Tensor, c: Any, s: float, g: torch.Generator) -> torch.Tensor:
    radius, sigma = (float(v) * s for v in c)
    angles = torch.rand(x.shape[0], generator=g, device=x.device) * 90 - 45
    return _motion_blur(x, radius, sigma, angles)


def _zoom_blur(x: torch.Tensor, c: Any, s: float, g: torch.Generator) -> torch.Tensor:
    stop, step = c
    factors = [1 + i * step for i in range(math.ceil((stop - 1) / step - 1e-9))]
    out = x.clone()
    for z in factors:
        out += _zoom(x, z)
    return out / (len(factors) + 1)


def _snow(x: torch.Tensor, c: Any, s: float, g: torch.Generator) -> torch.Tensor:
    loc, scale, zoom, threshold, radius, sigma, blend = (float(v) for v in c)
    b, _, h, w = x.shape
    layer = loc + scale * torch.randn((b, 1, h, w), generator=g, device=x.device, dtype=x.dtype)
    layer = _zoom(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    angles = torch.rand(b, generator=g, device=x.device) * 90 - 135
    layer = _motion_blur(layer, radius * s, sigma * s, angles)
    x = blend * x + (1 - blend) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return x + layer + layer.flip(2, 3)


def _fog(x: torch.Tensor, c: Any, s: float, g: torch.Generator) -> torch.Tensor:
    strength, decay = (float(v) for v in c)
    b, _, h, w = x.shape
    ref_h, ref_w = max(1, round(h / s)), max(1, round(w / s))
    size = 1 << (max(ref_h, ref_w, 2) - 1).bit_length()  # the next power of two
    fractal = _plasma(b, size, decay, g, x.device)[:, None, :ref_h, :ref_w]
    if (ref_h, ref_w) != (h, w):
        fractal = F.interpolate(fractal, size=(h, w), mode="area" if ref_h >= h else "bilinear")
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * fractal.to(x.dtype)) * peak / (peak + strength)


def _brightness(x: torch.Tensor, c: Any, s: float, g: torch.Generator) -> torch.Tensor:
    # in HSV, every RGB channel is V * (1 - S * k(H)): adding c to V with H, S fixed scales RGB
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + float(c)).clamp(0, 1)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new.expand_as(x))


def _contrast(x: torch.Tensor, c: Any, s: float, g: torch.Generator) -> torch.Tensor:
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * float(c) + means


def _elastic(x: torch.Tensor, c: Any, s: float, g: torch.Generator) -> torch.Tensor:
    b, _, h, w = x.shape
    side = min(h, w)
    unit = side if side <= _SMALL_SIDE else 244 * s  # the reference's lengths are fractions of the side
    alpha, sigma, affine = (float(v) * unit for v in c)
    centre = torch.tensor([w // 2, h // 2], dtype=torch.float32, device=x.device)
    half = side // 3
    pts1 = torch.stack([centre + half, centre + torch.tensor([half, -half], device=x.device), centre - half])
    pts2 = pts1 + (torch.rand((b, 3, 2), generator=g, device=x.device) * 2 - 1) * affine
    # the affine map pts1 -> pts2 as (B, 3, 2) for [x, y, 1] rows; the output samples its inverse
    src = torch.cat([pts2, torch.ones(b, 3, 1, device=x.device)], dim=2)
    inverse = torch.linalg.solve(src, pts1.expand(b, 3, 2))
    noise = torch.rand((b, 2, h, w), generator=g, device=x.device) * 2 - 1
    disp = _gaussian_blur(noise, max(sigma, 1e-6), truncate=3.0) * alpha if alpha > 0 else torch.zeros_like(noise)
    p = _pixel_grid(b, h, w, x.device) + disp.permute(0, 2, 3, 1)
    p = torch.cat([p, torch.ones(b, h, w, 1, device=x.device)], dim=3) @ inverse[:, None]
    return _resample(x, _to_normalised(p, h, w), padding="reflection")


def _pixelate(x: torch.Tensor, c: Any, s: float, g: torch.Generator) -> torch.Tensor:
    h, w = x.shape[2:]
    small = F.adaptive_avg_pool2d(x, (max(1, int(h * float(c))), max(1, int(w * float(c)))))
    return F.interpolate(small, size=(h, w), mode="nearest")


def _jpeg_compression(x: torch.Tensor, c: Any, s: float, g: torch.Generator) -> torch.Tensor:
    return _jpeg(x, int(c))


_FUNCTIONS: dict[str, Callable[[torch.Tensor, Any, float, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur, "glass_blur": _glass_blur, "motion_blur": _motion,
    "zoom_blur": _zoom_blur, "snow": _snow, "fog": _fog, "brightness": _brightness,
    "contrast": _contrast, "elastic_transform": _elastic, "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}


def check_corruption(name: object, severity: object) -> None:
    """Raise :class:`ConfigError` unless ``name`` is in :data:`CORRUPTIONS` and ``severity`` in 1..5."""
    if not isinstance(name, str) or name not in _PARAMS:
        hint = suggest(name, CORRUPTIONS) if isinstance(name, str) else ""
        extra = " ('frost' needs the reference's frost photographs and is not provided.)" \
            if name == "frost" else ""
        raise ConfigError(f"unknown corruption {name!r}.{hint}{extra} Known corruptions: "
                          f"{', '.join(CORRUPTIONS)}.")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ConfigError(f"a corruption's severity must be an integer 1..5; received {severity!r}.")


def corrupt(images: torch.Tensor, corruption: str, severity: int = 1, *,
            generator: torch.Generator | None = None, seed: int = 0) -> torch.Tensor:
    """Apply one common corruption to a batch.

    Args:
        images: (B, C, H, W) pixels in [0, 1], C = 1 or 3, on any device.
        corruption: one of :data:`CORRUPTIONS`.
        severity: 1 (mild) to 5 (strong), Hendrycks & Dietterich's levels.
        generator: source of randomness, on the images' device; by default one seeded with ``seed``.
        seed: seed of the default generator.

    Returns:
        (B, C, H, W) corrupted images in [0, 1], detached.
    """
    check_corruption(corruption, severity)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ConfigError("corruptions take (B, C, H, W) images with C = 1 (grayscale) or 3 (RGB); "
                          f"received shape {tuple(images.shape)}.")
    if generator is None:
        generator = torch.Generator(device=images.device).manual_seed(seed)
    side = min(images.shape[2:])
    small = side <= _SMALL_SIDE
    scale = 1.0 if small else side / 224
    param = _PARAMS[corruption][0 if small else 1][severity - 1]
    with torch.no_grad():
        out = _FUNCTIONS[corruption](images.detach(), param, scale, generator)
    return out.clamp(0.0, 1.0)


@dataclass(frozen=True)
class Corruption(Attack):
    """A common corruption called like an attack: ``Corruption("fog", severity=3)(model, x, y)``.

    The model is never asked for gradients; :meth:`Attack.run` adds its verdict (``success``:
    misclassified). A corruption has no radius: ``eps`` is ``nan`` and ``norm`` is ``"none"``.

    Args:
        corruption: the corruption's name, one of :data:`CORRUPTIONS`.
        severity: 1 (mild) to 5 (strong).
        seed: seed of the default generator (the call's ``generator`` overrides it).
    """

    corruption: str
    severity: int = 1
    seed: int = 0
    eps: float = field(default=math.nan, init=False)
    norm: str = field(default="none", init=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_corruption(self.corruption, self.severity)

    @property
    def name(self) -> str:
        return self.corruption

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             generator: torch.Generator | None, targets: torch.Tensor | None,
             early_stop: bool, scored: bool) -> Outcome:
        if targets is not None:
            raise ConfigError("a corruption is untargeted; it takes no targets.")
        out = corrupt(images, self.corruption, self.severity, generator=generator, seed=self.seed)
        if not scored:
            return Outcome(out, None)
        with eval_mode(model), torch.inference_mode():
            success = model(out).argmax(1) != labels
        return Outcome(out, success)
