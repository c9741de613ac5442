"""Assemble a run's figures and tables into its HTML report."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from matplotlib.figure import Figure

from robustlens._io import atomic_path
from robustlens.report import ReportSection, accuracy_vs_eps_figure, write_report
from robustlens.study.analyses import ANALYSES, COMPARISONS, ModelComparison, StudyAnalysis

if TYPE_CHECKING:
    from robustlens.study.runner import _Run

__all__ = ["accuracy_summary", "build_report", "corruption_accuracy_figure"]


def accuracy_summary(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Accuracy as a model x (attack, eps) table: one row per model, one column per condition."""
    df = accuracy.copy()
    severity = df["severity"] if "severity" in df.columns else pd.Series(pd.NA, index=df.index)
    df["condition"] = [
        "clean" if a == "clean" else f"{a} severity={int(s)}" if not pd.isna(s) else f"{a} eps={e:g}"
        for a, e, s in zip(df["attack"], df["eps"], severity, strict=True)
    ]
    order = list(dict.fromkeys(df["condition"]))
    wide = df.pivot(index="model", columns="condition", values="accuracy")[order]
    wide = wide.reindex(list(dict.fromkeys(df["model"])))
    return wide.reset_index()


def corruption_accuracy_figure(accuracy: pd.DataFrame) -> Figure:
    """Accuracy against severity, one line per corruption type, one panel per model (the clean
    accuracy dashed).

    Args:
        accuracy: the study's accuracy table, with its ``severity`` column.
    """
    rows = accuracy[accuracy["severity"].notna()]
    models = list(dict.fromkeys(accuracy["model"]))
    fig = Figure(figsize=(4.6 * len(models), 3.8), layout="constrained")
    axes = fig.subplots(1, len(models), squeeze=False, sharey=True)[0]
    for ax, model in zip(axes, models, strict=True):
        mine = rows[rows["model"] == model]
        for attack, g in mine.groupby("attack", sort=False):
            g = g.sort_values("severity")
            ax.plot(g["severity"].astype(int), g["accuracy"], marker="o", label=str(attack))
        clean = accuracy[(accuracy["model"] == model) & (accuracy["attack"] == "clean")]["accuracy"]
        if len(clean):
            ax.axhline(float(clean.iloc[0]), color="0.4", linestyle="--", linewidth=1, label="clean")
        ax.set_xticks([1, 2, 3, 4, 5])
        ax.set_xlabel("severity")
        ax.set_title(str(model))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[-1].legend(fontsize=7)
    return fig


def _save(run: _Run, slug: str, fig: Figure) -> str:
    with atomic_path(run.figures / f"{slug}.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return slug


def build_report(run: _Run) -> None:
    """Draw every figure, save it as PNG, and write ``report.html``."""
    from robustlens.study.runner import _slug

    tables = run.tables()
    sections: list[ReportSection] = []
    models = tables["models"]
    acc = tables["accuracy"]
    n = run.manifest.get("data", {}).get("n_images")
    summary = ReportSection(
        "Accuracy",
        text=(f"Clean and robust top-1 accuracy on {n} images of "
              f"<code>{run.manifest.get('data', {}).get('name')}</code>. eps is in pixel units "
              "(pixels in [0, 1]), L-inf."),
        tables=[("Accuracy per model and condition", accuracy_summary(acc)),
                ("Models", models)],
    )
    fig = accuracy_vs_eps_figure(acc)
    summary.figures.append(("Accuracy against eps", run.figures / f"{_save(run, 'accuracy_vs_eps', fig)}.png"))
    if "severity" in acc.columns and acc["severity"].notna().any():
        fig = corruption_accuracy_figure(acc)
        summary.figures.append(("Accuracy against corruption severity",
                                run.figures / f"{_save(run, 'accuracy_vs_severity', fig)}.png"))
    sections.append(summary)
    registered: dict[str, type[StudyAnalysis] | type[ModelComparison]] = {**ANALYSES, **COMPARISONS}
    for key in [*run.config.analyses, *run.config.comparisons]:
        cls = registered[key]
        own = {name: tables[name] for name in run.analysis_tables.get(key, {})}
        section = ReportSection(cls.title or key, text=(cls.__doc__ or "").strip().splitlines()[0],
                                collapse_tables=True)
        for title, fig in cls.figures(own):
            slug = _save(run, _slug(f"{key}_{title}"), fig)
            section.figures.append((title, run.figures / f"{slug}.png"))
        section.tables.extend((name, df) for name, df in own.items())
        sections.append(section)
    if "photos" in run.analysis_tables:
        from robustlens.study.photos import photos_figures

        photo_tables = {name: tables[name] for name in run.analysis_tables["photos"]}
        section = ReportSection(
            "An ImageNet classifier on photographs",
            text=(f"<code>{run.config.photos.architecture if run.config.photos else ''}</code> on photographs: "
                  "clean vs adversarial top classes, saliency, and the channels most sensitive to the "
                  "perturbation, rendered by activation maximization."), collapse_tables=True)
        for title, fig in photos_figures(photo_tables):
            slug = _save(run, _slug(f"photos_{title}"), fig)
            section.figures.append((title, run.figures / f"{slug}.png"))
        section.tables.extend((name, df) for name, df in photo_tables.items() if name == "photo_predictions")
        sections.append(section)
    config_text = (run.run_dir / "config.toml").read_text()
    write_report(run.run_dir / "report.html", f"robustlens study: {run.config.name}", sections,
                 config_text, run.manifest)
