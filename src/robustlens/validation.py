"""Checks at the public boundary: images in pixel space, labels that match them, a model that runs.

Every library entry point that takes images (attacks, robust-accuracy evaluation, saliency,
training) runs the same checks, so a bad input gets the same one-line
:class:`~robustlens.errors.RobustlensError` wherever it enters, never a torch exception
from deep inside a forward pass:

* :func:`check_images`: a float tensor shaped (B, C, H, W), finite, pixels in [0, 1];
* :func:`check_labels`: integer class indices shaped (B,), in ``[0, num_classes)``;
* :func:`check_model_input`: the images have the model's dtype and device, their channel
  count (and, for a registered model, their size) is what the model takes, the model returns
  (B, K) logits on them, and the labels lie in ``[0, K)``. It costs one forward pass of one
  image (no gradients, eval mode, the global RNG left untouched), once per model and input
  shape.

Rules the checks enforce (documented here once):

* **dtype**: images must have the dtype of the model's floating-point weights (float32 for
  every registered model). Nothing is cast silently; the message says how to convert
  (``images.float()``, or ``model.double()`` for a float64 analysis).
* **empty batch**: a batch of 0 images passes the image checks; attacks and attributions
  return an empty result without running the model (a no-op). Evaluating a dataset with no
  images at all is an error (its accuracy would be undefined).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from robustlens.errors import RobustlensError

__all__ = ["check_images", "check_labels", "check_model_input", "model_input_size"]

# model -> {(C, H, W, dtype, device): number of classes}: input signatures that already ran.
_CHECKED: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], int]] = weakref.WeakKeyDictionary()


def check_images(images: Any, name: str = "images") -> None:
    """Check that ``images`` is a float (B, C, H, W) tensor of finite values in [0, 1].

    A batch of 0 images passes (see the module docstring for what the entry points do with it).

    Args:
        images: the tensor to check.
        name: what to call it in the message.

    Raises:
        RobustlensError: wrong type, number of dimensions or dtype, NaN / inf, or values
            outside [0, 1].
    """
    if not isinstance(images, torch.Tensor):
        raise RobustlensError(
            f"{name} must be a torch.Tensor shaped (B, C, H, W); received {type(images).__name__}. "
            "Convert with torch.as_tensor(...)."
        )
    if images.ndim != 4:
        hint = (" Add a batch dimension with images.unsqueeze(0) for a single image."
                if images.ndim == 3 else "")
        raise RobustlensError(
            f"{name} must be shaped (B, C, H, W); received shape {tuple(images.shape)}.{hint}"
        )
    if not images.is_floating_point():
        hint = " Convert with images.float() / 255." if images.dtype == torch.uint8 else \
            " Convert with images.float() (pixels scaled to [0, 1])."
        raise RobustlensError(
            f"{name} must be floating point with pixels in [0, 1]; received dtype {images.dtype}.{hint}"
        )
    if images.numel() == 0:
        return
    if not bool(torch.isfinite(images).all()):
        raise RobustlensError(f"{name} contain NaN or infinite values; every pixel must be a finite "
                              "number in [0, 1].")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        hint = (" They look like 0-255 pixels: divide by 255." if hi > 1.5 and lo >= 0 else
                " robustlens models normalise inside their first layer: pass raw pixels, "
                "not normalised images.")
        raise RobustlensError(
            f"{name} must hold pixels in [0, 1]; received values in [{lo:.4g}, {hi:.4g}].{hint}"
        )


def check_labels(labels: Any, n_images: int, name: str = "labels", *,
                 num_classes: int | None = None) -> None:
    """Check that ``labels`` is an integer tensor of shape (B,) with values in ``[0, num_classes)``.

    Args:
        labels: the tensor to check.
        n_images: B, the number of images the labels belong to.
        name: what to call it in the message.
        num_classes: the model's number of classes, when known (upper bound of the labels).

    Raises:
        RobustlensError: wrong type, shape or dtype, or a label out of range.
    """
    if not isinstance(labels, torch.Tensor):
        raise RobustlensError(f"{name} must be a torch.Tensor of class indices shaped ({n_images},); "
                              f"received {type(labels).__name__}. Convert with torch.as_tensor(...).")
    if labels.ndim != 1 or labels.shape[0] != n_images:
        raise RobustlensError(
            f"{name} must be shaped ({n_images},) to match the images; "
            f"received shape {tuple(labels.shape)}."
            + (" Pass class indices, not one-hot rows: labels.argmax(1)." if labels.ndim == 2 else "")
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise RobustlensError(f"{name} must be integer class indices; received dtype {labels.dtype}. "
                              "Convert with labels.long().")
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        bound = f"[0, {num_classes - 1}]" if num_classes is not None else ">= 0"
        raise RobustlensError(
            f"{name} must be class indices in {bound}"
            + (f" (the model has {num_classes} classes)" if num_classes is not None else "")
            + f"; received values in [{lo}, {hi}]. Check that the labels belong to the model's dataset."
        )


def model_input_size(model: nn.Module) -> tuple[int, int, int] | None:
    """The (C, H, W) a registered model was built for, or ``None`` for any other module.

    :func:`robustlens.models.create_model` records the model's
    :class:`~robustlens.models.ModelInfo` on the module as ``robustlens_info``.

    Args:
        model: any module.
    """
    info = getattr(model, "robustlens_info", None)
    size = getattr(info, "input_size", None)
    if isinstance(size, tuple) and len(size) == 3:
        return (int(size[0]), int(size[1]), int(size[2]))
    return None


def _model_name(model: nn.Module) -> str:
    info = getattr(model, "robustlens_info", None)
    return f"{getattr(info, 'name', '')!s}" or type(model).__name__


def _weights_dtype_device(model: nn.Module) -> tuple[torch.dtype | None, torch.device | None]:
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return None, None


@contextmanager
def _probe_mode(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode, no gradients, the global RNG untouched; every module's mode restored after."""
    flags = [(m, m.training) for m in model.modules()]
    devices = [device] if device.type == "cuda" else []
    try:
        model.eval()
        with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"), \
                torch.inference_mode():
            yield
    finally:
        for m, flag in flags:
            m.training = flag


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def check_model_input(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                      name: str = "images") -> int:
    """Check that ``model`` runs on ``images`` and returns logits that ``labels`` index.

    Runs :func:`check_images` and :func:`check_labels`, then checks dtype and device against
    the model's weights, the channel count (and size) against a registered model's
    ``input_size``, and runs the model once on the first image (eval mode, no gradients,
    global RNG untouched) to learn the number of classes. That forward pass happens once
    per model and input signature.

    Args:
        model: a classifier taking (B, C, H, W) pixels in [0, 1] and returning (B, K) logits.
        images: (B, C, H, W) pixels in [0, 1]; may be empty (then only types are checked).
        labels: (B,) class indices, or ``None``.
        name: what to call the images in messages.

    Returns:
        K, the number of logits the model returns (``0`` for an empty batch, which is not run).

    Raises:
        RobustlensError: any mismatch, with what was expected, what was received and what to do.
    """
    if not isinstance(model, nn.Module):
        raise RobustlensError(f"model must be a torch.nn.Module taking (B, C, H, W) pixels; received "
                              f"{type(model).__name__}.")
    check_images(images, name)
    expected = model_input_size(model)
    if labels is not None:
        info = getattr(model, "robustlens_info", None)
        k = getattr(info, "num_classes", None)
        check_labels(labels, images.shape[0], num_classes=k if isinstance(k, int) else None)
    dtype, device = _weights_dtype_device(model)
    if dtype is not None and images.dtype != dtype:
        raise RobustlensError(
            f"{name} have dtype {images.dtype} but the model's weights are {dtype}; nothing is cast "
            f"silently. Convert the images with images.to({dtype}) (or the model with model.to({images.dtype}))."
        )
    if device is not None and images.device != device:
        raise RobustlensError(f"{name} are on {images.device} but the model is on {device}; move them "
                              f"with images.to('{device}') (or the model with model.to(...)).")
    c, h, w = images.shape[1:]
    model_name = _model_name(model)
    if expected is not None and c != expected[0]:
        raise RobustlensError(
            f"{model_name} takes images with {expected[0]} channel(s) (input size {_size(expected)}); "
            f"received {c} (batch shape {tuple(images.shape)}). Use data of the model's dataset, or a "
            "model built for these images."
        )
    if images.shape[0] == 0:
        return 0
    key = (c, h, w, images.dtype, images.device)
    seen = _CHECKED.get(model)
    if seen is not None and key in seen:
        k = seen[key]
    else:
        k = _probe(model, images[:1], expected, model_name)
        _CHECKED.setdefault(model, {})[key] = k
    if labels is not None:
        check_labels(labels, images.shape[0], num_classes=k)
    return k


def _size(size: tuple[int, ...]) -> str:
    return "x".join(map(str, size))


def _probe(model: nn.Module, one: torch.Tensor, expected: tuple[int, int, int] | None, model_name: str) -> int:
    """One forward pass of one image; the number of logits, or a clear error."""
    received = _size(tuple(one.shape[1:]))
    try:
        with _probe_mode(model, one.device):
            out = model(one.detach())
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as err:
        want = (f"it takes {_size(expected)} (C x H x W)" if expected is not None
                else "check the image size and channels the model was built for")
        hint = " Resize or crop the images to that size, or use a model built for them." \
            if expected is not None else ""
        raise RobustlensError(
            f"{model_name} cannot run on images of size {received} (C x H x W): {want}; "
            f"the model said: {_first_line(err)}.{hint}"
        ) from err
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RobustlensError(
            f"{model_name} must return logits shaped (B, K) for images shaped (B, C, H, W); it returned "
            f"{got} for a (1, {one.shape[1]}, {one.shape[2]}, {one.shape[3]}) batch. Wrap it so that "
            "forward returns the class logits (e.g. nn.Sequential(model, nn.Flatten()))."
        )
    return int(out.shape[1])
