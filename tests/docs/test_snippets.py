"""Every code block of the documentation (README.md, DEVELOPERS.md, docs/**/*.md) is checked.

- ``python``: run in page order, the blocks of a page sharing one namespace, in a temporary
  working directory that holds the checkpoints the tutorials' ``robustlens train`` commands
  write (``models/standard``, ``models/robust``: fmnist_cnn; ``models/vonenet``:
  vone_fmnist_cnn; seeded random weights: the blocks are checked to run, not for their
  numbers). A block runs only what it shows, on the page's own small data.
- ``toml``: a study config is parsed by ``robustlens.study.parse_config``; a fragment (marked)
  is valid TOML, merged into a minimal config and parsed, and a ``fragment of PATH`` must agree
  value for value with that example config; other TOML (a pyproject table) is valid TOML.
- ``json``: valid JSON; ``text``: not checked (output, formulas, file trees).
- ``sh`` / ``bash`` / ``console``: every ``robustlens`` command line is parsed by the
  command's own argparse parser (nothing runs), an example config it names exists and loads,
  every ``make`` target exists in the Makefile; other commands are only listed.

Markers (HTML comments right above a block, unseen in the site) are described in
``_snippets``; the skipped blocks are listed with their reasons.
"""

from __future__ import annotations

import copy
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from _snippets import ROOT, SHELL_LANGS, Block, all_blocks, blocks, doc_pages, robustlens_argv, shell_commands

BLOCKS = all_blocks()
STUDY_KEYS = {"study", "data", "models", "attacks", "analyses", "comparisons", "photos"}
# a fragment is merged into this, and must then parse
MINIMAL = {"data": {"dataset": "fashion_mnist"},
           "models": [{"name": "standard", "architecture": "fmnist_cnn", "random": True}]}
# the checkpoints the tutorials' `robustlens train ... --out PATH` commands write
CHECKPOINTS = {"models/standard": "fmnist_cnn", "models/robust": "fmnist_cnn", "models/vonenet": "vone_fmnist_cnn"}


def _of(lang: str | tuple[str, ...]) -> list[Block]:
    langs = (lang,) if isinstance(lang, str) else lang
    return [b for b in BLOCKS if b.lang in langs]


def _ids(items: list[Block]) -> list[str]:
    return [b.where for b in items]


# --- markers -------------------------------------------------------------------------------


def test_pages_are_scanned_and_markers_are_well_formed() -> None:
    pages = {str(p.relative_to(ROOT)) for p in doc_pages()}
    assert {"README.md", "DEVELOPERS.md", "docs/concepts.md", "docs/studies.md"} <= pages
    assert len(_of("python")) >= 15 and len(_of("toml")) >= 8 and len(_of(SHELL_LANGS)) >= 15
    for block in BLOCKS:
        assert block.lang, f"{block.where}: give the code block a language (```python, ```toml, ```sh, ```text)"
        assert block.lang in ("python", "toml", "json", "text", *SHELL_LANGS), (
            f"{block.where}: unchecked language {block.lang}")
        if block.lang == "json" and block.skip is None:
            json.loads(block.code)
        if block.skip is not None:
            assert len(block.skip) >= 10, f"{block.where}: say why the block is skipped"
        if block.fragment:
            assert block.lang == "toml", f"{block.where}: only TOML blocks can be fragments"
        if block.setup or block.shrink:
            assert block.lang == "python", f"{block.where}: only Python blocks take a setup or shrink"
            block.runnable()  # every shrink replacement matches


def test_skipped_blocks_are_few_and_listed(capsys: pytest.CaptureFixture[str]) -> None:
    skipped = [b for b in BLOCKS if b.skip is not None]
    with capsys.disabled():
        for block in skipped:
            print(f"\n  skipped {block.where} ({block.lang}): {block.skip}", end="")
    assert len(skipped) <= len(BLOCKS) // 5, "most blocks must run; make a slow one small instead of skipping it"


def test_a_marker_away_from_a_fence_is_an_error(tmp_path: Path) -> None:
    import _snippets

    page = ROOT / "docs" / "_marker_probe.md"  # blocks() reads pages under the repository only
    try:
        page.write_text("text\n\n<!-- snippet: skip (why) -->\nmore text\n\n```python\nx = 1\n```\n")
        with pytest.raises(ValueError, match="not directly above"):
            _snippets.blocks(page)
        page.write_text("<!-- snippet: skip -->\n```python\nx = 1\n```\n")
        with pytest.raises(ValueError, match="reason"):
            _snippets.blocks(page)
        page.write_text("<!-- snippet: skip (no GPU here) -->\n\n```python\nx = 1\n```\n"
                        "<!-- snippet: setup\ny = 2\n-->\n    ```python\n    print(y)\n    ```\n")
        first, second = _snippets.blocks(page)
        assert first.skip == "no GPU here" and second.setup == "y = 2" and second.code == "print(y)\n"
    finally:
        page.unlink(missing_ok=True)


# --- python --------------------------------------------------------------------------------

PYTHON_PAGES = sorted({b.page for b in _of("python")})


@pytest.fixture
def docs_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary working directory with the tutorials' checkpoints and a private model cache."""
    import robustlens

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROBUSTLENS_CACHE", str(tmp_path / "cache"))
    for i, (path, arch) in enumerate(CHECKPOINTS.items()):
        robustlens.save_checkpoint(robustlens.create_model(arch, seed=i), path, arch)
    return tmp_path


@pytest.mark.parametrize("page", PYTHON_PAGES)
def test_python_blocks_of_page_run(page: str, docs_workdir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robustlens.errors import DataError

    namespace: dict[str, Any] = {"__name__": "__docs__"}
    ran = 0
    torch.manual_seed(0)
    try:
        for block in blocks(ROOT / page):
            if block.lang != "python" or block.skip is not None:
                continue
            if block.setup:
                exec(compile(block.setup, f"{block.where} (setup)", "exec"), namespace)
            try:
                exec(compile(block.runnable(), block.where, "exec"), namespace)
            except DataError as err:
                if "fashion" in str(err).lower():  # `make test` installs it; a bare pytest may not have it
                    pytest.skip(f"Fashion-MNIST unavailable: {err}")
                raise
            ran += 1
    finally:
        plt.close("all")
    assert ran > 0


# --- toml ----------------------------------------------------------------------------------


def _merge(base: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """``part`` laid over ``base``: tables merged key by key, arrays of tables by ``name``."""
    out = copy.deepcopy(base)
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif key in ("models", "attacks") and isinstance(value, list):
            if key == "models":
                out[key] = copy.deepcopy(value)
                continue
            by_name = {a.get("name", a.get("type")): a for a in out.get(key, [])}
            for item in value:
                by_name[item.get("name", item.get("type"))] = copy.deepcopy(item)
            out[key] = list(by_name.values())
        else:
            out[key] = copy.deepcopy(value)
    return out


def _disagreements(part: Any, whole: Any, where: str) -> list[str]:
    """Where ``part`` shows a value that ``whole`` does not have (arrays of tables matched by name)."""
    if isinstance(part, dict):
        if not isinstance(whole, dict):
            return [f"{where}: a table in the docs, {whole!r} in the file"]
        return [d for k, v in part.items()
                for d in (_disagreements(v, whole[k], f"{where}.{k}") if k in whole else [f"{where}.{k}: missing"])]
    if isinstance(part, list) and part and all(isinstance(p, dict) for p in part):
        found = []
        for item in part:
            key = item.get("name", item.get("type"))
            match = [w for w in whole if isinstance(w, dict) and w.get("name", w.get("type")) == key]
            found += (_disagreements(item, match[0], f"{where}[{key}]") if match
                      else [f"{where}[{key}]: no such entry"])
        return found
    if part != whole and not (isinstance(part, float) and isinstance(whole, float) and math.isclose(part, whole)):
        return [f"{where}: {part!r} in the docs, {whole!r} in the file"]
    return []


@pytest.mark.parametrize("block", _of("toml"), ids=_ids(_of("toml")))
def test_toml_block_is_a_valid_study_config(block: Block) -> None:
    from robustlens.study import load_config, parse_config

    if block.skip is not None:
        pytest.skip(block.skip)
    raw = tomllib.loads(block.code)
    if not set(raw) & STUDY_KEYS:  # another file's TOML (a pyproject table)
        assert not block.fragment_of, f"{block.where}: not a study config fragment"
        return
    assert set(raw) <= STUDY_KEYS, f"{block.where}: unknown top-level keys {sorted(set(raw) - STUDY_KEYS)}"
    if block.fragment_of:
        source = ROOT / block.fragment_of
        assert source.is_file(), f"{block.where}: {block.fragment_of} does not exist"
        differ = _disagreements(raw, tomllib.loads(source.read_text()), block.fragment_of)
        assert not differ, f"{block.where} disagrees with {block.fragment_of}: " + "; ".join(differ)
        load_config(source)
    elif block.fragment:
        parse_config(_merge(MINIMAL, raw), base_dir=ROOT)
    else:
        assert "models" in raw, (f"{block.where}: a study config without [[models]]; mark it "
                                 "<!-- snippet: fragment --> if it is part of one")
        parse_config(raw, base_dir=ROOT)


# --- shell ---------------------------------------------------------------------------------

_MAKE_TARGETS = set(re.findall(r"^([\w-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.MULTILINE))


@pytest.mark.parametrize("block", _of(SHELL_LANGS), ids=_ids(_of(SHELL_LANGS)))
def test_shell_block_commands_exist(block: Block, capsys: pytest.CaptureFixture[str]) -> None:
    from robustlens.cli import build_parser
    from robustlens.study import load_config

    if block.skip is not None:
        pytest.skip(block.skip)
    commands = shell_commands(block)
    assert commands, f"{block.where}: no command found"
    others = []
    for words in commands:
        argv = robustlens_argv(words)
        if argv is not None:
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as stop:
                if stop.code == 0 and {"--help", "-h", "--version"} & set(argv):
                    continue
                pytest.fail(f"{block.where}: `robustlens {' '.join(argv)}` is refused by the command: "
                            f"{capsys.readouterr().err.strip()}")
            config = getattr(args, "config", None)
            if config is not None and str(config).startswith("examples/"):
                assert (ROOT / config).is_file(), f"{block.where}: {config} does not exist"
                load_config(ROOT / config)
        elif words[0] == "make":
            missing = [t for t in words[1:] if not t.startswith("-") and t not in _MAKE_TARGETS]
            assert not missing, f"{block.where}: no make target {missing} (Makefile has {sorted(_MAKE_TARGETS)})"
        else:
            others.append(" ".join(words))
    if others:  # not checked: listed
        with capsys.disabled():
            print(f"\n  {block.where}: not checked: {others}", end="")


# --- referenced files and numbers ----------------------------------------------------------

_PATH = re.compile(r"(?<![\w/.])((?:benchmarks|examples|tests|scripts)/[\w./-]+\.(?:py|toml|sh))")


def test_files_the_docs_name_exist() -> None:
    missing = []
    for page in doc_pages():
        for path in _PATH.findall(page.read_text()):
            if not (ROOT / path).is_file() and not re.search(r"/[A-Z]+\.", path):  # NAME.toml: a placeholder
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, missing


_TABLE_ROW = re.compile(r"^\|(.+)\|\s*$")
# a measured figure: a decimal (0.917, 253.7) or a number with a unit of time, size or ratio
_MEASURED = re.compile(r"(?<![\w.`])(?:\d+\.\d+|\d+(?:\.\d+)?\s?(?:s|ms|min|MiB|GiB|KiB|MB|GB|x|%))(?![\w.])")


def _tables(text: str) -> list[tuple[int, list[list[str]]]]:
    """Markdown tables as (first line, 0-based, rows of cells), header row first."""
    out: list[tuple[int, list[list[str]]]] = []
    rows: list[list[str]] = []
    start = 0
    for i, line in enumerate([*text.splitlines(), ""]):
        m = _TABLE_ROW.match(line.strip())
        if m:
            if not rows:
                start = i
            cells = [c.strip() for c in m.group(1).split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif rows:
            out.append((start, rows))
            rows = []
    return out


def unsourced_figures(text: str, near: int = 15) -> list[int]:
    """Lines (1-based) where a table or a ``text`` block of measured figures starts with nothing
    within ``near`` lines that says what produced it: a ``benchmarks/`` script, a ``robustlens``
    command, or a Python block above it (whose printed output it is).
    """
    lines = text.splitlines()
    spans = [(start, start + len(rows), [c for row in rows[1:] for c in row if "`" not in c])
             for start, rows in _tables(text)]
    i = 0
    while i < len(lines):
        if lines[i].strip().startswith("```text"):
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            spans.append((i, j, lines[i + 1:j]))
            i = j
        i += 1
    found = []
    for start, end, cells in spans:
        if sum(len(_MEASURED.findall(c)) for c in cells) < 3:
            continue
        before = "\n".join(lines[max(0, start - near):start])
        around = before + "\n".join(lines[start:end + near])
        if "benchmarks/" not in around and "robustlens " not in around and "```python" not in before:
            found.append(start + 1)
    return sorted(found)


def test_measured_figures_name_what_produced_them() -> None:
    """A table or printed output of measured figures (times, sizes, accuracies) says what made it."""
    unsourced = {str(p.relative_to(ROOT)): lines for p in doc_pages() if (lines := unsourced_figures(p.read_text()))}
    assert not unsourced, f"measured figures without the script or command that produced them: {unsourced}"


def test_unsourced_figures_are_found() -> None:
    table = "| model | accuracy | time |\n|---|---|---|\n| a | 0.917 | 12.5 s |\n| b | 0.850 | 3 min |\n"
    text_block = "```text\nclean 0.917\npgd   0.412\nfgsm  0.533\n```\n"
    for figures in (table, text_block):
        assert unsourced_figures("Some prose.\n\n" + figures) == [3]
        assert unsourced_figures("Run `python benchmarks/bench_x.py`:\n\n" + figures) == []
        assert unsourced_figures("```python\nprint(1)\n```\n\n" + figures) == []
    defaults = "| key | default |\n|---|---|\n| `lr` | `0.002` |\n| `eps` | `0.1` |\n| `x` | `0.5` |\n"
    assert unsourced_figures(defaults) == []


_PROSE = object()  # a default described in words ("a share of the device's memory"): not compared


def _doc_value(text: str) -> Any:
    """A documented default (`` `250` ``, ``none``, `` `2/255` ``) as a Python value."""
    text = text.strip()
    if not re.fullmatch(r"`[^`]*`|none|required|[\d./]+", text):
        return _PROSE
    text = text.strip("`")
    if text in ("none", "required", ""):
        return None
    if re.fullmatch(r"\d+/\d+", text):
        num, den = text.split("/")
        return int(num) / int(den)
    return tomllib.loads(f"v = {text}")["v"]


def _default_table(page: str, heading: str) -> dict[str, Any]:
    """``| `key` | default | ...`` rows of the first table after ``heading``."""
    text = (ROOT / page).read_text()
    after = text[text.index(heading):]
    _, rows = _tables(after)[0]
    assert rows[0][:2] == ["key", "default"], rows[0]
    values = {row[0].strip("`"): _doc_value(row[1]) for row in rows[1:]}
    return {key: value for key, value in values.items() if value is not _PROSE}


def test_studies_page_defaults_are_the_parsers() -> None:
    import dataclasses

    from robustlens.study import parse_config
    from robustlens.study.photos import PhotosConfig

    config = parse_config({**MINIMAL, "models": [{"name": "m", "architecture": "fmnist_cnn", "train": {}}]})
    study = _default_table("docs/studies.md", "## [study]")
    for key, value in study.items():
        assert getattr(config, key) == value, f"[study].{key}"
    data = _default_table("docs/studies.md", "## [data]")
    for key, value in data.items():
        assert getattr(config.data, key) == value, f"[data].{key}"
    train = _default_table("docs/studies.md", "The `train` table")
    for key, value in train.items():
        assert getattr(config.models[0].train, key) == value, f"train.{key}"
    photos = _default_table("docs/studies.md", "## [photos]")
    fields = {f.name: f.default for f in dataclasses.fields(PhotosConfig)}
    for key, value in photos.items():
        if key == "weights":
            continue
        got = fields[key]
        got = list(got) if isinstance(got, tuple) else got
        assert (got == value or (isinstance(value, float) and math.isclose(got, value))
                or (value is None and got in ((), []))), f"[photos].{key}: {value!r} in the docs, {got!r} in the code"


def test_studies_page_analysis_options_are_the_parsers() -> None:
    """The `[analyses.*]` table's "`option` (`default`)" pairs are each analysis' defaults."""
    from robustlens.study import parse_config

    text = (ROOT / "docs/studies.md").read_text()
    _, rows = next(t for t in _tables(text) if t[1][0][:2] == ["analysis", "options (defaults)"])
    checked = 0
    for row in rows[1:]:
        name = row[0].strip("`")
        options = parse_config({**MINIMAL, "analyses": {name: {}}}).analysis_options[name]
        for key, default in re.findall(r"`(\w+)` \((`[^`]*`|[\d.]+)", row[1]):
            value = _doc_value(default)
            got = getattr(options, key)
            got = list(got) if isinstance(got, tuple) else got
            assert got == value, f"[analyses.{name}].{key}: {value!r} in the docs, {got!r} in the code"
            checked += 1
    assert checked >= 20


def test_numbers_quoted_in_the_docs() -> None:
    """Figures the pages quote that are cheap to recompute."""
    import robustlens
    from robustlens.activations import penultimate_layer
    from robustlens.attacks import CORRUPTIONS, vonenet_pgd
    from robustlens.data import load_digits
    from robustlens.study import load_config

    def page(name: str) -> str:
        return " ".join((ROOT / name).read_text().split())

    # install.md: "the 1,797 8 x 8 digits", a stratified 75/25 split
    digits = load_digits("all")
    assert "1,797 8 x 8 digits" in page("docs/install.md") and len(digits) == 1797
    assert tuple(digits.images.shape[1:]) == (1, 8, 8)
    assert len(load_digits("test")) == pytest.approx(0.25 * 1797, abs=1)
    # install.md / s5: ds_factor 500 keeps 100 of the 50,000 validation images
    assert "100 of the 50,000 validation images" in page("docs/install.md") and 50_000 // 500 == 100
    # s5: "40 test images (4 per class)"; 14 corruptions without external data
    s5 = page("docs/tutorials/s5-vonenet.md")
    assert "40 test images (4 per class)" in s5
    assert load_config(ROOT / "examples/s5_vonenet.toml").data.n_per_class * 10 == 40
    assert "The 14 types that need no external data" in s5 and len(CORRUPTIONS) == 14
    attack = vonenet_pgd(eps=1 / 255)  # "64 iterations, step eps / 4, k = 10"
    assert (attack.steps, attack.eot_samples, attack.random_start) == (64, 10, False)
    assert attack.step_size == pytest.approx(1 / 255 / 4)
    # s3: the digits triad at 40 test images per class; fmnist_cnn's penultimate layer
    s3 = page("docs/tutorials/s3-manifolds.md")
    assert "40 test images per class" in s3
    assert load_config(ROOT / "examples/s3_manifolds_digits.toml").data.n_per_class == 40
    assert '"classifier.1" for fmnist_cnn' in s3
    assert penultimate_layer(robustlens.create_model("fmnist_cnn")) == "classifier.1"
    # s3: "32 MiB per class for a 2048-d layer" (a float64 D x D scatter matrix)
    assert "32 MiB per class for a 2048-d layer" in s3 and 2048 * 2048 * 8 == 32 * 2**20
    # scale.md: 50 images x 2048 float32 features = 400 KiB per class, 0.4 GB for 1000 classes
    scale = page("docs/scale.md")
    assert "400 KiB per class for 50 images of ResNet50's 2048 features, 0.4 GB" in scale
    assert 50 * 2048 * 4 == 400 * 1024 and round(1000 * 50 * 2048 * 4 / 1e9, 1) == 0.4
    # concepts.md: VOneResNet50 normalises with 0.5 / 0.5 and is stochastic
    info = robustlens.models.model_info("vone_resnet50")
    assert (info.mean, info.std, info.stochastic) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), True)
    # stochastic.md / robustbench.md: the audit's and AutoAttack's documented defaults
    import inspect

    from robustlens.attacks import AutoAttack
    from robustlens.evaluation.audit import audit_gradient_masking
    from robustlens.visualization import SmoothGrad

    audit = inspect.signature(audit_gradient_masking).parameters
    stochastic = page("docs/stochastic.md")
    assert "`square_queries`, 500 by default" in stochastic and audit["square_queries"].default == 500
    assert "(3 percentage points by default)" in stochastic and audit["tolerance"].default == 0.03
    assert "(1% of the images)" in stochastic and audit["per_example_tolerance"].default == 0.01
    assert "20 noise samples per step" in stochastic
    auto = AutoAttack(eps=0.1)
    assert (auto.eot_samples, auto.queries, auto.n_targets) == (20, 5000, 9)
    assert "Square (5,000 queries)" in page("docs/robustbench.md")
    # s4: SmoothGrad's sigma is 0.15 of the pixel range by default
    assert "(0.15 by default" in page("docs/tutorials/s4-interpretability.md")
    assert inspect.signature(SmoothGrad).parameters["sigma"].default == 0.15
    # README: the registered models the package map lists
    names = set(robustlens.list_models())
    for name in ("resnet18", "resnet34", "resnet50", "alexnet", "vgg11", "vgg19_bn", "efficientnet_lite0",
                 "cornet_s", "vone_resnet50", "vone_fmnist_cnn", "fmnist_cnn", "fmnist_resnet", "digits_cnn"):
        assert name in names, name


def test_env_variables_documented_are_read() -> None:
    """install.md's environment variables are each read somewhere in the package."""
    text = (ROOT / "docs/install.md").read_text()
    source = "\n".join(p.read_text() for p in (ROOT / "src/robustlens").rglob("*.py"))
    names = re.findall(r"^\| `(ROBUSTLENS_\w+)` \|", text, re.MULTILINE)
    assert names and all(name in source for name in names), names
