"""Build ``report.html`` from a run directory alone (``robustlens report RUN_DIR``)."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from robustlens.report.figures import accuracy_vs_eps_figure, corruption_accuracy_figure, save_png
from robustlens.report.html import ReportSection, write_report
from robustlens.report.rundir import PHOTOS, RunDir
from robustlens.report.summary import accuracy_summary, audit_flags, cascade_notes, headline_table, summary_notes

__all__ = ["build_report"]

log = logging.getLogger(__name__)

FigureMaker = Callable[[dict[str, pd.DataFrame]], list[tuple[str, Figure]]]

_VOLATILE = ("status", "finished", "peak_memory_bytes")  # manifest keys that change when the report is rebuilt
_VOLATILE_TIMINGS = ("report_s", "total_s")

PHOTOS_TEXT = (
    "<p>One ImageNet classifier (<code>{arch}</code>) on natural photographs. The first figure "
    "shows each photo clean, attacked (L-inf PGD: untargeted, away from its true class or its "
    "clean top-1 class; or targeted, towards the class the config names, with whether the attack "
    "reached it and the target's probability) and the perturbation magnified, with the model's "
    "top-3 classes above each image: a small, "
    "invisible perturbation that changes the top class is the adversarial effect in one picture. "
    "The saliency figure shows, for each photo clean and adversarial, where the gradient of the "
    "top-1 class points; the last figure renders the channels most changed by the perturbation "
    "(activation maximization), i.e. what those channels respond to.</p>")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _stable_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest without what changes when the report is rebuilt (status, end time, report timings)."""
    out = {k: v for k, v in manifest.items() if k not in _VOLATILE}
    if isinstance(out.get("timings"), dict):
        out["timings"] = {k: v for k, v in out["timings"].items() if k not in _VOLATILE_TIMINGS}
    return out


def _draw(run: RunDir, section: ReportSection, key: str, maker: FigureMaker,
          tables: dict[str, pd.DataFrame]) -> None:
    try:
        figures = maker(tables)
    except Exception as err:  # a plug-in's figure code must not cost the whole report
        log.warning("the figures of %s failed (%s: %s); the report shows its tables only",
                    key, type(err).__name__, err)
        section.text += (f"<p class='flag'>Its figures could not be drawn ({html.escape(type(err).__name__)}: "
                         f"{html.escape(str(err))}).</p>")
        return
    for title, fig in figures:
        path = save_png(fig, run.figures / f"{_slug(f'{key}_{title}')}.png")
        section.figures.append((title, path))


def _summary(run: RunDir, analysis_sections: list[ReportSection]) -> ReportSection:
    acc = run.tables["accuracy"]
    data = run.manifest.get("data", {})
    n, name = data.get("n_images"), data.get("name")
    parts = [f"<p>Top-1 accuracy on {html.escape(str(n))} images of <code>{html.escape(str(name))}</code>, "
             "clean and under the strongest attack at each eps (the attack that left the lowest "
             "accuracy is in brackets). eps is in pixel units (pixels in [0, 1]).</p>"]
    status = str(run.manifest.get("status", ""))
    if status.startswith("failed"):
        parts.append(f"<p class='flag'>The run did not finish ({html.escape(status)}); "
                     "the report shows the results written before it stopped.</p>")
    notes = summary_notes(acc) + cascade_notes(run.tables.get("cascade_stages"))
    flags = audit_flags(run.tables.get("audit"))
    if "audit" in run.owners:
        notes.append("The gradient-masking audit flagged: " + "; ".join(map(html.escape, flags))
                     if flags else "The gradient-masking audit flagged nothing.")
    if analysis_sections:
        links = ", ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in analysis_sections)
        notes.append(f"Where to look next: {links}.")
    if notes:
        parts.append("<ul class='summary'>" + "".join(f"<li>{t}</li>" for t in notes) + "</ul>")
    return ReportSection("Summary", key="summary", text="\n".join(parts),
                         tables=[("headline accuracy", headline_table(acc))])


def build_report(run_dir: str | Path) -> Path:
    """Draw every figure of a run directory, save it as PNG under ``figures/``, write ``report.html``.

    Reads only the run directory: ``config.toml``, ``manifest.json`` and ``results/*.parquet``
    (see :class:`~robustlens.report.rundir.RunDir`). Each analysis of the config gets a section
    with its own text (:meth:`StudyAnalysis.describe`), figures (its ``figures(tables)``) and
    tables; an analysis no longer installed still gets its tables.

    Args:
        run_dir: the folder a study wrote.

    Returns:
        The path of ``report.html``.

    Raises:
        DataError: ``run_dir`` is not a run directory (see :meth:`RunDir.read`).
    """
    from robustlens.study.analyses import ANALYSES, COMPARISONS, load_plugins

    run = RunDir.read(run_dir)
    try:
        load_plugins()
    except Exception as err:  # a broken plug-in package: its section falls back to tables
        log.warning("%s", err)
    registered: dict[str, Any] = {**ANALYSES, **COMPARISONS}
    recorded = bool(run.manifest.get("tables"))
    run.figures.mkdir(parents=True, exist_ok=True)

    overview = ReportSection("Accuracy", key="accuracy", text=(
        "<p>Accuracy against eps, one panel per attack and one line per model (eps 0: clean). "
        "A robust model's curve stays high as eps grows; a curve that drops to chance at the "
        "smallest eps is a model with no robustness at all. The table gives every number.</p>"),
        tables=[("accuracy per model and condition", accuracy_summary(run.tables["accuracy"]))])
    if "models" in run.tables:
        overview.tables.append(("models", run.tables["models"]))
    fig = accuracy_vs_eps_figure(run.tables["accuracy"])
    overview.figures.append(("Accuracy against eps", save_png(fig, run.figures / "accuracy_vs_eps.png")))
    acc = run.tables["accuracy"]
    if "severity" in acc.columns and acc["severity"].notna().any():
        overview.figures.append(("Accuracy against corruption severity",
                                 save_png(corruption_accuracy_figure(acc), run.figures / "accuracy_vs_severity.png")))
    sections: list[ReportSection] = []
    for key, names in run.owners.items():
        own = {name: run.tables[name] for name in names}
        if key == PHOTOS:
            from robustlens.study.photos import photos_figures

            arch = (run.config.get("photos") or {}).get("architecture", "")
            section = ReportSection("An ImageNet classifier on photographs", key=PHOTOS,
                                    text=PHOTOS_TEXT.format(arch=html.escape(str(arch))), collapse_tables=True)
            _draw(run, section, "photos", photos_figures, own)
            section.tables.extend((n, df) for n, df in own.items() if n == "photo_predictions")
        else:
            cls = registered.get(key)
            title = (cls.title if cls is not None else "") or key
            section = ReportSection(title, key=key, collapse_tables=True)
            if cls is None:
                section.text = (f"<p class='note'>The analysis <code>{html.escape(key)}</code> is not "
                                "installed here: its tables only.</p>")
            else:
                text = cls.describe()
                section.text = text if text.lstrip().startswith("<") else f"<p>{text}</p>"
                _draw(run, section, key, cls.figures, own if recorded else run.tables)
            section.tables.extend(own.items())
        sections.append(section)
    owned = {t for names in run.owners.values() for t in names} | {"accuracy", "models"}
    others = [t for t in run.tables if t not in owned]
    if others:
        sections.append(ReportSection("Other tables", key="other-tables", collapse_tables=True,
                                      text="<p>Tables of the run that no section of this report claims.</p>",
                                      tables=[(t, run.tables[t]) for t in others]))
    summary = _summary(run, sections)
    name = run.config.get("study", {}).get("name", run.manifest.get("study", run.path.name))
    built = datetime.now(UTC).isoformat(timespec="seconds")
    return write_report(run.path / "report.html", f"robustlens study: {name}",
                        [summary, overview, *sections], run.config_text, _stable_manifest(run.manifest),
                        subtitle=f"Report built {built} from <code>{html.escape(str(run.path.resolve()))}</code>.")
