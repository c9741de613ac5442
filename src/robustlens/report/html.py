"""A self-contained HTML report: a summary, a table of contents, sections with their figures
(PNG, embedded) and tables, then the config and the manifest."""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from robustlens.io import atomic_write_text

__all__ = ["MAX_TABLE_ROWS", "ReportSection", "anchor", "write_report"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; } pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
details { margin: 0.5em 0 1em; } .note { color: #555; font-size: 0.9em; }
nav.toc { background: #f7f7f7; border: 1px solid #ddd; padding: 0.5em 1.5em; margin: 1em 0; }
nav.toc ol { margin: 0.3em 0; } .flag { color: #a40000; } .summary li { margin: 0.3em 0; }
"""

MAX_TABLE_ROWS = 200
"""Rows shown of a table; longer tables point at their Parquet file."""


def anchor(text: str) -> str:
    """An HTML id made of ``text``: lower case, runs of other characters as ``-``.

    Args:
        text: a section key or title.
    """
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


@dataclass
class ReportSection:
    """A titled part of the report: text (HTML), figures (PNG paths) and tables.

    Attributes:
        title: the heading.
        key: the anchor id (default: made of the title).
        text: paragraphs of HTML shown under the heading.
        figures: (caption, PNG file) pairs.
        tables: (name, DataFrame) pairs; ``results/<name>.parquet`` holds every row.
        collapse_tables: show the tables folded (``<details>``).
    """

    title: str
    key: str = ""
    text: str = ""
    figures: list[tuple[str, Path]] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    collapse_tables: bool = False

    @property
    def id(self) -> str:
        """The section's anchor id."""
        return anchor(self.key or self.title)


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(df: pd.DataFrame, source: str = "") -> str:
    """An HTML table of at most ``MAX_TABLE_ROWS`` rows; longer tables point at their file."""
    note = ""
    if len(df) > MAX_TABLE_ROWS:
        where = f" (all rows: <code>{html.escape(source)}</code>)" if source else ""
        note = f"<p class='note'>First {MAX_TABLE_ROWS} of {len(df)} rows{where}.</p>"
        df = df.head(MAX_TABLE_ROWS)
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="–", border=0) + note


def _section(s: ReportSection) -> str:
    parts = [f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>']
    if s.text:
        parts.append(s.text if s.text.lstrip().startswith("<") else f"<p>{s.text}</p>")
    for caption, fig_path in s.figures:
        parts.append(_img(fig_path, caption))
    for name, df in s.tables:
        table = _table(df, f"results/{name}.parquet")
        if s.collapse_tables:
            parts.append(f"<details><summary>Table <code>{html.escape(name)}</code> "
                         f"({len(df)} rows)</summary>{table}</details>")
        else:
            parts.append(f"<h3>{html.escape(name)}</h3>{table}")
    parts.append("</section>")
    return "\n".join(parts)


def write_report(path: Path, title: str, sections: list[ReportSection], config_text: str,
                 manifest: dict[str, Any], *, subtitle: str = "") -> Path:
    """Write the report at ``path``: title, table of contents, every section, config, manifest.

    The first section is expected to be the summary; every section gets an entry in the
    table of contents, linking to its anchor.

    Args:
        path: the HTML file written (atomically).
        title: the page's title and heading.
        sections: the parts, in order.
        config_text: the resolved config, shown verbatim.
        manifest: the run's manifest, shown as JSON.
        subtitle: a line of HTML under the heading (e.g. when the report was built).
    """
    tail = [ReportSection("Configuration", key="configuration"), ReportSection("Manifest", key="manifest")]
    toc = "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in [*sections, *tail])
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if subtitle:
        parts.append(f"<p class='note'>{subtitle}</p>")
    parts.append(f"<nav class='toc' id='contents'><b>Contents</b><ol>{toc}</ol></nav>")
    parts.extend(_section(s) for s in sections)
    parts.append(f"<section id='{tail[0].id}'><h2>Configuration</h2><pre>"
                 + html.escape(config_text) + "</pre></section>")
    parts.append(f"<section id='{tail[1].id}'><h2>Manifest</h2><pre>"
                 + html.escape(json.dumps(manifest, indent=2, default=str)) + "</pre></section></body></html>")
    atomic_write_text(path, "\n".join(parts))
    return path
