"""The cascade's stages and the black-box check, read from small per-example tables by hand."""

import math

import pandas as pd
import pytest

from robustlens.attacks import PGD, AutoAttack, RandomNoise, Square, Transfer
from robustlens.errors import DataError
from robustlens.evaluation import attack_components, attack_kind, black_box_check, cascade_stages
from robustlens.evaluation.cascade import reference_stage_order

STAGES = ["apgd_ce", "apgd_t", "deepfool", "square"]
# eight images under a cascade; square's row comes before apgd_t's (order is the cascade's, not the rows')
FOUND = ["clean", "apgd_ce", "", "square", "apgd_ce", "", "apgd_t", ""]


def _table(found, attack="aa", eps=0.1, norm="inf"):
    return pd.DataFrame({"example": range(len(found)), "attack": attack, "norm": norm, "eps": eps,
                         "found_by": found})


def test_stages_by_hand_with_the_stage_list():
    per_example = pd.concat([_table(FOUND), _table([""] * 8, attack="pgd")], ignore_index=True)
    out = cascade_stages(per_example, {"aa": STAGES})
    assert list(out["attack"].unique()) == ["aa"]  # pgd is no cascade
    assert list(out["stage_attack"]) == ["clean", *STAGES]
    assert list(out["stage"]) == [0, 1, 2, 3, 4]
    # clean breaks 1 of 8; apgd_ce 2 of the 7 left; apgd_t 1 of 5; deepfool 0 of 4; square 1 of 4
    assert list(out["attacked"]) == [8, 7, 5, 4, 4]
    assert list(out["broken"]) == [1, 2, 1, 0, 1]
    assert list(out["robust"]) == [7, 5, 4, 4, 3]
    assert out["accuracy"].tolist() == pytest.approx([7 / 8, 5 / 8, 4 / 8, 4 / 8, 3 / 8])
    assert (out["n_images"] == 8).all() and (out["eps"] == 0.1).all() and (out["norm"] == "inf").all()
    # the last stage's accuracy is the fraction of images no stage broke
    assert out["accuracy"].iloc[-1] == (per_example[per_example.attack == "aa"].found_by == "").mean()


def test_stages_inferred_in_autoattack_order_and_per_model():
    a = _table(FOUND).assign(model="m1")
    b = _table(["", "square", "", "", "apgd_dlr", "", "", ""]).assign(model="m2")
    out = cascade_stages(pd.concat([a, b], ignore_index=True))
    m1 = out[out.model == "m1"]
    # deepfool broke nothing, so it is not known without the stage list
    assert list(m1["stage_attack"]) == ["clean", "apgd_ce", "apgd_t", "square"]
    assert list(m1["robust"]) == [7, 5, 4, 3]
    m2 = out[out.model == "m2"]
    assert list(m2["stage_attack"]) == ["clean", "square", "apgd_dlr"]
    assert list(m2["attacked"]) == [8, 8, 7] and list(m2["robust"]) == [8, 7, 6]
    assert list(out.columns[:4]) == ["model", "attack", "norm", "eps"]


def test_a_cascade_that_broke_nothing_is_kept_when_its_stages_are_given():
    out = cascade_stages(_table([""] * 4), {"aa": ["apgd_ce", "apgd_dlr"]})
    assert list(out["accuracy"]) == [1.0, 1.0, 1.0] and list(out["attacked"]) == [4, 4, 4]
    assert cascade_stages(_table([""] * 4)).empty


def test_reference_order_is_autoattacks_own():
    aa = AutoAttack(0.1)
    names = [s.name for s in aa.cascade("standard")]
    assert reference_stage_order("inf")[:len(names)] == tuple(names)
    assert "square" not in " ".join(reference_stage_order("1"))


def test_missing_columns_are_a_data_error():
    with pytest.raises(DataError, match="found_by"):
        cascade_stages(_table(FOUND).drop(columns=["found_by"]))
    with pytest.raises(DataError, match="clean_correct"):
        black_box_check(_table(FOUND), {"aa": {"square": "black"}})


def test_attack_kinds():
    assert attack_kind(Square(0.1)) == "black"
    assert attack_kind(PGD(0.1)) == "white"
    assert attack_kind(RandomNoise(0.1)) == "other"
    import torch

    assert attack_kind(Transfer(PGD(0.1), torch.nn.Flatten())) == "black"
    standard = AutoAttack(0.1, version="standard").cascade("standard")
    parts = attack_components(AutoAttack(0.1, version="standard"))
    assert parts == {s.name: "black" if isinstance(s, Square) else "white" for s in standard}
    assert parts["apgd_ce"] == parts["apgd_t"] == "white" and parts["square"] == "black"
    assert attack_components(AutoAttack(0.1, version="rand")) == {"apgd_ce": "white", "apgd_dlr": "white"}


def _black_box_table() -> pd.DataFrame:
    n = 10
    clean = [False] + [True] * 9
    aa = ["clean", "apgd_ce", "square", "square", "", "square", "", "", "", ""]
    pgd_wrong = {0, 1, 3}       # pgd also breaks image 3, which the cascade left to square
    sq_wrong = {0, 6}           # a standalone Square breaks image 6
    noise_wrong = {7}           # noise is no attack in a threat model: ignored
    rows = []
    for label, wrong, found in (("aa", None, aa), ("pgd", pgd_wrong, None), ("sq", sq_wrong, None),
                                ("noise", noise_wrong, None)):
        for i in range(n):
            correct = (found[i] == "") if found is not None else i not in wrong
            rows.append({"model": "m", "example": i, "attack": label, "norm": "inf", "eps": 0.1,
                         "clean_correct": clean[i], "correct": correct,
                         "found_by": found[i] if found is not None else ""})
    for i in range(n):  # an L2 eps with no black-box attack: not checked
        rows.append({"model": "m", "example": i, "attack": "pgd_l2", "norm": "2", "eps": 0.1,
                     "clean_correct": clean[i], "correct": i > 4, "found_by": ""})
    return pd.DataFrame(rows)


COMPONENTS = {"aa": attack_components(AutoAttack(0.1, version="standard")), "pgd": {"pgd": "white"},
              "sq": {"square": "black"}, "noise": {"noise": "other"}, "pgd_l2": {"pgd_l2": "white"}}


def test_black_box_check_by_hand():
    out = black_box_check(_black_box_table(), COMPONENTS)
    assert len(out) == 1
    row = out.iloc[0]
    # images 2, 5 (square in the cascade, no white-box attack broke them) and 6 (standalone
    # Square); not 3 (pgd broke it), not 0 (misclassified clean), not 7 (noise)
    assert row["count"] == 3 and row["n_images"] == 10 and row["value"] == pytest.approx(0.3)
    assert row["status"] == "flag" and row["check"] == "beats_black_box_per_eps"
    assert (row["model"], row["norm"], row["eps"], row["attack"]) == ("m", "inf", 0.1, "square")
    assert "3 of 10 images" in row["evidence"] and "pgd" in row["evidence"] and row["suggestion"]
    calm = black_box_check(_black_box_table(), COMPONENTS, tolerance=0.3)
    assert calm["status"].tolist() == ["pass"] and calm["suggestion"].tolist() == [""]


def test_black_box_check_needs_both_kinds():
    table = _black_box_table()
    only_white = black_box_check(table[table.attack.isin(["pgd", "pgd_l2"])], COMPONENTS)
    assert only_white.empty and "count" in only_white.columns
    # a corruption row (no threat model, eps NaN) is left out
    corrupt = table.assign(norm="none", eps=math.nan)
    assert black_box_check(corrupt, COMPONENTS).empty


def test_corruptions_have_no_eps_in_the_library_tables():
    import torch

    from robustlens.attacks import Corruption
    from robustlens.data import load_digits
    from robustlens.errors import ConfigError
    from robustlens.evaluation import evaluate_robustness

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    data = load_digits("test").subset(torch.arange(12))
    res = evaluate_robustness(model, data, {"gn_1": Corruption("gaussian_noise", severity=1),
                                            "gn_3": Corruption("gaussian_noise", severity=3)})
    for table in (res.summary, res.per_class, res.per_example):
        rows = table[table.attack.str.startswith("gn")]
        assert len(rows) and rows.eps.isna().all() and (rows.norm == "none").all()
    with pytest.raises(ConfigError, match="own label"):
        evaluate_robustness(model, data, {"gn": [Corruption("gaussian_noise", severity=1),
                                                 Corruption("gaussian_noise", severity=3)]})
