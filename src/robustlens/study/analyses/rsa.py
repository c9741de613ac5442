"""Representational similarity analysis, wrapping :mod:`robustlens.analysis.rsa`::

    [analyses.rsa]                    # class-averaged RDMs, clean vs adversarial, layer x layer
    layers = "all"                    # names, globs ("layer*.relu"), "type:ReLU", or a list
    metric = "correlation"            # or "euclidean", "cosine"
    method = "spearman"               # or "pearson", "kendall_tau_a", "cosine"
    n_bootstrap = 200                 # bootstrap CI over classes (0: none)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from torch import nn

from robustlens.analysis import plots
from robustlens.analysis.rsa import RDM, ClassRDM, bootstrap_compare_rdms, compare_rdm_sets
from robustlens.study.analyses.contract import (
    AnalysisBatch,
    AnalysisOptions,
    CleanBatch,
    StudyAnalysis,
    choice,
    count,
    layer_selector,
    option,
    register_analysis,
)
from robustlens.study.analyses.helpers import (
    LayerOption,
    PerCondition,
    concat_frames,
    with_condition,
)

__all__ = ["RSAAnalysis", "RSAOptions"]


@dataclass(frozen=True)
class RSAOptions(AnalysisOptions):
    """Options of ``[analyses.rsa]``.

    Attributes:
        layers: the layers whose RDMs are built (``"all"`` or selectors).
        metric: the RDM's dissimilarity: ``"correlation"``, ``"euclidean"`` or ``"cosine"``.
        method: how RDMs are compared: ``"spearman"``, ``"pearson"``, ``"kendall_tau_a"``, ``"cosine"``.
        n_bootstrap: bootstrap resamples over classes for the confidence interval (0: none).
    """

    layers: str | tuple[str, ...] = option("all", layer_selector())
    metric: str = option("correlation", choice("correlation", "euclidean", "cosine"))
    method: str = option("spearman", choice("spearman", "pearson", "kendall_tau_a", "cosine"))
    n_bootstrap: int = option(200, count(0))


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
class RSAAnalysis(LayerOption, PerCondition):
    """Class-averaged RDMs per layer; clean vs adversarial and layer x layer comparisons."""

    name = "rsa"
    title = "Representational similarity analysis (class-averaged RDMs)"
    report_text = (
        "Representational similarity: for each layer, a class x class representational "
        "dissimilarity matrix (RDM) of class-averaged activations, clean and adversarial. The "
        "RDM figures show each model's last layer (dark: similar classes); the similarity curves "
        "say, layer by layer, how well the adversarial RDM still matches the clean one (1: the "
        "class geometry is intact; a drop marks the layer where the attack scrambles it). The "
        "layer x layer panel compares the first two models' clean RDMs.")
    Options = RSAOptions

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        self.use_layer_option(model, model_name)
        self._metric = self.options.metric
        self._method = self.options.method
        self._n_bootstrap = self.options.n_bootstrap
        self._clean = self.new_reducers()["rdm"]

    def new_reducers(self) -> dict[str, Any]:
        return {"rdm": ClassRDM(len(self.class_names), self._metric, class_names=self.class_names)}

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
            self.reducers_for(batch)["rdm"].update(self._select(batch.activations),
                                                    batch.clean.labels)

    def tables(self) -> dict[str, pd.DataFrame]:
        if not self._clean.layers:
            return {}
        rdm_rows = [with_condition(self._clean.result(), ("clean", 0.0))]
        clean = self._clean.rdms()
        comparisons = []
        for key, red in self.reducers.items():
            rdm_rows.append(with_condition(red["rdm"].result(), key))
            adv = red["rdm"].rdms()
            for i, (layer, ref) in enumerate(clean.items()):
                if layer not in adv:
                    continue
                est = bootstrap_compare_rdms(ref, adv[layer], self._method,
                                             n_bootstrap=max(self._n_bootstrap, 1), seed=i)
                none = self._n_bootstrap == 0
                comparisons.append({"attack": key[0], "eps": key[1], "layer": layer,
                                    "layer_index": i, "method": self._method,
                                    "similarity": est.estimate,
                                    "ci_low": np.nan if none else est.low,
                                    "ci_high": np.nan if none else est.high,
                                    "n_classes": ref.n_stimuli})
        layers = compare_rdm_sets(clean, clean, self._method)
        return {"rdm": concat_frames(rdm_rows),
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
