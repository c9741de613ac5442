"""The report from a run directory alone: rebuilt by ``robustlens report``, summary and table of
contents, small multiples, clear errors, and no change to matplotlib's global state."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from robustlens.cli import main
from robustlens.report import RunDir, assign_tables, build_report, headline_table

STUDY = {
    "study": {"name": "report", "seed": 0, "batch_size": 50, "checkpoint_every": 0},
    "data": {"dataset": "digits", "n_per_class": 3},
    "models": [{"name": "cnn_a", "architecture": "digits_cnn", "random": True, "seed": 1},
               {"name": "cnn_b", "architecture": "digits_cnn", "random": True, "seed": 2}],
    "attacks": [{"name": "fgsm", "type": "fgsm", "eps": [0.05, 0.2]},
                {"name": "pgd", "type": "pgd", "eps": [0.05, 0.2], "steps": 3}],
    "analyses": {"per_class": {}, "sensitivity": {"top_k": 3},
                 "saliency": {"methods": ["gradient", "smoothgrad"], "n_images": 2, "n_samples": 2}},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from robustlens.study import parse_config, run_study

    root = tmp_path_factory.mktemp("report-study")
    run_study(parse_config(STUDY), root / "run", cache_dir=root / "cache", device="cpu")
    return root / "run"


def _stable(text: str) -> str:
    """The report without the line saying when it was built."""
    return re.sub(r"<p class='note'>Report built .*?</p>", "", text)


def _sections(text: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', text)


@pytest.mark.slow
def test_report_rebuilds_the_same_from_the_run_dir(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = (run_dir / "report.html").read_text(encoding="utf-8")
    figures = sorted(p.name for p in (run_dir / "figures").glob("*.png"))
    assert "accuracy_vs_eps.png" in figures
    assert main(["report", str(run_dir)]) == 0
    assert "Report:" in capsys.readouterr().out
    again = (run_dir / "report.html").read_text(encoding="utf-8")
    assert _stable(again) == _stable(first)
    assert sorted(p.name for p in (run_dir / "figures").glob("*.png")) == figures
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["tables"]["per_class"] == ["per_class"]
    assert set(manifest["tables"]["sensitivity"]) == {"sensitivity", "sensitivity_layers", "sensitivity_top"}


@pytest.mark.slow
def test_an_old_run_dir_without_the_table_record_gets_the_same_report(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["tables"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    for png in (old / "figures").glob("*.png"):
        png.unlink()
    # a photos table (the [photos] part) is found by its name too
    pd.DataFrame({"photo": ["chelsea"], "condition": ["clean"], "rank": [1], "class_name": ["tabby"],
                  "probability": [0.9]}).to_parquet(old / "results" / "photo_predictions.parquet")
    text = build_report(old).read_text(encoding="utf-8")
    assert sorted(p.name for p in (old / "figures").glob("*.png")) == \
        sorted(p.name for p in (run_dir / "figures").glob("*.png"))
    assert _sections(text) == [*_sections((run_dir / "report.html").read_text(encoding="utf-8")), "photos"]
    assert "tabby" in text and "Other tables" not in text


def test_table_assignment_falls_back_to_names() -> None:
    tables = ["accuracy", "models", "sensitivity", "sensitivity_top", "manifolds", "manifold_accuracy",
              "dissimilarity", "dissimilarity_channels", "photo_saliency", "stray"]
    keys = ["sensitivity", "manifolds", "dissimilarity", "dissimilarity_channels", "photos"]
    got = assign_tables(keys, tables)
    assert got == {"sensitivity": ["sensitivity", "sensitivity_top"],
                   "manifolds": ["manifolds", "manifold_accuracy"], "dissimilarity": ["dissimilarity"],
                   "dissimilarity_channels": ["dissimilarity_channels"], "photos": ["photo_saliency"]}
    # a record in the manifest wins, restricted to the tables on disk
    assert assign_tables(["sensitivity"], tables, {"sensitivity": ["sensitivity_top", "gone"]}) == \
        {"sensitivity": ["sensitivity_top"]}


def test_summary_and_table_of_contents(run_dir: Path) -> None:
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    ids = _sections(text)
    assert ids[:2] == ["summary", "accuracy"] and {"per-class", "sensitivity", "saliency"} <= set(ids)
    toc = text[text.index("<nav class='toc'"):text.index("</nav>")]
    for section in ids:
        assert f'href="#{section}"' in toc, section
    assert text.index("<nav class='toc'") < text.index('<section id="summary">')
    # the summary's headline numbers are the accuracy table's: clean, and the worst attack per eps
    acc = pd.read_parquet(run_dir / "results" / "accuracy.parquet")
    head = headline_table(acc).set_index("model")
    for model in ("cnn_a", "cnn_b"):
        mine = acc[(acc["model"] == model) & (acc["eps"] == 0.2) & (acc["attack"] != "clean")]
        worst = mine.loc[mine["accuracy"].idxmin()]
        assert head.loc[model, "eps=0.2"] == f"{worst['accuracy']:.3f} ({worst['attack']})"
        clean = acc[(acc["model"] == model) & (acc["attack"] == "clean")]["accuracy"].iloc[0]
        assert head.loc[model, "clean"] == f"{clean:.3f}"
    summary = text[text.index('<section id="summary">'):text.index('<section id="accuracy">')]
    assert "most robust model" in summary and "<table" in summary


def _figures_of(text: str, section: str) -> int:
    start = text.index(f'<section id="{section}">')
    return text[start:text.index("</section>", start)].count("<figure>")


def test_per_class_is_one_small_multiples_figure(run_dir: Path) -> None:
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert _figures_of(text, "per-class") == 1  # 2 models x 2 attacks in one figure


def test_not_a_run_dir_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for target in (tmp_path, tmp_path / "missing"):
        assert main(["report", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("robustlens: error:") and err.count("\n") == 1 and "Traceback" not in err
        assert "run directory" in err
    with pytest.raises(Exception, match="lacks config.toml"):
        RunDir.read(tmp_path)


def test_importing_leaves_the_matplotlib_backend_alone() -> None:
    code = ("import matplotlib; matplotlib.use('svg'); import robustlens, robustlens.report, "
            "robustlens.study, robustlens.cli; print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"


def test_input_normalization_is_not_ranked_among_sensitive_channels(run_dir: Path) -> None:
    for table in ("sensitivity", "sensitivity_top", "sensitivity_layers"):
        layers = set(pd.read_parquet(run_dir / "results" / f"{table}.parquet")["layer"])
        assert "normalize" not in layers and "features.0" in layers, table


def test_input_normalization_layers_by_type_and_by_name() -> None:
    from torch import nn

    from robustlens.models import Normalize
    from robustlens.study.analyses.helpers import LayerSelect, input_normalization_layers

    model = nn.Sequential(Normalize([0.5], [0.5]), nn.Conv2d(1, 2, 3), nn.ReLU())
    model.add_module("normalize", nn.Identity())  # a wrapper by name, whatever its type
    assert input_normalization_layers(model) == {"0", "normalize"}
    select = LayerSelect(model, None, "test").without(input_normalization_layers(model))
    assert set(select.calls) == {"1", "2"}


def test_each_section_shows_its_analysis_text(run_dir: Path) -> None:
    from robustlens.study.analyses import ANALYSES

    text = (run_dir / "report.html").read_text(encoding="utf-8")
    for key, anchor_id in (("per_class", "per-class"), ("sensitivity", "sensitivity"), ("saliency", "saliency")):
        start = text.index(f'<section id="{anchor_id}">')
        section = text[start:text.index("</section>", start)]
        assert ANALYSES[key].report_text[:60] in section
    for name, cls in ANALYSES.items():  # every built-in says what its figures show
        if cls.__module__.startswith("robustlens."):
            assert len(cls.report_text) > 150, name


def test_describe_falls_back_to_the_docstring() -> None:
    from robustlens.study.analyses import ModelComparison, StudyAnalysis

    class Mine(StudyAnalysis):
        """Counts  things
        per layer.

        Details nobody reads in a report.
        """

    class Theirs(ModelComparison):
        report_text = "<p>Given.</p>"

    assert Mine.describe() == "Counts things per layer."
    assert Theirs.describe() == "<p>Given.</p>"


def test_audit_flags_reach_the_summary() -> None:
    from robustlens.report import audit_flags

    audit = pd.DataFrame({"model": ["a", "a", "b"], "check": ["monotonic_in_eps", "beats_random_noise", "x"],
                          "status": ["pass", "flag", "skipped"], "evidence": ["", "noise wins on 12%", ""]})
    assert audit_flags(audit) == ["a: beats_random_noise flagged. noise wins on 12%"]
    assert audit_flags(None) == [] and audit_flags(audit[audit["status"] != "flag"]) == []
