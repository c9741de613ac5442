"""The VOneBlock (spec sections 6-9, 14): banks, forward numbers, gradients, noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlens.errors import ConfigError, RobustlensError
from robustlens.models.vone import VOneBlock, gabor_kernel, without_noise

SMALL = {"image_size": 64, "visual_degrees": 2.0, "ksize": 11, "stride": 2}


def block(**kwargs):
    options = {"simple_channels": 8, "complex_channels": 8, **SMALL, **kwargs}
    return VOneBlock(**options)


def two_conv_reference(b: VOneBlock, x: torch.Tensor) -> torch.Tensor:
    """The straightforward spec implementation: two dense convolutions, slices, gain."""
    ns, pad = b.simple_channels, b.ksize // 2
    y0 = F.conv2d(x, b.simple_conv_q0.weight, None, b.stride, pad)
    y1 = F.conv2d(x, b.simple_conv_q1.weight, None, b.stride, pad)
    simple = torch.relu(y0[:, :ns])
    complex_ = torch.sqrt(y0[:, ns:] ** 2 + y1[:, ns:] ** 2) / math.sqrt(2)
    return b.k_exc * torch.cat((simple, complex_), 1)


def test_banks_have_one_colour_slice_and_the_sampled_kernels():
    b = block()
    p = b.gabor_params
    for name, bank, phase_shift in (("q0", b.simple_conv_q0.weight, 0.0),
                                    ("q1", b.simple_conv_q1.weight, math.pi / 2)):
        assert not bank.requires_grad and bank.shape == (16, 3, 11, 11)
        nonzero = bank.abs().flatten(2).amax(2) > 0
        assert torch.equal(nonzero.sum(1), torch.ones(16, dtype=torch.long))
        colors = p["colors"][name]
        for i in range(16):
            expected = gabor_kernel(p["frequency"][i], p["sigma_x"][i], p["sigma_y"][i],
                                    p["theta_rad"][i], p["phase_rad"][i] + phase_shift, 11)
            assert torch.equal(bank[i, colors[i]], expected)


def test_colour_draws_match_a_globally_seeded_reference():
    n = 40
    for seed in (0, 3):
        torch.manual_seed(seed)
        ref0 = torch.randint(0, 3, (n,))
        ref1 = torch.randint(0, 3, (n,))
        state = torch.get_rng_state()
        b = block(simple_channels=20, complex_channels=20, color_seed=seed)
        assert torch.equal(torch.get_rng_state(), state), "global RNG touched"
        assert np.array_equal(b.gabor_params["colors"]["q0"], ref0.numpy())
        assert np.array_equal(b.gabor_params["colors"]["q1"], ref1.numpy())
    shared = block(simple_channels=20, complex_channels=20, shared_color_channel=True)
    assert np.array_equal(shared.gabor_params["colors"]["q0"], shared.gabor_params["colors"]["q1"])


@pytest.mark.parametrize(("h", "w", "stride", "k"),
                         [(64, 64, 2, 11), (37, 50, 4, 25), (9, 9, 3, 5)])
def test_output_shape(h, w, stride, k):
    b = block(stride=stride, ksize=k, noise_mode=None)
    out = b(torch.zeros(2, 3, h, w))
    assert out.shape == (2, 16, (h - 1) // stride + 1, (w - 1) // stride + 1)
    assert b.output_size(h, w) == tuple(out.shape[-2:])


@pytest.mark.parametrize("kwargs", [{}, {"shared_color_channel": True},
                                    {"simple_channels": 0, "complex_channels": 6},
                                    {"simple_channels": 6, "complex_channels": 0},
                                    {"in_channels": 1}])
def test_forward_equals_two_convolution_reference(kwargs):
    b = block(noise_mode=None, **kwargs)
    x = torch.rand(3, b.in_channels, 40, 40, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out, ref = b(x), two_conv_reference(b, x)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() <= 1e-5 * max(1.0, float(ref.abs().max()) / 10)


def test_given_banks_spanning_several_channels_use_the_dense_path():
    q0 = torch.randn(6, 3, 5, 5, generator=torch.Generator().manual_seed(1)) * 0.1
    q1 = torch.randn(6, 3, 5, 5, generator=torch.Generator().manual_seed(2)) * 0.1
    b = VOneBlock(3, 3, weights=(q0, q1), ksize=5, stride=1, noise_mode=None)
    x = torch.randn(2, 3, 12, 12)
    assert b.gabor_params["source"] == "given"
    assert torch.allclose(b(x), two_conv_reference(b, x), atol=1e-5)


def test_loaded_weights_are_used_after_load_state_dict():
    a, b = block(noise_mode=None), block(noise_mode=None, gabor_seed=5)
    x = torch.rand(1, 3, 32, 32)
    before = a(x)
    a.load_state_dict(b.state_dict())
    assert torch.allclose(a(x), b(x)) and not torch.allclose(a(x), before)


def test_each_filter_prefers_a_grating_at_its_own_orientation_and_frequency():
    """Complex cells are phase invariant, so a grating's phase does not matter (spec 6.3).

    Tested on the filters whose envelope holds enough cycles (nx >= 0.35) and fits the
    kernel; for very broadband Gabors the peak of the tuning curve moves towards 0 cpd.
    """
    k = 25
    # stride 12: output (1, 1) is centred on the image centre; only 3 x 3 outputs computed.
    b = VOneBlock(0, 48, image_size=k, visual_degrees=k / 28, ksize=k, stride=k // 2,
                  noise_mode=None, shared_color_channel=True, gabor_seed=4)
    p = b.gabor_params
    usable = [i for i in range(48) if p["nx"][i] >= 0.35 and p["ny"][i] >= 0.2
              and max(p["sigma_x"][i], p["sigma_y"][i]) <= 4.5][:10]
    assert len(usable) >= 6
    rows, cols = (torch.arange(k, dtype=torch.float64) - k // 2).view(-1, 1), \
        (torch.arange(k, dtype=torch.float64) - k // 2).view(1, -1)

    def responses(i, thetas, freqs):
        """Response of filter i at the centre to gratings (theta, freq) on its channel."""
        color = int(p["colors"]["q0"][i])
        images = torch.zeros(len(thetas), 3, k, k)
        for j, (theta, freq) in enumerate(zip(thetas, freqs, strict=True)):
            x_rot = rows * math.cos(theta) + cols * math.sin(theta)
            images[j, color] = (0.5 * torch.cos(2 * math.pi * freq * x_rot)).float()
        return b(images)[:, i, 1, 1]

    thetas = np.radians(np.arange(0, 180, 15))
    factors = np.array([0.5, 0.7, 1.0, 1.4, 2.0])
    for i in usable:
        f, own = p["frequency"][i], p["theta_rad"][i]
        orientation = responses(i, thetas, [f] * len(thetas))
        best = thetas[int(orientation.argmax())]
        diff = abs((best - own + math.pi / 2) % math.pi - math.pi / 2)
        assert diff <= math.radians(7.5) + 1e-9, f"filter {i}: orientation off by {diff:.2f} rad"
        tuning = responses(i, [own] * len(factors), f * factors)
        assert int(tuning.argmax()) == 2, f"filter {i}: frequency tuning {tuning.tolist()}"


@pytest.mark.parametrize("mode", ["neuronal", "gaussian", None])
def test_input_gradients_are_finite_on_grey_and_random_images(mode):
    b = block(noise_mode=mode)
    grey = torch.zeros(2, 3, 32, 32, requires_grad=True)  # normalised mid-grey
    b(grey).sum().backward()
    assert torch.isfinite(grey.grad).all()
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    b(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gradients_after_an_inference_mode_forward():
    """Lazily built state (the convolution plan, fixed noise) must not be inference tensors."""
    b = block(noise_mode="neuronal")
    with torch.inference_mode():
        b(torch.rand(2, 3, 64, 64))
        b.fix_noise(batch_size=2, seed=1)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    b(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_zero_energy_gives_zero_gradient_and_the_same_forward():
    b = block(simple_channels=0, complex_channels=8, noise_mode=None)
    grey = torch.zeros(1, 3, 24, 24, requires_grad=True)
    out = b(grey)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.equal(grey.grad, torch.zeros_like(grey))
    with torch.no_grad():
        x = torch.rand(1, 3, 24, 24)
        assert torch.equal(b(x), b(x.clone().requires_grad_()).detach())


def test_no_in_place_ops_keep_recorded_activations_intact():
    b = block(noise_mode="neuronal", generator=torch.Generator().manual_seed(0))
    seen = {}
    hooks = [getattr(b, name).register_forward_hook(
        lambda _m, _i, o, name=name: seen.__setitem__(name, (o, o.clone())))
        for name in ("simple", "complex", "gabors", "noise", "output")]
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    b(x).sum().backward()
    for h in hooks:
        h.remove()
    for name, (live, copy) in seen.items():
        assert torch.equal(live, copy), f"{name} was modified in place"


def test_neuronal_noise_mean_and_variance():
    """E[R | A] = A and Var[R | A] = A / s + (l + 1e-4) / s^2 before the final ReLU (spec 7.1)."""
    b = block(noise_mode="neuronal", noise_scale=0.35, noise_level=0.07,
              generator=torch.Generator().manual_seed(0))
    for a in (0.5, 2.0, 6.0):
        noisy = b._add_noise(torch.full((1, 40000, 1, 1), a))
        assert noisy.mean().item() == pytest.approx(a, abs=0.04)
        assert noisy.var().item() == pytest.approx(a / 0.35 + (0.07 + 1e-4) / 0.35**2, rel=0.04)
    # Through the whole block the final ReLU rectifies: E[output] > A near A = 0.
    grey = torch.zeros(1, 3, 64, 64)
    with without_noise(b):
        clean = b(grey)
    assert (b(grey) >= 0).all() and b(grey).mean() > clean.mean()


def test_gaussian_noise_variance_and_final_relu():
    b = block(noise_mode="gaussian", noise_scale=0.5, generator=torch.Generator().manual_seed(0))
    out = b._add_noise(torch.full((1, 40000, 1, 1), 3.0))
    assert out.mean().item() == pytest.approx(3.0, abs=0.02)
    assert out.var().item() == pytest.approx(0.25, rel=0.05)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    assert (b(x) >= 0).all()


def test_noise_draws_from_the_given_generator_only():
    b = block(noise_mode="neuronal")
    x = torch.rand(2, 3, 32, 32)
    b.generator = torch.Generator().manual_seed(11)
    state = torch.get_rng_state()
    first = b(x)
    assert torch.equal(torch.get_rng_state(), state)
    b.generator = torch.Generator().manual_seed(11)
    assert torch.equal(b(x), first)
    # Draw-level compatibility with the reference: randn_like after the same global seed.
    with without_noise(b):
        clean = b(x)
    xi = torch.randn(clean.shape, generator=torch.Generator().manual_seed(11))
    rate = clean * 0.35 + 0.07
    expected = torch.relu((rate + xi * torch.sqrt(torch.relu(rate) + 1e-4) - 0.07) / 0.35)
    assert torch.equal(first, expected)
    b.set_noise_mode("gaussian", scale=1.0)
    b.generator = torch.Generator().manual_seed(12)
    xi = torch.randn(clean.shape, generator=torch.Generator().manual_seed(12))
    assert torch.equal(b(x), torch.relu(clean + xi * 1.0))


def test_noise_is_on_in_eval_mode_and_without_noise_restores():
    b = block(noise_mode="neuronal").eval()
    x = torch.rand(1, 3, 32, 32)
    assert not torch.equal(b(x), b(x))
    with without_noise(b):
        assert b.noise_mode is None and torch.equal(b(x), b(x))
    assert (b.noise_mode, b.noise_scale, b.noise_level) == ("neuronal", 0.35, 0.07)
    with pytest.raises(RuntimeError), without_noise(b):
        raise RuntimeError("boom")
    assert b.noise_mode == "neuronal"
    b.set_noise_mode("gaussian", scale=1.0)
    assert (b.noise_mode, b.noise_scale) == ("gaussian", 1.0)
    with pytest.raises(ConfigError):
        b.set_noise_mode("poisson")  # type: ignore[arg-type]


def test_fixed_noise():
    b = block(noise_mode="neuronal")
    b.fix_noise(batch_size=2, seed=0)  # 0 is a real seed here
    assert b.fixed_noise is not None and b.fixed_noise.shape == (2, 16, 32, 32)
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(b(x), b(x))
    other = block(noise_mode="neuronal")
    other.fix_noise(batch_size=2, seed=0)
    assert torch.equal(other(x), b(x))
    assert "fixed_noise" not in b.state_dict()
    with pytest.raises(RobustlensError, match="fixed noise"):
        b(torch.rand(3, 3, 64, 64))
    b.unfix_noise()
    assert not torch.equal(b(x), b(x))


def test_invalid_configuration():
    with pytest.raises(ConfigError):
        block(ksize=10)
    with pytest.raises(ConfigError):
        block(noise_mode="poisson")
    with pytest.raises(ConfigError):
        block(simple_channels=0, complex_channels=0)
    with pytest.raises(RobustlensError, match="expects input"):
        block()(torch.zeros(1, 1, 8, 8))
