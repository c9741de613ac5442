"""The black-box check on a deliberately gradient-masked model, and on an ordinary one."""

from collections.abc import Callable

import pytest
import torch
from torch import nn

from robustlens.attacks import APGD, AutoAttack, Square
from robustlens.data import load_digits
from robustlens.evaluation import attack_components, black_box_check, cascade_stages, evaluate_robustness


@pytest.mark.parametrize("masked", [True, False])
def test_square_breaks_what_apgd_misses_only_on_the_masked_model(
        masked: bool, digits_linear: Callable[[bool], nn.Module]) -> None:
    model = digits_linear(masked)
    data = load_digits("test").subset(torch.arange(100))
    eps = 0.3 if masked else 0.05
    aa = AutoAttack(eps, version="custom", attacks=[APGD(eps, steps=50), Square(eps, queries=300)])
    per_example = evaluate_robustness(model, data, {"aa": aa}, batch_size=100).per_example
    out = black_box_check(per_example, {"aa": attack_components(aa)})
    stages = cascade_stages(per_example).set_index("stage_attack")
    assert len(out) == 1
    row = out.iloc[0]
    # the check counts exactly the images the cascade's Square stage broke (it runs on APGD's survivors)
    assert row["count"] == stages.loc["square", "broken"] if "square" in stages.index else row["count"] == 0
    if masked:
        assert row["status"] == "flag" and row["value"] > 0.3
        assert stages.loc["apgd_ce", "robust"] > 50  # zero gradients: APGD leaves most images standing
    else:
        assert row["status"] == "pass" and row["value"] <= 0.01
