"""Figures of a VOneBlock's Gabor filter bank."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from robustlens.errors import ConfigError
from robustlens.models.vone._block import VOneBlock

__all__ = ["plot_gabor_bank"]

_CHANNEL_NAMES = {0: "R", 1: "G", 2: "B"}


def plot_gabor_bank(block: VOneBlock, max_filters: int = 64, bank: str = "q0",
                    columns: int = 8, order: str = "index") -> Figure:
    """Draw the block's Gabor kernels as a grid of images.

    Each panel shows one filter's non-zero input-channel slice on a symmetric grey scale
    (mid-grey = 0), titled with its index, cell type (S simple / C complex), peak spatial
    frequency (cycles/degree), orientation (degrees) and, for RGB blocks, input channel.

    Args:
        block: the V1 block.
        max_filters: show at most this many filters (evenly spaced over simple and complex).
        bank: ``"q0"`` (the simple-cell / first quadrature kernels) or ``"q1"``.
        columns: panels per row.
        order: ``"index"`` (filter order) or ``"frequency"`` (by spatial frequency, then
            orientation).

    Returns:
        A matplotlib ``Figure`` (not shown, not saved; use ``fig.savefig(path)``).
    """
    if bank not in ("q0", "q1"):
        raise ConfigError(f"bank must be 'q0' or 'q1'; received {bank!r}.")
    if order not in ("index", "frequency"):
        raise ConfigError(f"order must be 'index' or 'frequency'; received {order!r}.")
    if max_filters < 1 or columns < 1:
        raise ConfigError("max_filters and columns must be positive.")
    weight = (block.simple_conv_q0 if bank == "q0" else block.simple_conv_q1).weight
    kernels = weight.detach().cpu().double()
    n = kernels.shape[0]
    chosen = np.unique(np.linspace(0, n - 1, min(n, max_filters)).round().astype(int))
    params = block.gabor_params
    sf, theta = np.asarray(params["sf"]), np.asarray(params["theta"])
    if order == "frequency":
        chosen = chosen[np.lexsort((theta[chosen], sf[chosen]))]
    channel = kernels.abs().flatten(2).amax(2).argmax(1).numpy()
    rows = math.ceil(len(chosen) / columns)
    fig = Figure(figsize=(1.4 * columns, 1.55 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, chosen, strict=False):
        k = kernels[i, channel[i]].numpy()
        lim = float(np.abs(k).max()) or 1.0
        ax.imshow(k, cmap="gray", vmin=-lim, vmax=lim, interpolation="nearest")
        kind = "S" if i < block.simple_channels else "C"
        color = f" {_CHANNEL_NAMES.get(int(channel[i]), channel[i])}" if block.in_channels > 1 \
            else ""
        ax.set_title(f"{i} {kind}{color}\n{sf[i]:.1f}cpd {theta[i]:.0f}°", fontsize=7)
    ppd = block.image_size / block.visual_degrees
    fig.suptitle(
        f"VOneBlock {bank} Gabor kernels ({len(chosen)} of {n}; {block.ksize}x{block.ksize} px, "
        f"{ppd:.1f} px/deg, source: {params.get('source', 'sampled')})", fontsize=9)
    return fig
