"""FAB: the projection step against linear programs, closed forms on affine models, the
eps-ball and box, determinism, a real model and clear errors."""

import math

import numpy as np
import pytest
import torch
from _attack_models import affine_problem, digits_softmax
from scipy.optimize import linprog, minimize

from robustlens.attacks import FAB, boundary_step
from robustlens.errors import ConfigError, RobustlensError


@pytest.fixture(scope="module")
def digits():
    """A softmax regression on sklearn's digits and 60 test images it classifies correctly."""
    return digits_softmax(60)


_DUAL = {"inf": 1.0, "2": 2.0, "1": math.inf}


def _reference_step(p: np.ndarray, w: np.ndarray, c: float, norm: str) -> float:
    """The smallest ||d|| with <w, d> = c and 0 <= p + d <= 1, by scipy (LP or SLSQP)."""
    d = len(p)
    lo, hi = -p, 1.0 - p
    if norm == "inf":  # variables (d, t): min t, -t <= d_i <= t
        cost = np.r_[np.zeros(d), 1.0]
        a_ub = np.block([[np.eye(d), -np.ones((d, 1))], [-np.eye(d), -np.ones((d, 1))]])
        res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * d), A_eq=np.r_[w, 0.0][None],
                      b_eq=[c], bounds=[*zip(lo, hi, strict=True), (0, None)])
        return float(res.fun)
    if norm == "1":  # variables (d+, d-) >= 0
        res = linprog(np.ones(2 * d), A_eq=np.r_[w, -w][None], b_eq=[c],
                      bounds=[(0, h) for h in hi] + [(0, -lo_i) for lo_i in lo])
        return float(res.fun)
    res = minimize(lambda v: 0.5 * v @ v, np.zeros(d), jac=lambda v: v, method="SLSQP",
                   constraints=[{"type": "eq", "fun": lambda v: w @ v - c, "jac": lambda v: w}],
                   bounds=list(zip(lo, hi, strict=True)), options={"ftol": 1e-12, "maxiter": 500})
    return float(np.linalg.norm(res.x))


@pytest.mark.parametrize("norm", ["inf", "2", "1"])
def test_boundary_step_is_the_smallest_feasible_step(norm):
    g = torch.Generator().manual_seed(1)
    n, d = 12, 7
    p = torch.rand(n, d, generator=g, dtype=torch.float64)
    p[:, 0] = 1.0  # a pixel pinned at the box
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    w[:, 1] = 0.0  # a coordinate the plane does not depend on
    c = 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    step = boundary_step(p, w, c, norm)
    assert torch.allclose((w * step).sum(1), c, atol=1e-9)  # on the plane
    assert float((p + step).min()) >= -1e-12 and float((p + step).max()) <= 1 + 1e-12
    ord_ = {"inf": math.inf, "2": 2, "1": 1}[norm]
    for i in range(n):
        ref = _reference_step(p[i].numpy(), w[i].numpy(), float(c[i]), norm)
        assert float(step[i].norm(p=ord_)) == pytest.approx(ref, rel=1e-5, abs=1e-7)


def test_boundary_step_moves_as_far_as_the_box_allows_when_the_plane_is_out_of_reach():
    p = torch.tensor([[0.9, 0.2]])
    w = torch.tensor([[1.0, 1.0]])
    step = boundary_step(p, w, torch.tensor([5.0]), "2")
    assert torch.allclose(p + step, torch.ones(1, 2))


def _closed_form(model, x, y, norm):
    """min over classes j != y of |f_y - f_j| / ||w_y - w_j||_dual: the smallest adversarial."""
    w, b = model.weight.detach(), model.bias.detach()
    f = x.flatten(1) @ w.T + b
    out = []
    for i in range(len(y)):
        out.append(min(float((f[i, y[i]] - f[i, j]).abs() / (w[y[i]] - w[j]).norm(p=_DUAL[norm]))
                       for j in range(w.shape[0]) if j != y[i]))
    return torch.tensor(out)


@pytest.mark.parametrize("norm", ["inf", "2", "1"])
@pytest.mark.parametrize("targeted", ["top", None])
def test_minimal_perturbation_of_an_affine_model(norm, targeted):
    model, x, y = affine_problem(n=8, k=5, side=4)
    ref = _closed_form(model, x, y, norm)
    result = FAB(math.inf, norm, targeted=targeted, n_targets=4, steps=50).run(model, x, y)
    assert bool(result.success.all())
    found = result.minimal_norm
    # never below the true minimum, and within 1% of it
    assert bool((found >= ref * (1 - 1e-4)).all())
    assert bool((found <= ref * 1.01).all()), (found / ref).tolist()
    with torch.no_grad():
        assert bool((model(result.adversarial).argmax(1) != y).all())


def test_one_target_finds_its_own_boundary():
    # two classes: FAB-T's only target is the other class, its distance |f_0 - f_1| / ||w_0 - w_1||
    model, x, y = affine_problem(n=6, k=2, side=8, seed=3)
    ref = _closed_form(model, x, y, "2")
    found = FAB(math.inf, "2", n_targets=1, steps=30).run(model, x, y).minimal_norm
    assert torch.allclose(found, ref, rtol=0.01)


@pytest.mark.parametrize(("norm", "eps"), [("inf", 0.08), ("2", 1.0), ("1", 1.0)])
def test_results_stay_in_the_ball_and_box_and_agree_with_a_clean_check(digits, norm, eps):
    model, x, y = digits
    result = FAB(eps, norm, n_targets=3, steps=30).run(model, x, y)
    size = {"inf": result.linf, "2": result.l2, "1": result.l1}[norm]
    assert size is not None and float(size.max()) <= eps * (1 + 1e-6)
    assert float(result.adversarial.min()) >= 0 and float(result.adversarial.max()) <= 1
    with torch.no_grad():
        wrong = model(result.adversarial).argmax(1) != y
    assert torch.equal(wrong, result.success)
    # a real model: the attack breaks some images and leaves others (eps is moderate)
    assert 0 < int(result.success.sum()) < len(y)
    # images not broken come back clean; broken ones carry their minimal norm
    assert torch.equal(result.adversarial[~result.success], x[~result.success])
    assert bool(torch.isfinite(result.minimal_norm[result.success]).all())
    assert bool(torch.isinf(result.minimal_norm[~result.success]).all())


def test_deterministic_for_a_seed_and_restarts_start_at_random(digits):
    model, x, y = (t[:20] if isinstance(t, torch.Tensor) else t for t in digits)
    attack = FAB(0.06, "inf", n_targets=2, steps=6, restarts=3, seed=7)
    a, b = attack.run(model, x, y), attack.run(model, x, y)
    assert torch.equal(a.adversarial, b.adversarial) and torch.equal(a.success, b.success)
    c = FAB(0.06, "inf", n_targets=2, steps=6, restarts=3, seed=8).run(model, x, y)
    assert int(c.success.sum()) >= int(FAB(0.06, "inf", n_targets=2, steps=6).run(model, x, y).success.sum())


def test_early_stop_keeps_the_answer_and_saves_passes(digits):
    model, x, y = (t[:40] if isinstance(t, torch.Tensor) else t for t in digits)
    attack = FAB(0.1, "inf", n_targets=3, steps=15)
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        full = attack.run(model, x, y)
        n_full = sum(calls)
        calls.clear()
        early = attack.run(model, x, y, early_stop=True)
        n_early = sum(calls)
    finally:
        handle.remove()
    assert torch.equal(full.success, early.success)
    assert n_early < n_full


def test_misclassified_images_count_at_their_clean_image():
    model, x, y = affine_problem(n=6, k=4, side=3)
    wrong = (y + 1) % 4
    result = FAB(0.01, "2", n_targets=2).run(model, x, wrong)
    assert bool(result.success.all())
    assert torch.equal(result.adversarial, x)
    assert torch.equal(result.minimal_norm, torch.zeros(6))


def test_name():
    assert FAB(0.1).name == "fab_t" and FAB(0.5, "2", targeted=None).name == "fab_l2"
    assert FAB(1.0, "1").name == "fab_t_l1"


@pytest.mark.parametrize("kwargs", [
    {"steps": 0}, {"restarts": 0}, {"n_targets": 0}, {"targeted": "random"}, {"norm": "3"},
    {"eta": 0.9}, {"beta": 1.0}, {"alpha_max": 1.5}, {"eot_samples": 0}, {"eps": -0.1},
])
def test_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        FAB(**{"eps": 0.1, **kwargs})


def test_too_many_targets_and_given_targets_are_refused():
    model, x, y = affine_problem(n=4, k=5, side=3)
    with pytest.raises(ConfigError, match="n_targets must be below the number of classes"):
        FAB(0.1, n_targets=5).run(model, x, y)
    with pytest.raises(ConfigError, match="no targets"):
        FAB(0.1, n_targets=2).run(model, x, y, targets=y)
    with pytest.raises(RobustlensError):
        FAB(0.1, n_targets=2)(model, x * 3, y)
