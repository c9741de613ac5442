"""PGD adversarial training settings: validation, the clean/adversarial mix, and robustness."""

import pytest
import torch

import robustlens
from robustlens.attacks import PGD
from robustlens.data import load_digits
from robustlens.errors import ConfigError
from robustlens.evaluation import robust_accuracy
from robustlens.training import AdversarialTraining, TrainConfig, train_model


@pytest.mark.parametrize("kwargs", [{"eps": -0.1}, {"steps": 0}, {"norm": "1"},
                                    {"clean_weight": 1.5}, {"warmup_epochs": -1}])
def test_bad_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        AdversarialTraining(**kwargs)


def test_defaults_and_round_trip():
    adv = AdversarialTraining()
    assert (adv.eps, adv.steps, adv.norm, adv.clean_weight) == (0.1, 7, "inf", 0.0)
    config = TrainConfig(epochs=1, adversarial=AdversarialTraining(norm="2", clean_weight=0.5))
    assert TrainConfig.from_dict(config.to_dict()) == config


def _train(adv):
    torch.manual_seed(0)
    model = robustlens.create_model("digits_cnn")
    result = train_model(model, load_digits("train"),
                         TrainConfig(epochs=8, batch_size=64, lr=5e-3, adversarial=adv))
    return model.eval(), result


def test_adversarial_training_buys_robustness_and_the_mix_keeps_clean_accuracy():
    test = load_digits("test")
    attack = {"pgd": PGD(0.1, steps=10)}
    standard, _ = _train(None)
    robust, _ = _train(AdversarialTraining(eps=0.1, steps=3, step_size=0.05))
    mixed, history = _train(AdversarialTraining(eps=0.1, steps=3, step_size=0.05,
                                                clean_weight=0.5))
    acc = {name: robust_accuracy(m, test, attack).set_index("attack").accuracy
           for name, m in [("standard", standard), ("robust", robust), ("mixed", mixed)]}
    assert acc["robust"]["pgd"] > acc["standard"]["pgd"] + 0.2
    assert acc["mixed"]["pgd"] > acc["standard"]["pgd"] + 0.1
    assert acc["mixed"]["clean"] >= acc["robust"]["clean"] - 0.02
    assert len(history.history) == 8
