"""AutoAttack: versions, the cascade on the survivors, per-example worst case, errors."""

import warnings
from dataclasses import dataclass

import pytest
import torch
from _attack_models import NoisyAffine, digits_softmax
from torch import nn

from robustlens.attacks import (
    APGD,
    FAB,
    Attack,
    AutoAttack,
    Square,
    StochasticModelWarning,
)
from robustlens.attacks.base import Outcome
from robustlens.errors import ConfigError


@pytest.fixture(scope="module")
def softmax():
    return digits_softmax(60)


def test_cascade_never_raises_accuracy_and_records_who_broke_what(softmax):
    model, x, y = softmax
    aa = AutoAttack(0.1, version="custom",
                    attacks=(APGD(0.1, steps=10), APGD(0.1, loss="dlr", steps=10),
                             Square(0.1, queries=100)))
    adv, res = aa.run_cascade(model, x, y)
    assert res.stages == ("clean", "apgd_ce", "apgd_dlr", "square")
    assert all(b <= a for a, b in zip(res.accuracy, res.accuracy[1:], strict=False))
    with torch.no_grad():
        correct = model(adv).argmax(1) == y
    assert float(correct.float().mean()) == pytest.approx(res.accuracy[-1])
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6
    for i, who in enumerate(res.found_by):
        assert (who == "") == bool(correct[i])
    for stage, n in zip(res.stages, res.broken, strict=True):
        assert res.found_by.count(stage) == n
    # each stage is handed exactly the images all earlier stages left standing
    assert res.attacked[1] == len(y) - res.broken[0]
    assert res.attacked[2] == res.attacked[1] - res.broken[1]
    result = aa.run(model, x, y)
    assert result.found_by is not None and len(result.found_by) == len(y)


@dataclass(frozen=True)
class _Oracle(Attack):
    """Declares the even-labelled images broken without querying the model."""

    eps: float = 0.1
    norm: str = "inf"  # type: ignore[assignment]

    def _run(self, model, images, labels, *, generator, targets, early_stop, scored):
        return Outcome(images.clone(), labels % 2 == 0)


def test_later_stages_see_only_the_survivors(softmax):
    model, x, y = softmax
    sizes: list[int] = []
    handle = model.register_forward_hook(lambda _m, inp, _o: sizes.append(inp[0].shape[0]))
    try:
        queries = 30
        AutoAttack(0.1, version="custom", attacks=(_Oracle(), Square(0.1, queries=queries)))(
            model, x, y)
    finally:
        handle.remove()
    survivors = int((y % 2 == 1).sum())
    # the clean pass sees every image; then Square probes for noise (two passes of two
    # images) and queries the survivors only
    assert sizes[0] == len(y) and sizes[1:3] == [2, 2]
    square = sizes[3:]
    assert square and square[0] == survivors and max(square) == survivors
    assert sum(square) <= queries * survivors


def test_version_follows_the_model():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 4, 4)
    noisy = NoisyAffine(torch.randn(5, 16))
    plain = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    assert AutoAttack(0.1).resolve(plain, x) == "standard"
    assert AutoAttack(0.1).resolve(noisy, x) == "rand"
    with pytest.warns(StochasticModelWarning, match="rand"):
        AutoAttack(0.1, version="standard").resolve(noisy, x)
    rand = AutoAttack(0.1).cascade("rand")
    assert [a.name for a in rand] == ["apgd_ce", "apgd_dlr"]
    assert all(a.eot_samples == 20 for a in rand)  # type: ignore[attr-defined]
    assert [a.name for a in AutoAttack(0.5, "2").cascade("standard")] == \
        ["apgd_ce_l2", "apgd_t_l2", "fab_t_l2", "square_l2"]
    assert [a.name for a in AutoAttack(5.0, "1").cascade("standard")] == \
        ["apgd_ce_l1", "apgd_t_l1", "fab_t_l1"]
    assert [a.name for a in AutoAttack(0.1).cascade("standard")] == ["apgd_ce", "apgd_t", "fab_t", "square"]


def test_rand_version_on_a_stochastic_model_runs_with_eot():
    torch.manual_seed(0)
    model = NoisyAffine(torch.randn(5, 16), sigma=0.1)
    x = torch.rand(6, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StochasticModelWarning)
        _, res = AutoAttack(0.1, steps=3, eot_samples=2).run_cascade(model, x, y)
    assert res.version == "rand"


def test_bad_autoattack_settings():
    with pytest.raises(ConfigError, match="version"):
        AutoAttack(0.1, version="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="custom"):
        AutoAttack(0.1, version="custom")
    with pytest.raises(ConfigError, match="only for version='custom'"):
        AutoAttack(0.1, attacks=(Square(0.1),))
    with pytest.raises(ConfigError, match="queries"):
        AutoAttack(0.1, queries=0)


def test_standard_cascade_runs_fab_t_on_the_survivors(softmax):
    model, x, y = softmax
    aa = AutoAttack(0.08, steps=5, queries=20, n_targets=3)
    adv, res = aa.run_cascade(model, x, y, early_stop=True)
    assert res.version == "standard"
    assert res.stages == ("clean", "apgd_ce", "apgd_t", "fab_t", "square")
    assert res.attacked[3] == res.attacked[2] - res.broken[2]
    with torch.no_grad():
        correct = model(adv).argmax(1) == y
    assert float(correct.float().mean()) == pytest.approx(res.accuracy[-1])
    assert float((adv - x).abs().max()) <= 0.08 + 1e-6
    # a stage FAB-T alone: it breaks images too, each within eps
    alone = FAB(0.08, n_targets=3, steps=20).run(model, x, y)
    assert int(alone.success.sum()) > 0 and float(alone.linf.max()) <= 0.08 + 1e-6


def _mlp(n_classes):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, n_classes))


def test_too_few_classes_for_the_dlr_versions_is_one_clear_error():
    x = torch.rand(4, 1, 4, 4)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ConfigError, match="at least 4 classes"):
        AutoAttack(0.1, version="standard")(_mlp(3), x, y)
    with pytest.raises(ConfigError, match="at least 3 classes"):
        AutoAttack(0.1, version="rand")(_mlp(2), x, y)
    with pytest.raises(ConfigError, match="at least 4 classes"):  # a targeted DLR attack
        APGD(0.1, loss="dlr", targeted=1, steps=2)(_mlp(3), x, y)
    # FAB-T's targets are capped at the other classes inside the cascade
    adv, res = AutoAttack(0.1, version="custom", attacks=(FAB(0.1, n_targets=9, steps=2),)
                          ).run_cascade(_mlp(3), x, y)
    assert res.stages == ("clean", "fab_t")
    _, res = AutoAttack(0.1, version="standard", steps=2, queries=2).run_cascade(_mlp(4), x, y)
    assert res.stages[3] == "fab_t"
