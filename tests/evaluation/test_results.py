"""Per-example, per-class, worst-case and stochastic results of evaluate_robustness."""

import math
import warnings

import pandas as pd
import pytest
import torch
from torch import nn

from robustlens.attacks import FGSM, PGD, DeepFool, StochasticModelWarning
from robustlens.data import ImageDataset
from robustlens.errors import ConfigError
from robustlens.evaluation import (
    eps_sweep,
    evaluate_robustness,
    robust_accuracy,
    worst_case,
    worst_case_accuracy,
)


@pytest.fixture(scope="module")
def results(digits_model, digits_test):
    attacks = {"pgd": eps_sweep(PGD(0.1, steps=10), [0.05, 0.1]), "fgsm": FGSM(0.1),
               "deepfool": DeepFool("inf")}
    return evaluate_robustness(digits_model, digits_test, attacks, batch_size=100,
                               noise_baseline=True)


def test_per_class_accuracies_weighted_by_counts_equal_the_overall(results):
    pc, summary = results.per_class, results.summary
    for (attack, eps), group in pc.groupby(["attack", "eps"]):
        row = summary[(summary.attack == attack) & (summary.eps == eps)].iloc[0]
        weighted = (group.accuracy * group.n_images).sum() / group.n_images.sum()
        assert weighted == pytest.approx(row.accuracy, abs=1e-12)
        assert group.n_images.sum() == row.n_images == 450
    assert set(pc.class_name) == {str(i) for i in range(10)}


def test_summary_agrees_with_the_per_example_table(results, digits_model, digits_test):
    s, pe = results.summary, results.per_example
    assert list(s.attack) == ["clean", "pgd", "pgd", "fgsm", "deepfool", "noise", "noise"]
    assert list(s.columns[:5]) == ["attack", "eps", "norm", "n_images", "n_correct"]
    with torch.no_grad():
        clean = float((digits_model(digits_test.images).argmax(1) == digits_test.labels)
                      .float().mean())
    assert s.accuracy.iloc[0] == pytest.approx(clean)
    for (attack, eps), g in pe.groupby(["attack", "eps"]):
        row = s[(s.attack == attack) & (s.eps == eps)].iloc[0]
        assert row.accuracy == pytest.approx(g.correct.mean())
        assert len(g) == 450 and sorted(g.example) == list(range(450))
    assert (pe.success == ~pe.correct).all()  # untargeted
    pgd = s[s.attack == "pgd"].accuracy.tolist()
    assert pgd[0] >= pgd[1]  # accuracy vs eps
    assert s[(s.attack == "noise") & (s.eps == 0.1)].accuracy.iloc[0] > pgd[1]


def test_norms_and_deepfool_minimal_norm(results):
    pe = results.per_example
    pgd = pe[(pe.attack == "pgd") & (pe.eps == 0.1)]
    assert pgd.linf.max() <= 0.1 + 1e-6
    df = pe[pe.attack == "deepfool"]
    assert math.isinf(df.eps.iloc[0]) and (df.success).all()
    ok = df.clean_correct
    assert (df.minimal_norm[ok] > 0).all() and (df.minimal_norm[ok] == df.linf[ok]).all()
    failed = pgd[~pgd.attack_success]
    assert failed.minimal_norm.map(math.isinf).all()


def test_worst_case_is_the_mean_of_per_example_minima(results):
    pe = results.per_example
    wc = worst_case(pe)
    at = wc[(wc.norm == "inf") & (wc.eps == 0.1)]
    assert len(at) == 450 and (at.n_attacks == 3).all()  # pgd, fgsm, noise
    acc = worst_case_accuracy(pe)
    row = acc[(acc.norm == "inf") & (acc.eps == 0.1)].iloc[0]
    assert row.accuracy == pytest.approx(at.correct.mean())
    s = results.summary
    best_single = s[(s.eps == 0.1)].accuracy.min()
    assert row.accuracy <= best_single
    both = pe[pe.eps == 0.1].pivot(index="example", columns="attack", values="correct")
    assert row.accuracy == pytest.approx(both.all(axis=1).mean())
    fooled = at[~at.correct]
    assert (fooled.attacks_succeeded != "").all()


def test_early_exit_gives_the_same_or_lower_accuracy(digits_model, digits_test):
    attack = {"pgd": PGD(0.1, steps=10, restarts=2)}
    early = robust_accuracy(digits_model, digits_test, attack, early_exit=True)
    full = robust_accuracy(digits_model, digits_test, attack, early_exit=False)
    assert early.accuracy.iloc[1] <= full.accuracy.iloc[1]
    assert bool(early.early_exit.iloc[0]) and not bool(full.early_exit.iloc[0])


class _Noisy(nn.Module):
    def __init__(self, model: nn.Module, sigma: float) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x):
        return self.model((x + self.sigma * torch.randn_like(x)).clamp(0, 1))


def test_stochastic_models_get_expected_accuracy_and_no_early_exit(digits_model, digits_test):
    noisy = _Noisy(digits_model, 0.3)
    data = digits_test.subset(torch.arange(120))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StochasticModelWarning)
        r = evaluate_robustness(noisy, data, {"pgd": PGD(0.05, steps=3)}, n_passes=8)
    s = r.summary
    assert s.stochastic.all() and not s.early_exit.any() and (s.n_passes == 8).all()
    pe = r.per_example
    assert pe.expected_correct.between(0, 1).all()
    assert ((pe.expected_correct > 0) & (pe.expected_correct < 1)).any()  # really noisy
    assert s.expected_accuracy.iloc[1] == pytest.approx(pe.expected_correct.mean())


def test_targeted_rows_record_targets(digits_model, digits_test):
    data = digits_test.subset(torch.arange(50))
    r = evaluate_robustness(digits_model, data, {"t": PGD(0.3, steps=10, targeted=0)})
    pe = r.per_example
    assert (pe.target == 0).all()
    assert (pe.success == (pe.prediction == 0)).all()


def test_bad_arguments(digits_model, digits_test):
    with pytest.raises(ConfigError):
        evaluate_robustness(digits_model, digits_test, {"x": [PGD(0.1), PGD(0.1)]})
    with pytest.raises(ConfigError):
        evaluate_robustness(digits_model, digits_test, {"x": "pgd"})  # type: ignore[dict-item]
    with pytest.raises(ConfigError):
        evaluate_robustness(digits_model, digits_test, {}, n_passes=0)


def test_clean_only(digits_model):
    data = ImageDataset(torch.rand(10, 1, 8, 8), torch.arange(10), tuple("abcdefghij"))
    r = evaluate_robustness(digits_model, data, {})
    assert list(r.summary.attack) == ["clean"] and r.per_example.empty
    assert isinstance(r.per_class, pd.DataFrame) and len(r.per_class) == 10
