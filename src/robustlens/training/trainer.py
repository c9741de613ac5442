"""Standard and PGD adversarial training (Madry et al. 2018)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.attacks import PGD, check_eps
from robustlens.data.dataset import ImageDataset
from robustlens.errors import ConfigError, DataError
from robustlens.models import model_device
from robustlens.validation import check_labels, check_model_input

__all__ = ["AdversarialTraining", "TrainConfig", "TrainResult", "check_training_data", "evaluate_accuracy",
           "train_model"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdversarialTraining:
    """PGD adversarial training settings (pixel units).

    Each training batch is replaced by PGD adversarial examples crafted against the
    current model (in eval mode, so batch-norm statistics come from clean-mode passes).
    With ``clean_weight > 0`` the loss mixes the clean and the adversarial batch
    (Goodfellow et al. 2015): ``clean_weight * CE(x) + (1 - clean_weight) * CE(x_adv)``,
    both halves in one forward pass.

    Args:
        eps: radius in pixel units, in ``norm``.
        steps: PGD steps per batch.
        step_size: PGD step; ``None`` = ``2.5 * eps / steps``.
        random_start: start PGD at a random point of the ball.
        warmup_epochs: ramp eps linearly from 0 to ``eps`` over this many epochs.
        norm: ``"inf"`` (Madry et al.) or ``"2"``.
        clean_weight: weight of the clean loss in [0, 1]; 0 is pure adversarial training.
    """

    eps: float = 0.1
    steps: int = 7
    step_size: float | None = None
    random_start: bool = True
    warmup_epochs: float = 0.0
    norm: str = "inf"
    clean_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.norm not in ("inf", "2"):
            raise ConfigError(f"adversarial norm must be 'inf' (L-inf) or '2' (L2), as a string; "
                              f"received {self.norm!r}.")
        try:
            check_eps(self.eps, norm=self.norm)
        except ConfigError as err:
            raise ConfigError(f"adversarial training: {err}") from None
        _check_int("adversarial steps", self.steps, 1)
        if self.step_size is not None and not (_is_number(self.step_size) and 0 < self.step_size < math.inf):
            raise ConfigError("adversarial step_size must be a number > 0 in pixel units, or omitted "
                              f"(2.5 * eps / steps); received {self.step_size!r}.")
        if not isinstance(self.random_start, bool):
            raise ConfigError(f"adversarial random_start must be true or false; received {self.random_start!r}.")
        if not (_is_number(self.warmup_epochs) and 0 <= self.warmup_epochs < math.inf):
            raise ConfigError(f"adversarial warmup_epochs must be a number >= 0; received {self.warmup_epochs!r}.")
        if not (_is_number(self.clean_weight) and 0 <= self.clean_weight <= 1):
            raise ConfigError("adversarial clean_weight must be a number in [0, 1] (0: pure adversarial "
                              f"training); received {self.clean_weight!r}.")

    def check_images(self, n_features: int) -> None:
        """Check ``eps`` against images of ``n_features = C * H * W`` values (L2 / L1 bounds).

        Args:
            n_features: pixel values per image.

        Raises:
            ConfigError: ``eps`` is larger than any perturbation of such images.
        """
        try:
            check_eps(self.eps, norm=self.norm, n_features=n_features)
        except ConfigError as err:
            raise ConfigError(f"adversarial training: {err}") from None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _check_int(name: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}; received {value!r}.")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings: Adam with a cosine learning-rate schedule.

    Args:
        epochs: passes over the training set.
        batch_size: images per step.
        lr: peak learning rate.
        weight_decay: L2 penalty.
        seed: seed of the initialisation and data order.
        adversarial: PGD adversarial training, or ``None`` for standard training.
        max_batches: at most this many batches per epoch (each a fresh random draw of the
            shuffled training set), or ``None`` for whole epochs; for quick trials and smoke
            runs.
    """

    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0
    adversarial: AdversarialTraining | None = None
    max_batches: int | None = None

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 1)
        if self.max_batches is not None:
            _check_int("max_batches", self.max_batches, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("seed", self.seed, 0)
        if not (_is_number(self.lr) and 0 < self.lr < math.inf):
            raise ConfigError(f"lr (learning rate) must be a number > 0, e.g. 2e-3; received {self.lr!r}.")
        if not (_is_number(self.weight_decay) and 0 <= self.weight_decay < math.inf):
            raise ConfigError(f"weight_decay must be a number >= 0; received {self.weight_decay!r}.")
        if self.adversarial is not None and not isinstance(self.adversarial, AdversarialTraining):
            raise ConfigError("adversarial must be AdversarialTraining(...) or None; received "
                              f"{type(self.adversarial).__name__}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        adv = d.pop("adversarial", None)
        for keys, fields in ((d, cls.__dataclass_fields__), (adv or {}, AdversarialTraining.__dataclass_fields__)):
            unknown = sorted(set(keys) - set(fields))
            if unknown:
                raise ConfigError(f"unknown training setting(s) {', '.join(unknown)}; accepted: "
                                  f"{', '.join(sorted(fields))}.")
        return cls(**d, adversarial=AdversarialTraining(**adv) if adv else None)


@dataclass
class TrainResult:
    """What a training run did: per-epoch loss and accuracy, and its duration."""

    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


@torch.inference_mode()
def evaluate_accuracy(model: nn.Module, data: ImageDataset, batch_size: int = 1000,
                      device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of ``model`` on ``data`` (model run in its current mode)."""
    correct = 0
    for x, y in data.batches(batch_size):
        correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
    return correct / max(len(data), 1)


def check_training_data(model: nn.Module, data: ImageDataset, adversarial: AdversarialTraining | None = None
                        ) -> None:
    """Check, before any training, that ``model`` runs on ``data`` and its classes cover the labels.

    One forward pass of one image (see :func:`robustlens.validation.check_model_input`), the
    largest label against the number of logits, and an adversarial ``eps`` against the image
    size.

    Args:
        model: the model to train (on the device it will train on).
        data: the training images and labels.
        adversarial: adversarial-training settings, if any.

    Raises:
        RobustlensError: the first mismatch, with what to do.
    """
    device = model_device(model)
    k = check_model_input(model, data.images[:1].to(device), name="training images")
    check_labels(data.labels, len(data), "training labels", num_classes=k)
    if adversarial is not None:
        adversarial.check_images(math.prod(data.images.shape[1:]))


def train_model(model: nn.Module, data: ImageDataset, config: TrainConfig, *,
                device: torch.device | str = "cpu", progress: bool = False) -> TrainResult:
    """Train ``model`` in place on ``data`` and return its history.

    The model is initialised by its constructor; call ``torch.manual_seed`` or build it
    under :func:`seeded` for a reproducible initialisation. Data order and PGD starts come
    from generators seeded with ``config.seed``.
    """
    from tqdm.auto import tqdm

    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig; received {type(config).__name__}.")
    if len(data) == 0:
        raise DataError("the training set holds no images; check the data selection (classes, n_images).")
    device = torch.device(device)
    model.to(device)
    check_training_data(model, data, config.adversarial)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(data)
    steps_per_epoch = (n + config.batch_size - 1) // config.batch_size
    if config.max_batches is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_batches)
    seen = min(n, steps_per_epoch * config.batch_size)  # images per epoch
    total = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total,
                                                    pct_start=0.15)
    order_gen = torch.Generator().manual_seed(config.seed)
    attack_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    result = TrainResult()
    start = time.perf_counter()
    adv = config.adversarial
    bar = tqdm(total=total, disable=not progress, desc="adversarial training" if adv else "training",
               unit="batch", leave=False)
    step = 0
    for epoch in range(config.epochs):
        model.train()
        perm = torch.randperm(n, generator=order_gen)
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        for b in range(steps_per_epoch):
            idx = perm[b * config.batch_size:(b + 1) * config.batch_size]
            x, y = data.images[idx].to(device), data.labels[idx].to(device)
            x_adv: torch.Tensor | None = None
            if adv is not None:
                ramp = adv.warmup_epochs * steps_per_epoch
                frac = 1.0 if adv.warmup_epochs <= 0 else min(1.0, (step + 1) / ramp)
                eps = adv.eps * frac
                if eps > 0:
                    attack = PGD(eps=eps, steps=adv.steps, step_size=None if adv.step_size is None
                                 else adv.step_size * frac, norm=adv.norm,  # type: ignore[arg-type]
                                 random_start=adv.random_start)
                    x_adv = attack(model, x, y, generator=attack_gen)
            if x_adv is None:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            elif adv is not None and adv.clean_weight > 0:
                both = model(torch.cat([x, x_adv]))  # one pass: clean and adversarial halves
                logits = both[len(y):]
                loss = adv.clean_weight * F.cross_entropy(both[:len(y)], y) \
                    + (1 - adv.clean_weight) * F.cross_entropy(logits, y)
            else:
                logits = model(x_adv)
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            bar.update(1)
        record = {"epoch": epoch + 1, "loss": float(loss_sum) / seen, "train_accuracy": float(correct) / seen}
        result.history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['train_accuracy']:.3f}")
        log.info("epoch %d: loss %.4f, train accuracy %.4f", epoch + 1, record["loss"],
                 record["train_accuracy"])
    bar.close()
    model.eval()
    result.seconds = time.perf_counter() - start
    return result
