"""The one evaluation engine: top-5 counts, and threat models (norms) never merged."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from robustlens.attacks import PGD
from robustlens.data import load_digits
from robustlens.data.dataset import ImageDataset
from robustlens.evaluation import (
    AccuracyCounter,
    accuracy_tables,
    evaluate_robustness,
    topk_correct,
    worst_case,
    worst_case_accuracy,
)


class _Lookup(nn.Module):
    """Logits read from a table by the image's first pixel (pixel = row / 10)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[(x.flatten(1)[:, 0] * 10).round().long()]


# 7 classes. Row i's ranking, highest first, written out by hand:
LOGITS = torch.tensor([
    [7., 6., 5., 4., 3., 2., 1.],   # 0 1 2 3 4 | 5 6
    [1., 2., 3., 4., 5., 6., 7.],   # 6 5 4 3 2 | 1 0
    [0., 9., 0.5, 8., 0.2, 7., 6.],  # 1 3 5 6 2 | 4 0
    [3., 1., 4., 1.5, 5., 9., 2.],  # 5 4 2 0 6 | 3 1
])
LABELS = torch.tensor([5, 1, 2, 3])
# top-1: 0 1 5 5 -> no hit; top-5: 5 in {0..4}? no; 1 in {6,5,4,3,2}? no; 2 in {1,3,5,6,2} yes;
# 3 in {5,4,2,0,6}? no.
TOP5_BY_HAND = [False, False, True, False]


def test_topk_by_hand_and_all_classes_when_fewer_than_k() -> None:
    assert topk_correct(LOGITS, LABELS).tolist() == TOP5_BY_HAND
    assert topk_correct(LOGITS, LABELS, k=1).tolist() == [False, False, False, False]
    assert topk_correct(LOGITS[:, :3], torch.tensor([2, 0, 1, 2])).all()  # 3 classes < 5


def test_top5_accuracy_of_a_model_with_known_logits() -> None:
    images = (torch.arange(4, dtype=torch.float32) / 10).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    data = ImageDataset(images.contiguous(), LABELS, [str(i) for i in range(7)])
    r = evaluate_robustness(_Lookup(LOGITS), data, {}, batch_size=3)
    clean = r.summary.iloc[0]
    assert clean["attack"] == "clean" and clean["accuracy"] == 0.0
    assert clean["top5_accuracy"] == pytest.approx(1 / 4)
    pc = r.per_class.set_index("class_index")
    assert pc.loc[2, "top5_accuracy"] == 1.0 and pc.loc[5, "top5_accuracy"] == 0.0
    assert pc.loc[3, "n_images"] == 1 and pc.loc[0, "n_images"] == 0


def test_counter_merges_and_round_trips() -> None:
    a, b = AccuracyCounter(7), AccuracyCounter(7)
    a.update_logits(LOGITS[:2], LABELS[:2])
    b.update_logits(LOGITS[2:], LABELS[2:])
    c = AccuracyCounter(7)
    c.load_state_dict(a.merge(b).state_dict())
    row = c.result().iloc[0]
    assert row["n_images"] == 4 and row["top5_accuracy"] == 0.25 and row["expected_accuracy"] == 0.0
    d = AccuracyCounter(7)
    d.update(LOGITS.argmax(1), LABELS)  # predictions only: top-5 unknown
    assert pd.isna(d.result().iloc[0]["top5_accuracy"])


def test_threat_keys_stay_apart_in_accuracy_tables() -> None:
    ca, cb = AccuracyCounter(7), AccuracyCounter(7)
    ca.update_logits(LOGITS, LABELS)
    cb.update_logits(LOGITS, torch.tensor([0, 6, 1, 5]))
    summary, per_class = accuracy_tables({("x", 0.1, "inf"): ca, ("y", 0.1, "2"): cb})
    assert summary["norm"].tolist() == ["inf", "2"] and summary["accuracy"].tolist() == [0.0, 1.0]
    assert set(per_class.groupby(["norm", "eps"]).size()) == {7}


@pytest.fixture(scope="module")
def linf_and_l2():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    data = load_digits("test").subset(torch.arange(40))
    attacks = {"pgd_inf": PGD(0.1, steps=2, random_start=False),
               "pgd_l2": PGD(0.1, steps=2, norm="2", random_start=False)}
    return evaluate_robustness(model, data, attacks, batch_size=16)


def test_linf_and_l2_at_the_same_eps_stay_separate_in_library_tables(linf_and_l2) -> None:
    r = linf_and_l2
    adv = r.summary[r.summary["attack"] != "clean"]
    assert adv["norm"].tolist() == ["inf", "2"] and (adv["eps"] == 0.1).all()
    assert "top5_accuracy" in r.summary and r.summary["top5_accuracy"].between(0, 1).all()
    assert set(r.per_class.groupby(["attack", "norm"]).size()) == {10}
    wc = worst_case(r.per_example)
    assert len(wc) == 2 * 40 and (wc["n_attacks"] == 1).all()
    for norm, g in wc.groupby("norm"):
        mine = r.per_example[r.per_example["norm"] == norm].set_index("example")["correct"]
        assert (g.set_index("example")["correct"] == mine).all()
    acc = worst_case_accuracy(r.per_example).set_index("norm")["accuracy"]
    assert acc["inf"] == adv.set_index("norm").loc["inf", "accuracy"]
    assert acc["2"] == adv.set_index("norm").loc["2", "accuracy"]
