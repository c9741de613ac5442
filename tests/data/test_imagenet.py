"""ImageNet-style folders (all distributed layouts, on a tiny fake ImageNet) and synthetic images."""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import transforms

from robustlens.data import Dataset, ImageFolder, SyntheticImages, imagenet_wnids, load_dataset, load_imagenet
from robustlens.data.imagenet import read_image
from robustlens.errors import DataError

sys.path.insert(0, str(Path(__file__).parent))
from _fake_imagenet import Layout, fake_image, make_fake_imagenet, write_devkit  # noqa: E402

WNIDS = ["n01530575", "n01440764", "n01484850"]  # not in sorted order on purpose
SORTED = sorted(WNIDS)
EXAMPLE = Path(__file__).parents[2] / "examples" / "vonenet_imagenet.toml"


def _names(ds: ImageFolder) -> list[str]:
    return [Path(f).name for f in ds.files]


def _expected_val(per_class: int) -> tuple[list[str], list[int]]:
    """File names and labels of make_fake_imagenet's val split, in class-then-name order."""
    n = per_class * len(WNIDS)
    pairs = sorted((WNIDS[(k - 1) % len(WNIDS)], f"ILSVRC2012_val_{k:08d}.JPEG") for k in range(1, n + 1))
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    return [name for _, name in pairs], [index[w] for w, _ in pairs]


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_imagenet(tmp_path_factory.mktemp("imagenet"), WNIDS, per_class=3, size=(48, 40))


# ---- the class list ---------------------------------------------------------------------------

def test_wnids_are_the_1000_sorted_imagenet_ids() -> None:
    from robustlens.models.zoo import imagenet_classes

    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids)) == len(imagenet_classes())
    assert list(wnids) == sorted(wnids)
    assert wnids[0] == "n01440764" and imagenet_classes()[0] == "tench"
    assert wnids[1] == "n01443537" and imagenet_classes()[1] == "goldfish"
    assert wnids[-1] == "n15075141" and imagenet_classes()[-1] == "toilet tissue"


# ---- layouts, labels and order ----------------------------------------------------------------

def test_class_folder_val(fake_root: Path) -> None:
    from robustlens.models.zoo import imagenet_classes

    ds = load_imagenet(fake_root, "val")
    names, labels = _expected_val(3)
    assert _names(ds) == names
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == labels
    assert ds.labels.tolist() == sorted(ds.labels.tolist())  # class, then file name
    assert ds.class_names == imagenet_classes() and ds.num_classes == 1000
    assert ds.class_names[ds.labels[0]] == "tench"
    assert ds.name == "imagenet/val" and len(ds) == 9 and ds.image_shape == (3, 224, 224)
    assert isinstance(ds, Dataset)


def test_train_split_and_torchvision_order(fake_root: Path) -> None:
    ds = load_imagenet(fake_root, "train")
    assert ds.name == "imagenet/train"
    assert _names(ds) == [f"{w}_{k}.JPEG" for w in SORTED for k in range(3)]
    reference = __import__("torchvision").datasets.ImageFolder(str(fake_root / "train"))
    assert [Path(p).name for p, _ in reference.samples] == _names(ds)
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    assert ds.labels.tolist() == [index[w] for w in SORTED for _ in range(3)]


@pytest.mark.parametrize("layout", ["kaggle_csv", "devkit"])
def test_flat_val_matches_class_folders(tmp_path: Path, fake_root: Path, layout: Layout) -> None:
    root = make_fake_imagenet(tmp_path, WNIDS, per_class=3, size=(48, 40), splits=("val",), val_layout=layout)
    assert not any(p.is_dir() for p in (root / "val").iterdir())  # really flat
    flat, folders = load_imagenet(root, "val"), load_imagenet(fake_root, "val")
    assert _names(flat) == _names(folders)
    assert torch.equal(flat.labels, folders.labels)
    assert torch.equal(flat.get_batch(torch.arange(9))[0], folders.get_batch(torch.arange(9))[0])


def test_devkit_ids_map_through_meta_mat(tmp_path: Path) -> None:
    # ILSVRC2012_IDs are not class indices: id 7 is the first wnid, id 2 the second, ...
    ids = {"n01440764": 7, "n01443537": 2, "n01484850": 1000}
    truth = ["n01484850", "n01440764", "n01443537", "n01440764"]
    val = tmp_path / "val"
    val.mkdir()
    for n in range(1, 5):
        fake_image(n, (20, 20)).save(val / f"ILSVRC2012_val_{n:08d}.JPEG")
    write_devkit(val, ids, truth)  # devkit files inside the split folder
    ds = load_imagenet(tmp_path, "val")
    assert _names(ds) == ["ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000004.JPEG",
                          "ILSVRC2012_val_00000003.JPEG", "ILSVRC2012_val_00000001.JPEG"]
    assert ds.labels.tolist() == [0, 0, 1, 2]  # n01440764, n01443537, n01484850: classes 0, 1, 2
    folders = load_imagenet(tmp_path, "val", classes="folders")
    assert folders.files == ds.files and folders.class_names == ("n01440764", "n01443537", "n01484850")
    assert folders.labels.tolist() == [0, 0, 1, 2]


def test_kaggle_tree(tmp_path: Path) -> None:
    make_fake_imagenet(tmp_path / "staging", WNIDS, per_class=2, size=(30, 30), val_layout="kaggle_csv")
    tree = tmp_path / "kaggle" / "ILSVRC" / "Data" / "CLS-LOC"
    tree.mkdir(parents=True)
    for split in ("train", "val"):
        shutil.move(tmp_path / "staging" / split, tree / split)
    shutil.move(tmp_path / "staging" / "LOC_val_solution.csv", tmp_path / "kaggle" / "LOC_val_solution.csv")
    val, train = load_imagenet(tmp_path / "kaggle", "val"), load_imagenet(tmp_path / "kaggle", "train")
    assert len(val) == len(train) == 6
    assert val.labels.tolist() == train.labels.tolist()


def test_root_may_be_the_split_folder(fake_root: Path) -> None:
    direct, usual = load_imagenet(fake_root / "val", "val"), load_imagenet(fake_root, "val")
    assert direct.files == usual.files and torch.equal(direct.labels, usual.labels)
    with pytest.raises(DataError, match="looks like the 'val' split"):
        load_imagenet(fake_root / "val", "train")


def test_classes_folders(tmp_path: Path) -> None:
    for k, name in enumerate(["dogs", "cats", "n01440764"]):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(k + 1):
            fake_image(i, (20, 30)).save(tmp_path / "train" / name / f"{i}.png")
    with pytest.raises(DataError, match=r"cats, dogs .*classes=\"folders\""):
        load_imagenet(tmp_path, "train")
    ds = load_imagenet(tmp_path, "train", classes="folders")
    assert ds.class_names == ("cats", "dogs", "n01440764") and ds.num_classes == 3
    assert ds.labels.tolist() == [0, 0, 1, 2, 2, 2]
    with pytest.raises(DataError, match="classes must be one of"):
        load_imagenet(tmp_path, "train", classes="folder")  # type: ignore[arg-type]


def test_extensions_case_insensitive_and_junk_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "val" / "n01440764"
    folder.mkdir(parents=True)
    for i, name in enumerate(["a.jpg", "b.JPG", "c.jpeg", "d.PNG", "e.Jpeg", "f.bmp", "g.webp"]):
        fake_image(i, (20, 20)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "._a.JPEG").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata file
    (tmp_path / "val" / ".ipynb_checkpoints").mkdir()
    ds = load_imagenet(tmp_path, "val")
    assert _names(ds) == ["a.jpg", "b.JPG", "c.jpeg", "d.PNG", "e.Jpeg", "f.bmp", "g.webp"]
    images, labels = ds.get_batch(torch.arange(len(ds)))
    assert images.shape == (7, 3, 224, 224) and labels.tolist() == [0] * 7


def test_load_dataset_dispatches(fake_root: Path) -> None:
    ds = load_dataset("imagenet", "val", fake_root, resize=40, crop=32)
    assert isinstance(ds, ImageFolder) and ds.image_shape == (3, 32, 32) and len(ds) == 9
    assert ds.get_batch(torch.tensor([0]))[0].shape == (1, 3, 32, 32)


# ---- preprocessing against torchvision ---------------------------------------------------------

def _write(path: Path, size: tuple[int, int], mode: str, seed: int) -> Path:
    image = fake_image(seed, size)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


@pytest.mark.parametrize(("size", "mode", "suffix"), [
    ((300, 200), "RGB", ".JPEG"),   # landscape, downscaled
    ((181, 333), "RGB", ".JPEG"),   # portrait, odd sizes
    ((256, 256), "RGB", ".png"),    # already at size
    ((90, 70), "L", ".JPEG"),       # grey, upscaled
    ((260, 300), "CMYK", ".jpg"),   # CMYK JPEG
    ((240, 250), "RGBA", ".png"),   # alpha dropped
    ((230, 400), "P", ".png"),      # palette
])
@pytest.mark.parametrize(("resize", "crop"), [(256, 224), (64, 56)])
def test_preprocessing_equals_torchvision(tmp_path: Path, size: tuple[int, int], mode: str, suffix: str,
                                          resize: int, crop: int) -> None:
    path = _write(tmp_path / f"img{suffix}", size, mode, seed=sum(size))
    reference = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop), transforms.ToTensor()])
    with Image.open(path) as image:
        expected = reference(image.convert("RGB"))
    ours = read_image(path, resize, crop)
    assert ours.dtype == torch.uint8 and ours.shape == (3, crop, crop)
    assert torch.equal(ours.float().div(255), expected)


def test_get_batch_matches_single_images_and_threads(fake_root: Path) -> None:
    ds = load_imagenet(fake_root, "val", resize=48, crop=40, n_threads=3)
    order = torch.tensor([8, 0, 4, 4, 2])
    images, labels = ds.get_batch(order)
    assert images.dtype == torch.float32 and images.shape == (5, 3, 40, 40)
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    assert torch.equal(labels, ds.labels[order])
    for row, i in zip(images, order.tolist(), strict=True):
        assert torch.equal(row, read_image(ds.files[i], 48, 40).float() / 255)
    single = ImageFolder(ds.files, ds.labels, ds.class_names, ds.name, 48, 40, n_threads=1)
    assert torch.equal(single.get_batch(order)[0], images)
    empty, no_labels = ds.get_batch(torch.tensor([], dtype=torch.int64))
    assert empty.shape == (0, 3, 40, 40) and no_labels.shape == (0,)


def test_bad_indices(fake_root: Path) -> None:
    ds = load_imagenet(fake_root, "val")
    for bad, match in [(torch.tensor([9]), r"\[0, 9\)"), (torch.tensor([-1]), r"\[0, 9\)"),
                       (torch.tensor([[0]]), "1-D integer"), (torch.tensor([0.0]), "1-D integer")]:
        with pytest.raises(DataError, match=match):
            ds.get_batch(bad)
        with pytest.raises(DataError, match=match):
            ds.subset(bad)


# ---- subsets ----------------------------------------------------------------------------------

def test_subset_is_lazy(tmp_path: Path) -> None:
    root = make_fake_imagenet(tmp_path, WNIDS, per_class=2, size=(30, 30), splits=("val",))
    ds = load_imagenet(root, "val", resize=32, crop=32)
    kept = ds.subset(torch.tensor([5, 1]))
    for i in (0, 2, 3, 4):  # the images not kept disappear: nothing was read, nothing breaks
        Path(ds.files[i]).unlink()
    assert kept.files == (ds.files[5], ds.files[1]) and kept.labels.tolist() == [ds.labels[5], ds.labels[1]]
    assert kept.get_batch(torch.arange(2))[0].shape == (2, 3, 32, 32)
    with pytest.raises(DataError, match="cannot read image"):
        ds.get_batch(torch.tensor([0]))


def test_ds_factor_subset(fake_root: Path) -> None:
    ds = load_imagenet(fake_root, "val", resize=40, crop=40)
    every = ds.subset(torch.arange(0, len(ds), 4))  # the runner's DS_factor
    assert every.files == (ds.files[0], ds.files[4], ds.files[8])
    assert torch.equal(every.labels, ds.labels[[0, 4, 8]])
    assert torch.equal(every.get_batch(torch.arange(3))[0], ds.get_batch(torch.tensor([0, 4, 8]))[0])
    again = every.subset(torch.tensor([2]))
    assert again.files == (ds.files[8],) and again.name == ds.name and again.crop == 40


# ---- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "not_an_image", "empty"])
def test_corrupt_image_names_the_file(tmp_path: Path, damage: str) -> None:
    root = make_fake_imagenet(tmp_path, WNIDS, per_class=2, size=(200, 160), splits=("val",))
    ds = load_imagenet(root, "val")
    bad = Path(ds.files[3])
    data = bad.read_bytes()
    bad.write_bytes({"truncated": data[: len(data) // 2], "not_an_image": b"<html>404</html>", "empty": b""}[damage])
    assert ds.get_batch(torch.tensor([0, 1, 2]))[0].shape[0] == 3
    with pytest.raises(DataError, match=rf"cannot read image .*{bad.name}.*re-download"):
        ds.get_batch(torch.arange(len(ds)))
    with pytest.raises(DataError, match=bad.name):
        ds.get_batch(torch.tensor([3]))


def test_missing_root_and_split(tmp_path: Path, fake_root: Path) -> None:
    with pytest.raises(DataError, match="does not exist: expected a folder holding train/ and val/"):
        load_imagenet(tmp_path / "nowhere", "val")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        load_imagenet(tmp_path / "file", "val")
    with pytest.raises(DataError, match=r"no 'test' split .*found train, val.*use 'val'"):
        load_imagenet(fake_root, "test")
    with pytest.raises(DataError, match="the imagenet dataset needs a root folder"):
        load_dataset("imagenet", "val", None)


def test_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match="no images in .*found nothing"):
        load_imagenet(tmp_path, "val")
    (tmp_path / "val" / "n01440764").mkdir()
    (tmp_path / "val" / "n01440764" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="found 1 folders without images"):
        load_imagenet(tmp_path, "val")


def test_flat_val_label_errors(tmp_path: Path) -> None:
    root = make_fake_imagenet(tmp_path, WNIDS, per_class=1, size=(20, 20), splits=("val",), val_layout="devkit")
    devkit = root / "ILSVRC2012_devkit_t12" / "data"
    (devkit / "meta.mat").unlink()
    with pytest.raises(DataError, match="but not .*meta.mat"):
        load_imagenet(root, "val")
    shutil.rmtree(root / "ILSVRC2012_devkit_t12")
    with pytest.raises(DataError, match="holds images directly but no labels.*LOC_val_solution.csv"):
        load_imagenet(root, "val")
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01530575 1 2 3 4\n")
    with pytest.raises(DataError, match=r"2 images in .* have no label \(ILSVRC2012_val_00000002.JPEG"):
        load_imagenet(root, "val")
    (root / "LOC_val_solution.csv").write_text("id,label\n")
    with pytest.raises(DataError, match="not Kaggle's LOC_val_solution.csv"):
        load_imagenet(root, "val")
    (root / "val" / "n01440764").mkdir()
    with pytest.raises(DataError, match="both 3 images directly and class folders"):
        load_imagenet(root, "val")


def test_bad_geometry_and_labels(fake_root: Path) -> None:
    with pytest.raises(DataError, match="crop <= resize"):
        load_imagenet(fake_root, "val", resize=100, crop=128)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 2\)"):
        ImageFolder(("a.JPEG",), torch.tensor([2]), ("x", "y"))
    with pytest.raises(DataError, match="labels must be int64"):
        ImageFolder(("a.JPEG",), torch.tensor([0, 1]), ("x", "y"))


# ---- synthetic images -------------------------------------------------------------------------

def test_synthetic_images_are_deterministic_per_index() -> None:
    ds = SyntheticImages(n_images=50_000, image_shape=(3, 17, 23), num_classes=10, seed=3)
    assert isinstance(ds, Dataset) and len(ds) == 50_000 and ds.image_shape == (3, 17, 23)
    images, labels = ds.get_batch(torch.tensor([7, 49_999, 0]))
    assert images.dtype == torch.float32 and images.shape == (3, 3, 17, 23)
    assert 0 <= float(images.min()) and float(images.max()) <= 1 and float(images.std()) > 0.1
    assert labels.tolist() == [7, 9, 0] and torch.equal(ds.labels[:12], torch.arange(12) % 10)
    alone = ds.get_batch(torch.tensor([49_999]))[0][0]
    assert torch.equal(alone, images[1])  # same image whatever batch it is in
    again = SyntheticImages(n_images=50_000, image_shape=(3, 17, 23), num_classes=10, seed=3)
    assert torch.equal(again.get_batch(torch.tensor([7, 49_999, 0]))[0], images)  # a fresh object agrees
    other_seed = SyntheticImages(n_images=50_000, image_shape=(3, 17, 23), num_classes=10, seed=4)
    assert not torch.equal(other_seed.get_batch(torch.tensor([7]))[0][0], images[0])
    assert not torch.equal(ds.get_batch(torch.tensor([17]))[0][0], images[0])  # same class, other image


def test_synthetic_subset_and_labels() -> None:
    ds = SyntheticImages(n_images=100, image_shape=(1, 8, 8), num_classes=7, seed=0, label_order="random")
    assert torch.equal(ds.labels, SyntheticImages(100, (1, 8, 8), 7, 0, "random").labels)
    assert int(ds.labels.max()) < 7 and len(set(ds.labels.tolist())) == 7
    sub = ds.subset(torch.arange(0, 100, 10)).subset(torch.tensor([3, 1]))
    assert len(sub) == 2 and torch.equal(sub.labels, ds.labels[[30, 10]])
    assert torch.equal(sub.get_batch(torch.arange(2))[0], ds.get_batch(torch.tensor([30, 10]))[0])
    with pytest.raises(DataError, match=r"\[0, 2\)"):
        sub.get_batch(torch.tensor([2]))


def test_synthetic_classes_differ() -> None:
    ds = SyntheticImages(n_images=40, image_shape=(3, 32, 32), num_classes=4)
    images, labels = ds.get_batch(torch.arange(40))
    means = torch.stack([images[labels == c].mean(0) for c in range(4)])  # noise and phase average out
    within = (images[labels == 0] - means[0]).pow(2).mean()
    between = (means[0] - means[1:]).pow(2).mean()
    assert float(between) > 0.01 and float(within) > 0.005


def test_synthetic_rejects_bad_arguments() -> None:
    with pytest.raises(DataError, match="n_images and num_classes"):
        SyntheticImages(0)
    with pytest.raises(DataError, match="image_shape"):
        SyntheticImages(4, (3, 0, 4))
    with pytest.raises(DataError, match="label_order"):
        SyntheticImages(4, label_order="shuffled")  # type: ignore[arg-type]


# ---- the VOneNet-on-ImageNet example config -----------------------------------------------------

def test_vonenet_example_parses(tmp_path: Path) -> None:
    from robustlens.attacks import PGD
    from robustlens.study.config import parse_config

    text = EXAMPLE.read_text()
    assert text.count("/path/to/") == 3
    root = make_fake_imagenet(tmp_path / "imagenet", WNIDS, per_class=2, size=(20, 20), splits=("val",))
    for name in ("vonenet/voneresnet50_e70.pth.tar", "torchvision/resnet50-0676ba61.pth"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"dummy")
    config = parse_config(tomllib.loads(text.replace("/path/to/", f"{tmp_path.as_posix()}/")))
    data = config.data
    assert (data.dataset, data.split, data.ds_factor, data.n_per_class) == ("imagenet", "val", 500, None)
    assert data.root == str(root.resolve()) and (data.resize, data.crop) == (256, 224)
    assert [(m.architecture, m.source, m.allow_pickle) for m in config.models] == [
        ("vone_resnet50", "weights", False), ("resnet50", "weights", False)]
    assert config.models[0].weights == str((tmp_path / "vonenet" / "voneresnet50_e70.pth.tar").resolve())
    (attack,) = config.attacks
    assert attack.type == "vonenet" and attack.eps == pytest.approx((1 / 255,), rel=1e-12)
    pgd = attack.build(attack.eps[0])
    assert isinstance(pgd, PGD)
    assert (pgd.steps, pgd.eot_samples, pgd.norm, pgd.random_start) == (64, 10, "inf", False)
    dataset = load_dataset(data.dataset, data.split, data.root, resize=data.resize, crop=data.crop)
    assert len(dataset.subset(torch.arange(0, len(dataset), data.ds_factor))) == 1
