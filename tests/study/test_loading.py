"""Safe loading in studies: released weights files, the allow_pickle opt-in, corrupt files,
the preflight check, and the CLI's one-line errors (DESIGN contracts 3, 9 and 10)."""

from __future__ import annotations

import argparse
import gzip
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from robustlens.cli import main
from robustlens.data.fashion_mnist import check_idx_file, load_fashion_mnist, read_idx
from robustlens.errors import CheckpointError, ConfigError, DataError
from robustlens.models import create_model, load_checkpoint, save_checkpoint
from robustlens.models._weights import UnsafePickleError, check_weights_file, read_weights_file
from robustlens.models.checkpoint import check_checkpoint, checkpoint_paths
from robustlens.models.vone import save_reference_checkpoint
from robustlens.study import parse_config
from robustlens.study.config import DataConfig, ModelConfig, StudyConfig
from robustlens.study.models import obtain_model
from robustlens.study.preflight import check_paths

CPU = torch.device("cpu")
DATA = DataConfig(dataset="digits")


def _obtain(mc: ModelConfig, tmp_path: Path) -> tuple[torch.nn.Module, dict]:
    return obtain_model(mc, DATA, cache_dir=tmp_path / "cache", device=CPU)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _unchained(err: BaseException) -> bool:
    """No zipfile / gzip / pickle exception would be shown beneath ``err``."""
    return err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.fixture(scope="module")
def resnet18_10() -> torchvision.models.ResNet:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture()
def digits_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(create_model("digits_cnn"), tmp_path / "ckpt" / "digits", "digits_cnn")


# --------------------------------------------------------------------- released weights files
def test_torchvision_state_dict_loads_as_a_study_model(tmp_path: Path, resnet18_10) -> None:
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(resnet18_10.state_dict(), path)  # torchvision's own layout
    mc = ModelConfig(name="r18", architecture="resnet18", options={"num_classes": 10}, weights=str(path))
    model, info = _obtain(mc, tmp_path)
    assert info == {"source": "weights", "path": str(path)}
    assert not model.training
    assert _same_weights(model, resnet18_10)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        reference = resnet18_10(torchvision.transforms.functional.normalize(
            x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
        assert torch.allclose(model(x), reference, atol=1e-5)


def test_pickled_torchvision_checkpoint_needs_allow_pickle(tmp_path: Path, resnet18_10) -> None:
    path = tmp_path / "trained.pth.tar"
    args = argparse.Namespace(arch="resnet18", lr=0.1)  # what training scripts often save
    torch.save({"epoch": 90, "args": args, "state_dict": resnet18_10.state_dict()}, path)
    mc = ModelConfig(name="r18", architecture="resnet18", options={"num_classes": 10}, weights=str(path))
    with pytest.raises(CheckpointError) as refused:
        _obtain(mc, tmp_path)
    message = str(refused.value)
    assert str(path) in message and "'r18'" in message and "argparse.Namespace" in message
    assert "`allow_pickle = true`" in message and "--allow-pickle" in message and "trust" in message
    assert "\n" not in message
    model, info = _obtain(replace(mc, allow_pickle=True), tmp_path)
    assert info["source"] == "weights" and _same_weights(model, resnet18_10)


@pytest.fixture(scope="module")
def vone_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A VOneResNet50 checkpoint in the released layout, its flags an argparse.Namespace."""
    torch.manual_seed(0)
    model = create_model("vone_resnet50", simple_channels=4, complex_channels=4, num_classes=10)
    plain = save_reference_checkpoint(model, tmp_path_factory.mktemp("vone") / "voneresnet50_e70.pth.tar")
    obj = torch.load(plain, weights_only=True)
    obj["flags"] = argparse.Namespace(**obj["flags"])
    torch.save(obj, plain)
    return plain, model.state_dict()


def test_vonenet_release_with_namespace_flags(tmp_path: Path, vone_file) -> None:
    path, state = vone_file
    mc = ModelConfig(name="vone", architecture="vone_resnet50", weights=str(path))
    with pytest.raises(CheckpointError, match=r"allow_pickle = true.*--allow-pickle"):
        _obtain(mc, tmp_path)
    model, info = _obtain(replace(mc, allow_pickle=True), tmp_path)
    assert info["source"] == "weights" and info["path"] == str(path)
    assert info["gabor_verified"] is True  # banks regenerate from gabor_seed 0
    assert model.vone_block.simple_channels == 4 and model.model.fc.out_features == 10  # from the file
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_cornet_weights_go_through_the_pickle_gate(tmp_path: Path) -> None:
    path = tmp_path / "cornet_s-1d3f7974.pth"
    torch.save({"flags": argparse.Namespace(arch="cornet_s"),
                "state_dict": {"module.V1.conv1.weight": torch.zeros(64, 3, 7, 7)}}, path)
    mc = ModelConfig(name="cs", architecture="cornet_s", weights=str(path))
    with pytest.raises(CheckpointError, match="allow_pickle = true"):
        _obtain(mc, tmp_path)
    with pytest.raises(CheckpointError, match="CORnet-S weights .* does not match.*missing key"):
        _obtain(replace(mc, allow_pickle=True), tmp_path)  # past the gate, then a clear key check


def test_random_and_pretrained_packaged_weights(tmp_path: Path) -> None:
    from robustlens.models.zoo import efficientnet_lite0_weights_path
    from robustlens.study.models import build_seeded

    try:
        packaged = efficientnet_lite0_weights_path()
    except CheckpointError as err:
        pytest.skip(str(err))
    pretrained, info = _obtain(ModelConfig(name="p", architecture="efficientnet_lite0", pretrained=True), tmp_path)
    assert info == {"source": "pretrained", "path": str(packaged)}
    assert _same_weights(pretrained, create_model("efficientnet_lite0"))  # the constructor's default
    random, info = _obtain(ModelConfig(name="r", architecture="efficientnet_lite0", random=True, seed=3), tmp_path)
    assert info == {"source": "random", "seed": 3}
    assert _same_weights(random, build_seeded("efficientnet_lite0", {"pretrained": False}, 3))
    first = "model.stem.0.weight" if "model.stem.0.weight" in random.state_dict() else next(iter(random.state_dict()))
    assert not torch.equal(random.state_dict()[first], pretrained.state_dict()[first])
    with pytest.raises(ConfigError, match="contradicts"):
        _obtain(ModelConfig(name="x", architecture="efficientnet_lite0", random=True,
                            options={"pretrained": True}), tmp_path)


# --------------------------------------------------------------------- corrupt and foreign files
def test_broken_pth_files_are_one_clear_error(tmp_path: Path) -> None:
    state = {"conv.weight": torch.randn(8, 3, 3, 3), "fc.weight": torch.randn(10, 8)}
    torch.save(state, tmp_path / "zip.pth")
    torch.save(state, tmp_path / "legacy.pth.tar", _use_new_zipfile_serialization=False)
    assert check_weights_file(tmp_path / "zip.pth") == "zip"
    assert check_weights_file(tmp_path / "legacy.pth.tar") == "pickle"
    cases = {
        "zip.pth": "truncated",
        "legacy.pth.tar": "truncated",
    }
    for name in cases:
        _truncate(tmp_path / name, 0.6)
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "page.pth").write_text("<html>404 Not Found</html>")
    cases |= {"empty.pth": "empty", "page.pth": "not a PyTorch weights file"}
    for name, words in cases.items():
        path = tmp_path / name
        with pytest.raises(CheckpointError) as caught:
            read_weights_file(path)
        assert words in str(caught.value) and str(path) in str(caught.value), name
        assert _unchained(caught.value)
        mc = ModelConfig(name="m", architecture="resnet18", weights=str(path))
        with pytest.raises(CheckpointError, match=str(path)):
            _obtain(mc, tmp_path)


def test_unsafe_pickle_error_names_the_global(tmp_path: Path) -> None:
    torch.save({"hook": torchvision.models.resnet18}, tmp_path / "unsafe.pth")
    with pytest.raises(UnsafePickleError, match="resnet18.*allow_pickle=True") as caught:
        read_weights_file(tmp_path / "unsafe.pth")
    assert caught.value.path == tmp_path / "unsafe.pth"
    assert isinstance(caught.value, CheckpointError)


def test_corrupt_robustlens_checkpoints(tmp_path: Path, digits_checkpoint: Path) -> None:
    weights, meta = checkpoint_paths(digits_checkpoint)
    assert check_checkpoint(weights)["architecture"] == "digits_cnn"
    good_weights, good_meta = weights.read_bytes(), meta.read_text()
    mc = ModelConfig(name="d", architecture="digits_cnn", checkpoint=str(weights))

    def broken(words: str, culprit: Path) -> None:
        for check in (lambda: check_checkpoint(weights), lambda: load_checkpoint(weights),
                      lambda: _obtain(mc, tmp_path)):
            with pytest.raises(CheckpointError) as caught:
                check()
            assert words in str(caught.value) and str(culprit) in str(caught.value)
        weights.write_bytes(good_weights)
        meta.write_text(good_meta)

    weights.write_bytes(good_weights[:-100])
    broken("truncated", weights)
    weights.write_bytes(good_weights[:5])
    broken("not a safetensors file", weights)
    meta.write_text(good_meta[: len(good_meta) // 2])
    broken("not valid JSON", meta)
    meta.write_text("[1, 2]")
    broken("no 'architecture'", meta)
    meta.unlink()
    broken("metadata not found", meta)
    load_checkpoint(weights)  # restored


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture()
def fmnist_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    for prefix, n in (("train", 20), ("t10k", 10)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return root


def test_corrupt_fashion_mnist_files(fmnist_root: Path) -> None:
    images = fmnist_root / "t10k-images-idx3-ubyte.gz"
    assert len(load_fashion_mnist("test", fmnist_root)) == 10
    assert check_idx_file(images) == (10, 28, 28)
    good = images.read_bytes()
    raw = gzip.decompress(good)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    variants = {  # what: (content, words, does the cheap header check see it)
        "truncated gzip": (good[: len(good) // 2], "truncated", True),
        "not gzip": (raw, "truncated or corrupt", True),
        "flipped byte (CRC)": (bytes(flipped), "corrupt", False),  # only a full read sees it
        "wrong magic": (gzip.compress(b"\x08\x03\x00\x00" + raw[4:]), "not an IDX file", True),
        "wrong size": (gzip.compress(raw[:-28 * 28]), "truncated or corrupt", True),
        "header only": (gzip.compress(raw[:6]), "truncated", True),
        "empty": (b"", "empty", True),
    }
    for what, (content, words, cheap) in variants.items():
        images.write_bytes(content)
        readers = [lambda: load_fashion_mnist("test", fmnist_root), lambda: read_idx(images)]
        for read in readers + ([lambda: check_idx_file(images)] if cheap else []):
            with pytest.raises(DataError) as caught:
                read()
            message = str(caught.value)
            assert str(images) in message and words in message and "again" in message, (what, message)
            assert _unchained(caught.value)
    images.write_bytes(good)


# --------------------------------------------------------------------- preflight
def _study(*models: ModelConfig, data: DataConfig = DATA) -> StudyConfig:
    return StudyConfig(name="s", data=data, models=tuple(models), attacks=(), analyses={})


def test_preflight_lists_every_bad_path(tmp_path: Path, digits_checkpoint: Path) -> None:
    weights, _ = checkpoint_paths(digits_checkpoint)
    torch.save({"a": torch.zeros(3)}, tmp_path / "ok.pth")
    torch.save({"a": torch.zeros(1000)}, tmp_path / "cut.pth")
    _truncate(tmp_path / "cut.pth")
    good = [ModelConfig(name="ckpt", architecture="digits_cnn", checkpoint=str(weights)),
            ModelConfig(name="tv", architecture="resnet18", weights=str(tmp_path / "ok.pth")),
            ModelConfig(name="rand", architecture="digits_cnn", random=True)]
    check_paths(_study(*good))
    bad = [ModelConfig(name="gone", architecture="digits_cnn", checkpoint=str(tmp_path / "gone")),
           ModelConfig(name="cut", architecture="resnet18", weights=str(tmp_path / "cut.pth")),
           ModelConfig(name="folder", architecture="resnet50", weights=str(tmp_path)),
           ModelConfig(name="other", architecture="fmnist_cnn", checkpoint=str(weights))]
    with pytest.raises(CheckpointError) as caught:
        check_paths(_study(*good, *bad))
    message = str(caught.value)
    assert message.startswith("4 problems") and "\n" not in message
    for i, mc in enumerate(bad, 1):
        assert f"({i}) model {mc.name!r}" in message
    assert "'ckpt'" not in message and "'tv'" not in message
    assert str(tmp_path / "gone.safetensors") in message and str(tmp_path / "cut.pth") in message
    assert "truncated" in message and "is not a file" in message and "holds a 'digits_cnn'" in message

    missing_root = DataConfig(dataset="fashion_mnist", root=str(tmp_path / "no-data"))
    with pytest.raises(DataError, match=r"data root not found: .*no-data.*--data-root"):
        check_paths(_study(*good, data=missing_root))
    with pytest.raises(ConfigError, match=r"^2 problems.*\(1\) model 'cut'.*\(2\) \[data\]: data root not found"):
        check_paths(_study(bad[1], data=missing_root))
    check_paths(_study(*good, data=missing_root), check_data=False)  # the caller brings the images
    with pytest.raises(DataError, match="is a file, not a folder"):
        check_paths(_study(*good, data=DataConfig(dataset="imagenet", root=str(tmp_path / "ok.pth"))))
    with pytest.raises(DataError, match="needs a root folder"):
        check_paths(_study(*good, data=DataConfig(dataset="imagenet", root=None)))


def test_preflight_checks_fashion_mnist_files(fmnist_root: Path) -> None:
    data = DataConfig(dataset="fashion_mnist", root=str(fmnist_root))
    random = ModelConfig(name="r", architecture="fmnist_cnn", random=True)
    trained = ModelConfig(name="t", architecture="fmnist_cnn", train=parse_config(
        {"models": [{"name": "t", "architecture": "fmnist_cnn", "train": {"epochs": 1}}]}).models[0].train)
    check_paths(_study(random, trained, data=data))
    _truncate(fmnist_root / "train-labels-idx1-ubyte.gz")
    check_paths(_study(random, data=data))  # the test split alone is fine
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz.* truncated"):
        check_paths(_study(random, trained, data=data))


# --------------------------------------------------------------------- the CLI
CONFIG = """
[study]
name = "loading"
[data]
dataset = "digits"
n_per_class = 2
[[models]]
name = "m"
architecture = "{arch}"
{source}
"""


def _cli(tmp_path: Path, arch: str, source: str, *flags: str) -> int:
    cfg = tmp_path / "study.toml"
    cfg.write_text(CONFIG.format(arch=arch, source=source))
    return main(["study", str(cfg), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                 "--quiet", *flags])


@pytest.mark.parametrize("broken", ["checkpoint", "weights", "pickle"])
def test_cli_bad_files_exit_2_with_one_line(tmp_path: Path, digits_checkpoint: Path, broken: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    weights, _ = checkpoint_paths(digits_checkpoint)
    if broken == "checkpoint":
        culprit = _truncate(weights, 0.9)
        arch, source = "digits_cnn", f'checkpoint = "{weights}"'
    elif broken == "weights":
        culprit = tmp_path / "cut.pth.tar"
        torch.save({"state_dict": {"a": torch.zeros(100)}}, culprit)
        _truncate(culprit)
        arch, source = "resnet18", f'weights = "{culprit}"'
    else:
        culprit = tmp_path / "namespace.pth.tar"
        torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": {}}, culprit)
        arch, source = "resnet18", f'weights = "{culprit}"'
    assert _cli(tmp_path, arch, source) == 2
    err = capsys.readouterr().err
    assert err.startswith("robustlens: error: ") and err.count("\n") == 1, err
    assert str(culprit) in err and "Traceback" not in err
    if broken == "pickle":
        assert "allow_pickle = true" in err and "--allow-pickle" in err


def test_cli_allow_pickle_flag_trusts_every_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import robustlens.study

    seen: list[StudyConfig] = []

    def fake_run_study(config: StudyConfig, *args: object, **kwargs: object) -> None:
        seen.append(config)
        raise ConfigError("stop here")

    monkeypatch.setattr(robustlens.study, "run_study", fake_run_study)
    assert _cli(tmp_path, "digits_cnn", "random = true") == 2
    assert _cli(tmp_path, "digits_cnn", "random = true", "--allow-pickle") == 2
    assert [m.allow_pickle for c in seen for m in c.models] == [False, True]
