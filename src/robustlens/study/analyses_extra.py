"""Study analyses that look inside the network: S1, S2 and S3 as study plug-ins.

Each is registered with :func:`register_analysis` when this module is imported, and enabled
in a study config by its table (see :mod:`robustlens.study.analyses` for the contract)::

    [analyses.sensitivity]            # S2: mean |clean - adversarial| per channel and layer
    layers = "all"                    # names, globs ("layer*.relu") or "type:ReLU"
    top_k = 10

    [analyses.rsa]                    # class-averaged RDMs, clean vs adversarial, layer x layer
    layers = "all"
    metric = "correlation"            # or "euclidean", "cosine"
    method = "spearman"               # or "pearson", "kendall_tau_a", "cosine"
    n_bootstrap = 200                 # bootstrap CI over classes (0: none)

    [analyses.manifolds]              # S3: per-class PCA dimension vs per-class accuracy
    layer = "penultimate"
    threshold = 0.95
    n_bootstrap = 1000

    [analyses.pca_images]             # S1: activations as images, PCA fit on clean
    layers = "all"                    # maps (B, C, H, W) with C >= n_components only
    n_images = 1
    n_components = 3

    [analyses.dissimilarity_channels] # S1 with Spearman / cosine, per layer and per channel
    layers = "all"
    metric = "spearman"

Conditions with eps = 0 are skipped where clean and adversarial activations are identical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from robustlens.activations.layers import penultimate_layer, resolve_layers, split_call
from robustlens.analysis import plots
from robustlens.analysis.correlation import correlate_tables
from robustlens.analysis.manifolds import ClassManifolds
from robustlens.analysis.rsa import RDM, ClassRDM, bootstrap_compare_rdms, compare_rdm_sets
from robustlens.analysis.sensitivity import ChannelSensitivity, top_k_channels
from robustlens.errors import ConfigError, RobustlensError
from robustlens.study.analyses import (
    AnalysisBatch,
    CleanBatch,
    Condition,
    StudyAnalysis,
    condition_key,
    condition_str,
    merge_keyed,
    register_analysis,
)

__all__ = ["ManifoldAnalysis", "RSAAnalysis", "SensitivityAnalysis"]

Key = Condition


def _layer_list(value: Any, where: str) -> list[str] | None:
    if value == "all":
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{where} must be \"all\", a layer name, glob or \"type:Name\", or a list of "
                      f"them; received {value!r}.")


def _choice(value: Any, choices: Sequence[str], where: str) -> str:
    if value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, choices))}; "
                          f"received {value!r}.")
    return str(value)


def _count(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where} must be an integer >= {minimum}; received {value!r}.")
    return value


class _Select:
    """Picks one analysis' layers out of the runner's recording (all analyses' layers)."""

    def __init__(self, model: nn.Module, layers: list[str] | None, where: str) -> None:
        try:
            self.calls = resolve_layers(model, layers).calls
        except RobustlensError as err:
            raise ConfigError(f"{where}: {err}") from None

    def __call__(self, acts: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, value in acts.items():
            module, call = split_call(name)
            module = "" if module == "output" and "output" not in self.calls else module
            if module in self.calls:
                calls = self.calls[module]
                if calls is None or call in calls:
                    out[name] = value
        return out


def _with_condition(df: pd.DataFrame, key: Key) -> pd.DataFrame:
    df = df.copy()
    df.insert(0, "eps", key[1])
    df.insert(0, "attack", key[0])
    return df


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class _PerCondition(StudyAnalysis):
    """Shared machinery: one reducer set per attack x eps, with state dicts."""

    def _new(self) -> dict[str, Any]:
        raise NotImplementedError

    def _reducers_for(self, batch: AnalysisBatch) -> dict[str, Any]:
        return self._reducers.setdefault((batch.attack, batch.eps), self._new())

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 **options: Any) -> None:
        super().__init__(model_name, model, class_names, **options)
        self._reducers: dict[Key, dict[str, Any]] = {}

    def state_dict(self) -> dict[str, Any]:
        return {condition_str(k): {n: r.state_dict() for n, r in red.items()}
                for k, red in self._reducers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._reducers = {}
        for text, parts in state.items():
            reducers = self._new()
            for n, r in reducers.items():
                r.load_state_dict(parts[n])
            self._reducers[condition_key(text)] = reducers

    def merge(self, other: StudyAnalysis) -> None:
        assert isinstance(other, type(self))
        merge_keyed(self._reducers, other._reducers)


@register_analysis
class SensitivityAnalysis(_PerCondition):
    """S2 sensitivity sigma(F) = mean |F(x) - F(x')| per element, per channel and per layer."""

    name = "sensitivity"
    title = "Sensitive channels and layers (S2)"
    option_defaults: ClassVar[dict[str, Any]] = {"layers": "all", "top_k": 10}

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 **options: Any) -> None:
        super().__init__(model_name, model, class_names, **options)
        self._layers = _layer_list(self.options["layers"], "[analyses.sensitivity].layers")
        self._select = _Select(model, self._layers, "[analyses.sensitivity].layers")
        self._top_k = _count(self.options["top_k"], "[analyses.sensitivity].top_k", 1)

    def _new(self) -> dict[str, Any]:
        return {"sensitivity": ChannelSensitivity()}

    def layers(self) -> list[str] | None:
        return self._layers

    def update(self, batch: AnalysisBatch) -> None:
        if batch.eps != 0:
            self._reducers_for(batch)["sensitivity"].update(self._select(batch.clean.activations),
                                                            self._select(batch.activations))

    def tables(self) -> dict[str, pd.DataFrame]:
        if not self._reducers:
            return {}
        red = {k: r["sensitivity"] for k, r in self._reducers.items()}
        channels = _concat([_with_condition(r.result(), k) for k, r in red.items()])
        layers = _concat([_with_condition(r.layer_result(), k) for k, r in red.items()])
        top = _concat([top_k_channels(channels, self._top_k).assign(scope="overall"),
                       top_k_channels(channels, self._top_k, per_layer=True)
                       .assign(scope="per_layer")])
        return {"sensitivity": channels, "sensitivity_layers": layers, "sensitivity_top": top}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        out = []
        top, layers = tables.get("sensitivity_top"), tables.get("sensitivity_layers")
        if top is None or layers is None or top.empty:
            return []
        for attack in top["attack"].unique():
            rows = top[(top["attack"] == attack) & (top["scope"] == "overall")]
            eps = rows["eps"].max()
            out.append((f"Most sensitive channels under {attack}, eps={eps:g}",
                        plots.plot_top_sensitivity(rows[rows["eps"] == eps])))
            out.append((f"Layer sensitivity under {attack}",
                        plots.plot_layer_sensitivity(layers[layers["attack"] == attack])))
        return out


def _rdms_from_table(rows: pd.DataFrame) -> dict[str, RDM]:
    """Rebuild RDMs (layer -> RDM over classes) from :meth:`ClassRDM.result` rows."""
    out = {}
    for layer, g in rows.sort_values("layer_index").groupby("layer", sort=False):
        classes = np.unique(np.r_[g["class_i"].to_numpy(), g["class_j"].to_numpy()])
        pos = {c: i for i, c in enumerate(classes)}
        m = np.zeros((len(classes), len(classes)))
        i = g["class_i"].map(pos).to_numpy()
        j = g["class_j"].map(pos).to_numpy()
        m[i, j] = m[j, i] = g["dissimilarity"].to_numpy()
        out[str(layer)] = RDM(m, str(g["measure"].iloc[0]), {"layer": layer}, {"class": classes})
    return out


@register_analysis
class RSAAnalysis(_PerCondition):
    """Class-averaged RDMs per layer; clean vs adversarial and layer x layer comparisons."""

    name = "rsa"
    title = "Representational similarity analysis (class-averaged RDMs)"
    option_defaults: ClassVar[dict[str, Any]] = {"layers": "all", "metric": "correlation",
                                                 "method": "spearman", "n_bootstrap": 200}

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 **options: Any) -> None:
        super().__init__(model_name, model, class_names, **options)
        where = "[analyses.rsa]"
        self._layers = _layer_list(self.options["layers"], f"{where}.layers")
        self._select = _Select(model, self._layers, f"{where}.layers")
        self._metric = _choice(self.options["metric"], ("correlation", "euclidean", "cosine"),
                               f"{where}.metric")
        self._method = _choice(self.options["method"],
                               ("spearman", "pearson", "kendall_tau_a", "cosine"),
                               f"{where}.method")
        self._n_bootstrap = _count(self.options["n_bootstrap"], f"{where}.n_bootstrap", 0)
        self._clean = self._new()["rdm"]

    def _new(self) -> dict[str, Any]:
        return {"rdm": ClassRDM(len(self.class_names), self._metric)}  # type: ignore[arg-type]

    def layers(self) -> list[str] | None:
        return self._layers

    def update_clean(self, batch: CleanBatch) -> None:
        self._clean.update(self._select(batch.activations), batch.labels)

    def state_dict(self) -> dict[str, Any]:
        return {"clean": self._clean.state_dict(), "adversarial": super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._clean.load_state_dict(state["clean"])
        super().load_state_dict(state["adversarial"])

    def merge(self, other: StudyAnalysis) -> None:
        assert isinstance(other, RSAAnalysis)
        self._clean.merge(other._clean)
        super().merge(other)

    def update(self, batch: AnalysisBatch) -> None:
        if batch.eps != 0:
            self._reducers_for(batch)["rdm"].update(self._select(batch.activations),
                                                    batch.clean.labels)

    def tables(self) -> dict[str, pd.DataFrame]:
        if not self._clean.layers:
            return {}
        rdm_rows = [_with_condition(self._clean.result(), ("clean", 0.0))]
        clean = self._clean.rdms()
        comparisons = []
        for key, red in self._reducers.items():
            rdm_rows.append(_with_condition(red["rdm"].result(), key))
            adv = red["rdm"].rdms()
            for i, (layer, ref) in enumerate(clean.items()):
                if layer not in adv:
                    continue
                est = bootstrap_compare_rdms(ref, adv[layer], self._method,  # type: ignore[arg-type]
                                             n_bootstrap=max(self._n_bootstrap, 1), seed=i)
                none = self._n_bootstrap == 0
                comparisons.append({"attack": key[0], "eps": key[1], "layer": layer,
                                    "layer_index": i, "method": self._method,
                                    "similarity": est.estimate,
                                    "ci_low": np.nan if none else est.low,
                                    "ci_high": np.nan if none else est.high,
                                    "n_classes": ref.n_stimuli})
        layers = compare_rdm_sets(clean, clean, self._method)  # type: ignore[arg-type]
        return {"rdm": _concat(rdm_rows),
                "rsa_clean_vs_adversarial": pd.DataFrame(comparisons),
                "rsa_layers": layers.assign(method=self._method)}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        out: list[tuple[str, Figure]] = []
        rdm_rows = tables.get("rdm")
        if rdm_rows is None or rdm_rows.empty:
            return out
        clean = rdm_rows[rdm_rows["attack"] == "clean"]
        per_model = {m: _rdms_from_table(g) for m, g in clean.groupby("model", sort=False)}
        for model, rdms in per_model.items():
            last = list(rdms)[-1]
            out.append((f"Clean class RDM of {model} at {last}",
                        plots.plot_rdm(rdms[last], labels="class", title=f"{model}: {last}")))
        comp = tables.get("rsa_clean_vs_adversarial")
        if comp is not None and not comp.empty:
            method = comp["method"].iloc[0]
            for attack in comp["attack"].unique():
                out.append((f"RDM similarity, clean vs {attack}", plots.plot_layer_dissimilarity(
                    comp[comp["attack"] == attack], value="similarity", error=None,
                    ylabel=f"RDM similarity, clean vs adversarial ({method})")))
        models = list(per_model)
        layers = tables.get("rsa_layers")
        method = str(layers["method"].iloc[0]) if layers is not None and len(layers) else "spearman"
        if len(models) >= 2:
            a, b = models[:2]
            table = compare_rdm_sets(per_model[a], per_model[b], method)  # type: ignore[arg-type]
            out.append((f"Layer x layer RDM similarity, {a} vs {b}", plots.plot_rdm_similarity(
                table, row_label=f"layer ({a})", column_label=f"layer ({b})", method=method)))
        elif layers is not None and len(layers):
            out.append((f"Layer x layer RDM similarity within {models[0]}",
                        plots.plot_rdm_similarity(layers, row_label="layer", column_label="layer",
                                                  method=method)))
        return out


@register_analysis
class ManifoldAnalysis(StudyAnalysis):
    """S3: per-class PCA dimension of clean activations vs per-class robust accuracy."""

    name = "manifolds"
    title = "Class activation manifolds and per-class robustness (S3)"
    option_defaults: ClassVar[dict[str, Any]] = {"layer": "penultimate", "threshold": 0.95,
                                                 "n_bootstrap": 1000}

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 **options: Any) -> None:
        super().__init__(model_name, model, class_names, **options)
        where = "[analyses.manifolds]"
        layer = self.options["layer"]
        if not isinstance(layer, str):
            raise ConfigError(f"{where}.layer must be a layer name or \"penultimate\"; "
                              f"received {layer!r}.")
        self._layer = penultimate_layer(model) if layer == "penultimate" else layer
        self._select = _Select(model, [self._layer], f"{where}.layer")
        threshold = self.options["threshold"]
        if not isinstance(threshold, float) or not 0 < threshold < 1:
            raise ConfigError(f"{where}.threshold must be a number in (0, 1); "
                              f"received {threshold!r}.")
        self._n_bootstrap = _count(self.options["n_bootstrap"], f"{where}.n_bootstrap", 1)
        self._manifolds = ClassManifolds(len(class_names), threshold, class_names)
        self._counts: dict[Key, torch.Tensor] = {}  # (2, K): correct, total

    def layers(self) -> list[str] | None:
        return [self._layer]

    def _count_correct(self, key: Key, logits: torch.Tensor, labels: torch.Tensor) -> None:
        k = len(self.class_names)
        correct = (logits.argmax(1) == labels).double()
        row = torch.stack([torch.bincount(labels, weights=correct, minlength=k),
                           torch.bincount(labels, minlength=k).double()]).cpu()
        self._counts[key] = self._counts.get(key, torch.zeros_like(row)) + row

    def update_clean(self, batch: CleanBatch) -> None:
        acts = self._select(batch.activations)
        if len(acts) != 1:
            raise RobustlensError(f"manifolds: expected one recorded activation for "
                                  f"{self._layer!r}; found {sorted(acts)}.")
        self._manifolds.update(acts, batch.labels)
        self._count_correct(("clean", 0.0), batch.logits, batch.labels)

    def update(self, batch: AnalysisBatch) -> None:
        self._count_correct((batch.attack, batch.eps), batch.logits, batch.clean.labels)

    def tables(self) -> dict[str, pd.DataFrame]:
        manifolds = self._manifolds.result()
        if manifolds.empty:
            return {}
        rows = []
        for (attack, eps), (correct, total) in self._counts.items():
            for c in range(len(self.class_names)):
                if total[c] > 0:
                    rows.append({"attack": attack, "eps": eps, "class": c,
                                 "n_images": int(total[c]),
                                 "accuracy": float(correct[c] / total[c])})
        acc = pd.DataFrame(rows).merge(
            manifolds[["class", "class_name", "layer", "dimension", "participation_ratio"]],
            on="class")
        corr = []
        for measure in ("dimension", "participation_ratio"):
            df = correlate_tables(manifolds, acc.drop(columns=["layer", measure]), measure,
                                  "accuracy", by=["layer", "attack", "eps"],
                                  n_bootstrap=self._n_bootstrap)
            corr.append(df.assign(measure=measure))
        return {"manifolds": manifolds, "manifold_accuracy": acc,
                "manifold_correlation": _concat(corr)}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        manifolds, acc = tables.get("manifolds"), tables.get("manifold_accuracy")
        if manifolds is None or acc is None or manifolds.empty:
            return []
        out = [("Class manifold dimension per model", plots.plot_manifold_dimensions(manifolds))]
        corr = tables.get("manifold_correlation", pd.DataFrame())
        for attack in [a for a in acc["attack"].unique() if a != "clean"]:
            rows = acc[acc["attack"] == attack]
            # the eps where the mean accuracy is closest to 50%: the most informative spread
            mean = rows.groupby("eps")["accuracy"].mean()
            eps = float((mean - 0.5).abs().idxmin())
            sel = rows[rows["eps"] == eps]
            c = corr[(corr["attack"] == attack) & (corr["eps"] == eps)
                     & (corr["measure"] == "dimension")] if len(corr) else None
            out.append((f"Manifold dimension vs per-class accuracy, {attack} eps={eps:g}",
                        plots.plot_manifold_accuracy(sel, correlations=c,
                                                     title=f"{attack}, eps={eps:g}")))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"manifolds": self._manifolds.state_dict(),
                "counts": {condition_str(k): v.clone() for k, v in self._counts.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._manifolds.load_state_dict(state["manifolds"])
        self._counts = {condition_key(k): v.clone() for k, v in state["counts"].items()}

    def merge(self, other: StudyAnalysis) -> None:
        assert isinstance(other, ManifoldAnalysis)
        self._manifolds.merge(other._manifolds)
        for key, counts in other._counts.items():
            self._counts[key] = self._counts[key] + counts if key in self._counts else counts.clone()


from robustlens.study import analyses_extra_s1  # noqa: E402, F401  (registers the S1 plug-ins)
