"""Restarts never weaken the result; early exit keeps successes and costs fewer passes."""

import torch
from torch import nn

from robustlens.attacks import FGSM, PGD


class Counting(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.model(x)


def _margin(model, x, y):
    with torch.no_grad():
        z = model(x)
    return z.gather(1, y[:, None])[:, 0] - z.scatter(1, y[:, None], -1e9).amax(1)


def test_restarts_never_weaken_the_result(digits_model, digits_test):
    x, y = digits_test.images[:128], digits_test.labels[:128]
    one = PGD(0.08, steps=5, seed=1).run(digits_model, x, y)
    more = PGD(0.08, steps=5, seed=1, restarts=4).run(digits_model, x, y)
    assert bool((more.success | ~one.success).all())  # every success survives
    assert int(more.success.sum()) >= int(one.success.sum())
    assert bool((_margin(digits_model, more.adversarial, y)
                 <= _margin(digits_model, one.adversarial, y) + 1e-5).all())


def test_run_success_matches_the_predictions(digits_model, digits_test):
    x, y = digits_test.images[:128], digits_test.labels[:128]
    for attack in [PGD(0.1, steps=5), FGSM(0.1), PGD(0.5, norm="2", restarts=2)]:
        result = attack.run(digits_model, x, y)
        with torch.no_grad():
            wrong = digits_model(result.adversarial).argmax(1) != y
        assert torch.equal(result.success, wrong)


def test_early_exit_is_as_strong_and_cheaper(digits_model, digits_test):
    x, y = digits_test.images[:200], digits_test.labels[:200]
    counted = Counting(digits_model)
    attack = PGD(0.2, steps=20, seed=2, restarts=2)
    full = attack.run(counted, x, y)
    full_cost, counted.images = counted.images, 0
    early = attack.run(counted, x, y, early_stop=True)
    assert counted.images < 0.5 * full_cost
    with torch.no_grad():
        wrong_full = digits_model(full.adversarial).argmax(1) != y
        wrong_early = digits_model(early.adversarial).argmax(1) != y
    assert torch.equal(early.success, wrong_early)
    assert int(wrong_early.sum()) >= int(wrong_full.sum())
    assert float((early.adversarial - x).abs().max()) <= 0.2 + 1e-6


def test_early_exit_keeps_misclassified_clean_images(digits_model, digits_test):
    x, y = digits_test.images[:64], digits_test.labels[:64]
    wrong = (y + 1) % 10
    result = PGD(0.1, steps=3, random_start=False).run(digits_model, x, wrong, early_stop=True)
    with torch.no_grad():
        clean_wrong = digits_model(x).argmax(1) != wrong
    torch.testing.assert_close(result.adversarial[clean_wrong], x[clean_wrong])
