"""The VOneBlock: a fixed Gabor filter bank with simple cells, complex cells and noise.

Spec: ``shared/specs/vonenet.md`` sections 3-9; Dapello, Marques, Schrimpf, Geiger, Cox &
DiCarlo (2020), *Simulating a Primary Visual Cortex at the Front of CNNs Improves Robustness
to Image Perturbations*, NeurIPS 33.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustlens.errors import ConfigError, RobustlensError
from robustlens.models.vone._kernel import _check_ksize, gabor_bank
from robustlens.models.vone._params import sample_gabor_parameters

__all__ = ["NOISE_MODES", "NoiseMode", "VOneBlock", "without_noise"]

NoiseMode = Literal["neuronal", "gaussian"] | None
NOISE_MODES: tuple[str | None, ...] = ("neuronal", "gaussian", None)
_EPS = 1e-4  # the reference's "10e-5" in the neuronal noise (spec section 7)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


class GaborBank(nn.Module):
    """A fixed filter bank held as a non-trainable parameter ``weight`` (N, C, k, k).

    Calling it convolves with the whole bank (stride and ``k // 2`` zero padding); the
    VOneBlock itself uses a faster fused path and keeps this module as the owner of the
    weights under the reference state-dict names.
    """

    def __init__(self, weight: torch.Tensor, stride: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, None, self.stride, self.weight.shape[-1] // 2)

    def extra_repr(self) -> str:
        n, c, k, _ = self.weight.shape
        return f"{c}, {n}, kernel_size=({k}, {k}), stride={self.stride}, fixed"


def _complex_energy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sqrt(a^2 + b^2) / sqrt(2) with a zero (not NaN) gradient where a = b = 0.

    The forward value is ``hypot(a, b) / sqrt(2)`` with or without autograd; under autograd
    the points where both inputs are 0 are routed around ``hypot`` (whose derivative there
    is 0/0), so their gradient is exactly 0.
    """
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        zero = (a == 0) & (b == 0)
        safe_a = torch.where(zero, torch.ones_like(a), a)
        energy = torch.where(zero, torch.zeros_like(a), torch.hypot(safe_a, b))
    else:
        energy = torch.hypot(a, b)
    return energy * _INV_SQRT2


def _check_noise(mode: Any, scale: float, level: float) -> None:
    if mode not in NOISE_MODES:
        raise ConfigError(f"noise_mode must be one of {NOISE_MODES}; received {mode!r}.")
    if mode is not None and not scale > 0:
        raise ConfigError(f"noise_scale must be positive; received {scale!r}.")
    if mode == "neuronal" and not level >= 0:
        raise ConfigError(f"noise_level must be non-negative; received {level!r}.")


class _Plan:
    """Precomputed convolution layout for the banks' current values (see ``_responses``)."""

    def __init__(self, key: tuple[Any, ...], convs: list[tuple[int, torch.Tensor]],
                 dense: torch.Tensor | None, index: torch.Tensor | None) -> None:
        self.key = key
        self.convs = convs  # (input channel, (m_c, 1, k, k) weights)
        self.dense = dense  # (M, C, k, k) weights when a filter spans several channels
        self.index = index  # positions of rows [q0 all, q1 complex] in the conv output


class VOneBlock(nn.Module):
    """A fixed V1 front-end: Gabor simple and complex cells with Poisson-like noise.

    Input (B, C, H, W) already normalised (VOneNets use (x - 0.5) / 0.5, so values in
    [-1, 1]); output (B, N, H', W') with N = simple_channels + complex_channels,
    H' = (H - 1) // stride + 1 and W' likewise (zero padding ksize // 2).

    Filter i has parameters sampled by :func:`sample_gabor_parameters` (or given banks).
    Its q0 kernel has phase phi_i and its q1 kernel phi_i + pi/2; each kernel looks at one
    input channel. Simple cells (channels 0 .. n_s-1) are ReLU(q0 response); complex cells
    (n_s .. N-1) are sqrt(q0^2 + q1^2) / sqrt(2); both are scaled by ``k_exc`` into the
    pre-noise activation A. Noise (spec section 7): ``"neuronal"`` gives
    R = A + xi * sqrt(max(s A + l, 0) + 1e-4) / s, ``"gaussian"`` gives R = A + s xi,
    ``None`` gives R = A; the output is ReLU(R). Noise follows ``noise_mode``, not
    ``train()`` / ``eval()``, as in the reference; use :func:`without_noise` or
    :meth:`set_noise_mode` for a deterministic forward.

    Differences from the reference (all "(ours)" in the spec): no in-place operations;
    zero input-gradient where a complex cell's energy is 0 (uniform grey images); colour
    channels and noise come from explicit generators, never global RNG state; the q1
    responses of simple cells are not computed; the convolution runs per input channel with
    the q0 and q1 kernels fused, which is several times cheaper than two dense convolutions.

    Recording points (identity / ReLU submodules, as in the reference): ``simple``
    (rectified q0 responses of simple cells, before k_exc), ``complex`` (complex-cell
    energies, before k_exc), ``gabors`` (A), ``noise`` (ReLU(R)) and ``output``.

    Args:
        simple_channels: number of simple cells n_s.
        complex_channels: number of complex cells n_c.
        in_channels: input channels C (3 for RGB); each filter is assigned one of them.
        image_size: input side in pixels used for pixels-per-degree and fixed noise.
        visual_degrees: field of view of ``image_size`` pixels, degrees of visual angle;
            ppd = image_size / visual_degrees converts cycles/degree to cycles/pixel.
        ksize: odd kernel side, pixels.
        stride: convolution stride, pixels.
        k_exc: output gain (25 in all released models, chosen for mean activations ~1).
        noise_mode: ``"neuronal"``, ``"gaussian"`` or ``None``.
        noise_scale: s (counts per activation unit for "neuronal", s.d. for "gaussian").
        noise_level: l, spontaneous-activity offset of the neuronal noise (counts).
        gabor_seed: seed of :func:`sample_gabor_parameters`.
        sf_corr: see :func:`sample_gabor_parameters`.
        sf_max: see :func:`sample_gabor_parameters` (cycles/degree).
        sf_min: see :func:`sample_gabor_parameters` (cycles/degree).
        rand_param: see :func:`sample_gabor_parameters`.
        color_seed: seed of the private ``torch.Generator`` that assigns input channels:
            N draws for q0, then N for q1 (``color_seed=s`` reproduces a reference model
            built right after ``torch.manual_seed(s)``).
        shared_color_channel: q1 reuses q0's channel (a true quadrature pair); the
            reference draws it independently.
        weights: optional ``(q0, q1)`` banks, each (N, C, k, k); overrides sampling and
            sets ``ksize`` from their shape.
        generator: ``torch.Generator`` for fresh noise (on the input's device); ``None``
            uses the global generator. May be reassigned as ``block.generator``.
    """

    fixed_noise: torch.Tensor | None

    def __init__(
        self,
        simple_channels: int = 256,
        complex_channels: int = 256,
        *,
        in_channels: int = 3,
        image_size: int = 224,
        visual_degrees: float = 8.0,
        ksize: int = 25,
        stride: int = 4,
        k_exc: float = 25.0,
        noise_mode: NoiseMode = "neuronal",
        noise_scale: float = 0.35,
        noise_level: float = 0.07,
        gabor_seed: int = 0,
        sf_corr: float = 0.75,
        sf_max: float = 9.0,
        sf_min: float = 0.0,
        rand_param: bool = False,
        color_seed: int = 0,
        shared_color_channel: bool = False,
        weights: tuple[torch.Tensor, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("simple_channels", simple_channels),
                            ("complex_channels", complex_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer; received {value!r}.")
        if simple_channels + complex_channels < 1:
            raise ConfigError("a VOneBlock needs at least one simple or complex channel.")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ConfigError(f"in_channels must be a positive integer; received {in_channels!r}.")
        if not isinstance(stride, int) or stride < 1:
            raise ConfigError(f"stride must be a positive integer; received {stride!r}.")
        if not image_size > 0 or not visual_degrees > 0:
            raise ConfigError(f"image_size and visual_degrees must be positive; received "
                              f"{image_size!r} and {visual_degrees!r}.")
        if not k_exc > 0:
            raise ConfigError(f"k_exc must be positive; received {k_exc!r}.")
        _check_noise(noise_mode, noise_scale, noise_level)
        n = simple_channels + complex_channels
        self.in_channels = in_channels
        self.simple_channels = simple_channels
        self.complex_channels = complex_channels
        self.out_channels = n
        self.stride = stride
        self.image_size = image_size
        self.visual_degrees = float(visual_degrees)
        self.k_exc = float(k_exc)
        self.noise_mode: NoiseMode = noise_mode
        self.noise_scale = float(noise_scale)
        self.noise_level = float(noise_level)
        self.generator = generator
        ppd = image_size / visual_degrees

        params = sample_gabor_parameters(n, gabor_seed, sf_corr, sf_max, sf_min, rand_param)
        self.gabor_params: dict[str, Any] = {
            "simple_channels": simple_channels, "complex_channels": complex_channels,
            "rand_param": rand_param, "gabor_seed": gabor_seed, "sf_corr": sf_corr,
            "sf_max": sf_max, "sf_min": sf_min, "color_seed": color_seed,
            "shared_color_channel": shared_color_channel, "image_size": image_size,
            "visual_degrees": self.visual_degrees, "pixels_per_degree": ppd,
            "sf": params.sf, "theta": params.theta, "phase": params.phase,
            "nx": params.nx, "ny": params.ny, "numpy_version": np.__version__,
            "source": "sampled",
        }
        if weights is None:
            self.ksize = _check_ksize(ksize)
            q0, q1, colors = self._build_banks(params, ppd, color_seed, shared_color_channel)
        else:
            q0, q1 = (w.detach().to(torch.float32).clone() for w in weights)
            if q0.ndim != 4 or q0.shape != q1.shape or q0.shape[:2] != (n, in_channels):
                raise ConfigError(
                    f"given Gabor banks must both be shaped ({n}, {in_channels}, k, k); received "
                    f"{tuple(q0.shape)} and {tuple(q1.shape)}."
                )
            self.ksize = _check_ksize(int(q0.shape[-1]))
            colors = None
            self.gabor_params["source"] = "given"
        self.padding = self.ksize // 2
        self.gabor_params["colors"] = colors
        # Derived quantities in the reference's units (cycles/pixel, radians, pixels).
        f = params.sf / ppd
        self.gabor_params.update(frequency=f, theta_rad=np.deg2rad(params.theta),
                                 phase_rad=np.deg2rad(params.phase),
                                 sigma_x=params.nx / f, sigma_y=params.ny / f)

        self.simple_conv_q0 = GaborBank(q0, stride)
        self.simple_conv_q1 = GaborBank(q1, stride)
        self.simple = nn.ReLU()
        self.complex = nn.Identity()
        self.gabors = nn.Identity()
        self.noise = nn.ReLU()
        self.output = nn.Identity()
        self.register_buffer("fixed_noise", None, persistent=False)
        self._plan: _Plan | None = None

    def _build_banks(self, params: Any, ppd: float, color_seed: int, shared: bool,
                     ) -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
        n, c, k = self.out_channels, self.in_channels, self.ksize
        f = params.sf / ppd
        theta, phase = np.deg2rad(params.theta), np.deg2rad(params.phase)
        kernels0 = gabor_bank(f, params.nx / f, params.ny / f, theta, phase, k)
        kernels1 = gabor_bank(f, params.nx / f, params.ny / f, theta, phase + math.pi / 2, k)
        gen = torch.Generator().manual_seed(int(color_seed))
        cpu = torch.device("cpu")  # explicit, so that building under a meta-device context works
        colors0 = torch.randint(0, c, (n,), generator=gen, device=cpu)
        colors1 = colors0.clone() if shared else torch.randint(0, c, (n,), generator=gen,
                                                               device=cpu)
        rows = torch.arange(n, device=cpu)
        q0 = torch.zeros(n, c, k, k, device=cpu)
        q1 = torch.zeros(n, c, k, k, device=cpu)
        q0[rows, colors0] = kernels0
        q1[rows, colors1] = kernels1
        return q0, q1, {"q0": colors0.numpy(), "q1": colors1.numpy()}

    # ------------------------------------------------------------------ convolution
    def _current_plan(self, device: torch.device, dtype: torch.dtype) -> _Plan:
        w0, w1 = self.simple_conv_q0.weight, self.simple_conv_q1.weight
        key = (w0._version, w1._version, w0.data_ptr(), w1.data_ptr(), device, dtype)
        if self._plan is not None and self._plan.key == key:
            return self._plan
        ns = self.simple_channels
        # Plain (not inference-mode) tensors, so a plan built under torch.inference_mode()
        # also serves later forwards that need input gradients.
        with torch.inference_mode(False), torch.no_grad():
            rows = torch.cat((w0, w1[ns:]), 0).to(device=device, dtype=dtype)  # (M, C, k, k)
            nonzero = rows.abs().flatten(2).amax(2) > 0  # (M, C)
            if bool((nonzero.sum(1) > 1).any()):
                plan = _Plan(key, [], rows.contiguous(), None)
            else:
                channel = nonzero.to(torch.uint8).argmax(1)  # 0 for all-zero filters
                convs: list[tuple[int, torch.Tensor]] = []
                order: list[torch.Tensor] = []
                for c in range(self.in_channels):
                    members = torch.nonzero(channel == c).flatten()
                    if members.numel():
                        convs.append((c, rows[members, c:c + 1].contiguous()))
                        order.append(members)
                position = torch.empty(rows.shape[0], dtype=torch.long, device=device)
                position[torch.cat(order)] = torch.arange(rows.shape[0], device=device)
                identity = bool((position == torch.arange(rows.shape[0], device=device)).all())
                plan = _Plan(key, convs, None, None if identity else position)
        self._plan = plan
        return plan

    def _responses(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q0 responses of simple cells, q0 and q1 responses of complex cells."""
        ns, n = self.simple_channels, self.out_channels
        w0, w1 = self.simple_conv_q0.weight, self.simple_conv_q1.weight
        if w0.requires_grad or w1.requires_grad:  # someone is optimising the banks
            y = F.conv2d(x, torch.cat((w0, w1[ns:]), 0), None, self.stride, self.padding)
            return y[:, :ns], y[:, ns:n], y[:, n:]
        plan = self._current_plan(x.device, x.dtype)
        if plan.dense is not None:
            y = F.conv2d(x, plan.dense, None, self.stride, self.padding)
        else:
            parts = [F.conv2d(x[:, c:c + 1], w, None, self.stride, self.padding)
                     for c, w in plan.convs]
            y = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
            del parts  # free the per-channel outputs before gathering (peak memory)
        if plan.index is None:
            return y[:, :ns], y[:, ns:n], y[:, n:]
        idx = plan.index
        return (y.index_select(1, idx[:ns]), y.index_select(1, idx[ns:n]),
                y.index_select(1, idx[n:]))

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to normalised images (B, C, H, W) -> (B, N, H', W')."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise RobustlensError(
                f"VOneBlock expects input shaped (B, {self.in_channels}, H, W); received "
                f"{tuple(x.shape)}."
            )
        y0_simple, y0_complex, y1_complex = self._responses(x)
        simple = self.simple(y0_simple)
        complex_ = self.complex(_complex_energy(y0_complex, y1_complex))
        del y0_simple, y0_complex, y1_complex  # release early: lower peak memory
        activation = self.gabors(torch.cat((simple, complex_), 1) * self.k_exc)
        del simple, complex_
        return self.output(self.noise(self._add_noise(activation)))

    def _draw_noise(self, a: torch.Tensor) -> torch.Tensor:
        if self.fixed_noise is not None:
            if self.fixed_noise.shape != a.shape:
                raise RobustlensError(
                    f"fixed noise has shape {tuple(self.fixed_noise.shape)} but this batch's "
                    f"activations are {tuple(a.shape)}; call fix_noise() with the batch size and "
                    "image size you use, or unfix_noise()."
                )
            return self.fixed_noise.to(a.dtype)
        if self.generator is not None:
            if self.generator.device.type != a.device.type:
                raise RobustlensError(
                    f"the block's noise generator is on {self.generator.device} but the input is "
                    f"on {a.device}; give a generator on the input's device."
                )
            return torch.randn(a.shape, generator=self.generator, device=a.device, dtype=a.dtype)
        return torch.randn_like(a)

    def _add_noise(self, a: torch.Tensor) -> torch.Tensor:
        if self.noise_mode is None:
            return a
        xi = self._draw_noise(a)
        s, level = self.noise_scale, self.noise_level
        if self.noise_mode == "neuronal":
            rate = a * s + level
            counts = rate + xi * torch.sqrt(torch.relu(rate) + _EPS)
            return (counts - level) / s
        return a + xi * s

    # ------------------------------------------------------------------ noise control
    def set_noise_mode(self, mode: NoiseMode, scale: float | None = None,
                       level: float | None = None) -> None:
        """Change the noise mode, and optionally its scale and level (see the class doc)."""
        scale = self.noise_scale if scale is None else float(scale)
        level = self.noise_level if level is None else float(level)
        _check_noise(mode, scale, level)
        self.noise_mode, self.noise_scale, self.noise_level = mode, scale, level

    def output_size(self, height: int, width: int | None = None) -> tuple[int, int]:
        """Spatial size (H', W') of the output for an (H, W) input."""
        width = height if width is None else width
        return (height - 1) // self.stride + 1, (width - 1) // self.stride + 1

    def fix_noise(self, batch_size: int, seed: int | torch.Generator = 0,
                  image_size: int | None = None) -> None:
        """Draw one noise tensor and reuse it on every later forward until :meth:`unfix_noise`.

        The tensor is (batch_size, N, H', W') for a square ``image_size`` input (default:
        the block's), on the block's device and dtype; batches must then match it exactly.
        Unlike the reference, ``seed = 0`` is a valid seed. Does nothing when noise is off.

        Args:
            batch_size: images per batch.
            seed: an int seed or a CPU ``torch.Generator`` to draw from.
            image_size: side of the inputs, pixels.
        """
        if self.noise_mode is None:
            return
        side = self.image_size if image_size is None else image_size
        h, w = self.output_size(int(side))
        weight = self.simple_conv_q0.weight
        if isinstance(seed, torch.Generator):
            gen = seed
        else:
            gen = torch.Generator().manual_seed(int(seed))
        with torch.inference_mode(False):  # usable by later forwards that need gradients
            noise = torch.randn((batch_size, self.out_channels, h, w), generator=gen,
                                device=gen.device, dtype=weight.dtype)
            self.fixed_noise = noise.to(weight.device)

    def unfix_noise(self) -> None:
        """Return to fresh noise on every forward."""
        self.fixed_noise = None

    def extra_repr(self) -> str:
        return (f"simple_channels={self.simple_channels}, complex_channels="
                f"{self.complex_channels}, ksize={self.ksize}, stride={self.stride}, "
                f"k_exc={self.k_exc}, noise_mode={self.noise_mode!r}, noise_scale="
                f"{self.noise_scale}, noise_level={self.noise_level}")


@contextmanager
def without_noise(module: nn.Module) -> Iterator[nn.Module]:
    """Temporarily turn off the noise of every VOneBlock inside ``module``.

    The previous noise settings are restored on exit, also after an exception.

    Example:
        >>> with without_noise(model):
        ...     logits = model(images)  # deterministic
    """
    blocks = [m for m in module.modules() if isinstance(m, VOneBlock)]
    saved = [(b.noise_mode, b.noise_scale, b.noise_level) for b in blocks]
    try:
        for b in blocks:
            b.noise_mode = None
        yield module
    finally:
        for b, (mode, scale, level) in zip(blocks, saved, strict=True):
            b.noise_mode, b.noise_scale, b.noise_level = cast(NoiseMode, mode), scale, level
