"""Activation maximization: optimise an image so that an objective grows.

``render(model, "layer4#0")`` is the Lucid / Lucent recipe (``shared/specs/featurevis.md``):
a Fourier, colour-decorrelated parameterization (grayscale for one-channel models), Adam at
learning rate 0.05 for 512 steps, the standard random transforms at every step, loss = minus
the objective. The model sees the transformed image resized to ``input_size`` (its own
normalisation is its first layer, so any model works: a 28 x 28 grayscale CNN, a VOneNet
with its 0.5 / 0.5 normalisation, an ImageNet model).

Nothing is displayed or saved; the device is the model's; hooks exist only during each
forward pass and are removed even on error; the model's weights, modes and buffers are left
as they were (parameter gradients are never computed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.activations.layers import ChannelRef
from robustlens.errors import RobustlensError
from robustlens.models.device import model_device
from robustlens.visualization._hooks import capture, check_images, module_training
from robustlens.visualization._relu import ReLUGradientMode
from robustlens.visualization.objectives import OUTPUT, Objective, as_objective
from robustlens.visualization.param import FourierImage, ImageParam, default_size
from robustlens.visualization.transforms import Transform, compose, standard_transforms

__all__ = ["NoiseHandling", "RenderResult", "input_channels", "model_device",
           "objective_values", "render"]

NoiseHandling = Literal["sample", "off"]


@dataclass(frozen=True)
class RenderResult:
    """What :func:`render` returns.

    Attributes:
        images: (B, C, H, W) the optimised pixels in [0, 1], detached.
        losses: (steps,) float64 loss (minus the objective, summed over the batch and
            averaged over EOT samples) at every step, on the CPU.
        objective: the objective's description.
    """

    images: torch.Tensor
    losses: torch.Tensor
    objective: str


def input_channels(model: nn.Module, default: int = 3) -> int:
    """Channels of the model's input: ``in_channels`` of its first module that has one."""
    for m in model.modules():
        c = getattr(m, "in_channels", None)
        if isinstance(c, int):
            return c
    return default


@contextmanager
def _noise(model: nn.Module, noise: NoiseHandling) -> Iterator[None]:
    if noise == "off":
        from robustlens.models.vone import without_noise

        with without_noise(model):
            yield
    else:
        yield


def _resize(x: torch.Tensor, size: int | tuple[int, int] | None) -> torch.Tensor:
    if size is None:
        return x
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == hw:
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False)


def _evaluate(model: nn.Module, objective: Objective, x: torch.Tensor) -> torch.Tensor:
    calls = [c for c in objective.layers if c != OUTPUT]
    logits, acts = capture(model, x, calls, need_output=objective.needs_output)
    if logits is not None:
        acts[OUTPUT] = logits
    return objective(acts)


def _forked_rng(device: torch.device) -> AbstractContextManager[None]:
    """The global RNG (used by stochastic models) is restored after the render."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def render(model: nn.Module, objective: Objective | str | ChannelRef, *,
           param: ImageParam | None = None, image_size: int | None = None,
           input_size: int | tuple[int, int] | None = None, batch_size: int = 1,
           steps: int = 512, lr: float = 0.05,
           transforms: Sequence[Transform] | Literal["standard"] | None = "standard",
           eot_samples: int = 1, noise: NoiseHandling = "sample", redirect_relu_steps: int = 16,
           seed: int = 0, callback: Callable[[int, torch.Tensor], None] | None = None
           ) -> RenderResult:
    """Activation maximization of ``objective`` on ``model``.

    Args:
        model: any module taking (B, C, H, W) pixels in [0, 1].
        objective: an :class:`~.objectives.Objective`, or a unit address: ``"layer#C"``
            (robustlens; ``"layer:N#C"`` for the N-th call) or Lucent's ``"layer:C"``
            (``"layer4:0"``: channel 0 of ``layer4``'s output). Layer names are the
            architecture's own (``"layer4"`` for a registered ResNet).
        param: the image parameterization; default a :class:`~.param.FourierImage` of
            ``image_size`` px with the model's input channels, on the model's device.
        image_size: side of the optimised image, pixels (default 128 for RGB, ``input_size``
            for grayscale or smaller models).
        input_size: side (or (H, W)) the model sees: the transformed image is resized to it
            bilinearly (Lucent upsamples to 224 for ImageNet models). Default: the image's
            own size (required exactly by models with a fixed input, such as ``fmnist_cnn``).
        batch_size: images optimised together (with a default ``param``).
        steps: optimisation steps.
        lr: Adam learning rate.
        transforms: ``"standard"`` (Lucid's chain scaled to the image size), a list of
            transforms, or ``None``.
        eot_samples: for stochastic models (VOneNets): the objective is averaged over this
            many noise draws (and transform draws) per step, in one batched pass.
        noise: ``"sample"`` (the model's own noise) or ``"off"`` (VOneBlock noise turned off
            during the render, restored after).
        redirect_relu_steps: for this many first steps, Lucid's ReLU gradient redirection:
            where a whole ReLU output gets no gradient (all units dead, as for a channel
            that is negative on the initial grey image), the gradient passes where it moves
            units towards their active range, so the optimisation can start. Covers
            ``nn.ReLU``/``nn.ReLU6`` and functional ReLUs (forward values unchanged). Later
            steps use plain gradients (the redirection costs about one extra forward pass
            per step, and is rarely needed once the objective is alive); 0 disables it.
        seed: seeds the initial image, the transforms and the model's noise.
        callback: called after every step with the step index and the (detached) loss,
            e.g. for a progress bar; reading the loss's value synchronises the device.

    Returns:
        A :class:`RenderResult` (images and loss history).

    Raises:
        RobustlensError: for unknown layers or channels, or invalid settings.
    """
    obj = as_objective(objective)
    if steps < 0 or lr <= 0 or eot_samples < 1 or batch_size < 1:
        raise RobustlensError(f"need steps >= 0, lr > 0, eot_samples >= 1 and batch_size >= 1; "
                              f"received steps={steps}, lr={lr}, eot_samples={eot_samples}, "
                              f"batch_size={batch_size}.")
    if noise not in ("sample", "off"):
        raise RobustlensError(f"noise must be 'sample' or 'off'; received {noise!r}.")
    device = model_device(model)
    if param is None:
        channels = input_channels(model)
        side = image_size if image_size is not None else default_size(
            channels, None if input_size is None else
            (input_size if isinstance(input_size, int) else min(input_size)))
        generator = torch.Generator(device=device).manual_seed(seed)
        param = FourierImage(side, channels, batch_size, generator=generator)
    param = param.to(device)
    size = tuple(param.shape[-2:])
    target_size = input_size if input_size is not None else (int(size[0]), int(size[1]))
    chain = compose(standard_transforms(min(size)) if transforms == "standard"
                    else list(transforms or []))
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in param.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    losses: list[torch.Tensor] = []
    redirect = ReLUGradientMode("redirected")
    with module_training(model, False), _noise(model, noise), _forked_rng(device), \
            torch.enable_grad():
        torch.manual_seed(seed)
        for step in range(steps):
            images = param()
            views = [_resize(chain(images, gen), target_size) for _ in range(eot_samples)]
            x = views[0] if eot_samples == 1 else torch.cat(views)
            with redirect if step < redirect_relu_steps else nullcontext():
                values = _evaluate(model, obj, x)
            loss = -values.sum() / eot_samples
            grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            optimizer.step()
            losses.append(loss.detach())
            if callback is not None:
                callback(step, losses[-1])
        final = param().detach()
    history = torch.stack(losses).double().cpu() if losses else torch.zeros(0, dtype=torch.float64)
    return RenderResult(final, history, obj.description)


def objective_values(model: nn.Module, objective: Objective | str | ChannelRef,
                     images: torch.Tensor, *, input_size: int | tuple[int, int] | None = None,
                     batch_size: int = 256) -> torch.Tensor:
    """The objective's value for each image, without transforms (no gradients).

    Args:
        model: the model.
        objective: an objective or a channel address.
        images: (B, C, H, W) pixels in [0, 1].
        input_size: resize the images to this side before the model (bilinear).
        batch_size: images per forward pass.

    Returns:
        (B,) values on the images' device.
    """
    obj = as_objective(objective)
    check_images(images)
    out = []
    with module_training(model, False), torch.no_grad():
        for chunk in images.split(batch_size):
            out.append(_evaluate(model, obj, _resize(chunk, input_size)).detach())
    return torch.cat(out)

