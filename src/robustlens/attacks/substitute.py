"""The substitute black-box attack of Papernot et al. (2017), "Practical Black-Box Attacks
against Machine Learning".

The attacker sees only the target's predicted labels. It trains a substitute model on a
small seed set of inputs labelled by the target, grows that set by Jacobian-based dataset
augmentation, and crafts adversarial images white-box on the substitute; the target only
judges them. Training the substitute is the expensive part: :meth:`Substitute.fit` trains
it once, :meth:`Substitute.fit_cached` keeps it on disk keyed by the attack's options, the
target's weights and the seed set, and :meth:`Substitute.with_substitute` returns the
attack bound to a trained substitute, so that later calls only craft.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.attacks._loop import eval_mode
from robustlens.attacks.base import Attack, Outcome, check_positive_int
from robustlens.attacks.transfer import transfer_outcome
from robustlens.errors import CheckpointError, ConfigError, suggest
from robustlens.models import create_model, list_models, load_checkpoint, model_info, save_checkpoint
from robustlens.models.checkpoint import checkpoint_paths
from robustlens.validation import check_images

__all__ = ["Substitute"]

log = logging.getLogger(__name__)

_DEFAULT_ARCHITECTURE: dict[tuple[int, ...], str] = {(1, 28, 28): "fmnist_cnn", (1, 8, 8): "digits_cnn"}


def _oracle(target: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The target's predicted labels: forward passes only, never a backward pass."""
    with eval_mode(target), torch.no_grad():  # not inference mode: the labels index autograd graphs
        return torch.cat([target(images[i:i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def _num_classes(target: nn.Module, images: torch.Tensor) -> int:
    with eval_mode(target), torch.inference_mode():
        return int(target(images[:1]).shape[1])


def _bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@dataclass(frozen=True)
class Substitute(Attack):
    """Black-box attack through a substitute trained on the target's labels (Papernot et al. 2017).

    Training (:meth:`fit`): start from ``seed_images`` (the attacker's few inputs, e.g. 150
    test images), label them with the target's argmax, and for each of ``rounds`` rounds
    train the substitute ``epochs`` epochs on the labelled set, then add, for every input
    ``x``, ``clip(x + lambda_r * sign(d F_{O(x)}(x) / dx), 0, 1)``, where ``F_k`` is the
    substitute's logit of class ``k`` and ``O(x)`` the target's label (Jacobian-based
    dataset augmentation; the set doubles each round). ``lambda_r = lam``, or with ``tau``
    the periodic step ``lam * (-1) ** (r // tau)`` of the paper's section 4.3. The last
    round's set is labelled and trained on once more. The target is queried
    ``len(seed_images) * 2 ** rounds`` times in all, forward only.

    Attack: ``attack`` (any white-box attack, e.g. ``FGSM(eps=0.3)``) is run against the
    substitute with the true labels; ``success`` is the target's verdict.

    Args:
        attack: the white-box attack crafted on the substitute; its eps and norm are this
            attack's.
        architecture: the substitute's registry name; ``None`` picks ``fmnist_cnn`` for
            1 x 28 x 28 images and ``digits_cnn`` for 1 x 8 x 8 ones.
        seed_images: (N, C, H, W) the attacker's initial inputs in [0, 1]; ``None`` uses the
            first ``n_seed`` images of the attacked batch (the substitute is then trained at
            every call, unless ``cache_dir`` is set).
        rounds: substitute training rounds (augmentation steps); the paper uses 6.
        epochs: training epochs per round; the paper uses 10.
        lam: the augmentation step lambda in pixel units; the paper uses 0.1.
        tau: flip the sign of the step every ``tau`` rounds; ``None`` keeps it fixed.
        lr: Adam's learning rate for the substitute.
        batch_size: images per training step and per target query.
        seed: seed of the substitute's initial weights and data order (and of the
            crafting attack's default generator).
        substitute: an already trained substitute (see :meth:`with_substitute`); no
            training then.
        n_seed: with ``seed_images = None``, how many of the attacked batch's first images
            seed the substitute (``None``: all of them).
        cache_dir: train through :meth:`fit_cached` in this folder, so calls with the same
            target and seed images (e.g. every eps of a study's sweep, each attacking the
            study's first batch first) train once.

    Without ``substitute``, the first call on a target trains (or loads) its substitute and
    the attack object keeps it for later calls on the same target object (a weak reference:
    nothing outlives the target), so a study's batches after the first reuse it.
    """

    attack: Attack
    architecture: str | None = None
    seed_images: torch.Tensor | None = field(default=None, compare=False, repr=False)
    rounds: int = 4
    epochs: int = 10
    lam: float = 0.1
    tau: int | None = None
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    substitute: nn.Module | None = field(default=None, compare=False, repr=False)
    n_seed: int | None = None
    cache_dir: str | None = None
    eps: float = field(init=False)
    norm: str = field(init=False)  # type: ignore[assignment]
    _trained: weakref.WeakKeyDictionary[nn.Module, nn.Module] = field(
        default_factory=weakref.WeakKeyDictionary, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.attack, Attack):
            raise ConfigError("Substitute(attack=...) needs a robustlens white-box attack, e.g. FGSM(eps=0.3); "
                              f"received {type(self.attack).__name__}.")
        if self.architecture is not None and self.architecture not in list_models():
            raise ConfigError(f"unknown substitute architecture {self.architecture!r}."
                              f"{suggest(self.architecture, list_models())} See `robustlens models`.")
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 0:
            raise ConfigError(f"rounds must be an integer >= 0; received {self.rounds!r}.")
        if self.tau is not None:
            check_positive_int("tau", self.tau)
        if not isinstance(self.lam, int | float) or not 0 < self.lam <= 1:
            raise ConfigError(f"lam (the augmentation step) must lie in (0, 1], pixel units; received {self.lam!r}.")
        if not isinstance(self.lr, int | float) or not self.lr > 0:
            raise ConfigError(f"lr must be > 0; received {self.lr!r}.")
        if self.seed_images is not None:
            check_images(self.seed_images, "seed_images")
        if self.n_seed is not None:
            check_positive_int("n_seed", self.n_seed)
        object.__setattr__(self, "eps", self.attack.eps)
        object.__setattr__(self, "norm", self.attack.norm)

    @property
    def name(self) -> str:
        return "substitute_" + self.attack.name

    def _architecture(self, images: torch.Tensor) -> str:
        shape = tuple(images.shape[1:])
        arch = self.architecture or _DEFAULT_ARCHITECTURE.get(shape)
        if arch is None:
            raise ConfigError(f"no default substitute architecture for images of shape {shape}; name one "
                              "with Substitute(architecture=...), e.g. 'resnet18' for ImageNet images.")
        expected = model_info(arch).input_size
        if expected[0] != shape[0] or (arch in _DEFAULT_ARCHITECTURE.values() and tuple(expected) != shape):
            raise ConfigError(f"substitute architecture {arch!r} takes {expected} images; "
                              f"the images are {shape}. Choose another architecture.")
        return arch

    def _build(self, arch: str, num_classes: int, device: torch.device) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = create_model(arch, num_classes=num_classes)
        return model.to(device)

    def _train(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> None:
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        model.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(x), generator=generator).to(x.device)
            for i in range(0, len(x), self.batch_size):
                idx = order[i:i + self.batch_size]
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                optimizer.step()
        model.eval()

    def _augment(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: float) -> torch.Tensor:
        """``clip(x + step * sign(d logit_y / dx))`` for every input."""
        out = []
        for i in range(0, len(x), self.batch_size):
            xb = x[i:i + self.batch_size].detach().requires_grad_(True)
            with torch.enable_grad():
                chosen = model(xb).gather(1, y[i:i + self.batch_size, None]).sum()
                (grad,) = torch.autograd.grad(chosen, xb)
            out.append((xb.detach() + step * grad.sign()).clamp(0.0, 1.0))
        return torch.cat(out)

    def fit(self, target: nn.Module, seed_images: torch.Tensor | None = None) -> nn.Module:
        """Train the substitute of ``target`` (queried for labels only) and return it in eval mode.

        Args:
            target: the attacked model; only its predicted labels are used.
            seed_images: (N, C, H, W) initial inputs in [0, 1]; default ``self.seed_images``.

        Returns:
            The trained substitute, on the seed images' device.
        """
        x = seed_images if seed_images is not None else self.seed_images
        if x is None:
            raise ConfigError("Substitute.fit needs seed images: pass seed_images=... (a few hundred inputs the "
                              "attacker holds, e.g. test images not attacked later).")
        check_images(x, "seed_images")
        x = x.detach()
        arch = self._architecture(x)
        labels = _oracle(target, x, self.batch_size)
        model = self._build(arch, _num_classes(target, x), x.device)
        generator = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # dropout, if the architecture has any
            for r in range(self.rounds + 1):
                self._train(model, x, labels, generator)
                if r == self.rounds:
                    break
                step = self.lam * (-1) ** (r // self.tau) if self.tau else self.lam
                new = self._augment(model, x, labels, step)
                x = torch.cat([x, new])
                labels = torch.cat([labels, _oracle(target, new, self.batch_size)])
        for p in model.parameters():
            p.requires_grad_(False)
        return model.eval()

    def cache_key(self, target: nn.Module, seed_images: torch.Tensor) -> str:
        """A 16-hex-digit key of the training options, the target's weights and the seed images."""
        h = hashlib.sha256()
        spec = {"architecture": self._architecture(seed_images), "rounds": self.rounds, "epochs": self.epochs,
                "lam": self.lam, "tau": self.tau, "lr": self.lr, "batch_size": self.batch_size, "seed": self.seed,
                "format": 1}
        h.update(json.dumps(spec, sort_keys=True).encode())
        for name, tensor in sorted(target.state_dict().items()):
            h.update(name.encode())
            h.update(_bytes(tensor))
        h.update(_bytes(seed_images))
        return h.hexdigest()[:16]

    def fit_cached(self, target: nn.Module, seed_images: torch.Tensor | None = None, *,
                   cache_dir: str | Path) -> nn.Module:
        """Like :meth:`fit`, reusing a substitute trained earlier with the same key (:meth:`cache_key`).

        The substitute is saved as a robustlens checkpoint
        ``cache_dir/substitutes/<architecture>-<key>``; a broken cached file is trained again.

        Args:
            target: the attacked model.
            seed_images: (N, C, H, W) initial inputs; default ``self.seed_images``.
            cache_dir: the cache folder (a study uses ``~/.cache/robustlens``).

        Returns:
            The trained substitute, in eval mode, on the seed images' device.
        """
        x = seed_images if seed_images is not None else self.seed_images
        if x is None:
            raise ConfigError("Substitute.fit_cached needs seed images: pass seed_images=....")
        check_images(x, "seed_images")
        arch = self._architecture(x)
        path = Path(cache_dir) / "substitutes" / f"{arch}-{self.cache_key(target, x)}"
        if checkpoint_paths(path)[0].is_file():
            try:
                model, _ = load_checkpoint(path)
                log.info("reusing the cached substitute %s", path)
                for p in model.parameters():
                    p.requires_grad_(False)
                return model.to(x.device).eval()
            except CheckpointError as err:
                log.warning("ignoring a broken cached substitute (%s); training again", err)
        model = self.fit(target, x)
        save_checkpoint(model, path, arch, {"num_classes": _num_classes(model, x)}, substitute_key=path.name,
                        rounds=self.rounds, epochs=self.epochs, lam=self.lam, n_seed_images=len(x))
        return model

    def with_substitute(self, substitute: nn.Module) -> Substitute:
        """This attack bound to a trained ``substitute`` (from :meth:`fit` or :meth:`fit_cached`)."""
        return dataclasses.replace(self, substitute=substitute)

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             generator: torch.Generator | None, targets: torch.Tensor | None,
             early_stop: bool, scored: bool) -> Outcome:
        substitute = self.substitute or self._trained.get(model)
        if substitute is None:
            seed = self.seed_images if self.seed_images is not None else images[:self.n_seed]
            substitute = self.fit(model, seed) if self.cache_dir is None else \
                self.fit_cached(model, seed, cache_dir=self.cache_dir)
            self._trained[model] = substitute
        return transfer_outcome(self.attack, substitute, model, images, labels, generator=generator,
                                targets=targets, scored=scored)
