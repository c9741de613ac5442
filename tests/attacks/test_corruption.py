"""Common corruptions: range, determinism, severity, references (PIL's JPEG, skimage's HSV)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import color
from skimage import data as skdata

from robustlens.attacks import CORRUPTIONS, AttackResult, Corruption
from robustlens.attacks.corruption import corrupt
from robustlens.errors import ConfigError


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A 96 x 96 RGB crop of skimage's cat (large enough for ImageNet-C's table): (1, 3, 96, 96)."""
    return torch.tensor(skdata.chelsea()[100:196, 150:246]).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def fmnist(fashion_mnist_test) -> torch.Tensor:
    return fashion_mnist_test.images[:16]


def test_the_names_are_imagenet_c_without_frost():
    assert len(CORRUPTIONS) == 14 and "frost" not in CORRUPTIONS
    assert CORRUPTIONS[0] == "gaussian_noise" and CORRUPTIONS[-1] == "jpeg_compression"


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_range_shape_determinism_and_seed(name, fmnist, digits, photo):
    for x in (fmnist, digits.images[:16], photo):
        for severity in (1, 5):
            a = corrupt(x, name, severity, seed=3)
            assert a.shape == x.shape and a.dtype == x.dtype
            assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
            assert torch.equal(a, corrupt(x, name, severity, seed=3))
            g = torch.Generator().manual_seed(3)
            assert torch.equal(a, corrupt(x, name, severity, generator=g))
    random = ("noise", "glass", "motion", "snow", "fog", "elastic")
    if any(word in name for word in random):
        assert not torch.equal(corrupt(fmnist, name, 3, seed=0), corrupt(fmnist, name, 3, seed=1))


@pytest.mark.parametrize("name", [n for n in CORRUPTIONS if n != "elastic_transform"])
def test_pixel_change_grows_with_severity(name, fmnist, digits, photo):
    # elastic_transform is excluded: the reference's severities trade displacement size against
    # smoothness, so its mean pixel change is not ordered (its effect on accuracy is tested below)
    for x in (fmnist, digits.images[:64], photo):
        if name == "glass_blur" and x is photo:
            continue  # at ImageNet-C's sizes, stronger blur averages glass blur's displaced pixels back
        change = [float((corrupt(x, name, s) - x).abs().mean()) for s in range(1, 6)]
        assert change[4] > change[0] > 0
        for low, high in zip(change, change[1:], strict=False):
            assert high >= 0.85 * low, (name, change)  # a little slack: aliasing, re-smoothing


@pytest.mark.slow
def test_accuracy_of_a_trained_model_falls_with_severity(digits_model, digits_test):
    x, y = digits_test.images[:300], digits_test.labels[:300]
    with torch.no_grad():
        clean = float((digits_model(x).argmax(1) == y).float().mean())
        drops = []
        for name in CORRUPTIONS:
            acc = [float((digits_model(corrupt(x, name, s)).argmax(1) == y).float().mean()) for s in (1, 5)]
            assert acc[1] <= acc[0] + 0.02, (name, acc)
            assert acc[0] <= clean + 0.02
            drops.append(acc[0] - acc[1])
    assert np.mean(drops) > 0.05


def test_jpeg_matches_pil(photo):
    img = (photo[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    for quality in (80, 25, 7):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=quality)
        ref = np.asarray(Image.open(buf)).astype(np.float32) / 255
        from robustlens.attacks.corruption import _jpeg

        mine = _jpeg(torch.tensor(img).permute(2, 0, 1)[None].float() / 255, quality)[0].permute(1, 2, 0).numpy()
        error = np.abs(ref - img / 255).mean()
        assert np.abs(mine - ref).mean() < 0.35 * error  # same codec up to PIL's integer DCT


def test_brightness_matches_skimage_hsv(photo):
    big = photo.double()  # large: ImageNet-C table
    hsv = color.rgb2hsv(big[0].permute(1, 2, 0).numpy())
    hsv[..., 2] = np.clip(hsv[..., 2] + 0.3, 0, 1)  # severity 3
    ref = color.hsv2rgb(hsv)
    ours = corrupt(big, "brightness", 3)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_noise_and_contrast_closed_forms():
    x = torch.full((4, 1, 28, 28), 0.5, dtype=torch.float64)
    noisy = corrupt(x, "gaussian_noise", 5)  # small-image table: sigma 0.10
    assert abs(float((noisy - x).std()) - 0.10) < 0.005
    shot = corrupt(x, "shot_noise", 5)  # Poisson(50 x) / 50: mean x, variance x / 50
    assert abs(float(shot.mean()) - 0.5) < 0.005 and abs(float(shot.var()) - 0.5 / 50) < 0.001
    impulse = corrupt(x, "impulse_noise", 5)  # 7% of the values set to 0 or 1
    assert abs(float((impulse != 0.5).double().mean()) - 0.07) < 0.01
    ramp = torch.linspace(0, 1, 28 * 28, dtype=torch.float64).view(1, 1, 28, 28)
    expected = (ramp - ramp.mean()) * 0.15 + ramp.mean()  # severity 5 keeps 15% of the contrast
    torch.testing.assert_close(corrupt(ramp, "contrast", 5), expected)


def test_pixelate_is_constant_on_blocks():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = corrupt(x, "pixelate", 5)  # 0.65 * 32 -> 20 cells
    assert out.unique().numel() <= 2 * 3 * 20 * 20


def test_unknown_name_and_bad_severity():
    with pytest.raises(ConfigError, match="gaussian_noise"):
        Corruption("gausian_noise")
    with pytest.raises(ConfigError, match="frost"):
        Corruption("frost")
    for bad in (0, 6, 2.0, True):
        with pytest.raises(ConfigError, match="1..5"):
            Corruption("fog", severity=bad)
    with pytest.raises(ConfigError, match="C = 1"):
        corrupt(torch.rand(1, 2, 8, 8), "fog")


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, grad):
        raise AssertionError("a corruption must not ask the model for gradients")


class _Model(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(_NoBackward.apply(x))


def test_called_like_an_attack(digits_model, digits_test):
    x, y = digits_test.images[:64], digits_test.labels[:64]
    attack = Corruption("fog", severity=5, seed=1)
    assert attack.name == "fog" and attack.eps != attack.eps  # no radius: nan
    model = _Model(digits_model)
    out = attack(model, x, y)
    assert torch.equal(out, corrupt(x, "fog", 5, seed=1))
    result = attack.run(model, x, y)
    assert isinstance(result, AttackResult)
    with torch.no_grad():
        fooled = digits_model(out).argmax(1) != y
    assert torch.equal(result.success, fooled)
    torch.testing.assert_close(result.linf, (out - x).abs().flatten(1).amax(1))
    assert not digits_model.training
    with pytest.raises(ConfigError, match="untargeted"):
        attack.run(model, x, y, targets=y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_on_the_gpu(name, fmnist):
    out = corrupt(fmnist.cuda(), name, 3)
    assert out.device.type == "cuda" and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, corrupt(fmnist.cuda(), name, 3))
