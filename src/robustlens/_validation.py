"""Checks at the public boundary: images in pixel space, labels that match them."""

from __future__ import annotations

import torch

from robustlens.errors import RobustlensError


def check_images(images: torch.Tensor, name: str = "images") -> None:
    """Check that ``images`` is a float (B, C, H, W) tensor of finite values in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise RobustlensError(
            f"{name} must be a torch.Tensor shaped (B, C, H, W); received {type(images).__name__}."
        )
    if images.ndim != 4:
        raise RobustlensError(
            f"{name} must be shaped (B, C, H, W); received shape {tuple(images.shape)}. "
            "Add a batch dimension with images.unsqueeze(0) for a single image."
        )
    if not images.is_floating_point():
        raise RobustlensError(
            f"{name} must be floating point with pixels in [0, 1]; received dtype {images.dtype}. "
            "Convert with images.float() / 255."
        )
    if not bool(torch.isfinite(images).all()):
        raise RobustlensError(f"{name} contain NaN or infinite values.")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise RobustlensError(
            f"{name} must hold pixels in [0, 1]; received values in [{lo:.4g}, {hi:.4g}]. "
            "robustlens models normalise inside their first layer: pass raw pixels, "
            "not normalised images."
        )


def check_labels(labels: torch.Tensor, n_images: int, name: str = "labels") -> None:
    """Check that ``labels`` is an integer tensor of shape (B,) matching ``n_images``."""
    if not isinstance(labels, torch.Tensor):
        raise RobustlensError(f"{name} must be a torch.Tensor; received {type(labels).__name__}.")
    if labels.ndim != 1 or labels.shape[0] != n_images:
        raise RobustlensError(
            f"{name} must be shaped ({n_images},) to match the images; "
            f"received shape {tuple(labels.shape)}."
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise RobustlensError(f"{name} must be integer class indices; received dtype {labels.dtype}.")
