"""Bad library calls: RobustlensErrors (one line), never torch's own exceptions.

Attacks, robust-accuracy evaluation, saliency and training share one input check
(``robustlens.validation.check_model_input``); an empty batch is a no-op.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _bad_inputs import LibError
from torch import nn

from robustlens.attacks import FGSM, PGD, DeepFool, RandomNoise, Transfer
from robustlens.data import ImageDataset
from robustlens.errors import ConfigError, DataError, OutputError
from robustlens.evaluation import robust_accuracy
from robustlens.io import check_output_dir, check_output_file
from robustlens.models import create_model
from robustlens.training import AdversarialTraining, TrainConfig, train_model
from robustlens.visualization import Saliency


@pytest.fixture(scope="module")
def model() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return create_model("digits_cnn").eval()


def _images(n: int = 4, c: int = 1, side: int = 8) -> torch.Tensor:
    return torch.rand(n, c, side, side, generator=torch.Generator().manual_seed(0))


LABELS = torch.tensor([0, 1, 2, 3])


# ------------------------------------------------------------------- attack configs
@pytest.mark.parametrize("build", [
    lambda: PGD(eps=2.0), lambda: PGD(eps=8), lambda: PGD(eps=-0.1), lambda: PGD(eps=math.nan),
    lambda: PGD(eps=math.inf), lambda: PGD(eps="0.1"), lambda: PGD(eps=True), lambda: PGD(eps=0.1, steps=0),
    lambda: PGD(eps=0.1, steps=1.5), lambda: PGD(eps=0.1, norm="l2"), lambda: PGD(eps=0.1, norm=2),
    lambda: PGD(eps=0.1, step_size=-1.0), lambda: PGD(eps=0.1, step_size=math.inf),
    lambda: PGD(eps=0.1, restarts=0), lambda: PGD(eps=0.1, eot_samples=0), lambda: PGD(eps=0.1, eot_chunk=0),
    lambda: PGD(eps=0.1, targeted="sometimes"), lambda: PGD(eps=0.1, loss="mse"),
    lambda: FGSM(eps=2.0), lambda: FGSM(eps=-0.1), lambda: FGSM(eps=0.1, eot_samples=0),
    lambda: DeepFool(norm="1"), lambda: DeepFool(overshoot=-1.0), lambda: DeepFool(steps=0),
    lambda: DeepFool(eps=-1.0), lambda: RandomNoise(eps=2.0), lambda: RandomNoise(eps=0.1, trials=0),
    lambda: RandomNoise(eps=0.1, norm="l1"), lambda: Transfer("pgd", nn.Identity()),  # type: ignore[arg-type]
], ids=lambda f: "")
def test_attack_config_refused(lib_error: LibError, build: Callable[[], Any]) -> None:
    lib_error(build, exc=ConfigError)


# -------------------------------------------------------------------- attack calls
BAD_CALLS: dict[str, tuple[Any, Any]] = {
    "images_list": ([[0.5]], LABELS),
    "images_3d": (_images()[0], LABELS),
    "images_uint8": ((_images() * 255).to(torch.uint8), LABELS),
    "images_float64": (_images().double(), LABELS),
    "images_float16": (_images().half(), LABELS),
    "images_nan": (_images().index_put_((torch.tensor([0]),), torch.tensor(math.nan)), LABELS),
    "images_0_255": (_images() * 255, LABELS),
    "images_normalised": (_images() - 0.5, LABELS),
    "images_28x28": (_images(side=28), LABELS),
    "images_3_channels": (_images(c=3), LABELS),
    "images_1x1": (_images(side=1), LABELS),
    "labels_list": (_images(), [0, 1, 2, 3]),
    "labels_float": (_images(), LABELS.float()),
    "labels_bool": (_images(), LABELS > 1),
    "labels_one_hot": (_images(), nn.functional.one_hot(LABELS, 10)),
    "labels_short": (_images(), LABELS[:3]),
    "labels_10": (_images(), torch.tensor([0, 1, 2, 10])),
    "labels_negative": (_images(), torch.tensor([0, -1, 2, 3])),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
@pytest.mark.parametrize("attack", [PGD(eps=0.1, steps=1), DeepFool(steps=1)], ids=["pgd", "deepfool"])
def test_attack_call_refused(lib_error: LibError, model: nn.Module, attack: Any, case: str) -> None:
    images, labels = BAD_CALLS[case]
    message = lib_error(attack.run, model, images, labels)
    if case in ("images_28x28", "images_3_channels", "images_1x1"):
        assert "1x8x8" in message  # the size the registered model takes


@pytest.mark.parametrize("norm,eps", [("2", 9.0), ("2", 100.0)])
def test_l2_eps_bounded_by_image_size(lib_error: LibError, model: nn.Module, norm: str, eps: float) -> None:
    attack = PGD(eps=eps, norm=norm, steps=1)  # fine in itself: L2 radii above 1 are normal
    assert "sqrt" not in lib_error(attack, model, _images(), LABELS)  # a number: <= 8 for 64 values
    assert PGD(eps=7.9, norm="2", steps=1)(model, _images(), LABELS).shape == (4, 1, 8, 8)


@pytest.mark.parametrize("bad_model", [lambda x: x, nn.Conv2d(1, 2, 3), nn.Identity()],
                         ids=["function", "conv_map", "identity"])
def test_model_that_is_not_a_classifier(lib_error: LibError, bad_model: Any) -> None:
    lib_error(PGD(eps=0.1, steps=1), bad_model, _images(), LABELS)


def test_transfer_checks_the_surrogate(lib_error: LibError, model: nn.Module) -> None:
    surrogate = create_model("fmnist_cnn").eval()
    lib_error(Transfer(PGD(eps=0.1, steps=1), surrogate), model, _images(), LABELS)


def test_empty_batch_is_a_no_op(model: nn.Module) -> None:
    empty, no_labels = _images()[:0], LABELS[:0]
    assert PGD(eps=0.1, steps=1)(model, empty, no_labels).shape == (0, 1, 8, 8)
    result = DeepFool().run(model, empty, no_labels)
    assert result.adversarial.shape == (0, 1, 8, 8) and result.success.shape == (0,)
    assert Saliency(model).attribute(empty).shape == (0, 1, 8, 8)


def test_checks_leave_model_and_rng_alone(model: nn.Module) -> None:
    model.train()
    state = torch.random.get_rng_state()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    PGD(eps=0.1, steps=1)(model, _images(), LABELS)
    assert model.training and torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()


# ---------------------------------------------------------------------- saliency
@pytest.mark.parametrize("case", ["images_3d", "images_float64", "images_nan", "images_0_255", "images_28x28",
                                  "images_3_channels"])
def test_saliency_refused(lib_error: LibError, model: nn.Module, case: str) -> None:
    lib_error(Saliency(model).attribute, BAD_CALLS[case][0])


@pytest.mark.parametrize("target", [10, -1, [0, 1], torch.tensor([[0, 1, 2, 3]])])
def test_saliency_bad_target(lib_error: LibError, model: nn.Module, target: Any) -> None:
    lib_error(Saliency(model).attribute, _images(), target=target)


# -------------------------------------------------------------------- evaluation
def _dataset(n: int = 4, side: int = 8, labels: torch.Tensor | None = None, n_classes: int = 10) -> ImageDataset:
    y = labels if labels is not None else torch.arange(n) % 10
    return ImageDataset(_images(n, side=side), y, tuple(str(i) for i in range(n_classes)), "test")


@pytest.mark.parametrize("data,kwargs,exc", [
    (lambda: _dataset(0), {}, DataError),
    (lambda: _dataset(side=28), {}, Exception),
    (lambda: _dataset(labels=torch.tensor([0, 1, 11, 3]), n_classes=12), {}, Exception),
    (lambda: _dataset(), {"batch_size": 0}, ConfigError),
    (lambda: _dataset(), {"n_passes": 0}, ConfigError),
], ids=["empty", "wrong_size", "labels_out_of_range", "batch_size_0", "n_passes_0"])
def test_robust_accuracy_refused(lib_error: LibError, model: nn.Module, data: Callable[[], ImageDataset],
                                 kwargs: dict[str, Any], exc: type) -> None:
    from robustlens.errors import RobustlensError

    lib_error(robust_accuracy, model, data(), {"fgsm": FGSM(eps=0.1)},
              exc=exc if exc is not Exception else RobustlensError, **kwargs)


# ---------------------------------------------------------------------- training
@pytest.mark.parametrize("build", [
    lambda: AdversarialTraining(eps=2.0), lambda: AdversarialTraining(eps=-0.1),
    lambda: AdversarialTraining(eps=math.nan), lambda: AdversarialTraining(eps=0.1, norm="l1"),
    lambda: AdversarialTraining(eps=0.1, steps=0), lambda: AdversarialTraining(eps=0.1, clean_weight=2.0),
    lambda: AdversarialTraining(eps=0.1, warmup_epochs=-1.0), lambda: AdversarialTraining(eps=0.1, step_size=0.0),
    lambda: AdversarialTraining(eps=0.1, random_start="yes"),  # type: ignore[arg-type]
    lambda: TrainConfig(epochs=0), lambda: TrainConfig(epochs=1.5), lambda: TrainConfig(batch_size=0),
    lambda: TrainConfig(lr=0.0), lambda: TrainConfig(lr=math.nan), lambda: TrainConfig(weight_decay=-1.0),
    lambda: TrainConfig(adversarial="pgd"),  # type: ignore[arg-type]
    lambda: TrainConfig.from_dict({"epochs": 1, "momentum": 0.9}),
], ids=lambda f: "")
def test_training_config_refused(lib_error: LibError, build: Callable[[], Any]) -> None:
    lib_error(build, exc=ConfigError)


@pytest.mark.parametrize("arch,data,adv", [
    ("fmnist_cnn", lambda: _dataset(8), None),
    ("digits_cnn", lambda: _dataset(8, labels=torch.arange(8) + 5, n_classes=13), None),
    ("digits_cnn", lambda: _dataset(0), None),
    ("digits_cnn", lambda: _dataset(8), AdversarialTraining(eps=9.0, norm="2")),
], ids=["wrong_size", "labels_out_of_range", "empty", "l2_eps_too_large"])
def test_train_model_refuses_before_training(lib_error: LibError, arch: str, data: Callable[[], ImageDataset],
                                             adv: AdversarialTraining | None) -> None:
    net = create_model(arch)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    lib_error(train_model, net, data(), TrainConfig(epochs=1, adversarial=adv))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # not one step taken


# ------------------------------------------------------------------ output paths
@pytest.mark.parametrize("where", ["file", "under_file", "proc", "empty"])
def test_check_output_dir(lib_error: LibError, tmp_path: Path, where: str) -> None:
    a_file = tmp_path / "f"
    a_file.write_text("x")
    path = {"file": a_file, "under_file": a_file / "deeper" / "run", "proc": Path("/proc/robustlens/run"),
            "empty": ""}[where]
    lib_error(check_output_dir, path, exc=OutputError)
    assert check_output_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()  # the check creates nothing


@pytest.mark.parametrize("where", ["folder", "suffix", "under_file", "proc"])
def test_check_output_file(lib_error: LibError, tmp_path: Path, where: str) -> None:
    a_file = tmp_path / "f"
    a_file.write_text("x")
    path = {"folder": tmp_path, "suffix": tmp_path / "fig.xyz", "under_file": a_file / "fig.png",
            "proc": Path("/proc/robustlens/fig.png")}[where]
    lib_error(check_output_file, path, suffixes=(".png", ".pdf"), exc=OutputError)
