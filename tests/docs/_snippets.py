"""Find the fenced code blocks of the documentation and the snippet markers above them.

A marker is an HTML comment, at the start of a line, directly above a fence (blank lines may separate them); Markdown
keeps HTML comments out of the rendered page:

- ``<!-- snippet: skip (REASON) -->``: the block is not run; the reason is required.
- ``<!-- snippet: fragment -->``: a TOML block that is part of a study config, not a whole one.
- ``<!-- snippet: fragment of examples/NAME.toml -->``: the same, and every value it shows must
  be the one in that example config.
- ``<!-- snippet: setup`` ... ``-->``: Python run (unseen by readers) just before the block, in
  the page's namespace, to give the block what the page's text says it has (a run directory, a
  trained model).
- ``<!-- snippet: shrink (OLD -> NEW; OLD -> NEW) -->``: the block runs with these literal
  replacements (fewer images, steps or epochs), so a full-size recipe stays as written and the
  check stays fast; every OLD must occur in the block.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_MARKER = re.compile(r"^[ \t]*<!--\s*snippet:\s*(?P<body>.*?)-->", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None = None  # the reason, when marked skip
    fragment: bool = False
    fragment_of: str | None = None
    setup: str = ""
    shrink: tuple[tuple[str, str], ...] = ()

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def runnable(self) -> str:
        """The code as run: the block with its shrink replacements applied."""
        code = self.code
        for old, new in self.shrink:
            if old not in code:
                raise ValueError(f"{self.where}: shrink replacement {old!r} -> {new!r} matches nothing in the "
                                 "block; update the marker")
            code = code.replace(old, new)
        return code


def doc_pages() -> list[Path]:
    """README.md, DEVELOPERS.md and every Markdown page under docs/, in a fixed order."""
    pages = [ROOT / "README.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [p for p in pages if p.is_file()]


def _parse_marker(body: str, where: str) -> dict[str, Any]:
    body = body.strip()
    if body.startswith("setup"):
        code = body[len("setup"):]
        return {"setup": code.strip("\n")}
    if body.startswith("shrink"):
        match = re.fullmatch(r"shrink\s*\((?P<pairs>.*)\)", body, re.DOTALL)
        pairs = [p.split(" -> ") for p in match.group("pairs").split(";")] if match else []
        if not pairs or any(len(p) != 2 or not p[0].strip() for p in pairs):
            raise ValueError(f"{where}: write a shrink marker as <!-- snippet: shrink (OLD -> NEW; OLD -> NEW) -->")
        return {"shrink": tuple((old.strip(), new.strip()) for old, new in pairs)}
    if body.startswith("skip"):
        match = re.fullmatch(r"skip\s*\((?P<reason>.*)\)", body, re.DOTALL)
        reason = " ".join(match.group("reason").split()) if match else ""
        if not reason:
            raise ValueError(f"{where}: a skip marker needs its reason: <!-- snippet: skip (why) -->")
        return {"skip": reason}
    match = re.fullmatch(r"fragment(?:\s+of\s+(?P<path>\S+))?", body)
    if match:
        return {"fragment": True, "fragment_of": match.group("path")}
    raise ValueError(f"{where}: unknown snippet marker {body!r} (known: skip (REASON), fragment, "
                     "fragment of PATH, setup, shrink (OLD -> NEW; ...))")


def _dedent(lines: list[str], indent: str) -> str:
    out = []
    for line in lines:
        out.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
    return "\n".join(out) + "\n"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` in order, each with the markers above it.

    Raises:
        ValueError: a marker not directly above a fence, an unknown marker, a skip without a
            reason, or an unclosed fence.
    """
    rel = str(page.relative_to(ROOT))
    text = page.read_text()
    lines = text.splitlines()
    # markers by the line their comment ends on
    pending: dict[int, tuple[int, dict[str, Any]]] = {}
    for m in _MARKER.finditer(text):
        start = text.count("\n", 0, m.start()) + 1
        end = text.count("\n", 0, m.end()) + 1
        pending[end] = (start, _parse_marker(m.group("body"), f"{rel}:{start}"))
    found: list[Block] = []
    used: set[int] = set()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group("indent"), m.group("fence"), m.group("lang").lower()
        start = i
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence) and lines[j].strip().strip(fence[0]) == ""):
            j += 1
        if j == len(lines):
            raise ValueError(f"{rel}:{start + 1}: unclosed code fence")
        # markers: comments ending above the fence, separated from it by blank lines only
        options: dict[str, Any] = {}
        k = start  # 1-based line just above the fence
        while k >= 1:
            if k in pending:
                first, opts = pending[k]
                for key, value in opts.items():
                    if key == "setup" and "setup" in options:
                        value = f"{value}\n{options['setup']}"
                    options[key] = value
                used.add(k)
                k = first - 1
            elif not lines[k - 1].strip():
                k -= 1
            else:
                break
        found.append(Block(page=rel, line=start + 1, lang=lang, code=_dedent(lines[start + 1:j], indent),
                           skip=options.get("skip"), fragment=bool(options.get("fragment")),
                           fragment_of=options.get("fragment_of"), setup=str(options.get("setup") or ""),
                           shrink=options.get("shrink", ())))
        i = j + 1
    stray = sorted(set(pending) - used)
    if stray:
        raise ValueError(f"{rel}: snippet marker(s) ending on line(s) {stray} are not directly above a "
                         "code fence")
    return found


def all_blocks() -> list[Block]:
    return [b for page in doc_pages() for b in blocks(page)]


SHELL_LANGS = ("sh", "bash", "shell", "console")


def shell_commands(block: Block) -> list[list[str]]:
    """The commands of a shell block as argument lists (prompts, comments and redirects removed).

    In a ``console`` block only the lines after a ``$ `` prompt are commands.
    """
    logical: list[str] = []
    current = ""
    for raw in block.code.splitlines():
        line = raw.rstrip()
        if block.lang == "console" and not current:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current)
        current = ""
    commands = []
    for line in logical:
        words = shlex.split(line, comments=True)
        for i, word in enumerate(words):  # drop redirects and what follows them
            if word in (">", ">>", "|", "<", "2>") or word.startswith((">", "2>")):
                words = words[:i]
                break
        if words:
            commands.append(words)
    return commands


def robustlens_argv(words: list[str]) -> list[str] | None:
    """The arguments given to the ``robustlens`` command, or None when the line runs something else.

    Recognises ``robustlens ARGS``, ``.venv/bin/robustlens ARGS``, ``python -m robustlens ARGS``
    and ``torchrun ... -m robustlens ARGS``.
    """
    while words and re.fullmatch(r"\w+=\S*", words[0]):  # VAR=value prefixes
        words = words[1:]
    if not words:
        return None
    if Path(words[0]).name == "robustlens":
        return words[1:]
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "robustlens":
            return words[i + 2:]
    return None
