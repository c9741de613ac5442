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
