"""The plan's time and memory: what a batch of the run costs, measured as the run spends it."""

from __future__ import annotations

import resource
import time
import tomllib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from robustlens.study import parse_config
from robustlens.study.analyses import ANALYSES, AnalysisOptions, StudyAnalysis, register_analysis
from robustlens.study.plan import plan_study

PER_BATCH = 0.05  # seconds each clean and each adversarial batch costs the probe analysis
AT_END = 0.4  # seconds its tables cost, once per model


@dataclass(frozen=True)
class _ProbeOptions(AnalysisOptions):
    pass


class _CostProbe(StudyAnalysis):
    """An analysis of known cost: a sleep per batch fed and one at the end."""

    name = "plan_cost_probe"
    Options = _ProbeOptions

    def update_clean(self, batch: Any) -> None:
        time.sleep(PER_BATCH)

    def update(self, batch: Any) -> None:
        time.sleep(PER_BATCH)

    def tables(self) -> dict[str, pd.DataFrame]:
        time.sleep(AT_END)
        return {}


CONFIG = """
[study]
name = "costs"
batch_size = 16
[data]
dataset = "digits"
n_per_class = 4
[[models]]
name = "m"
architecture = "digits_cnn"
random = true
[[attacks]]
type = "fgsm"
eps = [0.1, 0.2]
[analyses.plan_cost_probe]
"""


@pytest.fixture()
def probe() -> Any:
    register_analysis(_CostProbe)
    try:
        yield
    finally:
        ANALYSES.pop(_CostProbe.name, None)


def test_plan_times_the_analyses_per_batch_and_at_the_end(probe: None) -> None:
    plan = plan_study(parse_config(tomllib.loads(CONFIG)), device="cpu")
    batches = 40 / 16  # 40 images: the timed batch of 16 scaled to all of them
    rows = plan.rows.set_index(["attack", "eps"])
    assert rows.loc[("clean", 0.0), "seconds"] >= PER_BATCH * batches
    for eps in (0.1, 0.2):
        assert rows.loc[("fgsm", eps), "seconds"] >= PER_BATCH * batches
    model = plan.models.iloc[0]
    assert model["end_seconds"] >= AT_END and model["build_seconds"] > 0
    # the model's time: build, every unit's batches, the end-of-run work
    assert model["seconds"] >= model["build_seconds"] + rows["seconds"].sum() + model["end_seconds"] - 1e-9
    assert model["seconds"] >= AT_END + 3 * PER_BATCH * batches


def test_plan_measures_the_cpu_peak(probe: None) -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pytest.skip("the resident high-water mark cannot be reset here (not Linux)")
    plan = plan_study(parse_config(tomllib.loads(CONFIG)), device="cpu")
    model = plan.models.iloc[0]
    assert bool(model["memory_measured"])
    lifetime_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # the process' resident memory while the model ran: interpreter, libraries, model, batch
    assert 50 * 2**20 < model["peak_memory_bytes"] <= lifetime_peak + 16 * 2**20  # (counted apart)


class _TableProbe(_CostProbe):
    """An analysis whose one table (random floats) the report has to read and write."""

    name = "plan_table_probe"
    ROWS = 100_000

    def tables(self) -> dict[str, pd.DataFrame]:
        rng = np.random.default_rng(0)
        return {"plan_table_probe": pd.DataFrame(rng.random((self.ROWS, 4)), columns=list("abcd"))}


def test_plan_builds_the_report_on_its_tables() -> None:
    register_analysis(_TableProbe)
    try:
        plan = plan_study(parse_config(tomllib.loads(CONFIG.replace("plan_cost_probe", "plan_table_probe"))),
                          device="cpu")
    finally:
        ANALYSES.pop(_TableProbe.name, None)
    # the report's time, memory and disk are its own figures, counted in the totals
    assert plan.report_seconds > 0
    assert plan.seconds == pytest.approx(plan.data_seconds + float(plan.models["seconds"].sum())
                                         + plan.report_seconds)
    # random float64s do not compress: the table alone takes 8 bytes a value on disk
    assert plan.report_disk_bytes >= _TableProbe.ROWS * 4 * 8
    assert plan.peak_memory_bytes >= plan.report_peak_memory_bytes > 0
    assert plan.peak_memory_bytes >= int(plan.models["peak_memory_bytes"].max())
    assert "Report (photos, comparisons, tables, figures)" in plan.text()


def test_plan_times_the_photos_part(monkeypatch: pytest.MonkeyPatch) -> None:
    # the photos part runs in the plan's end as in the run (here a stand-in of known cost)
    calls = []

    def photos(cfg: Any, device: Any, progress: bool = False) -> dict[str, pd.DataFrame]:
        calls.append(cfg.images)
        time.sleep(AT_END)
        return {"photo_predictions": pd.DataFrame({"photo": ["rocket"], "rank": [1]})}

    monkeypatch.setattr("robustlens.study.photos.run_photos", photos)
    text = CONFIG.replace("[analyses.plan_cost_probe]\n", "") + '[photos]\nimages = ["rocket"]\n'
    plan = plan_study(parse_config(tomllib.loads(text)), device="cpu")
    assert calls == [("rocket",)]
    assert plan.report_seconds >= AT_END
