"""MkDocs hook: show the Sphinx cross-reference roles of robustlens' docstrings as code.

The docstrings say ``:class:`PGD``` or ``:func:`~robustlens.evaluation.audit.audit_gradient_masking```
(readable in ``help()`` and editors). mkdocstrings renders them as ``:class:<code>PGD</code>``;
this hook drops the role prefix, and for a ``~`` reference keeps only the last name, as Sphinx does.
A paragraph ending in reST's ``::`` (before an indented example) ends in one colon.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):<code>(~?)([^<]*)</code>")


def _replace(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    """Rewrite the rendered roles of one page, and reST's ``::`` before a literal block."""
    return _ROLE.sub(_replace, html).replace("::</p>", ":</p>")
