"""Bad study configs: each is refused as a RobustlensError (one line), and through the CLI with
exit status 2 and one line on stderr, before any model is trained or attacked.

Only the error type and the shape of the message are asserted, not its wording.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from _bad_inputs import CliError, LibError

from robustlens.errors import ConfigError
from robustlens.study import parse_config

BASE: dict[str, Any] = {
    "study": {"name": "corpus", "batch_size": 20},
    "data": {"dataset": "digits", "n_per_class": 1},
    "models": [{"name": "m", "architecture": "digits_cnn", "random": True}],
    "attacks": [{"type": "fgsm", "eps": [0.1]}],
}


def _set(raw: dict[str, Any], path: str, value: Any) -> None:
    """Set ``raw[a][b]...`` for ``path = "a.b"``; list items by index (``models.0.seed``)."""
    *parents, last = path.split(".")
    node: Any = raw
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


_DELETE = object()

CASES: list[tuple[str, Any]] = [
    # top level and [study]
    ("bogus_table", {"x": 1}),
    ("study.name", 3),
    ("study.colour", "blue"),
    ("study.batch_size", 0),
    ("study.batch_size", -5),
    ("study.batch_size", "ten"),
    ("study.batch_size", 2.5),
    ("study.device", "tpu"),
    ("study.expected_passes", 0),
    ("study.checkpoint_every", -1.0),
    ("study.seed", "zero"),
    # [data]
    ("data.dataset", "mnist"),
    ("data.dataset", 7),
    ("data.n_per_class", 0),
    ("data.n_per_class", -1),
    ("data.n_per_class", "all"),
    ("data.ds_factor", 0),
    ("data.resize", 0),
    ("data.crop", 0),
    ("data.root", 5),
    ("data.colour", "red"),
    # [[models]]
    ("models", []),
    ("models", "digits_cnn"),
    ("models.0.architecture", "digits_cn"),
    ("models.0.architecture", 3),
    ("models.0.name", 3),
    ("models.0.random", "yes"),
    ("models.0.options", {"widht": 4}),
    ("models.0.options", {"weights": "x.pth"}),
    ("models.0.colour", "red"),
    ("models.0.pretrained", True),
    ("models.0.weights", "released.pth"),
    ("models.0.train", {"epochs": 1}),
    ("models.0.random", False),
    ("models.0.train", {"epochs": 0}),
    # [models.train] and [models.train.adversarial]
    ("train.epochs", 0),
    ("train.epochs", -2),
    ("train.epochs", "3"),
    ("train.batch_size", 0),
    ("train.lr", 0.0),
    ("train.lr", -1.0),
    ("train.weight_decay", -0.1),
    ("train.momentum", 0.9),
    ("train.adversarial", {"eps": 2.0}),
    ("train.adversarial", {"eps": 8}),
    ("train.adversarial", {"eps": -0.1}),
    ("train.adversarial", {"eps": math.nan}),
    ("train.adversarial", {"eps": math.inf}),
    ("train.adversarial", {"eps": 0.1, "steps": 0}),
    ("train.adversarial", {"eps": 0.1, "step_size": -1.0}),
    ("train.adversarial", {"eps": 0.1, "step_size": 0.0}),
    ("train.adversarial", {"eps": 0.1, "warmup_epochs": -1.0}),
    ("train.adversarial", {"eps": 0.1, "random_start": "yes"}),
    ("train.adversarial", {"eps": 0.1, "strength": 3}),
    ("train.adversarial", "pgd"),
    # [[attacks]]
    ("attacks", "fgsm"),
    ("attacks.0", {"type": "fgsn", "eps": [0.1]}),
    ("attacks.0", {"type": "fgsm"}),
    ("attacks.0", {"type": "fgsm", "eps": []}),
    ("attacks.0", {"type": "fgsm", "eps": 0.1}),
    ("attacks.0", {"type": "fgsm", "eps": [2.0]}),
    ("attacks.0", {"type": "fgsm", "eps": [-0.1]}),
    ("attacks.0", {"type": "fgsm", "eps": [math.nan]}),
    ("attacks.0", {"type": "fgsm", "eps": ["0.1"]}),
    ("attacks.0", {"type": "fgsm", "eps": [True]}),
    ("attacks.0", {"type": "fgsm", "eps": [0.1], "steps": 3}),
    ("attacks.0", {"type": "pgd", "eps": [0.1], "steps": 0}),
    ("attacks.0", {"type": "pgd", "eps": [0.1], "steps": -1}),
    ("attacks.0", {"type": "pgd", "eps": [0.1], "norm": "l2"}),
    ("attacks.0", {"type": "pgd", "eps": [0.1], "norm": 2}),
    ("attacks.0", {"type": "pgd", "eps": [0.1], "step_size": -0.1}),
    ("attacks.0", {"type": "pgd", "eps": [0.1], "restarts": 0}),
    ("attacks.0", {"type": "pgd", "eps": [0.1], "eot_samples": 0}),
    ("attacks.0", {"type": "pgd", "eps": [0.1], "targeted": "sometimes"}),
    ("attacks.0", {"type": "pgd", "eps": [math.inf]}),
    ("attacks.0", {"type": "deepfool", "eps": [0.1], "overshoot": -1.0}),
    ("attacks.0", {"type": "deepfool", "eps": [0.1], "steps": 0}),
    ("attacks.0", {"type": "noise", "eps": [0.1], "trials": 0}),
    ("attacks.0", {"type": "transfer", "eps": [0.1]}),
    ("attacks.0", {"type": "transfer", "eps": [0.1], "surrogate": "nobody"}),
    ("attacks.0", {"type": "transfer", "eps": [0.1], "surrogate": "m", "via": "deepfool"}),
    ("attacks.1", _DELETE),  # two attacks with the same name
    # [analyses]
    ("analyses", {"dissimilarty": {}}),
    ("analyses", "all"),
]


def _build(path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    if path == "attacks.1":  # duplicate attack names
        raw["attacks"] = [{"type": "fgsm", "eps": [0.1]}, {"type": "fgsm", "eps": [0.2]}]
    elif path == "bogus_table":
        raw["bogus"] = value
    elif path.startswith("train."):
        raw["models"][0].pop("random")
        raw["models"][0]["train"] = {"epochs": 1}
        _set(raw["models"][0]["train"], path[len("train."):], value)
    elif path == "models.0.train" or path == "models.0.pretrained" or path == "models.0.weights":
        if path == "models.0.train" and value == {"epochs": 0}:
            raw["models"][0].pop("random")
        _set(raw, path, value)  # with random = true as well: two sources
    else:
        _set(raw, path, value)
    return raw


@pytest.mark.parametrize("path,value", CASES, ids=[f"{p}={v!r}"[:60] for p, v in CASES])
def test_parse_config_refuses(lib_error: LibError, tmp_path: Path, path: str, value: Any) -> None:
    lib_error(parse_config, _build(path, value), base_dir=tmp_path)


# through the CLI: the same refusals, as one line and exit status 2, with nothing written
CLI_CASES = [CASES[i] for i in (3, 7, 11, 23, 43, 44, 60, 67, 69, 81)]


@pytest.mark.parametrize("path,value", CLI_CASES, ids=[f"{p}={v!r}"[:60] for p, v in CLI_CASES])
def test_study_cli_refuses(cli_error: CliError, tmp_path: Path, path: str, value: Any) -> None:
    cfg = tmp_path / "study.toml"
    cfg.write_text(tomli_w.dumps(_build(path, value)))
    out = tmp_path / "run"
    cli_error(["study", str(cfg), "--out", str(out), "--quiet"])
    assert not (out / "results").exists() or not list((out / "results").glob("*.parquet"))


@pytest.mark.parametrize(("attack", "ok"), [
    ({"type": "pgd", "eps": [2.0]}, False),                      # L-inf above the pixel range
    ({"type": "pgd", "norm": "2", "eps": [2.0]}, True),          # L2: normal
    ({"type": "pgd", "norm": "2", "eps": [29.0]}, False),        # L2 above sqrt(28 * 28) = 28
    ({"type": "apgd", "norm": "1", "eps": [12.0]}, True),        # L1: normal
    ({"type": "apgd", "norm": "1", "eps": [800.0]}, False),      # L1 above 28 * 28 = 784
    ({"type": "pgd", "eps": [float("nan")]}, False),
    ({"type": ["pgd"], "eps": [0.1]}, False),                    # a type that is not a string
])
def test_study_eps_follows_the_threat_model(attack: dict[str, Any], ok: bool) -> None:

    raw = {"models": [{"name": "a", "architecture": "fmnist_cnn", "random": True}], "attacks": [attack]}
    if ok:
        parse_config(raw)
    else:
        with pytest.raises(ConfigError):
            parse_config(raw)


@pytest.mark.parametrize("where", ["study", "data", "model"])
def test_negative_seeds_are_refused(where: str) -> None:
    raw: dict[str, Any] = {"models": [{"name": "a", "architecture": "digits_cnn", "random": True}],
                           "data": {"dataset": "digits"}}
    if where == "model":
        raw["models"][0]["seed"] = -1
    else:
        raw[where] = {**raw.get(where, {}), "seed": -1}
    with pytest.raises(ConfigError, match="seed must be an integer from 0"):
        parse_config(raw)
