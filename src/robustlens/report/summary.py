"""The report's summary: headline accuracy per model, audit flags, and what to look at."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

__all__ = ["accuracy_summary", "audit_flags", "cascade_notes", "headline_table", "summary_notes"]


def accuracy_summary(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Accuracy as a model x (attack, eps) table: one row per model, one column per condition.

    Args:
        accuracy: rows ``model, attack, eps, accuracy`` (the run's ``accuracy`` table).
    """
    df = accuracy.copy()
    severity = df["severity"] if "severity" in df.columns else pd.Series(pd.NA, index=df.index)
    df["condition"] = [
        "clean" if a == "clean" else f"{a} severity={int(s)}" if not pd.isna(s) else f"{a} eps={e:g}"
        for a, e, s in zip(df["attack"], df["eps"], severity, strict=True)
    ]
    order = list(dict.fromkeys(df["condition"]))
    wide = df.pivot(index="model", columns="condition", values="accuracy")[order]
    wide = wide.reindex(list(dict.fromkeys(df["model"])))
    wide.columns.name = None
    return wide.reset_index()


def headline_table(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Per model: clean accuracy, and at each eps the accuracy under the strongest attack there.

    The strongest attack at an eps is the one leaving the lowest accuracy (its name is given
    in brackets); attacks of unbounded eps (DeepFool's minimal perturbation) are left out.

    Args:
        accuracy: rows ``model, attack, eps, accuracy`` (the run's ``accuracy`` table).

    Returns:
        One row per model (study order): ``model``, ``clean`` (``"0.981"``), then one text
        column per eps (``"eps=0.05"``: ``"0.412 (pgd)"``).
    """
    models = list(dict.fromkeys(accuracy["model"]))
    adv = accuracy[(accuracy["attack"] != "clean") & np.isfinite(accuracy["eps"].astype(float))]
    epsilons = sorted(adv["eps"].unique())
    rows = []
    for model in models:
        mine = accuracy[accuracy["model"] == model]
        clean = mine.loc[mine["attack"] == "clean", "accuracy"]
        row: dict[str, object] = {"model": model, "clean": f"{clean.iloc[0]:.3f}" if len(clean) else "–"}
        for eps in epsilons:
            at = adv[(adv["model"] == model) & (adv["eps"] == eps)]
            if at.empty:
                row[f"eps={eps:g}"] = "–"
                continue
            worst = at.loc[at["accuracy"].idxmin()]
            row[f"eps={eps:g}"] = f"{worst['accuracy']:.3f} ({worst['attack']})"
        rows.append(row)
    return pd.DataFrame(rows)


def audit_flags(audit: pd.DataFrame | None) -> list[str]:
    """One sentence per flagged check of the gradient-masking audit (empty: none flagged or no audit).

    Args:
        audit: the run's ``audit`` table (``model, check, status, evidence, suggestion``), or ``None``.
    """
    if audit is None or audit.empty or "status" not in audit:
        return []
    out = []
    for _, row in audit[audit["status"] == "flag"].iterrows():
        model = f"{row['model']}: " if "model" in row else ""
        evidence = f" {row['evidence']}" if isinstance(row.get("evidence"), str) and row["evidence"] else ""
        out.append(f"{model}{row['check']} flagged.{evidence}")
    return out


def summary_notes(accuracy: pd.DataFrame) -> list[str]:
    """Plain-language observations for the summary: the most robust model at the largest eps,
    and the steepest drop from clean accuracy.

    Args:
        accuracy: the run's ``accuracy`` table.
    """
    adv = accuracy[(accuracy["attack"] != "clean") & np.isfinite(accuracy["eps"].astype(float))]
    if adv.empty:
        return []
    notes = []
    eps = float(adv["eps"].max())
    worst = adv[adv["eps"] == eps].groupby("model", sort=False)["accuracy"].min()
    best = worst.idxmax()
    notes.append(f"At the largest eps ({eps:g}) the most robust model is <b>{html.escape(str(best))}</b> "
                 f"(accuracy {worst[best]:.3f} under its strongest attack)"
                 + ("." if len(worst) == 1 else f"; the least robust is <b>{html.escape(str(worst.idxmin()))}</b> "
                    f"({worst.min():.3f})."))
    clean = accuracy[accuracy["attack"] == "clean"].set_index("model")["accuracy"]
    first = float(adv["eps"].min())
    at_first = adv[adv["eps"] == first].groupby("model", sort=False)["accuracy"].min()
    drop = (clean.reindex(at_first.index) - at_first).dropna()
    if not drop.empty and drop.max() > 0:
        m = drop.idxmax()
        notes.append(f"Already at the smallest eps ({first:g}), <b>{html.escape(str(m))}</b> loses "
                     f"{drop[m]:.3f} of its clean accuracy ({clean[m]:.3f}).")
    return notes


def cascade_notes(stages: pd.DataFrame | None) -> list[str]:
    """One sentence per AutoAttack condition label: at its largest eps, each model's accuracy
    clean and after the last stage of the cascade, and what the last stage broke.

    Args:
        stages: the run's ``cascade_stages`` table (see
            :func:`robustlens.evaluation.cascade_stages`), or ``None``.
    """
    if stages is None or stages.empty:
        return []
    df = stages if "model" in stages.columns else stages.assign(model="")
    norms = {"inf": "L-inf", "2": "L2", "1": "L1"}
    out = []
    for (attack, norm), g in df.groupby(["attack", "norm"], sort=False):
        eps = float(g["eps"].max())
        parts = []
        for model, m in g[g["eps"] == eps].groupby("model", sort=False):
            m = m.sort_values("stage")
            first, last = m.iloc[0], m.iloc[-1]
            parts.append(f"{html.escape(str(model))} {first['accuracy']:.3f} clean, {last['accuracy']:.3f} after "
                         f"{len(m) - 1} stages ({html.escape(str(last['stage_attack']))}, the last, broke "
                         f"{int(last['broken'])} of the {int(last['attacked'])} images left)")
        out.append(f"AutoAttack <b>{html.escape(str(attack))}</b> at {norms.get(str(norm), norm)} eps {eps:g}: "
                   + "; ".join(parts) + ".")
    return out
