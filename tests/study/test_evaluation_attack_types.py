"""The study config's APGD, APGD-T, Square and AutoAttack types; the cascade in the tables."""

from typing import Any

import pytest
import torch

from robustlens.attacks import APGD, FAB, AutoAttack, DeepFool, Square
from robustlens.errors import ConfigError
from robustlens.study import parse_config
from robustlens.study.runner import run_study

BASE: dict[str, Any] = {
    "study": {"name": "aa", "batch_size": 20},
    "data": {"dataset": "digits", "n_per_class": 2},
    "models": [{"name": "a", "architecture": "digits_cnn", "random": True}],
}


def _attacks(*tables: dict[str, Any]) -> dict[str, Any]:
    return {**BASE, "attacks": list(tables)}


def test_types_build_their_attacks():
    config = parse_config(_attacks(
        {"type": "apgd", "eps": [0.1], "loss": "dlr", "steps": 5},
        {"type": "apgd_t", "eps": [0.5], "norm": "2", "n_targets": 3, "steps": 5},
        {"type": "square", "eps": [0.1], "queries": 50},
        {"type": "autoattack", "eps": [0.1], "version": "standard", "steps": 5},
        {"type": "fab", "eps": [0.5], "norm": "2", "n_targets": 3, "steps": 5},
        {"name": "fab_u", "type": "fab", "eps": [float("inf")], "targeted": False, "eta": 1.1},
        {"type": "deepfool", "eps": [0.1], "eot_samples": 4, "eot_chunk": 1},
    ))
    built = [a.build(a.eps[0]) for a in config.attacks]
    assert isinstance(built[0], APGD) and built[0].name == "apgd_dlr"
    assert isinstance(built[1], APGD) and built[1].name == "apgd_t_l2"
    assert isinstance(built[2], Square) and built[2].queries == 50
    assert isinstance(built[3], AutoAttack) and built[3].steps == 5
    assert isinstance(built[4], FAB) and built[4].name == "fab_t_l2" and built[4].n_targets == 3
    assert isinstance(built[5], FAB) and built[5].name == "fab" and built[5].eta == 1.1
    assert isinstance(built[6], DeepFool) and (built[6].eot_samples, built[6].eot_chunk) == (4, 1)


@pytest.mark.parametrize("table", [
    {"type": "square", "eps": [0.1], "queries": 0},
    {"type": "autoattack", "eps": [0.1], "version": "fast"},
    {"type": "autoattack", "eps": [0.1], "version": "custom"},
    {"type": "apgd", "eps": [0.1], "loss": "hinge"},
    {"type": "fab", "eps": [0.1], "steps": 0},
    {"type": "fab", "eps": [0.1], "beta": 1.5},
    {"type": "fab", "eps": [0.1], "targeted": "top"},
    {"type": "deepfool", "eps": [0.1], "eot_chunk": 0},
])
def test_bad_settings_are_config_errors(table):
    with pytest.raises(ConfigError):
        parse_config(_attacks(table))


def test_the_per_example_table_says_which_stage_broke_each_image(tmp_path):
    raw = _attacks({"name": "aa", "type": "autoattack", "eps": [0.3], "version": "standard",
                    "steps": 3, "queries": 20, "n_targets": 2})
    raw["analyses"] = {"per_example": {}}
    torch.manual_seed(0)
    results = run_study(parse_config(raw), tmp_path)
    table = results.tables["per_example"]
    assert {"found_by", "l1"} <= set(table.columns)
    broken = table[~table["correct"]]
    assert broken["found_by"].isin(["clean", "apgd_ce", "apgd_t", "fab_t", "square"]).all()
    assert (table[table["correct"]]["found_by"] == "").all()


def test_a_fab_study_runs_and_its_plan_counts_the_passes(tmp_path):
    from robustlens.study.plan import plan_study

    raw = _attacks({"name": "fab", "type": "fab", "eps": [0.2, float("inf")], "steps": 4,
                    "n_targets": 2})
    raw["analyses"] = {"per_example": {}}
    config = parse_config(raw)
    torch.manual_seed(0)
    results = run_study(config, tmp_path)
    acc = results.tables["accuracy"]
    rows = acc[acc["attack"] == "fab"].sort_values("eps")
    assert list(rows["eps"]) == [0.2, float("inf")]
    # a larger eps never raises the accuracy (eps = inf: any adversarial found counts)
    clean = float(acc[acc["attack"] == "clean"]["accuracy"].iloc[0])
    assert float(rows["accuracy"].iloc[1]) <= float(rows["accuracy"].iloc[0]) <= clean
    per = results.tables["per_example"]
    assert set(per[~per["correct"] & (per["attack"] == "fab")]["found_by"]) <= {"fab_t", "clean", ""}
    plan = plan_study(config, device="cpu").rows
    fab = plan[plan["attack"] == "fab"]
    assert len(fab) == 2 and (fab["backward"] > 0).all() and not fab["exact"].any()
    # at most (steps backward + 2 steps forward + 1 clean) per image and target, plus the fresh pass
    n = int(fab["n_images"].iloc[0])
    assert (fab["backward"] <= n * 4 * 2).all() and (fab["forward"] <= n * (2 * 4 * 2 + 3)).all()
