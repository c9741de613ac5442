"""Activation maximization, objectives, parameterizations, transforms and DeepDream."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlens.errors import RobustlensError
from robustlens.visualization import (
    FourierImage,
    PixelImage,
    deepdream,
    objective_values,
    objectives,
    render,
    transforms,
)

from .conftest import count_hooks

UNIFORM = torch.Generator().manual_seed(1234)


@pytest.mark.parametrize("unit", ["features.4#0", "features.4#5", "features.1#3"])
def test_render_beats_best_of_1000_random_images_fmnist(trained_fmnist_cnn, unit: str) -> None:
    model = trained_fmnist_cnn
    result = render(model, unit, input_size=28, steps=96)
    assert result.images.shape == (1, 1, 28, 28)
    assert 0 <= float(result.images.min()) and float(result.images.max()) <= 1
    assert result.losses.shape == (96,)
    random = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    best_random = objective_values(model, unit, random).max()
    assert objective_values(model, unit, result.images)[0] > best_random


def test_render_beats_best_of_1000_random_images_lite0(lite0) -> None:
    unit = "_blocks.2#7"
    result = render(lite0, unit, image_size=48, steps=40)
    random = torch.rand(1000, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    assert objective_values(lite0, unit, result.images)[0] > objective_values(lite0, unit,
                                                                             random).max()


def test_lucent_and_robustlens_addresses_agree(trained_fmnist_cnn) -> None:
    a = render(trained_fmnist_cnn, "features.4:2", input_size=28, steps=3)
    b = render(trained_fmnist_cnn, "features.4#2", input_size=28, steps=3)
    torch.testing.assert_close(a.images, b.images)
    with pytest.raises(RobustlensError, match="unknown layer"):
        render(trained_fmnist_cnn, "featres.4#2", steps=1)
    with pytest.raises(RobustlensError, match="out of range"):
        render(trained_fmnist_cnn, "features.4#99", steps=1, input_size=28)


def test_lucent_unit_on_a_registered_resnet() -> None:
    """``"layer4:0"`` is channel 0 of torchvision's ``layer4``; the former ``model.`` name agrees."""
    import robustlens
    from robustlens.models import create_model

    model = create_model("resnet18", seed=0).eval()
    runs = {unit: render(model, unit, image_size=32, steps=2, transforms=None, redirect_relu_steps=0)
            for unit in ("layer4:0", "layer4#0", "model.layer4:0")}
    for result in runs.values():
        torch.testing.assert_close(result.images, runs["layer4#0"].images)
    images = torch.rand(3, 3, 32, 32, generator=UNIFORM)
    with torch.no_grad(), robustlens.record(model, ["layer4"]) as rec:
        model(images)
    expected = rec["layer4"][:, 0].mean((1, 2))  # channel 0 of layer4's output, averaged over positions
    torch.testing.assert_close(objective_values(model, "layer4:0", images), expected)
    torch.testing.assert_close(objective_values(model, "model.layer4:0", images), expected)
    with pytest.raises(RobustlensError, match="Did you mean 'layer4'"):
        render(model, "layer5:0", steps=1)


def test_render_is_seeded_and_leaves_model_untouched(trained_fmnist_cnn) -> None:
    model = trained_fmnist_cnn
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        a = render(model, "features.1#1", input_size=28, steps=5, seed=3)
        assert model.training and all(m.training for m in model.modules())
    finally:
        model.eval()
    b = render(model, "features.1#1", input_size=28, steps=5, seed=3)
    torch.testing.assert_close(a.images, b.images)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert count_hooks(model) == 0


class _Boom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.after = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.after(self.conv(x))
        raise ValueError("boom")


def test_no_hooks_remain_after_errors(trained_fmnist_cnn) -> None:
    model = _Boom()
    # the forward raises after the objective's layer: the early stop never reaches it
    render(model, "conv#0", image_size=8, steps=2)
    with pytest.raises(ValueError, match="boom"):
        render(model, objectives.channel("conv#0") + objectives.class_logit(0), image_size=8,
               steps=1)
    assert count_hooks(model) == 0
    with pytest.raises(RobustlensError):
        render(trained_fmnist_cnn, objectives.class_logit(50), input_size=28, steps=1)
    assert count_hooks(trained_fmnist_cnn) == 0


def test_objective_arithmetic() -> None:
    acts = {"a": torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]]]),  # (1, 2, 1, 2)
            "output": torch.tensor([[0.5, -1.0]])}
    c0, c1 = objectives.channel("a#0"), objectives.channel("a:1")
    assert float(c0(acts)[0]) == 2.0 and float(c1(acts)[0]) == 2.0
    combo = 2 * c0 - c1 / 2 + objectives.class_logit(1) - 1.0
    assert float(combo(acts)[0]) == pytest.approx(4 - 1 - 1 - 1)
    assert combo.layers == {"a", "output"} and combo.needs_output
    assert float(sum([c0, c1])(acts)[0]) == 4.0
    assert float(objectives.layer("a")(acts)[0]) == pytest.approx((1 + 9 + 4 + 4) / 4)
    assert float(objectives.neuron("a#0", 0, 1)(acts)[0]) == 3.0
    assert float(objectives.direction("a", [1.0, 0.0])(acts)[0]) == 2.0
    assert objectives.diversity("a")(acts).shape == (1,)
    two = {"a": torch.stack([acts["a"][0], acts["a"][0] * 2])}
    torch.testing.assert_close(objectives.diversity("a")(two), torch.tensor([-1.0, -1.0]))


def test_params_and_transforms() -> None:
    gen = torch.Generator().manual_seed(0)
    rgb = FourierImage(32, 3, 2, generator=gen)().detach()
    grey = FourierImage(28, 1, generator=gen)()
    assert rgb.shape == (2, 3, 32, 32) and grey.shape == (1, 1, 28, 28)
    assert 0 < float(rgb.min()) and float(rgb.max()) < 1
    photo = torch.rand(1, 3, 10, 12)
    torch.testing.assert_close(PixelImage.from_images(photo)(), photo.clamp(1e-3, 1 - 1e-3))
    chain = transforms.compose(transforms.standard_transforms(128))
    out = chain(torch.rand(1, 3, 128, 128), gen)
    assert 120 <= out.shape[-1] <= 150
    assert torch.equal(transforms.pad(2)(torch.zeros(1, 1, 1, 1), gen)[0, 0, 0], torch.full((5,), .5))
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert transforms.jitter(1)(x, gen).shape == (1, 1, 3, 3)
    rot = transforms.random_rotate([90])(torch.eye(5)[None, None], gen)
    torch.testing.assert_close(rot[0, 0].flip(0), torch.eye(5), atol=1e-5, rtol=0)


def test_eot_and_noise_off_on_stochastic_vonenet() -> None:
    from robustlens.models import create_model

    torch.manual_seed(0)
    model = create_model("vone_fmnist_cnn").eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    a = render(model, _first_conv_name(model) + "#1", input_size=28, steps=4, eot_samples=3)
    b = render(model, _first_conv_name(model) + "#1", input_size=28, steps=4, noise="off")
    assert a.images.shape == b.images.shape == (1, 1, 28, 28)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    modes = {m.noise_mode for m in model.modules() if hasattr(m, "noise_mode")}
    assert modes and None not in modes  # noise restored after noise="off"


def _first_conv_name(model: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))


def test_deepdream_raises_layer_energy(trained_fmnist_cnn, fashion_mnist_test) -> None:
    model = trained_fmnist_cnn
    x = fashion_mnist_test.images[:2]
    dream = deepdream(model, x, "features.3", octaves=3, octave_scale=1.3, steps=6,
                      input_size=28)
    assert dream.shape == x.shape and 0 <= float(dream.min()) and float(dream.max()) <= 1
    energy = objectives.layer("features.3")
    assert torch.all(objective_values(model, energy, dream) > objective_values(model, energy, x))
    assert count_hooks(model) == 0
