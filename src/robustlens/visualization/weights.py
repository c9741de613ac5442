"""Weight visualization: first-layer kernels as a grid; a VOneBlock's Gabor bank by orientation
and spatial frequency.

:func:`weight_grid` returns the grid as a tensor (pixels in [0, 1]); :func:`plot_weights`
and :func:`plot_gabor_layout` return matplotlib figures (never shown or saved).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from robustlens.errors import RobustlensError
from robustlens.models.vone import VOneBlock

__all__ = ["first_conv", "gabor_layout", "plot_gabor_layout", "plot_weights", "weight_grid"]


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The model's first ``nn.Conv2d`` (in module definition order)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise RobustlensError(f"{type(model).__name__} has no nn.Conv2d layer.")


def weight_grid(weight: torch.Tensor, columns: int | None = None, padding: int = 1
                ) -> torch.Tensor:
    """Kernels as one image grid, each kernel normalised on its own.

    Each (C_in, k, k) kernel is scaled symmetrically: mid-grey (0.5) is 0 and the kernel's
    largest absolute weight reaches 0 or 1. Kernels with 3 input channels are shown in
    colour; with 1, in grey; with any other count, the mean over input channels in grey.

    Args:
        weight: (C_out, C_in, k_h, k_w) convolution weights.
        columns: kernels per row (default: about square).
        padding: pixels between kernels (value 1, white).

    Returns:
        (3 or 1, rows * (k_h + padding) + padding, columns * (k_w + padding) + padding)
        pixels in [0, 1].
    """
    if weight.ndim != 4:
        raise RobustlensError(f"expected (C_out, C_in, kh, kw) weights; received "
                              f"{tuple(weight.shape)}.")
    w = weight.detach().float().cpu()
    if w.shape[1] not in (1, 3):
        w = w.mean(1, keepdim=True)
    n, c, kh, kw = w.shape
    scale = w.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    w = 0.5 + 0.5 * w / scale
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.ones(c, rows * (kh + padding) + padding, cols * (kw + padding) + padding)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = padding + r * (kh + padding), padding + q * (kw + padding)
        grid[:, top:top + kh, left:left + kw] = w[i]
    return grid


def _show(ax: object, image: torch.Tensor) -> None:
    arr = image.permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        ax.imshow(arr[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")  # type: ignore[attr-defined]
    else:
        ax.imshow(arr.clip(0, 1), interpolation="nearest")  # type: ignore[attr-defined]
    ax.set_axis_off()  # type: ignore[attr-defined]


def plot_weights(model_or_weight: nn.Module | torch.Tensor, columns: int | None = None,
                 title: str | None = None) -> Figure:
    """The first convolution's kernels (or the given weights) as a grid.

    A VOneBlock has no ``nn.Conv2d``; use :func:`plot_gabor_layout` for it.
    """
    if isinstance(model_or_weight, torch.Tensor):
        weight, name = model_or_weight, "weights"
    else:
        conv = first_conv(model_or_weight)
        weight = conv.weight
        name = next(n for n, m in model_or_weight.named_modules() if m is conv) or "conv"
    grid = weight_grid(weight, columns)
    fig = Figure(figsize=(min(10.0, 1 + grid.shape[2] / 12), min(10.0, 1 + grid.shape[1] / 12)),
                 layout="constrained")
    ax = fig.subplots()
    _show(ax, grid)
    n, c, kh, kw = weight.shape
    fig.suptitle(title or f"{name}: {n} kernels, {c} x {kh} x {kw} (per-kernel scale, grey = 0)",
                 fontsize=9)
    return fig


def _vone_block(module: nn.Module) -> VOneBlock:
    for m in module.modules():
        if isinstance(m, VOneBlock):
            return m
    raise RobustlensError(f"{type(module).__name__} has no VOneBlock.")


def gabor_layout(block: nn.Module, bank: str = "q0", n_orientations: int = 8,
                 n_frequencies: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick one Gabor filter per (spatial frequency, orientation) cell.

    Orientation bins split [0, 180) degrees evenly; frequency bins split the bank's range of
    peak spatial frequencies evenly on a log scale. In each cell the filter nearest the cell
    centre (in bin units) is chosen; empty cells hold -1.

    Args:
        block: a :class:`robustlens.models.vone.VOneBlock`, or a model containing one.
        bank: ``"q0"`` or ``"q1"`` (checked by the caller that draws).
        n_orientations: columns.
        n_frequencies: rows.

    Returns:
        (n_frequencies, n_orientations) filter indices, the row centres (cycles/degree) and
        the column centres (degrees).
    """
    params = _vone_block(block).gabor_params
    if n_orientations < 1 or n_frequencies < 1:
        raise RobustlensError("n_orientations and n_frequencies must be positive.")
    sf = np.asarray(params["sf"], dtype=float)
    theta = np.mod(np.asarray(params["theta"], dtype=float), 180.0)
    log_sf = np.log(sf)
    lo, hi = float(log_sf.min()), float(log_sf.max())
    span = max(hi - lo, 1e-9)
    fy = (log_sf - lo) / span * n_frequencies
    fx = theta / 180.0 * n_orientations
    rows = np.clip(fy.astype(int), 0, n_frequencies - 1)
    cols = np.clip(fx.astype(int), 0, n_orientations - 1)
    dist = (fy - rows - 0.5) ** 2 + (fx - cols - 0.5) ** 2
    chosen = -np.ones((n_frequencies, n_orientations), dtype=int)
    best = np.full((n_frequencies, n_orientations), np.inf)
    for i in range(len(sf)):
        if dist[i] < best[rows[i], cols[i]]:
            best[rows[i], cols[i]], chosen[rows[i], cols[i]] = dist[i], i
    sf_centres = np.exp(lo + (np.arange(n_frequencies) + 0.5) / n_frequencies * span)
    theta_centres = (np.arange(n_orientations) + 0.5) * 180.0 / n_orientations
    return chosen, sf_centres, theta_centres


def plot_gabor_layout(block: nn.Module, bank: str = "q0", n_orientations: int = 8,
                      n_frequencies: int = 6) -> Figure:
    """A VOneBlock's Gabor kernels laid out by spatial frequency (rows) and orientation
    (columns), one representative filter per cell (see :func:`gabor_layout`).

    Each kernel is drawn on its own symmetric grey scale (mid-grey = 0), showing its
    strongest input channel.
    """
    if bank not in ("q0", "q1"):
        raise RobustlensError(f"bank must be 'q0' or 'q1'; received {bank!r}.")
    chosen, sf_c, th_c = gabor_layout(block, bank, n_orientations, n_frequencies)
    conv = getattr(_vone_block(block), "simple_conv_q0" if bank == "q0" else "simple_conv_q1")
    kernels = conv.weight.detach().float().cpu()
    fig = Figure(figsize=(1.1 * n_orientations + 1, 1.1 * n_frequencies + 0.6),
                 layout="constrained")
    axes = fig.subplots(n_frequencies, n_orientations, squeeze=False)
    for r in range(n_frequencies):
        for q in range(n_orientations):
            ax = axes[n_frequencies - 1 - r, q]  # high frequencies on top
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            i = chosen[r, q]
            if i >= 0:
                k = kernels[i]
                k = k[k.abs().flatten(1).amax(1).argmax()]
                lim = float(k.abs().max()) or 1.0
                ax.imshow(k.numpy(), cmap="gray", vmin=-lim, vmax=lim, interpolation="nearest")
            if q == 0:
                ax.set_ylabel(f"{sf_c[r]:.2g} cpd", fontsize=7)
            if r == 0:
                ax.set_xlabel(f"{th_c[q]:.0f}°", fontsize=7)
    fig.suptitle(f"VOneBlock {bank} Gabor bank by spatial frequency (rows, cycles/degree) and "
                 f"orientation (columns, degrees)", fontsize=9)
    return fig
