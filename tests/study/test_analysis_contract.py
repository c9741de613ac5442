"""The plug-in contract, checked for every registered study analysis on a small real model.

Each analysis runs on sklearn digits with a random-init ``digits_cnn`` under two attacks:
its state dict survives ``torch.save`` / ``torch.load(weights_only=True)``; merging two
instances that saw alternate batches (as two ``torchrun`` workers do) equals one pass; the
tables do not depend on the batch size; bad option values are refused when the config is read.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from robustlens import create_model
from robustlens.activations import record
from robustlens.attacks import FGSM, PGD
from robustlens.data import class_balanced_indices, load_dataset
from robustlens.errors import ConfigError
from robustlens.study.analyses import ANALYSES, AnalysisBatch, CleanBatch, StudyAnalysis, parse_options

# small options so that every analysis runs in seconds
SMALL: dict[str, dict[str, Any]] = {
    "rsa": {"n_bootstrap": 5},
    "manifolds": {"n_bootstrap": 5},
    "audit": {"n_images": 8, "steps": 2},
    "featurevis": {"top_k": 1, "steps": 2, "layers": "type:ReLU"},
    "saliency": {"methods": ["gradient", "smoothgrad"], "n_images": 2, "n_samples": 2},
    "sensitivity": {"top_k": 3},
    "dissimilarity_channels": {"layers": ["features.4", "classifier.1"]},
    "dissimilarity_images": {"n_images": 6, "layers": ["features.1", "features.4", "classifier.1"]},
    "dataset_examples": {"units": ["features.1#0", "features.4#2"], "k": 3},
    "deepdream": {"layer": "features.4", "octaves": 2, "steps": 2},
    "sweet_spot_images": {"n_images": 6},
}
SLOW = {"audit"}  # runs its own attacks in tables(), four times here
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(ANALYSES)]


@pytest.fixture(scope="module")
def setting() -> dict[str, Any]:
    data = load_dataset("digits", "test")
    data = data.subset(class_balanced_indices(data.labels, 4, 0, data.num_classes))
    images, labels = data.get_batch(torch.arange(len(data)))  # 40 images
    torch.manual_seed(0)
    model = create_model("digits_cnn").eval()
    attacks = {("fgsm", 0.1): FGSM(eps=0.1),
               ("pgd", 0.2): PGD(eps=0.2, steps=3, random_start=False)}
    adversarial = {key: attack(model, images, labels).detach() for key, attack in attacks.items()}
    return {"model": model, "images": images, "labels": labels, "adversarial": adversarial,
            "class_names": data.class_names}


def _batches(s: dict[str, Any], size: int) -> list[tuple[CleanBatch, list[AnalysisBatch]]]:
    """The runner's feed at batch size ``size``: every leaf layer recorded."""
    model, out = s["model"], []
    n = len(s["labels"])
    for index, start in enumerate(range(0, n, size)):
        sl = slice(start, min(start + size, n))
        with torch.no_grad(), record(model) as rec:
            logits = model(s["images"][sl])
        clean = CleanBatch(s["images"][sl], s["labels"][sl], logits, dict(rec), index, start)
        adv = []
        for (attack, eps), x_adv in s["adversarial"].items():
            with torch.no_grad(), record(model) as rec:
                logits_adv = model(x_adv[sl])
            adv.append(AnalysisBatch(attack, eps, clean, x_adv[sl], logits_adv, dict(rec)))
        out.append((clean, adv))
    return out


def _build(s: dict[str, Any], name: str) -> StudyAnalysis:
    cls = ANALYSES[name]
    options = parse_options(cls.Options, SMALL.get(name, {}), f"[analyses.{name}]")
    return cls("m", s["model"], s["class_names"], options)


def _feed(analysis: StudyAnalysis, batches: list[tuple[CleanBatch, list[AnalysisBatch]]]) -> StudyAnalysis:
    for clean, adv in batches:
        analysis.update_clean(clean)
        for batch in adv:
            analysis.update(batch)
    return analysis


def _canonical(df: pd.DataFrame) -> pd.DataFrame:
    df = df[sorted(df.columns)]
    keys = [c for c in df.columns if not pd.api.types.is_float_dtype(df[c])]
    return df.sort_values(keys, kind="stable").reset_index(drop=True) if keys else df.reset_index(drop=True)


def _assert_same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        pd.testing.assert_frame_equal(_canonical(a[name]), _canonical(b[name]), check_exact=False,
                                      rtol=1e-4, atol=1e-5, obj=name)


def _round_trip(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", NAMES)
def test_contract(setting: dict[str, Any], name: str) -> None:
    by10 = _batches(setting, 10)
    one_pass = _feed(_build(setting, name), by10).tables()
    assert one_pass, f"{name} returned no tables"
    assert all(len(df) for df in one_pass.values())

    # two workers taking alternate batches; the second's sums travel through torch.save
    first = _feed(_build(setting, name), by10[0::2])
    second = _feed(_build(setting, name), by10[1::2])
    received = _build(setting, name)
    received.load_state_dict(_round_trip(second.state_dict()))
    first.merge(received)
    _assert_same(one_pass, first.tables())

    # a resumed instance: the state dict of a whole pass, read back, gives the same tables
    restored = _build(setting, name)
    restored.load_state_dict(_round_trip(_feed(_build(setting, name), by10).state_dict()))
    _assert_same(one_pass, restored.tables())

    # the batch size does not matter
    _assert_same(one_pass, _feed(_build(setting, name), _batches(setting, 20)).tables())


@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_bad_option_values_are_refused_when_parsed(name: str) -> None:
    schema = ANALYSES[name].Options
    with pytest.raises(ConfigError, match=rf"unknown option 'no_such_option' in \[analyses.{name}\]"):
        parse_options(schema, {"no_such_option": 1}, f"[analyses.{name}]")
    for field in dataclasses.fields(schema):
        if field.metadata.get("check") is None:
            continue
        with pytest.raises(ConfigError, match=rf"\[analyses.{name}\].{field.name} must .*received"):
            parse_options(schema, {field.name: [{"not": "valid"}]}, f"[analyses.{name}]")


@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_defaults_are_valid_options(name: str) -> None:
    schema = ANALYSES[name].Options
    defaults = {f.name: (list(f.default) if isinstance(f.default, tuple) else f.default)
                for f in dataclasses.fields(schema)}
    assert parse_options(schema, defaults, "[analyses.x]") == schema()


def test_dissimilarity_reports_only_its_layers(setting: dict[str, Any]) -> None:
    cls = ANALYSES["dissimilarity"]
    by10 = _batches(setting, 10)  # every layer recorded, as when another analysis asks for all
    for selector, expected in [("type:ReLU", {"features.1", "features.4", "classifier.1"}),
                               ("features.?", None), (["features.1"], {"features.1"})]:
        options = parse_options(cls.Options, {"layers": selector}, "[analyses.dissimilarity]")
        table = _feed(cls("m", setting["model"], setting["class_names"], options), by10).tables()
        layers = set(table["dissimilarity"]["layer"])
        if expected is None:
            assert layers and all(name.startswith("features.") and len(name) == 10 for name in layers)
        else:
            assert layers == expected
    all_layers = _feed(_build(setting, "dissimilarity"), by10).tables()["dissimilarity"]
    assert set(all_layers["layer"]) > {"features.1", "features.4", "classifier.1"}
    assert np.isfinite(all_layers.select_dtypes("number").to_numpy()).all()
