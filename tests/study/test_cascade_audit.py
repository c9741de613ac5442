"""In a study: the cascade's stages (table, figures), the audit of any white-box attack type with
its black-box check at every eps, and corruptions without an eps."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

from robustlens.attacks import PGD, AutoAttack, Square, eval_mode
from robustlens.data import load_digits
from robustlens.errors import ConfigError
from robustlens.study.analyses import ANALYSES, AnalysisBatch, CleanBatch, parse_options
from robustlens.study.analyses.audit import AuditOptions

STUDY: dict[str, Any] = {
    "study": {"name": "cascade", "batch_size": 10, "checkpoint_every": 0},
    "data": {"dataset": "fashion_mnist", "n_per_class": 2},
    "models": [{"name": "a", "architecture": "fmnist_cnn", "random": True}],
    "attacks": [{"name": "aa", "type": "autoattack", "eps": [0.01, 0.05], "version": "standard", "steps": 2,
                 "queries": 10, "n_targets": 2},
                {"name": "pgd", "type": "pgd", "eps": [0.05], "steps": 2},
                {"type": "corruption", "corruptions": ["gaussian_noise"], "severities": [1, 3]}],
    "analyses": {"per_example": {}, "per_class": {},
                 "audit": {"attack": "autoattack", "n_images": 6, "steps": 2, "queries": 10}},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, fashion_mnist_test: Any) -> tuple[Path, dict[str, pd.DataFrame]]:
    from robustlens.study import parse_config
    from robustlens.study.runner import run_study

    root = tmp_path_factory.mktemp("cascade")
    torch.manual_seed(0)
    result = run_study(parse_config(STUDY), root / "run", cache_dir=root / "cache", device="cpu")
    return result.run_dir, result.tables


def test_cascade_stages_follow_the_per_example_table(study: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    run_dir, tables = study
    stages, per_example = tables["cascade_stages"], tables["per_example"]
    assert (run_dir / "results" / "cascade_stages.parquet").is_file()
    names = ["clean"] + [a.name for a in AutoAttack(0.01, version="standard").cascade("standard")]
    for eps in (0.01, 0.05):
        mine = stages[stages.eps == eps].sort_values("stage")
        assert list(mine.stage_attack) == names  # every stage, those that broke nothing too
        found = per_example[(per_example.attack == "aa") & (per_example.eps == eps)]["found_by"]
        n, left = len(found), len(found)
        for _, row in mine.iterrows():  # by hand: each stage attacks what is left, breaks its found_by
            broken = int((found == row.stage_attack).sum())
            assert (row.n_images, row.attacked, row.broken, row.robust) == (n, left, broken, left - broken)
            left -= broken
            assert row.accuracy == pytest.approx(left / n)
        assert left == int((found == "").sum())
    assert set(stages.attack) == {"aa"} and set(stages.model) == {"a"}


def test_the_report_shows_the_cascade_and_the_black_box_check(study: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    run_dir, tables = study
    html = (run_dir / "report.html").read_text()
    assert "robust accuracy after each stage of the cascade" in html
    assert "which stage found the adversarial example" in html
    assert "cascade_stages" in html
    assert len(list((run_dir / "figures").glob("per_example_AutoAttack*.png"))) == 2
    audit = tables["audit"]
    own = audit[audit.check != "beats_black_box_per_eps"]
    assert set(own.attack) >= {"autoattack_custom"}  # the cascade's white-box stages, audited
    per_eps = audit[audit.check == "beats_black_box_per_eps"]
    assert sorted(per_eps.eps) == [0.01, 0.05] and set(per_eps.attack) == {"square"}
    cascade = tables["cascade_stages"]
    for _, row in per_eps.iterrows():  # Square only ran on what the white-box stages left
        square = cascade[(cascade.eps == row.eps) & (cascade.stage_attack == "square")]
        assert row["count"] <= int(square.broken.iloc[0]) and row["n_images"] == 20
    assert "The gradient-masking audit" in html
    at = cascade[cascade.eps == 0.05].set_index("stage")  # the summary's line, from the table
    first, last = at.loc[0], at.loc[4]
    assert (f"AutoAttack <b>aa</b> at L-inf eps 0.05: a {first.accuracy:.3f} clean, {last.accuracy:.3f} after 4 stages "
            f"(square, the last, broke {last.broken} of the {last.attacked} images left)") in html


def test_corruption_rows_have_no_eps(study: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    run_dir, tables = study
    for name in ("accuracy", "per_class", "per_example"):
        df = pd.read_parquet(run_dir / "results" / f"{name}.parquet")
        rows = df[df.attack == "gaussian_noise"]
        assert len(rows) and rows.eps.isna().all(), name
        assert sorted(rows.severity.unique()) == [1, 3] and (rows.norm == "none").all(), name
        assert df[df.attack != "gaussian_noise"].severity.isna().all(), name
    worst = tables["worst_case"]  # a corruption is no threat model: not in the worst case over attacks
    assert set(worst.norm) == {"inf"} and sorted(worst.eps.unique()) == [0.01, 0.05]
    html = (run_dir / "report.html").read_text()
    assert "gaussian_noise severity=3" in html and "gaussian_noise eps=" not in html


@pytest.mark.parametrize("attack", ["pgd", "fgsm", "apgd", "apgd_t", "deepfool", "autoattack"])
def test_the_audit_takes_every_white_box_attack_type(attack: str) -> None:
    options = parse_options(AuditOptions, {"attack": attack}, "[analyses.audit]")
    assert options.attack == attack


@pytest.mark.parametrize("table", [{"attack": "fgsm", "norm": "2"}, {"attack": "deepfool", "norm": "1"},
                                   {"attack": "square"}, {"attack": "apgd", "per_example_tolerance": 2}])
def test_bad_audit_settings_are_config_errors(table: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"analyses\.audit"):
        parse_options(AuditOptions, table, "[analyses.audit]")


@pytest.mark.parametrize("masked", [True, False])
def test_the_audit_flags_the_black_box_at_each_eps_only_on_the_masked_model(
        masked: bool, digits_linear: Callable[[bool], nn.Module]) -> None:
    model = digits_linear(masked)
    data = load_digits("test").subset(torch.arange(100))
    eps = 0.3 if masked else 0.05
    def make() -> Any:
        return ANALYSES["audit"]("m", model, data.class_names, attack="apgd", n_images=20, steps=5, queries=100)

    audit, parts = make(), [make(), make()]  # parts: one batch each, as two workers
    attacks = [("pgd", PGD(eps, steps=20)), ("square", Square(eps, queries=300))]
    with eval_mode(model):
        for i, (x, y) in enumerate(data.batches(50)):
            with torch.no_grad():
                clean = CleanBatch(x, y, model(x), {}, index=i, offset=50 * i)
            for a in (audit, parts[i]):
                a.update_clean(clean)
            for name, attack in attacks:
                result = attack.run(model, x, y)
                with torch.no_grad():
                    logits = model(result.adversarial)
                batch = AnalysisBatch(name, eps, clean, result.adversarial, logits, {}, attack.norm, result, attack)
                for a in (audit, parts[i]):
                    a.update(batch)
    parts[0].merge(parts[1])
    merged = parts[0]._per_example().sort_values(["attack", "example"], ignore_index=True)
    pd.testing.assert_frame_equal(merged, audit._per_example().sort_values(["attack", "example"], ignore_index=True))
    # a twin restored from the state gives the same check (resume points)
    twin = ANALYSES["audit"]("m", model, data.class_names, attack="apgd", n_images=20, steps=5, queries=100)
    twin.load_state_dict(audit.state_dict())
    table = audit.tables()["audit"]
    row = table[table.check == "beats_black_box_per_eps"].iloc[0]
    twin_row = twin.tables()["audit"].query("check == 'beats_black_box_per_eps'").iloc[0]
    assert row["count"] == twin_row["count"] and row["n_images"] == 100 and row["eps"] == eps
    assert row["value"] == pytest.approx(row["count"] / 100)
    own = table[table.check == "beats_black_box"].iloc[0]  # the audit's own Square vs its APGD
    if masked:
        assert row["status"] == "flag" and row["count"] > 30
        assert own["status"] == "flag"
        assert math.isfinite(row["value"]) and "square" in row["evidence"]
    else:
        assert row["status"] == "pass" and row["count"] <= 1 and own["status"] == "pass"
