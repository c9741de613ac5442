"""Property-based fuzzing of the config parser and the attack entry points (Hypothesis).

The property: any generated value, within bounds that keep a run short, is either accepted
and runs, or refused with a :class:`~robustlens.errors.RobustlensError`; never another
exception. Runs are derandomized (the same examples every time) and keep no database.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

from robustlens.attacks import FGSM, PGD, DeepFool, RandomNoise
from robustlens.data import ImageDataset, load_digits
from robustlens.errors import RobustlensError
from robustlens.models import create_model

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

JUNK = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=4), st.lists(st.integers(-1, 2), max_size=2),
                 st.dictionaries(st.sampled_from(["a", "eps"]), st.integers(0, 1), max_size=1))


_UNIFORM = st.integers(0, 2**30)  # taken modulo n: near uniform (small integers are drawn far more often)


def _maybe(valid: st.SearchStrategy[Any], junk: int = 10) -> st.SearchStrategy[Any]:
    """A valid value, or anything at all once in ``junk`` draws."""
    return _UNIFORM.flatmap(lambda u: JUNK if u % junk == 1 else valid)


def _optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: _maybe(v) for k, v in fields.items()})


EPS = _UNIFORM.flatmap(lambda u: st.floats(0, 10) if u % 6 == 1 else st.sampled_from(
    [0, 1, 2, 8 / 255, -0.1, math.inf]) if u % 6 == 2 else st.floats(0, 1))
SMALL = st.integers(1, 2)

ADVERSARIAL = _optional(eps=EPS, steps=SMALL, step_size=st.floats(0, 0.5), random_start=st.booleans(),
                        warmup_epochs=st.floats(0, 1))
TRAIN = st.fixed_dictionaries({"epochs": _maybe(st.just(1))}, optional={
    "batch_size": _maybe(st.integers(4, 64)), "lr": _maybe(st.floats(1e-4, 1e-2)),
    "seed": _maybe(st.integers(0, 3)), "adversarial": _maybe(ADVERSARIAL)})


def _model(name: str) -> st.SearchStrategy[dict[str, Any]]:
    base = st.fixed_dictionaries({"name": _maybe(st.just(name), 20),
                                  "architecture": _maybe(st.sampled_from(["digits_cnn", "fmnist_cnn"]), 20)},
                                 optional={"seed": _maybe(st.integers(0, 3))})
    source = _maybe(st.one_of(st.just({"random": True}), st.fixed_dictionaries({"train": TRAIN})), 20)
    return st.tuples(base, source).map(lambda t: {**t[0], **(t[1] if isinstance(t[1], dict) else {})})


MODELS = st.one_of(st.tuples(_model("a")), st.tuples(_model("a"), _model("b"))).map(list)


NORM = st.sampled_from(["inf", "2"])
_ATTACK_OPTIONS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {  # type -> (required, optional)
    "fgsm": ({}, {"targeted": st.sampled_from(["random", "least_likely", 3]), "eot_samples": SMALL}),
    "pgd": ({"steps": SMALL}, {"norm": NORM, "restarts": SMALL, "eot_samples": SMALL,
                               "random_start": st.booleans(), "targeted": st.sampled_from(["random", 3])}),
    "deepfool": ({"steps": SMALL}, {"norm": NORM, "candidates": st.integers(2, 10),
                                    "overshoot": st.floats(0, 0.1)}),
    "noise": ({}, {"norm": NORM, "trials": SMALL}),
    "transfer": ({"surrogate": st.sampled_from(["a", "b"]), "steps": SMALL}, {"random_start": st.booleans()}),
}


def _attack_table(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    required, optional = _ATTACK_OPTIONS[kind]
    return st.fixed_dictionaries(
        {"type": _maybe(st.just(kind), 20), "eps": _maybe(st.lists(EPS, min_size=1, max_size=2)),
         **{k: _maybe(v) for k, v in required.items()}},
        optional={k: _maybe(v) for k, v in optional.items()})


ATTACK = st.sampled_from(sorted(_ATTACK_OPTIONS)).flatmap(_attack_table)

CONFIG = st.fixed_dictionaries(
    {"models": _maybe(MODELS, 20),
     "attacks": _maybe(st.lists(ATTACK, min_size=1, max_size=2), 20)},
    optional={"study": _optional(name=st.text(min_size=1, max_size=5), batch_size=st.integers(1, 16),
                                 seed=st.integers(0, 3), device=st.just("cpu")),
              "data": _optional(dataset=st.just("digits"), n_per_class=SMALL, split=st.sampled_from(["test", "train"])),
              "analyses": _maybe(st.sampled_from([{}, {"dissimilarity": {"layers": "all"}},
                                                  {"dissimilarity": {"layers": ["nowhere"]}}]))})


def test_non_table_attack_entry(tmp_path: Path) -> None:
    from robustlens.study import parse_config

    with pytest.raises(RobustlensError):
        parse_config({"models": [{"name": "a", "architecture": "digits_cnn", "random": True}], "attacks": [1]},
                     base_dir=tmp_path)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits("test")
    return data.images[:6], data.labels[:6]


def _random_model(arch: str) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return create_model(arch).eval()


@FUZZ
@given(raw=CONFIG)
def test_config_accepted_and_runs_or_refused(raw: dict[str, Any], batch: tuple[torch.Tensor, torch.Tensor],
                                             tmp_path: Path) -> None:
    from robustlens.study import parse_config
    from robustlens.study.models import build_seeded
    from robustlens.training import train_model

    try:
        config = parse_config(raw, base_dir=tmp_path)
    except RobustlensError:
        event("config refused")
        return
    event("config accepted")
    x, y = batch
    for mc in config.models:
        try:
            model = build_seeded(mc.architecture, dict(mc.options), mc.seed)
            if mc.train is not None:
                tiny = ImageDataset(x, y, tuple(str(i) for i in range(10)), "fuzz")
                train_model(model, tiny, mc.train)
            model.eval()
            for attack_config in config.attacks:
                for eps in attack_config.eps:
                    attack = attack_config.build(eps, surrogate=model)
                    adv = attack(model, x, y)
                    assert adv.shape == x.shape and 0 <= float(adv.min()) and float(adv.max()) <= 1
                    event("attack ran")
        except RobustlensError:
            event("refused at run time")
            continue


def _rarely(draw: st.DrawFn, often: Any, *rare: Any) -> Any:
    """``often`` most of the time, else one of ``rare``."""
    i = draw(_UNIFORM) % (20 * len(rare) + 1)
    return rare[i - 1] if 1 <= i <= len(rare) else often


@st.composite
def _inputs(draw: st.DrawFn) -> tuple[torch.Tensor, Any]:
    b = _rarely(draw, draw(st.integers(1, 3)), 0)
    c = _rarely(draw, 1, 3)
    h = _rarely(draw, 8, 1, 7, 28)
    w = _rarely(draw, h, 9)
    dtype = _rarely(draw, torch.float32, torch.float64, torch.float16, torch.uint8, torch.int64)
    scale = _rarely(draw, 1.0, 255.0, -1.0)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 100)))
    images = (torch.rand(b, c, h, w, generator=gen) * scale).to(dtype)
    special = _rarely(draw, None, math.nan, math.inf)
    if special is not None and images.numel() and images.is_floating_point():
        images.view(-1)[0] = special
    if _rarely(draw, False, True):
        images = images[0] if b else images.squeeze(0)
    labels: Any = torch.randint(0, 10, (b,), generator=gen)
    kind = _rarely(draw, "ok", "range", "float", "short", "list", "2d")
    if kind == "range":
        labels = labels + draw(st.sampled_from([10, -20]))
    elif kind == "float":
        labels = labels.float()
    elif kind == "short":
        labels = labels[: max(0, b - 1)]
    elif kind == "list":
        labels = labels.tolist()
    elif kind == "2d":
        labels = labels[:, None]
    return images, labels


ATTACK_ARGS = st.fixed_dictionaries({
    "kind": st.sampled_from(["pgd", "fgsm", "deepfool", "noise"]),
    "eps": _maybe(EPS),
    "steps": _maybe(SMALL),
    "norm": _maybe(st.sampled_from(["inf", "2"])),
})


def _attack(kind: str, eps: Any, steps: Any, norm: Any) -> Any:
    if kind == "pgd":
        return PGD(eps=eps, steps=steps, norm=norm)
    if kind == "fgsm":
        return FGSM(eps=eps)
    if kind == "deepfool":
        return DeepFool(norm=norm, steps=steps, eps=eps)
    return RandomNoise(eps=eps, norm=norm, trials=steps)


@FUZZ
@given(args=ATTACK_ARGS, inputs=_inputs())
def test_attack_accepted_and_runs_or_refused(args: dict[str, Any], inputs: tuple[torch.Tensor, Any]) -> None:
    model = _random_model("digits_cnn")
    try:
        attack = _attack(**args)
    except RobustlensError:
        event("attack refused")
        return
    images, labels = inputs
    try:
        result = attack.run(model, images, labels)
    except RobustlensError:
        event("call refused")
        return
    event("ran" if images.shape[0] else "empty batch")
    # accepted: a valid result of the input's shape, in the pixel range, within the eps-ball
    assert result.adversarial.shape == images.shape and result.success.shape == (images.shape[0],)
    if images.shape[0]:
        assert 0 <= float(result.adversarial.min()) and float(result.adversarial.max()) <= 1
        if attack.norm == "inf" and math.isfinite(attack.eps):
            assert float(result.linf.max()) <= attack.eps + 1e-5


@pytest.mark.slow
@settings(max_examples=3, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(raw=CONFIG)
def test_accepted_configs_run_as_a_study(raw: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    from robustlens.study import parse_config, run_study

    base = tmp_path_factory.mktemp("fuzz")
    try:
        config = parse_config(raw, base_dir=base)
    except RobustlensError:
        return
    data = load_digits("test").subset(torch.arange(8))
    try:
        run_study(config, base / "run", cache_dir=base / "cache", data=data)
    except RobustlensError:
        event("study refused")
        return
    event("study ran")
    assert (base / "run" / "results" / "accuracy.parquet").is_file()
