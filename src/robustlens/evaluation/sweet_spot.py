"""The FGSM "sweet spot" of two models (study S2): where one is still right, the other wrong.

Each model is attacked white-box (its own gradients) at every eps of a sweep. Per example and
eps we know whether model A (e.g. adversarially trained) is still right while model B
(standard) is already wrong; the sweet spot is the eps range where that happens most.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from robustlens.attacks import FGSM, Attack, eval_mode
from robustlens.data.dataset import ImageDataset
from robustlens.errors import ConfigError
from robustlens.evaluation.results import with_eps

__all__ = ["SweetSpot", "find_sweet_spot"]


@dataclass(frozen=True)
class SweetSpot:
    """The sweet spot of a pair of models and the evidence for it.

    Attributes:
        table: one row per eps: ``eps, accuracy_a, accuracy_b, only_a_right`` (fraction of
            images where A is right and B wrong, both attacked white-box), ``only_b_right``.
        best_eps: the eps maximising ``only_a_right`` (``nan`` if it is never positive).
        eps_low: lower end of the sweet spot: the contiguous eps run around ``best_eps``
            where ``only_a_right >= threshold * max`` (``nan`` if none).
        eps_high: upper end of that run.
        examples: up to ``n_examples`` images at ``best_eps`` where A is right and B wrong:
            ``example, label, label_name, prediction_a, prediction_b`` (+ class names).
        clean: (n, C, H, W) the clean example images.
        adversarial_a: (n, C, H, W) their adversarial images against A (at ``best_eps``).
        adversarial_b: (n, C, H, W) their adversarial images against B.
        names: labels of the two models.
    """

    table: pd.DataFrame
    best_eps: float
    eps_low: float
    eps_high: float
    examples: pd.DataFrame
    clean: torch.Tensor
    adversarial_a: torch.Tensor
    adversarial_b: torch.Tensor
    names: tuple[str, str]


def find_sweet_spot(model_a: nn.Module, model_b: nn.Module, data: ImageDataset,
                    epsilons: Sequence[float], *, attack: Attack | None = None,
                    threshold: float = 0.5, n_examples: int = 8, batch_size: int = 256,
                    device: torch.device | str = "cpu", seed: int = 0,
                    names: tuple[str, str] = ("robust", "standard")) -> SweetSpot:
    """Find the eps range where ``model_a`` is still right and ``model_b`` already wrong.

    Args:
        model_a: the model expected to hold out longer (e.g. adversarially trained).
        model_b: the other model.
        data: the images.
        epsilons: the sweep (pixel units), e.g. ``[0, .01, .05, .1, .15, .2, .25, .3, .35]``.
        attack: the attack at any eps (its eps is replaced); default :class:`FGSM`.
        threshold: the sweet spot is where ``only_a_right`` reaches this fraction of its
            maximum.
        n_examples: example images kept at ``best_eps``.
        batch_size: images per batch.
        device: where to run.
        seed: seed of the attacks' randomness.
        names: labels of the two models.
    """
    if not epsilons:
        raise ConfigError("epsilons must list at least one eps (pixel units).")
    if not 0 < threshold <= 1:
        raise ConfigError(f"threshold must lie in (0, 1]; received {threshold!r}.")
    device = torch.device(device)
    base = attack if attack is not None else FGSM(eps=0.0)
    eps_list = sorted(float(e) for e in epsilons)
    right: dict[tuple[int, float], list[torch.Tensor]] = {}
    for m in (model_a, model_b):
        m.to(device)
    with eval_mode(model_a), eval_mode(model_b):
        for x, y in data.batches(batch_size):
            x, y = x.to(device), y.to(device)
            for e in eps_list:
                a = with_eps(base, e)
                for i, m in enumerate((model_a, model_b)):
                    g = torch.Generator(device=device).manual_seed(seed)
                    x_adv = a(m, x, y, generator=g)
                    with torch.inference_mode():
                        right.setdefault((i, e), []).append((m(x_adv).argmax(1) == y).cpu())
    ok = {k: torch.cat(v) for k, v in right.items()}
    rows = []
    for e in eps_list:
        ra, rb = ok[(0, e)], ok[(1, e)]
        rows.append({"eps": e, "accuracy_a": float(ra.float().mean()),
                     "accuracy_b": float(rb.float().mean()),
                     "only_a_right": float((ra & ~rb).float().mean()),
                     "only_b_right": float((rb & ~ra).float().mean())})
    table = pd.DataFrame(rows)
    gap = table["only_a_right"].to_numpy()
    nan = math.nan
    if gap.max() <= 0:
        empty = data.images[:0]
        return SweetSpot(table, nan, nan, nan, pd.DataFrame(columns=[
            "example", "label", "label_name", "prediction_a", "prediction_b"]),
            empty, empty, empty, names)
    best = int(gap.argmax())
    lo = hi = best
    while lo > 0 and gap[lo - 1] >= threshold * gap[best]:
        lo -= 1
    while hi < len(gap) - 1 and gap[hi + 1] >= threshold * gap[best]:
        hi += 1
    best_eps = eps_list[best]
    chosen = torch.nonzero(ok[(0, best_eps)] & ~ok[(1, best_eps)]).flatten()[:n_examples]
    x, y = data.images[chosen].to(device), data.labels[chosen].to(device)
    a = with_eps(base, best_eps)
    advs, preds = [], []
    with eval_mode(model_a), eval_mode(model_b):
        for m in (model_a, model_b):
            # same generator seed as in the sweep, but a smaller batch: random starts differ,
            # so predictions are re-read here rather than assumed
            adv = a(m, x, y, generator=torch.Generator(device=device).manual_seed(seed))
            with torch.inference_mode():
                preds.append(m(adv).argmax(1).cpu())
            advs.append(adv.cpu())
    names_of = data.class_names
    examples = pd.DataFrame({
        "example": chosen.numpy(), "label": y.cpu().numpy(),
        "label_name": [names_of[int(c)] for c in y.cpu()],
        "prediction_a": preds[0].numpy(), "prediction_b": preds[1].numpy(),
        "prediction_a_name": [names_of[int(c)] for c in preds[0]],
        "prediction_b_name": [names_of[int(c)] for c in preds[1]],
    })
    return SweetSpot(table, best_eps, eps_list[lo], eps_list[hi], examples, x.cpu(), advs[0],
                     advs[1], names)
