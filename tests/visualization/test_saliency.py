"""Saliency methods against closed forms and hand computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlens.errors import RobustlensError
from robustlens.visualization import (
    GradientXInput,
    GuidedBackprop,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
)

from .conftest import count_hooks


def _linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 5))


def test_gradient_of_linear_model_is_weight_row() -> None:
    model = _linear()
    x = torch.rand(4, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 3, 4, 1])
    grad = Saliency(model).attribute(x, target=target)
    w = model[1].weight.detach()
    assert grad.shape == x.shape
    torch.testing.assert_close(grad.flatten(1), w[target])
    torch.testing.assert_close(Saliency(model, absolute=True).attribute(x, 2).flatten(1),
                               w[2].abs().expand(4, -1))
    torch.testing.assert_close(GradientXInput(model).attribute(x, target), w[target].view_as(x) * x)


def test_default_target_is_prediction() -> None:
    model = _linear()
    x = torch.rand(3, 3, 2, 2)
    pred = model(x).argmax(1)
    torch.testing.assert_close(Saliency(model).attribute(x), Saliency(model).attribute(x, pred))


class _TinyReLU(nn.Module):
    """y = w2 . relu(W1 x): two hidden units, one through a module, one functional."""

    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 2, bias=False)
        self.fc2 = nn.Linear(2, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.functional = functional
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 1.0]]))
            self.fc2.weight.copy_(torch.tensor([[-3.0, 0.5]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x.flatten(1))
        h = F.relu(h) if self.functional else self.relu(h)
        return self.fc2(h)


@pytest.mark.parametrize("functional", [False, True])
def test_guided_backprop_by_hand(functional: bool) -> None:
    model = _TinyReLU(functional)
    x = torch.tensor([[0.8, 0.2], [0.1, 0.6]]).view(2, 1, 1, 2)
    # image 0: h = (0.6, 1.8), both active. Plain gradient: -3*(1,-1) + 0.5*(2,1) = (-2, 3.5).
    # Guided: the gradient reaching each ReLU output is (-3, 0.5); negatives are zeroed ->
    # (0, 0.5) -> 0.5 * (2, 1) = (1, 0.5).
    # image 1: h = (-0.5, 0.8): unit 0 inactive -> guided (0, 0.5) * (0, 1) -> (1, 0.5);
    # plain: 0.5 * (2, 1) = (1, 0.5) too.
    guided = GuidedBackprop(model).attribute(x, target=0).view(2, 2)
    torch.testing.assert_close(guided, torch.tensor([[1.0, 0.5], [1.0, 0.5]]))
    plain = Saliency(model).attribute(x, target=0).view(2, 2)
    torch.testing.assert_close(plain, torch.tensor([[-2.0, 3.5], [1.0, 0.5]]))
    # the forward values are unchanged by the guided mode
    assert count_hooks(model) == 0


def test_guided_relu6_passes_only_inside_its_range() -> None:
    model = nn.Sequential(nn.Flatten(), nn.ReLU6())
    x = torch.tensor([[-0.5, 0.5, 0.9]]).view(1, 1, 1, 3) * torch.tensor([1.0, 1.0, 1.0])

    class Sum(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.hardtanh(x.flatten(1) * 10 - 2, 0.0, 6.0)
            return y.sum(1, keepdim=True)

    g = GuidedBackprop(Sum()).attribute(x.clamp(0, 1), target=0)
    # inputs 0, 5, 9 -> pre-activations -2, 3, 7: only the middle one lies in (0, 6)
    torch.testing.assert_close(g.flatten(), torch.tensor([0.0, 10.0, 0.0]))
    assert model is not None


def test_smoothgrad_sigma_zero_is_the_gradient(trained_digits_cnn, digits) -> None:
    x = digits.images[:5]
    plain = Saliency(trained_digits_cnn).attribute(x, target=digits.labels[:5])
    smooth = SmoothGrad(Saliency(trained_digits_cnn), sigma=0.0, n_samples=4).attribute(
        x, target=digits.labels[:5])
    torch.testing.assert_close(smooth, plain, rtol=1e-5, atol=1e-7)


def test_smoothgrad_noise_in_pixel_range_units_and_seeded(trained_digits_cnn, digits) -> None:
    x = digits.images[:3]
    a = SmoothGrad(Saliency(trained_digits_cnn), sigma=0.15, n_samples=8, seed=3).attribute(x, 0)
    b = SmoothGrad(Saliency(trained_digits_cnn), sigma=0.15, n_samples=8, seed=3,
                   batch_size=5).attribute(x, 0)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # chunking does not change draws
    # on a linear model every noisy gradient is the weight row: smoothing changes nothing
    lin = _linear()
    xs = torch.rand(2, 3, 2, 2)
    torch.testing.assert_close(SmoothGrad(Saliency(lin), sigma=0.2, n_samples=6).attribute(xs, 1),
                               Saliency(lin).attribute(xs, 1))


@pytest.mark.parametrize("baseline", ["black", "blur"])
def test_integrated_gradients_completeness(trained_digits_cnn, digits, baseline: str) -> None:
    model = trained_digits_cnn
    x, y = digits.images[:6], digits.labels[:6]
    ig = IntegratedGradients(model, baseline=baseline, n_steps=256)
    attr = ig.attribute(x, target=y)
    with torch.no_grad():
        fx = model(x).gather(1, y[:, None])[:, 0]
        f0 = model(ig.baseline_for(x)).gather(1, y[:, None])[:, 0]
    total = attr.flatten(1).sum(1)
    assert torch.all((total - (fx - f0)).abs() <= 0.01 * (fx - f0).abs() + 1e-4), (total, fx - f0)


def test_bad_inputs_are_rejected() -> None:
    model = _linear()
    with pytest.raises(RobustlensError, match=r"\(B, C, H, W\)"):
        Saliency(model).attribute(torch.rand(3, 2, 2))
    with pytest.raises(RobustlensError, match=r"\[0, 1\]"):
        Saliency(model).attribute(torch.rand(1, 3, 2, 2) * 255)
    with pytest.raises(RobustlensError, match="target classes"):
        Saliency(model).attribute(torch.rand(1, 3, 2, 2), target=7)
    with pytest.raises(RobustlensError, match="sigma"):
        SmoothGrad(Saliency(model), sigma=-1)
    with pytest.raises(RobustlensError, match="baseline"):
        IntegratedGradients(model, baseline="grey")  # type: ignore[arg-type]


def test_model_left_untouched(trained_digits_cnn, digits) -> None:
    model = trained_digits_cnn
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    try:
        for method in (Saliency(model), GuidedBackprop(model), IntegratedGradients(model, n_steps=4),
                       SmoothGrad(GradientXInput(model), n_samples=2)):
            method.attribute(digits.images[:2], target=1)
        assert model.training
        assert all(m.training for m in model.modules())
    finally:
        model.eval()
    assert [p.requires_grad for p in model.parameters()] == flags
    for p, g in zip(model.parameters(), grads, strict=True):  # no parameter gradient computed
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert count_hooks(model) == 0


def test_log_softmax_output_matches_the_closed_form_of_a_linear_model() -> None:
    # f = W x + b: d log p_t / dx = w_t - sum_k p_k w_k
    model = _linear()
    x = torch.rand(4, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([0, 3, 4, 1])
    w = model[1].weight.detach()
    with torch.no_grad():
        p = model(x).softmax(1)
    expected = w[target] - p @ w
    grad = Saliency(model, output="log_softmax").attribute(x, target=target)
    torch.testing.assert_close(grad.flatten(1), expected)
    torch.testing.assert_close(GradientXInput(model, output="log_softmax").attribute(x, target),
                               expected.view_as(x) * x)


def test_log_softmax_output_matches_autograd_on_a_trained_cnn(digits_model, digits_test) -> None:
    x, y = digits_test.images[:6], digits_test.labels[:6]
    ref = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.log_softmax(digits_model(ref), 1).gather(1, y[:, None]).sum(), ref)
    torch.testing.assert_close(Saliency(digits_model, output="log_softmax").attribute(x, y), expected)
    assert not torch.allclose(Saliency(digits_model).attribute(x, y), expected)
    # SmoothGrad keeps the smoothed method's output; integrated gradients' completeness holds for log p
    smooth = SmoothGrad(Saliency(digits_model, output="log_softmax"), sigma=0.0, n_samples=2)
    assert smooth.output == "log_softmax"
    torch.testing.assert_close(smooth.attribute(x, y), expected)
    ig = IntegratedGradients(digits_model, n_steps=256, output="log_softmax").attribute(x, y)
    with torch.no_grad():
        log_p = F.log_softmax(digits_model(x), 1).gather(1, y[:, None])[:, 0]
        log_p0 = F.log_softmax(digits_model(torch.zeros_like(x)), 1).gather(1, y[:, None])[:, 0]
    torch.testing.assert_close(ig.flatten(1).sum(1), log_p - log_p0, rtol=0.02, atol=0.02)


def test_unknown_output_is_refused() -> None:
    with pytest.raises(RobustlensError, match="log_softmax"):
        Saliency(_linear(), output="softmax")  # type: ignore[arg-type]
