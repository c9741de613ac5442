"""Class selection: seeded draws, named classes (WordNet ids, indices, names), folders present."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from robustlens.data import (
    ImageDataset,
    SyntheticImages,
    class_balanced_indices,
    classes_present,
    imagenet_wnids,
    load_dataset,
    resolve_classes,
    select_classes,
)
from robustlens.errors import DataError

sys.path.insert(0, str(Path(__file__).parent))
from _fake_imagenet import fake_image, make_fake_imagenet  # noqa: E402

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n02085620"]  # tench ... Chihuahua


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_imagenet(tmp_path_factory.mktemp("imagenet"), WNIDS, per_class=2, size=(24, 20),
                              splits=("val",))


def test_seeded_draw_is_reproducible_and_keeps_labels_and_names(digits: ImageDataset) -> None:
    a = select_classes(digits, 4, seed=3)
    b = select_classes(digits, 4, seed=3)
    chosen = classes_present(a)
    assert len(chosen) == 4 and chosen == classes_present(b)
    assert {tuple(classes_present(select_classes(digits, 4, seed=s))) for s in range(6)} != {tuple(chosen)}
    assert a.class_names == digits.class_names and a.num_classes == 10  # the model's own indices
    expected = torch.isin(digits.labels, torch.tensor(chosen))
    assert torch.equal(a.labels, digits.labels[expected])
    assert torch.equal(a.images, digits.images[expected])  # dataset order kept
    assert len(select_classes(digits, 10, seed=0)) == len(digits)


def test_lists_mix_indices_and_names(digits: ImageDataset, fashion_mnist_test: ImageDataset) -> None:
    assert resolve_classes(digits, [7, "3", 0]) == [0, 3, 7]
    fm = select_classes(fashion_mnist_test, ["Sneaker", "trouser", 9])
    assert classes_present(fm) == [1, 7, 9] and len(fm) == 3000
    assert fm.class_names[7] == "Sneaker"


def test_imagenet_wnids_indices_names(fake_root: Path) -> None:
    full = load_dataset("imagenet", "val", fake_root, resize=20, crop=16)
    assert classes_present(full) == [0, 1, 2, 3, 151]
    picked = load_dataset("imagenet", "val", fake_root, resize=20, crop=16,
                          classes=["n01443537", 0, "Chihuahua"])
    assert classes_present(picked) == [0, 1, 151] and len(picked) == 6
    assert picked.num_classes == 1000 and picked.class_names[151] == "Chihuahua"
    assert picked.class_ids[151] == "n02085620"  # type: ignore[attr-defined]
    drawn = load_dataset("imagenet", "val", fake_root, resize=20, crop=16, classes=3, seed=0)
    assert len(classes_present(drawn)) == 3 and set(classes_present(drawn)) <= {0, 1, 2, 3, 151}
    assert classes_present(drawn) == classes_present(select_classes(full, 3, seed=0))
    folders = load_dataset("imagenet", "val", fake_root, resize=20, crop=16, classes="folders")
    assert classes_present(folders) == [0, 1, 2, 3, 151] and folders.num_classes == 1000
    # n_per_class after a selection: only the classes chosen count
    picks = class_balanced_indices(picked.labels, 1, seed=0, num_classes=picked.num_classes)
    assert picked.labels[picks].tolist() == [0, 1, 151]


def test_folders_of_other_names(tmp_path: Path) -> None:
    for k, name in enumerate(["dogs", "cats"]):
        (tmp_path / "val" / name).mkdir(parents=True)
        for i in range(k + 1):
            fake_image(i, (20, 20)).save(tmp_path / "val" / name / f"{i}.png")
    with pytest.raises(DataError, match='classes = "folders"'):
        load_dataset("imagenet", "val", tmp_path, resize=20, crop=16)
    ds = load_dataset("imagenet", "val", tmp_path, resize=20, crop=16, classes="folders")
    assert ds.class_names == ("cats", "dogs") and ds.labels.tolist() == [0, 0, 1]
    assert resolve_classes(ds, ["dogs"]) == [1]


def test_synthetic_images() -> None:
    data = SyntheticImages(40, image_shape=(3, 8, 8), num_classes=20)
    sub = select_classes(data, ["class_3", 5], seed=0)
    assert isinstance(sub, SyntheticImages) and sub.labels.tolist() == [3, 5, 3, 5]
    assert len(classes_present(select_classes(data, 7, seed=1))) == 7


def test_errors_are_clear(digits: ImageDataset, fake_root: Path) -> None:
    imagenet = load_dataset("imagenet", "val", fake_root, resize=20, crop=16)
    with pytest.raises(DataError, match=r"unknown WordNet id 'n01440765'.*n01440764"):
        resolve_classes(imagenet, ["n01440765"])
    with pytest.raises(DataError, match=r"unknown class name 'tenchh'.*tench"):
        resolve_classes(imagenet, ["tenchh"])
    with pytest.raises(DataError, match=r"no images of n01530575 \(index 10, 'brambling'\)"):
        resolve_classes(imagenet, ["n01530575"])
    with pytest.raises(DataError, match="has images of only 5 classes; draw at most 5"):
        resolve_classes(imagenet, 6)
    with pytest.raises(DataError, match="must be >= 1"):
        resolve_classes(digits, 0)
    with pytest.raises(DataError, match=r"'n01440764' and 0 name the same class"):
        resolve_classes(imagenet, [0, "n01440764"])
    with pytest.raises(DataError, match=r"index 10 is out of range.*0 \.\. 9"):
        resolve_classes(digits, [10])
    with pytest.raises(DataError, match=r"non-empty list"):
        resolve_classes(digits, [])
    with pytest.raises(DataError, match=r"the string 'folder'.*'folders'"):
        resolve_classes(digits, "folder")
    with pytest.raises(DataError, match="received True"):
        resolve_classes(digits, True)
    with pytest.raises(DataError, match=r"received 1\.5"):
        resolve_classes(digits, [1.5])
    twins = ImageDataset(torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 2, 2]), ("crane", "crane", "ibis"))
    with pytest.raises(DataError, match=r"'crane' is ambiguous: 2 classes.*\(0, 1\)"):
        resolve_classes(twins, ["crane"])


def test_wnid_list_is_the_model_order() -> None:
    # the seeded draw is over the classes present, whatever the label range
    assert imagenet_wnids()[151] == "n02085620"


STUDY = """
[study]
name = "classes"
batch_size = 64
[data]
dataset = "digits"
split = "test"
classes = {classes}
n_per_class = 4
seed = 1
[[models]]
name = "random"
architecture = "digits_cnn"
random = true
[[attacks]]
type = "fgsm"
eps = [0.1]
[analyses.manifolds]
n_bootstrap = 10
[analyses.per_class]
"""


def test_study_data_classes_keep_indices_and_names(tmp_path: Path) -> None:
    import pandas as pd

    from robustlens.study import parse_config, run_study

    config = parse_config(__import__("tomllib").loads(STUDY.format(classes='[7, "3", 0]')))
    assert config.data.classes == (7, "3", 0)
    run_study(config, tmp_path / "run", progress=False)
    per_class = pd.read_parquet(tmp_path / "run" / "results" / "per_class.parquet")
    assert sorted(per_class["class_index"].unique()) == [0, 3, 7]
    assert set(per_class["class_name"]) == {"0", "3", "7"}
    manifolds = pd.read_parquet(tmp_path / "run" / "results" / "manifolds.parquet")
    assert sorted(manifolds["class"].unique()) == [0, 3, 7]
    assert (manifolds["n_images"] == 4).all()
    drawn = parse_config(__import__("tomllib").loads(STUDY.format(classes="3")))
    assert drawn.data.classes == 3


@pytest.mark.parametrize(("spec", "message"), [
    ("0", r"\[data\].classes must be >= 1"),
    ('"folder"', r"received 'folder'.*'folders'"),
    ("[]", "empty list"),
    ("[true]", "received True"),
])
def test_study_config_errors(spec: str, message: str) -> None:
    from robustlens.errors import ConfigError
    from robustlens.study import parse_config

    with pytest.raises(ConfigError, match=message):
        parse_config(__import__("tomllib").loads(STUDY.format(classes=spec)))
