"""Study analyses for honest robustness numbers: per class, per example, and the audit.

Wrapping :mod:`robustlens.evaluation`; enabled in a study config by their tables::

    [analyses.per_class]        # robust accuracy per class, per attack x eps
    [analyses.per_example]      # one row per image x attack x eps (+ the worst case, and
                                # the stages of every AutoAttack cascade)

Both only read the runner's batches (no extra attack). Per-example rows grow with the number
of images (one small row per image x condition); the per-class counts are bounded. The
gradient-masking audit is :mod:`robustlens.study.analyses.audit`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from robustlens.attacks import AutoAttack, perturbation_norm
from robustlens.evaluation import (
    AccuracyCounter,
    accuracy_tables,
    cascade_stages,
    resolved_stages,
    topk_correct,
    worst_case,
)
from robustlens.report.figures import cascade_accuracy_figure, found_by_figure
from robustlens.study.analyses.contract import (
    AnalysisBatch,
    CleanBatch,
    Condition,
    StudyAnalysis,
    condition_key,
    condition_str,
    merge_keyed,
    register_analysis,
)

__all__ = ["PerClassAnalysis", "PerExampleAnalysis", "per_class_small_multiples"]

Key = Condition


def _accuracy_vs_eps_figure(df: pd.DataFrame, group: str, title: str) -> Figure:
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for name, g in df.groupby(group):
        g = g.sort_values("eps")
        ax.plot(g["eps"], g["accuracy"], marker="o", label=str(name))
    ax.set_xlabel("eps (pixel units)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    return fig


MAX_LEGEND_CLASSES = 20
"""Classes named in the per-class figure's legend (more: lines only)."""


def per_class_small_multiples(df: pd.DataFrame, title: str = "") -> Figure:
    """Accuracy per class against eps as small multiples: one panel per model (rows) x attack
    (columns), one line per class, shared axes and one legend.

    Args:
        df: ``per_class`` rows (``model, attack, eps, class_name, accuracy``, and ``severity``
            for corruptions, whose panels run over severity); the clean rows
            (``attack == "clean"``) give every curve its eps = 0 point.
        title: the figure's title.
    """
    models = list(dict.fromkeys(df["model"]))
    attacks = [a for a in dict.fromkeys(df["attack"]) if a != "clean"] or ["clean"]
    classes = list(dict.fromkeys(df["class_name"]))
    # a corruption has no eps: its panels run over its severity (0: clean)
    severity = df["severity"] if "severity" in df.columns else pd.Series(pd.NA, index=df.index)
    corrupted = set(df.loc[severity.notna().to_numpy(), "attack"])
    x_of = df["eps"].where(severity.isna(), severity.astype("Float64")).astype(float)
    df = df.assign(_x=x_of)
    fig = Figure(figsize=(1.0 + 3.0 * len(attacks), 0.6 + 2.3 * len(models)), layout="constrained")
    axes = fig.subplots(len(models), len(attacks), squeeze=False, sharex="col", sharey=True)
    colours = [f"C{i % 10}" for i in range(len(classes))]
    styles = ["-", "--", ":", "-."]
    for r, model in enumerate(models):
        mine = df[df["model"] == model]
        clean = mine[mine["attack"] == "clean"]
        for c, attack in enumerate(attacks):
            ax = axes[r, c]
            rows = pd.concat([clean, mine[mine["attack"] == attack]]) if attack != "clean" else clean
            rows = rows[rows["_x"].map(math.isfinite)]
            for i, name in enumerate(classes):
                g = rows[rows["class_name"] == name].sort_values("_x")
                ax.plot(g["_x"], g["accuracy"], marker="o", markersize=2.5, linewidth=1.0,
                        color=colours[i], linestyle=styles[(i // 10) % len(styles)], label=str(name))
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
            if r == 0:
                ax.set_title(str(attack), fontsize=10)
            if c == 0:
                ax.set_ylabel(f"{model}\naccuracy", fontsize=9)
            if r == len(models) - 1:
                ax.set_xlabel("severity (0: clean)" if attack in corrupted else "eps (pixel units)", fontsize=9)
    if len(classes) <= MAX_LEGEND_CLASSES:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, title="class")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _norm_label(norm: str) -> str:
    return {"inf": "L-inf", "2": "L2", "1": "L1", "none": "corruption"}.get(norm, f"L{norm}" if norm else "clean")


@register_analysis
class PerClassAnalysis(StudyAnalysis):
    """Robust accuracy per class, for every attack x eps (and clean, eps 0), with its norm.

    Counted by :class:`~robustlens.evaluation.AccuracyCounter`, the reducer of the library's
    :func:`~robustlens.evaluation.evaluate_robustness` and of the study's accuracy table.
    """

    name = "per_class"
    title = "Robust accuracy per class"
    report_text = (
        "Robust accuracy per class: one panel per model (rows) and attack (columns), one line "
        "per class, accuracy against eps (eps 0 is clean). All panels share their axes, so "
        "compare across a row for attacks and down a column for models. Classes whose line falls "
        "first are the easiest to attack; a spread of lines at eps 0 is the clean per-class "
        "accuracy.")

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        self._counters: dict[Key, AccuracyCounter] = {}
        self._norms: dict[str, str] = {"clean": ""}

    def _counter(self, key: Key) -> AccuracyCounter:
        return self._counters.setdefault(key, AccuracyCounter(len(self.class_names)))

    def update_clean(self, batch: CleanBatch) -> None:
        self._counter(("clean", 0.0)).update_logits(batch.logits, batch.labels)

    def update(self, batch: AnalysisBatch) -> None:
        self._norms[batch.attack] = batch.norm
        self._counter((batch.attack, batch.eps)).update_logits(batch.logits, batch.clean.labels)

    def tables(self) -> dict[str, pd.DataFrame]:
        if not self._counters:
            return {}
        keyed = {(a, e, self._norms.get(a, "")): c for (a, e), c in self._counters.items()}
        _, per_class = accuracy_tables(keyed, self.class_names)
        per_class = per_class[per_class["n_images"] > 0].reset_index(drop=True)  # classes seen only
        return {"per_class": per_class}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        df = tables.get("per_class")
        if df is None or df.empty:
            return []
        title = "Accuracy per class against eps (corruptions: severity; rows: models, columns: attacks)"
        return [(title, per_class_small_multiples(df, title))]

    def state_dict(self) -> dict[str, Any]:
        return {"counters": {condition_str(k): c.state_dict() for k, c in self._counters.items()},
                "norms": dict(self._norms)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._counters = {}
        for key, value in state["counters"].items():
            self._counter(condition_key(key)).load_state_dict(value)
        self._norms = dict(state["norms"])

    def merge(self, other: StudyAnalysis) -> None:
        assert isinstance(other, PerClassAnalysis)
        merge_keyed(self._counters, other._counters)
        self._norms.update(other._norms)


_EXAMPLE_COLUMNS = ("example", "label", "clean_prediction", "prediction", "top5_correct",
                    "linf", "l2", "l1", "found_by")


@register_analysis
class PerExampleAnalysis(StudyAnalysis):
    """One row per image x attack x eps, and the per-example worst case over attacks.

    Images are numbered in the order the runner feeds them (the study's data order).
    ``success`` means misclassified; ``linf`` / ``l2`` / ``l1`` are the perturbation's norms
    (for an unbounded DeepFool, the minimal perturbation it found); ``found_by`` names, for an
    ensemble (AutoAttack), the stage of the cascade that broke the image (``"clean"``:
    misclassified already; empty: none, and for other attacks). Every row carries its
    attack's ``norm``; the worst case (:func:`robustlens.evaluation.worst_case`, the
    library's) groups attacks by (norm, eps): an image counts as robust there only if it
    survives every attack of that threat model, and attacks of different norms are never
    merged; corruptions (no threat model) stay out of it. For every AutoAttack condition the
    ``cascade_stages`` table (:func:`robustlens.evaluation.cascade_stages`) gives the robust
    accuracy after each stage of the cascade and how many images each stage attacked and
    broke, in the order the cascade ran them on this model.
    """

    name = "per_example"
    title = "Per-example results and the worst case over attacks"
    report_text = (
        "One row per image x attack x eps (clean and adversarial prediction, perturbation "
        "norms, the attack's norm), and the worst case over attacks: an image counts as robust at "
        "a (norm, eps) only if it survives every attack of that norm run there; norms are never "
        "merged. The figure is that worst-case accuracy against eps, one line per model and norm: "
        "a lower bound on what a stronger adversary would leave, and the "
        "number to quote. For an AutoAttack condition, the table <code>cascade_stages</code> and "
        "two figures follow the cascade: the robust accuracy after each stage (stage 0 is the clean "
        "accuracy; every later stage attacks only the images still standing, so the curve never "
        "rises and its last point is the AutoAttack robust accuracy), and which stage found the "
        "adversarial example of each image (<code>found_by</code> in <code>per_example</code>). A "
        "late stage, above all the black-box Square, breaking many images that the gradient "
        "stages left standing is a sign of gradient masking.")

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        self._rows: dict[Key, list[torch.Tensor]] = {}
        self._stages: list[str] = [""]  # found_by names; rows hold their index
        self._norms: dict[str, str] = {}
        self._cascades: dict[str, tuple[str, ...]] = {}  # AutoAttack label -> its stages, in order

    def _stage_code(self, name: str) -> int:
        if name not in self._stages:
            self._stages.append(name)
        return self._stages.index(name)

    def update(self, batch: AnalysisBatch) -> None:
        y = batch.clean.labels
        delta = (batch.images - batch.clean.images).detach()
        index = torch.arange(batch.clean.offset, batch.clean.offset + y.shape[0], device=y.device)
        found = batch.result.found_by if batch.result is not None else None
        codes = torch.tensor([self._stage_code(f) for f in found] if found is not None
                             else [0] * y.shape[0], dtype=torch.float64)
        row = torch.stack([index.double(), y.double(), batch.clean.logits.argmax(1).double(),
                           batch.logits.argmax(1).double(),
                           topk_correct(batch.logits, y).double(),
                           perturbation_norm(delta, "inf").double(),
                           perturbation_norm(delta, "2").double(),
                           perturbation_norm(delta, "1").double()], dim=1).cpu()
        row = torch.cat([row, codes[:, None]], dim=1)
        self._norms[batch.attack] = batch.norm
        self._rows.setdefault((batch.attack, batch.eps), []).append(row)
        if isinstance(batch.method, AutoAttack) and batch.attack not in self._cascades:
            stages = resolved_stages(batch.method, self.model, batch.clean.images)
            self._cascades[batch.attack] = tuple(a.name for a in stages)

    def tables(self) -> dict[str, pd.DataFrame]:
        frames = []
        for (attack, eps), rows in self._rows.items():
            table = torch.cat(rows)
            table = table[table[:, 0].argsort(stable=True)]  # data order, however the batches came
            df = pd.DataFrame(table.numpy(), columns=list(_EXAMPLE_COLUMNS))
            df.insert(2, "attack", attack)
            df.insert(3, "eps", eps)
            df.insert(4, "norm", self._norms.get(attack, ""))
            frames.append(df)
        if not frames:
            return {}
        df = pd.concat(frames, ignore_index=True)
        for col in ("example", "label", "clean_prediction", "prediction"):
            df[col] = df[col].astype(int)
        df["found_by"] = [self._stages[int(c)] for c in df["found_by"]]
        df["top5_correct"] = df["top5_correct"].astype(bool)
        df["clean_correct"] = df["clean_prediction"] == df["label"]
        df["correct"] = df["prediction"] == df["label"]
        df["success"] = ~df["correct"]
        out = {"per_example": df, "worst_case": worst_case(df[df["norm"] != "none"])}
        stages = cascade_stages(df, self._cascades)
        if not stages.empty:
            out["cascade_stages"] = stages
        return out

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        out: list[tuple[str, Figure]] = []
        df = tables.get("worst_case")
        if df is not None and not df.empty:
            if "norm" not in df:
                df = df.assign(norm="")
            acc = df.groupby(["model", "norm", "eps"])["correct"].mean().rename("accuracy").reset_index()
            acc["curve"] = [f"{m} ({_norm_label(n)})" for m, n in zip(acc["model"], acc["norm"], strict=True)]
            title = "Worst case over attacks of each norm: accuracy against eps"
            out.append((title, _accuracy_vs_eps_figure(acc, "curve", title)))
        stages = tables.get("cascade_stages")
        if stages is not None and not stages.empty:
            out.append(("AutoAttack: robust accuracy after each stage of the cascade",
                        cascade_accuracy_figure(stages)))
            out.append(("AutoAttack: which stage found the adversarial example of each image",
                        found_by_figure(stages)))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"rows": {condition_str(k): torch.cat(r) for k, r in self._rows.items()},
                "stages": list(self._stages), "norms": dict(self._norms),
                "cascades": {k: list(v) for k, v in self._cascades.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rows = {condition_key(k): [v] for k, v in state["rows"].items()}
        self._stages = list(state.get("stages", [""]))
        self._norms = dict(state["norms"])
        self._cascades = {k: tuple(v) for k, v in state.get("cascades", {}).items()}

    def merge(self, other: StudyAnalysis) -> None:
        assert isinstance(other, PerExampleAnalysis)
        remap = torch.tensor([float(self._stage_code(n)) for n in other._stages],
                             dtype=torch.float64)
        for key, rows in other._rows.items():
            moved = []
            for r in rows:
                r = r.clone()
                r[:, -1] = remap[r[:, -1].long()]
                moved.append(r)
            self._rows.setdefault(key, []).extend(moved)
        self._norms.update(other._norms)
        for label, names in other._cascades.items():
            self._cascades.setdefault(label, names)
