"""Small models with known closed forms, shared by the attack tests."""

from __future__ import annotations

import torch
from torch import nn


class Affine(nn.Module):
    """logits = W flatten(x) + b, with W (K, d)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(torch.zeros(weight.shape[0]) if bias is None else bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


class NoisyAffine(nn.Module):
    """logits = W flatten(x * (1 + sigma * eps)) + b, eps ~ N(0, I) fresh at every call."""

    def __init__(self, weight: torch.Tensor, sigma: float = 0.5) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = 1 + self.sigma * torch.randn_like(x)
        return (x * noise).flatten(1) @ self.weight.T


def affine_problem(n: int = 8, k: int = 5, side: int = 4, seed: int = 0
                   ) -> tuple[Affine, torch.Tensor, torch.Tensor]:
    """An affine model, images near 0.5 (no [0, 1] clipping) and its predictions as labels."""
    g = torch.Generator().manual_seed(seed)
    d = side * side
    weight = torch.randn(k, d, generator=g)
    model = Affine(weight, 0.1 * torch.randn(k, generator=g))
    x = 0.5 + 0.02 * torch.randn(n, 1, side, side, generator=g)
    with torch.no_grad():
        labels = model(x).argmax(1)
    return model, x, labels


def digits_softmax(n_test: int = 120) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A softmax regression on sklearn's 8x8 digits (L-BFGS, about a second; ~95% test)
    and ``n_test`` test images it classifies correctly, with their labels."""
    from robustlens.data import load_digits

    train, test = load_digits("train"), load_digits("test")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.LBFGS(model.parameters(), max_iter=100)
    x, y = train.images, train.labels

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + 1e-3 * model[1].weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    model.eval()
    with torch.no_grad():
        right = model(test.images).argmax(1) == test.labels
    idx = right.nonzero().squeeze(1)[:n_test]
    for p in model.parameters():
        p.requires_grad_(False)
    return model, test.images[idx], test.labels[idx]


class MaskedGradient(nn.Module):
    """The model's logits with a zero input gradient everywhere (a masked-gradient defence)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.model(x)
        return out + 0.0 * x.flatten(1).sum(1, keepdim=True)


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        raise RuntimeError("this model has no gradient")


class NoBackward(nn.Module):
    """The model, but any backward pass through it raises."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(_NoBackward.apply(x))
