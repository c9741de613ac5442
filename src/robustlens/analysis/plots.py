"""Figures of the analyses, drawn from their tidy tables and data objects.

Every function builds a :class:`matplotlib.figure.Figure` directly (no pyplot, no global
state) and returns it; none shows or saves it: ``fig.savefig("x.png")`` is the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from robustlens.analysis.rsa import RDM
from robustlens.errors import RobustlensError

__all__ = [
    "plot_layer_dissimilarity",
    "plot_layer_sensitivity",
    "plot_manifold_accuracy",
    "plot_manifold_dimensions",
    "plot_pca_images",
    "plot_rdm",
    "plot_rdm_similarity",
    "plot_top_sensitivity",
]


_MAX_TICKS = 40  # labels per axis beyond which only every k-th is written
_MAX_BARS = 40  # classes beyond which the manifold-dimension figure shows distributions


def _require(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise RobustlensError(f"{what} needs columns {list(columns)}; the table lacks {missing}.")


def _panels(table: pd.DataFrame, panel: str | None) -> list[tuple[str, pd.DataFrame]]:
    if panel is None or panel not in table.columns:
        return [("", table)]
    return [(f"{panel}={key:g}" if isinstance(key, float) else f"{panel}={key}", part)
            for key, part in table.groupby(panel, sort=True)]


def plot_layer_dissimilarity(table: pd.DataFrame, *, value: str = "mean", error: str | None = "sem",
                             hue: str = "model", panel: str | None = "eps",
                             relative_depth: bool = False,
                             ylabel: str = "1 - Pearson r (clean vs adversarial)") -> Figure:
    """Study S1: dissimilarity against layer, one line per model, with error bands.

    Args:
        table: rows ``layer, layer_index`` and ``value`` (e.g. :class:`LayerDissimilarity`
            results with a ``model`` and an ``eps`` column; for one image, rows of
            :func:`dissimilarity` values with ``error=None``).
        value: the y column.
        error: the half-width of the shaded band (``"sem"``, ``"std"``), or ``None``.
        hue: one line per value of this column (``"model"``).
        panel: one panel per value of this column (``"eps"``), if present.
        relative_depth: x = layer_index / (number of layers - 1), so models of different
            depths share one axis; otherwise x is the layer index, labelled with the layer
            names of the first model.
        ylabel: the y axis label.
    """
    _require(table, ["layer", "layer_index", value], "plot_layer_dissimilarity")
    panels = _panels(table, panel)
    fig = Figure(figsize=(5.5 * len(panels), 4.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (title, part) in zip(axes, panels, strict=True):
        groups = part.groupby(hue, sort=False) if hue in part.columns else [("", part)]
        labelled = False
        for name, g in groups:
            g = g.sort_values("layer_index")
            x = g["layer_index"].to_numpy(dtype=float)
            if relative_depth:
                x = x / max(x.max(), 1.0)
            y = g[value].to_numpy(dtype=float)
            (line,) = ax.plot(x, y, marker=".", label=str(name) if name != "" else None)
            if error is not None and error in g.columns:
                e = np.nan_to_num(g[error].to_numpy(dtype=float))
                ax.fill_between(x, y - e, y + e, color=line.get_color(), alpha=0.2)
            if not relative_depth and not labelled:
                ax.set_xticks(x)
                ax.set_xticklabels(g["layer"].astype(str).to_list(), rotation=75, fontsize=6)
                labelled = True
        ax.set_xlabel("relative depth" if relative_depth else "layer")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if hue in part.columns:
            ax.legend(fontsize=8)
    return fig


def plot_rdm(rdm: RDM, *, labels: str | None = None, title: str | None = None) -> Figure:
    """An RDM as a heatmap.

    Args:
        rdm: the :class:`RDM`.
        labels: a stimulus descriptor to label the axes with (e.g. ``"class_name"``); with
            more than 40 stimuli (1000 ImageNet classes) every k-th is labelled.
        title: default: the RDM's descriptors and measure.
    """
    fig = Figure(figsize=(5.0, 4.4), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(rdm.matrix, cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label=f"dissimilarity ({rdm.measure})")
    if labels is not None:
        if labels not in rdm.stimulus_descriptors:
            raise RobustlensError(f"the RDM has no stimulus descriptor {labels!r}; it has "
                                  f"{sorted(rdm.stimulus_descriptors)}.")
        names = [str(v) for v in rdm.stimulus_descriptors[labels]]
        step = max(1, -(-len(names) // _MAX_TICKS))  # at most _MAX_TICKS labels per axis
        ticks = np.arange(0, len(names), step)
        shown = [names[i] for i in ticks]
        ax.set_xticks(ticks, shown, rotation=90, fontsize=6)
        ax.set_yticks(ticks, shown, fontsize=6)
    described = ", ".join(f"{k}={v}" for k, v in rdm.descriptors.items())
    ax.set_title(title if title is not None else described or "RDM")
    return fig


def plot_rdm_similarity(table: pd.DataFrame, *, row_label: str = "layer (model A)",
                        column_label: str = "layer (model B)", method: str = "spearman",
                        title: str = "") -> Figure:
    """A layer x layer similarity matrix between two sets of RDMs.

    Args:
        table: :func:`compare_rdm_sets` rows (``row, row_index, column, column_index,
            similarity``).
        row_label: label of the rows' axis.
        column_label: label of the columns' axis.
        method: the comparison method, for the colour bar.
        title: the figure title.
    """
    _require(table, ["row", "row_index", "column", "column_index", "similarity"],
             "plot_rdm_similarity")
    mat = table.pivot(index="row_index", columns="column_index", values="similarity")
    rows = table.drop_duplicates("row_index").sort_values("row_index")["row"].astype(str)
    cols = table.drop_duplicates("column_index").sort_values("column_index")["column"].astype(str)
    fig = Figure(figsize=(1.5 + 0.28 * len(cols), 1.2 + 0.28 * len(rows)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(mat.to_numpy(dtype=float), cmap="magma", vmin=min(0.0, np.nanmin(mat)),
                      vmax=1.0, interpolation="nearest", aspect="auto")
    fig.colorbar(image, ax=ax, label=f"RDM similarity ({method})")
    ax.set_xticks(np.arange(len(cols)), cols.to_list(), rotation=90, fontsize=6)
    ax.set_yticks(np.arange(len(rows)), rows.to_list(), fontsize=6)
    ax.set_xlabel(column_label)
    ax.set_ylabel(row_label)
    ax.set_title(title)
    return fig


def plot_top_sensitivity(table: pd.DataFrame, *, panel: str = "model", title: str = "") -> Figure:
    """Study S2: the most sensitive channels as horizontal bars, one panel per model.

    Args:
        table: :func:`top_k_channels` rows (``unit`` or ``layer``/``channel``,
            ``sensitivity``, optionally ``sem``) for one attack and eps.
        panel: one panel per value of this column, if present.
        title: the figure title.
    """
    _require(table, ["layer", "sensitivity"], "plot_top_sensitivity")
    panels = _panels(table, panel)
    k = max(len(part) for _, part in panels) if panels else 1
    fig = Figure(figsize=(5.0 * len(panels), 1.0 + 0.3 * k), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, part) in zip(axes, panels, strict=True):
        part = part.sort_values("sensitivity", ascending=True)
        names = (part["unit"] if "unit" in part.columns
                 else part["layer"].astype(str) + "#" + part["channel"].astype(str))
        err = part["sem"].to_numpy(dtype=float) if "sem" in part.columns else None
        layers = pd.Categorical(part["layer"])
        colours = [f"C{code % 10}" for code in layers.codes]
        ax.barh(np.arange(len(part)), part["sensitivity"].to_numpy(dtype=float), xerr=err,
                color=colours)
        ax.set_yticks(np.arange(len(part)), names.astype(str).to_list(), fontsize=7)
        ax.set_xlabel("sensitivity (mean |change| per element)")
        ax.set_title(name.split("=", 1)[-1])
        ax.grid(alpha=0.3, axis="x")
    if title:
        fig.suptitle(title)
    return fig


def plot_layer_sensitivity(table: pd.DataFrame, *, hue: str = "eps",
                           panel: str = "model") -> Figure:
    """Study S2: whole-layer sensitivity against layer, one line per eps, one panel per model.

    Args:
        table: :meth:`ChannelSensitivity.layer_result` rows with ``eps`` and ``model``
            columns.
        hue: the column drawn as one line per value.
        panel: the column drawn as one panel per value.
    """
    return plot_layer_dissimilarity(table, value="sensitivity", error="sem", hue=hue,
                                    panel=panel, ylabel="sensitivity (mean |change|)")


def plot_manifold_accuracy(table: pd.DataFrame, *, x: str = "dimension", y: str = "accuracy",
                           hue: str = "model", correlations: pd.DataFrame | None = None,
                           title: str = "") -> Figure:
    """Study S3: per-class manifold dimension against per-class robust accuracy.

    Args:
        table: one row per class (and model): columns ``x``, ``y`` and ``hue``.
        x: the column on the horizontal axis.
        y: the column on the vertical axis.
        hue: one colour (and least-squares line) per value of this column.
        correlations: optional :func:`correlate_tables` rows (``hue`` and ``method``
            columns); the Spearman rho and its interval go into the legend.
        title: the figure title.
    """
    _require(table, [x, y], "plot_manifold_accuracy")
    fig = Figure(figsize=(5.0, 4.2), layout="constrained")
    ax = fig.subplots()
    groups = table.groupby(hue, sort=False) if hue in table.columns else [("", table)]
    for name, g in groups:
        xs, ys = g[x].to_numpy(dtype=float), g[y].to_numpy(dtype=float)
        label = str(name)
        if correlations is not None and hue in correlations.columns:
            row = correlations[(correlations[hue] == name) & (correlations["method"] == "spearman")]
            if len(row):
                r = row.iloc[0]
                label += (f" (rho={r['statistic']:.2f}, "
                          f"CI [{r['ci_low']:.2f}, {r['ci_high']:.2f}])")
        big = len(xs) > 200  # e.g. 1000 ImageNet classes: smaller, lighter points
        points = ax.scatter(xs, ys, s=6 if big else 18, alpha=0.4 if big else 0.75, label=label,
                            linewidths=0)
        ok = np.isfinite(xs) & np.isfinite(ys)
        if ok.sum() >= 2 and np.ptp(xs[ok]) > 0:
            slope, intercept = np.polyfit(xs[ok], ys[ok], 1)
            grid = np.linspace(xs[ok].min(), xs[ok].max(), 2)
            ax.plot(grid, slope * grid + intercept, color=points.get_facecolor()[0], lw=1)
    ax.set_xlabel(f"class manifold {x}")
    ax.set_ylabel(f"per-class {y}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title)
    return fig


def plot_manifold_dimensions(table: pd.DataFrame, *, value: str = "dimension",
                             hue: str = "model", title: str = "", n_named: int = 3) -> Figure:
    """Study S3: per-class manifold dimension, one colour per model.

    Up to 40 classes: grouped bars, one per class. More (100 or 1000 ImageNet classes): two
    panels, the distribution of the dimension over classes (a step histogram per model, its
    mean marked) and the classes ranked by dimension, with the ``n_named`` lowest and
    highest classes of each model named.

    Args:
        table: :meth:`ClassManifolds.result` rows with a ``hue`` column (e.g. random,
            standard and adversarially trained models).
        value: ``"dimension"`` or ``"participation_ratio"``.
        hue: one colour per value of this column.
        title: the figure title.
        n_named: classes named at each end of the ranking (many-class form only).
    """
    _require(table, ["class", value], "plot_manifold_dimensions")
    groups = list(table.groupby(hue, sort=False)) if hue in table.columns else [("", table)]
    classes = sorted(table["class"].unique())
    names = (table.drop_duplicates("class").set_index("class")["class_name"].astype(str)
             if "class_name" in table.columns else pd.Series({c: str(c) for c in classes}))
    if len(classes) > _MAX_BARS:
        return _manifold_distribution(groups, names, value, title, n_named)
    width = 0.8 / max(len(groups), 1)
    fig = Figure(figsize=(max(5.0, 0.5 * len(classes) * max(len(groups), 1) ** 0.5 + 2), 3.8),
                 layout="constrained")
    ax = fig.subplots()
    for k, (name, g) in enumerate(groups):
        g = g.set_index("class").reindex(classes)
        mean = float(np.nanmean(g[value].to_numpy(dtype=float)))
        ax.bar(np.arange(len(classes)) + (k - (len(groups) - 1) / 2) * width,
               g[value].to_numpy(dtype=float), width, label=f"{name} (mean {mean:.3g})")
    ax.set_xticks(np.arange(len(classes)), [names[c] for c in classes], rotation=45, fontsize=7)
    ax.set_ylabel(f"class manifold {value}")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    ax.set_title(title)
    return fig


def _manifold_distribution(groups: list[tuple[object, pd.DataFrame]], names: pd.Series,
                           value: str, title: str, n_named: int) -> Figure:
    """Histogram over classes and the ranked classes with both ends named (many classes)."""
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    hist_ax, rank_ax = fig.subplots(1, 2)
    values = np.concatenate([g[value].to_numpy(dtype=float) for _, g in groups])
    values = values[np.isfinite(values)]
    bins = np.histogram_bin_edges(values, bins=min(40, max(5, len(np.unique(values))))) \
        if len(values) else 10
    for k, (name, g) in enumerate(groups):
        v = g[value].to_numpy(dtype=float)
        ok = np.isfinite(v)
        colour = f"C{k % 10}"
        mean = float(v[ok].mean()) if ok.any() else float("nan")
        hist_ax.hist(v[ok], bins=bins, histtype="step", lw=1.5, color=colour,
                     label=f"{name} ({ok.sum()} classes, mean {mean:.3g})")
        hist_ax.axvline(mean, color=colour, ls="--", lw=1)
        ranked = g[ok].sort_values(value)
        y = ranked[value].to_numpy(dtype=float)
        x = np.linspace(0.0, 1.0, len(y)) if len(y) > 1 else np.zeros(len(y))
        rank_ax.plot(x, y, color=colour, lw=1.2)
        ends = list(range(min(n_named, len(y)))) + list(range(max(len(y) - n_named, n_named), len(y)))
        for i in ends:
            label = str(names.get(ranked["class"].iloc[i], ranked["class"].iloc[i]))
            rank_ax.annotate(label, (x[i], y[i]), fontsize=6, color=colour,
                             xytext=(4 if i < n_named else -4, 0), textcoords="offset points",
                             ha="left" if i < n_named else "right", va="center")
            rank_ax.plot(x[i], y[i], "o", ms=3, color=colour)
    hist_ax.set_xlabel(f"class manifold {value}")
    hist_ax.set_ylabel("classes")
    hist_ax.grid(alpha=0.3)
    hist_ax.legend(fontsize=7)
    rank_ax.set_xlabel("classes, ranked (fraction)")
    rank_ax.set_ylabel(f"class manifold {value}")
    rank_ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def _to_rgb(image: torch.Tensor) -> np.ndarray:
    a = image.detach().float().cpu().clamp(0, 1)
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise RobustlensError(f"an image must be (1, H, W) or (3, H, W); "
                              f"received {tuple(a.shape)}.")
    return a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()


def plot_pca_images(clean: torch.Tensor | Sequence[torch.Tensor],
                    adversarial: torch.Tensor | Sequence[torch.Tensor], *,
                    row_labels: Sequence[str] | None = None,
                    inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
                    title: str = "") -> Figure:
    """Study S1: PCA images of activations, clean next to adversarial, one row each.

    Args:
        clean: (B, 3 or 1, H, W) images in [0, 1] from :func:`pca_images`, or sequences of
            (3 or 1, H, W) images (rows may then differ in size, e.g. one row per layer).
        adversarial: the adversarial counterparts, in the same form as ``clean``.
        row_labels: one label per row (e.g. the model or layer).
        inputs: optional (clean, adversarial) input images, (B, C, H, W) in [0, 1] with
            C = 1 or 3, shown in two extra columns on the left.
        title: the figure title.
    """
    if len(clean) != len(adversarial) or any(
            c.shape != a.shape for c, a in zip(clean, adversarial, strict=True)):
        raise RobustlensError("clean and adversarial images differ in shape or number: "
                              f"{[tuple(c.shape) for c in clean]} vs "
                              f"{[tuple(a.shape) for a in adversarial]}")
    n = len(clean)
    columns: list[tuple[str, Sequence[torch.Tensor]]] = []
    if inputs is not None:
        columns += [("clean input", list(inputs[0])), ("adversarial input", list(inputs[1]))]
    columns += [("clean activations", list(clean)),
                ("adversarial activations", list(adversarial))]
    fig = Figure(figsize=(2.2 * len(columns), 2.2 * n + 0.4), layout="constrained")
    axes = fig.subplots(n, len(columns), squeeze=False)
    for i in range(n):
        for j, (name, images) in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(_to_rgb(images[i]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(str(row_labels[i]), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
