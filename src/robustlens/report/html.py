"""A self-contained HTML report: figures embedded as PNG, tables, config and manifest."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from robustlens._io import atomic_write_text

__all__ = ["ReportSection", "write_report"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; } pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
details { margin: 0.5em 0 1em; } .note { color: #555; font-size: 0.9em; }
"""


@dataclass
class ReportSection:
    """A titled part of the report: text, figures (PNG paths) and tables."""

    title: str
    text: str = ""
    figures: list[tuple[str, Path]] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    collapse_tables: bool = False


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


MAX_TABLE_ROWS = 200


def _table(df: pd.DataFrame, source: str = "") -> str:
    """An HTML table of at most ``MAX_TABLE_ROWS`` rows; longer tables point at their file."""
    note = ""
    if len(df) > MAX_TABLE_ROWS:
        where = f" (all rows: <code>{html.escape(source)}</code>)" if source else ""
        note = f"<p class='note'>First {MAX_TABLE_ROWS} of {len(df)} rows{where}.</p>"
        df = df.head(MAX_TABLE_ROWS)
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="–", border=0) + note


def write_report(path: Path, title: str, sections: list[ReportSection], config_text: str,
                 manifest: dict[str, Any]) -> Path:
    """Write ``report.html`` at ``path``: every section, then the config and the manifest."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{s.text}</p>")
        for caption, fig_path in s.figures:
            parts.append(_img(fig_path, caption))
        for caption, df in s.tables:
            table = _table(df, f"results/{caption}.parquet")
            inner = f"<h3>{html.escape(caption)}</h3>{table}"
            if s.collapse_tables:
                inner = f"<details><summary>{html.escape(caption)}</summary>{table}</details>"
            parts.append(inner)
    parts.append("<h2>Configuration</h2><pre>" + html.escape(config_text) + "</pre>")
    parts.append("<h2>Manifest</h2><pre>" + html.escape(json.dumps(manifest, indent=2, default=str))
                 + "</pre></body></html>")
    atomic_write_text(path, "\n".join(parts))
    return path
