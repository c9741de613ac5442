"""The FGSM "sweet spot" of two models (study S2): where one is still right, the other wrong.

Each model is attacked white-box (its own gradients) at every eps of a sweep. Per example and
eps we know whether model A (e.g. adversarially trained) is still right while model B
(standard) is already wrong. Definitions, for one attack and the eps of its sweep:

- ``only_a_right(eps)``: the fraction of the images (those evaluated for both models at that
  eps) that A classifies correctly and B does not, each attacked white-box;
- the sweet spot's centre ``best_eps``: the eps maximising ``only_a_right`` (the smallest on
  ties); its range ``[eps_low, eps_high]``: the contiguous run of sweep values around
  ``best_eps`` where ``only_a_right >= threshold * only_a_right(best_eps)`` (``nan`` when A is
  never right where B is wrong);
- ``crossing_eps``: the first eps of the sweep where A's accuracy exceeds B's (the accuracy
  curves cross there when B starts ahead), ``nan`` if never.

:func:`sweet_spot_from_table` reads a study's own per-example table (no new attack);
:func:`find_sweet_spot` attacks two models itself and also returns the example images;
:func:`sweet_spot_images` crafts the labelled image pairs for chosen examples, and
:func:`plot_sweet_spot` / :func:`plot_sweet_spot_pairs` draw the S2 figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from robustlens.attacks import FGSM, Attack, eval_mode
from robustlens.data.dataset import ImageDataset
from robustlens.errors import ConfigError, suggest
from robustlens.evaluation.results import with_eps

__all__ = ["SweetSpot", "SweetSpotRange", "find_sweet_spot", "plot_sweet_spot", "plot_sweet_spot_pairs",
           "sweet_spot_from_table", "sweet_spot_images"]


def _spot(gap: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """Indices of the centre and of the ends of the run where ``gap >= threshold * max``."""
    best = int(gap.argmax())
    lo = hi = best
    while lo > 0 and gap[lo - 1] >= threshold * gap[best]:
        lo -= 1
    while hi < len(gap) - 1 and gap[hi + 1] >= threshold * gap[best]:
        hi += 1
    return best, lo, hi


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
    if gap.size == 0 or gap.max() <= 0:
        empty = data.images[:0]
        return SweetSpot(table, nan, nan, nan, pd.DataFrame(columns=[
            "example", "label", "label_name", "prediction_a", "prediction_b"]),
            empty, empty, empty, names)
    best, lo, hi = _spot(gap, threshold)
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


@dataclass(frozen=True)
class SweetSpotRange:
    """The sweet spot of two models read from per-example results (no images).

    Attributes:
        table: one row per eps: ``eps, n_images, accuracy_a, accuracy_b, only_a_right,
            only_b_right, in_sweet_spot`` (bool).
        best_eps: the eps maximising ``only_a_right`` (``nan`` if it is never positive).
        eps_low: lower end of the sweet spot (``nan`` if none).
        eps_high: upper end of the sweet spot.
        crossing_eps: the first eps where A's accuracy exceeds B's (``nan`` if never).
        examples: up to ``n_examples`` images at ``best_eps`` where A is right and B wrong:
            ``example, label, prediction_a, prediction_b``.
        names: the two models' labels (A, B).
        attack: the attack's label.
    """

    table: pd.DataFrame
    best_eps: float
    eps_low: float
    eps_high: float
    crossing_eps: float
    examples: pd.DataFrame
    names: tuple[str, str]
    attack: str


_NEEDED = ("model", "attack", "eps", "example", "correct")


def sweet_spot_from_table(per_example: pd.DataFrame, models: Sequence[str], *, attack: str | None = None,
                          threshold: float = 0.5, n_examples: int = 8) -> SweetSpotRange:
    """The sweet spot of ``models = (a, b)`` from a study's per-example table of an eps sweep.

    Clean results (eps 0) are taken from rows of eps 0 when the sweep has them, else from the
    ``clean_correct`` column when present.

    Args:
        per_example: one row per model x attack x eps x image with at least the columns
            ``model, attack, eps, example, correct`` (the study's ``per_example`` table; also
            used when present: ``label``, ``prediction``, ``clean_correct``, ``clean_prediction``).
        models: the labels of model A (expected to hold out longer) and model B.
        attack: the attack whose sweep is read; default: the table's only attack.
        threshold: the sweet spot is where ``only_a_right`` reaches this fraction of its maximum.
        n_examples: example images listed at ``best_eps``.
    """
    missing = [c for c in _NEEDED if c not in per_example.columns]
    if missing:
        raise ConfigError(f"the sweet spot needs a per-example table with columns {list(_NEEDED)}; it lacks "
                          f"{missing}. Enable [analyses.per_example] in the study.")
    names = tuple(str(m) for m in models)
    if len(names) != 2 or names[0] == names[1]:
        raise ConfigError(f"the sweet spot compares two different models, e.g. models = [\"robust\", "
                          f"\"standard\"]; received {list(models)!r}.")
    if not 0 < threshold <= 1:
        raise ConfigError(f"threshold must lie in (0, 1]; received {threshold!r}.")
    known = sorted(per_example["model"].astype(str).unique())
    for name in names:
        if name not in known:
            raise ConfigError(f"model {name!r} is not in the per-example table.{suggest(name, known)} "
                              f"Models: {', '.join(known)}.")
    attacks = sorted(per_example["attack"].astype(str).unique())
    if attack is None:
        if len(attacks) != 1:
            raise ConfigError(f"the per-example table holds several attacks ({', '.join(attacks)}); "
                              "name the one whose eps sweep defines the sweet spot (attack = ...).")
        attack = attacks[0]
    elif attack not in attacks:
        raise ConfigError(f"attack {attack!r} is not in the per-example table.{suggest(attack, attacks)} "
                          f"Attacks: {', '.join(attacks)}.")
    df = per_example[(per_example["attack"].astype(str) == attack)
                     & per_example["model"].astype(str).isin(names)].copy()
    df["model"] = df["model"].astype(str)
    if "clean_correct" in df.columns and not (df["eps"] == 0).any():
        keep = ["model", "example", "clean_correct"] + [c for c in ("label", "clean_prediction") if c in df]
        clean = df[keep].drop_duplicates(["model", "example"]).rename(
            columns={"clean_correct": "correct", "clean_prediction": "prediction"}).assign(eps=0.0)
        df = pd.concat([clean, df], ignore_index=True)
    wide = df.pivot_table(index=["eps", "example"], columns="model", values="correct", aggfunc="first")
    wide = wide.dropna(subset=list(names)).astype(bool)
    rows = []
    for eps, g in wide.groupby(level="eps", sort=True):
        ra, rb = g[names[0]].to_numpy(), g[names[1]].to_numpy()
        rows.append({"eps": float(eps), "n_images": len(g), "accuracy_a": float(ra.mean()),
                     "accuracy_b": float(rb.mean()), "only_a_right": float((ra & ~rb).mean()),
                     "only_b_right": float((rb & ~ra).mean())})
    table = pd.DataFrame(rows, columns=["eps", "n_images", "accuracy_a", "accuracy_b", "only_a_right",
                                        "only_b_right"])
    if table.empty:
        raise ConfigError(f"models {names[0]!r} and {names[1]!r} share no evaluated image under {attack!r}.")
    ahead = table.index[table["accuracy_a"] > table["accuracy_b"]]
    crossing = float(table.loc[ahead[0], "eps"]) if len(ahead) else math.nan
    gap = table["only_a_right"].to_numpy()
    columns = ["example", "label", "prediction_a", "prediction_b"]
    if gap.max() <= 0:
        return SweetSpotRange(table.assign(in_sweet_spot=False), math.nan, math.nan, math.nan, crossing,
                              pd.DataFrame(columns=columns), (names[0], names[1]), attack)
    best, lo, hi = _spot(gap, threshold)
    best_eps = float(table["eps"].iloc[best])
    table["in_sweet_spot"] = [lo <= i <= hi for i in range(len(table))]
    at = wide.xs(best_eps, level="eps")
    chosen = at.index[at[names[0]] & ~at[names[1]]][:n_examples]
    info = df[df["eps"] == best_eps].set_index(["model", "example"])
    examples = pd.DataFrame({"example": [int(e) for e in chosen]})
    examples["label"] = [int(info.loc[(names[0], e), "label"]) if "label" in info else -1 for e in chosen]
    for key, name in (("prediction_a", names[0]), ("prediction_b", names[1])):
        examples[key] = [int(info.loc[(name, e), "prediction"]) if "prediction" in info else -1 for e in chosen]
    return SweetSpotRange(table, best_eps, float(table["eps"].iloc[lo]), float(table["eps"].iloc[hi]), crossing,
                          examples, (names[0], names[1]), attack)


def sweet_spot_images(model_a: nn.Module, model_b: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      attack: Attack, eps: float, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Each model's white-box adversarial images of chosen examples at ``eps`` (the image pairs).

    Args:
        model_a: model A.
        model_b: model B.
        images: (n, C, H, W) the examples' clean images in [0, 1].
        labels: (n,) their true classes.
        attack: the attack of the sweep (its eps is replaced by ``eps``).
        eps: the eps, pixel units.
        seed: seed of the attack's generator.

    Returns:
        (adversarial against A, adversarial against B), each (n, C, H, W).
    """
    a = with_eps(attack, eps)
    out = []
    for m in (model_a, model_b):
        g = torch.Generator(device=images.device).manual_seed(seed)
        out.append(a(m, images, labels, generator=g).cpu())
    return out[0], out[1]


def plot_sweet_spot(spot: SweetSpotRange, title: str = "") -> Figure:
    """Both models' accuracy against eps with the sweet-spot range shaded and the gap curve.

    Args:
        spot: the result of :func:`sweet_spot_from_table`.
        title: the figure title; default names the models and attack.
    """
    t = spot.table
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    a, b = spot.names
    ax.plot(t["eps"], t["accuracy_a"], marker="o", label=f"{a} accuracy")
    ax.plot(t["eps"], t["accuracy_b"], marker="o", label=f"{b} accuracy")
    ax.plot(t["eps"], t["only_a_right"], marker=".", linestyle="--", color="0.3",
            label=f"{a} right, {b} wrong")
    if not math.isnan(spot.best_eps):
        ax.axvspan(spot.eps_low, spot.eps_high, color="tab:green", alpha=0.15,
                   label=f"sweet spot [{spot.eps_low:g}, {spot.eps_high:g}]")
        ax.axvline(spot.best_eps, color="tab:green", linewidth=1)
    ax.set_xlabel(f"eps of {spot.attack} (pixel units)")
    ax.set_ylabel("fraction of images")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"Sweet spot: {a} vs {b} under {spot.attack}")
    return fig


def plot_sweet_spot_pairs(clean: torch.Tensor, adversarial_a: torch.Tensor, adversarial_b: torch.Tensor,
                          examples: pd.DataFrame, class_names: Sequence[str], *, eps: float,
                          names: tuple[str, str] = ("A", "B")) -> Figure:
    """A grid of labelled image pairs: per example, the clean image and each model's adversarial
    image, titled with eps, the true label and each model's prediction.

    Args:
        clean: (n, C, H, W) clean images in [0, 1].
        adversarial_a: (n, C, H, W) adversarial images against model A.
        adversarial_b: (n, C, H, W) adversarial images against model B.
        examples: ``example, label, prediction_a, prediction_b`` rows (n of them).
        class_names: names of the classes.
        eps: the eps of the adversarial images.
        names: the two models' labels.
    """
    n = len(examples)
    if n == 0 or not clean.shape[0] == adversarial_a.shape[0] == adversarial_b.shape[0] == n:
        raise ConfigError(f"plot_sweet_spot_pairs needs n >= 1 examples and n images of each kind; received "
                          f"{n} examples and {clean.shape[0]}, {adversarial_a.shape[0]}, "
                          f"{adversarial_b.shape[0]} images.")
    fig = Figure(figsize=(2.0 * 3, 2.1 * n + 0.3), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)

    def show(ax: Axes, x: torch.Tensor, text: str) -> None:
        img = x.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(text, fontsize=7)
        ax.axis("off")

    def name(k: int) -> str:
        return str(class_names[k]) if 0 <= k < len(class_names) else str(k)

    for i, row in enumerate(examples.itertuples(index=False)):
        show(axes[i, 0], clean[i], f"#{row.example} clean\ntrue: {name(int(row.label))}")
        show(axes[i, 1], adversarial_a[i], f"vs {names[0]}, eps={eps:g}\n{names[0]}: {name(int(row.prediction_a))}")
        show(axes[i, 2], adversarial_b[i], f"vs {names[1]}, eps={eps:g}\n{names[1]}: {name(int(row.prediction_b))}")
    fig.suptitle(f"Sweet spot at eps={eps:g}: {names[0]} right, {names[1]} wrong", fontsize=9)
    return fig
