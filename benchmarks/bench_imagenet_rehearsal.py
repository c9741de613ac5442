"""A full-size rehearsal of every ImageNet example on a synthetic ImageNet, on the CPU.

Writes a synthetic ImageNet validation folder at real size: the 1000 class folders named by
their real WordNet ids (``val/<wnid>/``, one of the layouts :mod:`robustlens.data.imagenet`
reads), each with 2 JPEGs of a typical photo's size (500 x 375, smooth colour fields plus
grain, about 40-70 KB each). Then runs every config in ``examples/imagenet/`` and
``examples/vonenet_imagenet.toml`` on it, each in its own ``python -m robustlens study``
process, with only these changes:

- ``[data].root`` is the synthetic folder, ``[study].device`` is ``"cpu"``;
- every model's weights (``weights``, ``pretrained``, ``checkpoint``) become random ones of the
  same architecture (``random = true``);
- fewer images (``ds_factor`` raised; S3 keeps every class of its selection with 2 images
  each) and fewer attack steps, render steps, audit images (see ``REDUCE``); eps lists,
  noise samples (EOT; except the audit's own in quick mode, below), batch sizes, layers and
  analyses are kept;
- ``[study].max_memory`` is ``--max-memory`` (default 8 GiB): the rehearsal stands for a
  machine of that size, and a batch whose memory probe says it would not fit is split into
  parts (printed as ``part``, the smallest part size of the run's models).

Before each study, its cost plan (``robustlens study CONFIG --plan``'s :func:`plan_study`, in its
own process) is made and the predicted time and peak memory are printed beside the measured
ones, with their ratios (predicted / measured; the target is within 1.5x either way), and the
plan's own time. Printed per config: images, attack passes (estimated: images x models x eps x steps x noise
samples, DeepFool steps counting its candidate gradients), wall time, time per image, the
child's peak resident memory (the largest of the run's own record across its probes' resets,
``manifest.json``'s ``peak_memory_bytes``, of ``wait4``'s ``ru_maxrss`` and of the resident
memory sampled every 0.5 s), the run directory's size and the
largest size its resume points (``checkpoints/``) reached, and whether ``report.html`` was
written. A child whose resident memory passes ``--max-rss-gib`` is stopped (so a rehearsal
never takes the machine down) and reported as such.

``--quick`` (within 10 minutes on 2 idle cores): 2-4 images per config, 1 attack step, the
first eps only, one saliency image, S3 with 10 classes (its peak memory is at smaller batches),
the VOneNet example's gradient-masking audit on 2 images with 2 noise samples instead of 10
(its checks rerun the attack a dozen times, the unbounded one with at least 20 steps);
full (within 60 minutes on 2 idle cores): one whole batch of each config's size (10 to 50
images), S3's 100 classes x 2 images, 3 DeepFool steps in S1, 1 PGD step in S3 and 2 in the
others, the audit on 2 images with the config's 10 noise samples.

The load average (1, 5, 15 min) is printed at the start, after each config and at the end:
on a shared machine every time is inflated by it (the plan's too, so the ratios less so).

Usage: python benchmarks/bench_imagenet_rehearsal.py [--quick] [--root DIR] [--only s1,s3]
       [--max-rss-gib 10] [--keep] [--no-plan]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from robustlens.data import imagenet_wnids  # noqa: E402

CONFIGS = {
    "s1": REPO / "examples" / "imagenet" / "s1_dissimilarity.toml",
    "s2": REPO / "examples" / "imagenet" / "s2_sensitive_features.toml",
    "s3": REPO / "examples" / "imagenet" / "s3_manifolds.toml",
    "s4": REPO / "examples" / "imagenet" / "s4_interpretability.toml",
    "vonenet": REPO / "examples" / "vonenet_imagenet.toml",
}
PER_CLASS = 2  # images written per class folder
PHOTO = (500, 375)  # width x height, a typical ImageNet photo

# per config: images kept, attack steps, render steps, eps kept (None: all); (full, quick).
# Full: at least one whole batch of the config's size (10, 50, 50, 25, 25), so the peak
# memory is the one of the config's batch size.
REDUCE: dict[str, dict[str, tuple[Any, Any]]] = {
    "s1": {"images": (10, 2), "steps": (3, 1), "eps": (None, 1)},
    "s2": {"images": (50, 4), "steps": (None, None), "eps": (None, 3), "render": (8, 2)},
    "s3": {"classes": (100, 10), "steps": (1, 1), "eps": (None, 1)},
    "s4": {"images": (25, 4), "steps": (2, 1), "eps": (None, 1), "render": (8, 2),
           "saliency_samples": (4, 2), "saliency_images": (4, 1), "ig_steps": (16, 4)},
    "vonenet": {"images": (25, 4), "steps": (2, 1), "eps": (None, None), "audit_images": (2, 2),
                "audit_steps": (1, 1), "audit_queries": (50, 20), "audit_eot": (None, 2)},
}


# ---- the synthetic folder ---------------------------------------------------------------------

def photo(seed: int) -> Image.Image:
    """A 500 x 375 RGB image: a smooth random colour field plus fine grain (JPEG-realistic)."""
    rng = np.random.default_rng(seed)
    width, height = PHOTO
    coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC),
                       dtype=np.float32)
    grain = rng.normal(0.0, 6.0, size=(height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(field + grain, 0, 255).astype(np.uint8))


def write_imagenet(root: Path) -> tuple[int, float]:
    """``root/val/<wnid>/ILSVRC2012_val_<n>.JPEG``, PER_CLASS per class; (files, MiB). Reused if
    complete."""
    marker = root / "val" / ".complete"
    val = root / "val"
    if not marker.exists():
        n = 0
        for c, wnid in enumerate(imagenet_wnids()):
            folder = val / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(PER_CLASS):
                n += 1
                photo(c * PER_CLASS + k).save(folder / f"ILSVRC2012_val_{c * PER_CLASS + k + 1:08d}.JPEG",
                                              quality=90)
        marker.write_text(str(n))
    files = [p for p in val.rglob("*.JPEG")]
    return len(files), sum(p.stat().st_size for p in files) / 2**20


# ---- configs ----------------------------------------------------------------------------------

def rehearsal_config(name: str, raw: dict[str, Any], root: Path, quick: bool,
                     max_memory: str | None = None) -> dict[str, Any]:
    """The example with paths swapped, random weights and reduced counts (see REDUCE), and the
    memory budget ``max_memory`` (``[study].max_memory``) where given."""
    cfg = copy.deepcopy(raw)
    pick = 1 if quick else 0
    red = {k: v[pick] for k, v in REDUCE[name].items()}
    cfg["study"]["device"] = "cpu"
    if max_memory is not None:
        cfg["study"]["max_memory"] = max_memory
    data = cfg["data"]
    data["root"] = str(root)
    if "classes" in red:  # S3: every class of the selection, 2 images each
        data["classes"] = red["classes"]
        data["n_per_class"] = PER_CLASS
        data.pop("ds_factor", None)
    else:
        n_files = len(imagenet_wnids()) * PER_CLASS
        data["ds_factor"] = n_files // red["images"]
        data.pop("n_per_class", None)
    for model in cfg["models"]:
        for key in ("weights", "pretrained", "checkpoint", "allow_pickle"):
            model.pop(key, None)
        model["random"] = True
    for attack in cfg["attacks"]:
        if red.get("steps") is not None and (attack["type"] != "fgsm"):
            attack["steps"] = red["steps"]
        if red.get("eps") is not None:
            attack["eps"] = attack["eps"][:red["eps"]]
    analyses = cfg.get("analyses", {})
    if "render" in red:
        for key in ("featurevis",):
            if key in analyses:
                analyses[key]["steps"] = red["render"]
    if "saliency_samples" in red and "saliency" in analyses:
        analyses["saliency"]["n_samples"] = red["saliency_samples"]
        analyses["saliency"]["n_images"] = red["saliency_images"]
        analyses["saliency"]["ig_steps"] = red["ig_steps"]  # one pass per point and image
    if "audit" in analyses:
        analyses["audit"]["n_images"] = red["audit_images"]
        analyses["audit"]["steps"] = red["audit_steps"]
        analyses["audit"]["queries"] = red["audit_queries"]  # Square's budget in its black-box check
        if red.get("audit_eot") is not None:  # quick mode: the audit's own noise samples
            analyses["audit"]["eot_samples"] = red["audit_eot"]
    if "manifolds" in analyses:
        analyses["manifolds"]["n_bootstrap"] = 100
    return cfg


def attack_passes(cfg: dict[str, Any], n_images: int) -> int:
    """Estimated gradient passes: images x models x eps x steps x noise samples (DeepFool: one
    gradient per candidate class per step)."""
    total = 0
    for model in cfg["models"]:
        stochastic = model["architecture"].startswith("vone")
        for attack in cfg["attacks"]:
            steps = attack.get("steps", 64 if attack["type"] == "vonenet" else 1)
            if attack["type"] == "deepfool":
                steps *= attack.get("candidates", 10)
            eot = attack.get("eot_samples", 10 if attack["type"] == "vonenet" else 1)
            total += n_images * len(attack["eps"]) * steps * (eot if stochastic else 1)
    return total


# ---- running ----------------------------------------------------------------------------------

def _dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except OSError:
                pass
    return total


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


_PLAN = """
import json, sys, tomllib
from pathlib import Path
from robustlens.study import parse_config
import torch
from robustlens.study.memory import process_peak
from robustlens.study.plan import plan_study
path = Path(sys.argv[1])
plan = plan_study(parse_config(tomllib.loads(path.read_text()), base_dir=path.parent), device="cpu")
print(plan.text())
Path(sys.argv[2]).write_text(json.dumps({
    "models": json.loads(plan.models.to_json(orient="records")), "seconds": plan.seconds,
    "peak_memory_bytes": plan.peak_memory_bytes, "report_seconds": plan.report_seconds,
    "report_peak_memory_bytes": plan.report_peak_memory_bytes,
    "own_peak_bytes": process_peak(torch.device("cpu"))}))
"""


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def plan_one(name: str, config_path: Path, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """The config's cost plan, made in its own process: predicted seconds and peak bytes (the
    largest model's), the plan's own wall time and peak memory; NaN if it failed."""
    out = work / f"{name}.plan.json"
    log = work / f"{name}.plan.log"
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        child = subprocess.Popen([sys.executable, "-c", _PLAN, str(config_path), str(out)],
                                 stdout=f, stderr=subprocess.STDOUT, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    row = {"plan_s": wall, "plan_peak_gib": usage.ru_maxrss / 2**20, "pred_s": math.nan,
           "pred_gib": math.nan, "pred_models": []}
    if os.waitstatus_to_exitcode(status) == 0 and out.exists():
        import json

        plan = json.loads(out.read_text())
        row["pred_s"] = plan["seconds"]
        row["pred_gib"] = plan["peak_memory_bytes"] / 2**30
        row["pred_models"] = plan["models"]
        row["pred_report_s"] = plan["report_seconds"]
        row["pred_report_gib"] = plan["report_peak_memory_bytes"] / 2**30
        row["plan_peak_gib"] = plan["own_peak_bytes"] / 2**30
    else:
        row["plan_error"] = " | ".join(log.read_text().strip().splitlines()[-2:])[-300:]
    return row


def run_one(name: str, cfg: dict[str, Any], work: Path, max_rss: int, timeout: float,
            plan: bool = True) -> dict[str, Any]:
    config_path = work / f"{name}.toml"
    config_path.write_text(tomli_w.dumps(cfg))
    run_dir = work / f"run_{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    log = work / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    predicted = plan_one(name, config_path, work, env) if plan else {}
    t0 = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, "-m", "robustlens", "study", str(config_path),
                                  "--out", str(run_dir), "--quiet", "--device", "cpu"],
                                 stdout=out, stderr=subprocess.STDOUT, env=env)
    state: dict[str, Any] = {"ckpt": 0, "killed": "", "rss": 0}
    done = threading.Event()

    def watch() -> None:  # never reaps the child: wait4 below does, for its rusage
        while not done.wait(0.5):
            rss = _rss_bytes(child.pid)
            state["rss"] = max(state["rss"], rss)
            if rss > max_rss:
                state["killed"] = f"stopped above {max_rss / 2**30:.0f} GiB"
                child.kill()
            elif time.perf_counter() - t0 > timeout:
                state["killed"] = f"stopped after {timeout:.0f} s"
                child.kill()
            state["ckpt"] = max(state["ckpt"], _dir_bytes(run_dir / "checkpoints"))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(child.pid, 0)
    done.set()
    child.returncode = os.waitstatus_to_exitcode(status)
    watcher.join()
    wall = time.perf_counter() - t0
    manifest = run_dir / "manifest.json"
    n_images, recorded = 0, 0
    parts: list[int] = []
    timings: dict[str, Any] = {}
    if manifest.exists():
        import json

        content = json.loads(manifest.read_text())
        n_images = int(content.get("data", {}).get("n_images", 0))
        timings = content.get("timings", {})
        recorded = int(content.get("peak_memory_bytes", 0))
        parts = [int(v) for v in content.get("micro_batch", {}).values()]
    # the run resets its resident high-water mark for each model's memory probe, so wait4's
    # ru_maxrss is the peak since the last reset: the run's manifest records the peak across
    # resets, and the watcher's samples (every 0.5 s) check it
    peak = max(usage.ru_maxrss * 1024, recorded, state["rss"])
    tail = log.read_text().strip().splitlines()[-3:] if log.exists() else []
    return {"config": name, "images": n_images, "passes": attack_passes(cfg, n_images),
            "wall_s": wall, "per_image_s": wall / n_images if n_images else math.nan,
            "peak_gib": peak / 2**30, "run_mib": _dir_bytes(run_dir) / 2**20,
            "ckpt_mib": max(state["ckpt"], _dir_bytes(run_dir / "checkpoints")) / 2**20,
            "report": (run_dir / "report.html").exists(), "rc": child.returncode,
            "why": state["killed"] or ("" if child.returncode == 0 else " | ".join(tail)[-300:]),
            "batch": cfg["study"]["batch_size"], "part": min(parts) if parts else 0,
            "timings": timings, **predicted}


def _ratio(predicted: float, measured: float) -> float:
    return predicted / measured if measured > 0 else math.nan


def print_plan(row: dict[str, Any]) -> None:
    """Predicted against measured, for one config, with the per-model split."""
    if "plan_error" in row:
        print(f"    plan FAILED: {row['plan_error']}")
        return
    print(f"    plan (made in {row['plan_s']:.0f} s, {row['plan_peak_gib']:.2f} GiB): time {row['pred_s']:.0f} s "
          f"vs {row['wall_s']:.0f} s measured (ratio {_ratio(row['pred_s'], row['wall_s']):.2f}); peak "
          f"{row['pred_gib']:.2f} GiB vs {row['peak_gib']:.2f} GiB (ratio "
          f"{_ratio(row['pred_gib'], row['peak_gib']):.2f})")
    for m in row["pred_models"]:
        t = row["timings"].get(m["model"], {})
        end = sum(t.get("analyses_s", {}).values()) if t else math.nan
        print(f"      {m['model']}: build {m['build_seconds']:.0f} s (run {t.get('model_s', math.nan):.0f}), "
              f"batches {m['seconds'] - m['build_seconds'] - m['end_seconds']:.0f} s "
              f"(run {t.get('evaluate_s', math.nan):.0f}), tables {m['end_seconds']:.0f} s "
              f"(run {end:.0f}), peak {m['peak_memory_bytes'] / 2**30:.2f} GiB")
    run_end = row["timings"].get("report_s", 0.0) + sum(row["timings"].get("comparisons_s", {}).values())
    print(f"      report: {row['pred_report_s']:.0f} s (run {run_end:.0f}), peak {row['pred_report_gib']:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a reduced rehearsal within 10 minutes")
    parser.add_argument("--root", type=Path, default=None,
                        help="where to write (or reuse) the synthetic ImageNet (default: a temporary folder)")
    parser.add_argument("--only", default="", help="comma-separated subset of " + ",".join(CONFIGS))
    parser.add_argument("--max-rss-gib", type=float, default=10.0,
                        help="stop a config whose resident memory passes this")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per config")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--no-plan", action="store_true", help="skip the cost plans")
    parser.add_argument("--max-memory", default="8GiB",
                        help="each run's memory budget ([study].max_memory), the machine the rehearsal "
                        "stands for; a batch over it is split into parts (default 8GiB; 'none': the "
                        "run's default, a share of this machine's free memory)")
    args = parser.parse_args()
    names = [n for n in (args.only.split(",") if args.only else CONFIGS) if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")

    import torch

    budget = None if args.max_memory.lower() == "none" else args.max_memory
    print(f"device: cpu ({os.cpu_count()} CPUs, load average {_load()}), "
          f"torch {torch.__version__}; mode: {'quick' if args.quick else 'full'}; memory budget: "
          f"{budget or 'the run default'}")
    tmp = tempfile.mkdtemp(prefix="robustlens_rehearsal_")
    root = args.root or Path(tmp) / "imagenet"
    t = time.perf_counter()
    n_files, mib = write_imagenet(root)
    print(f"synthetic ImageNet: {root}/val: 1000 class folders (real WordNet ids), {n_files} JPEGs "
          f"of {PHOTO[0]} x {PHOTO[1]}, {mib:.0f} MiB, ready in {time.perf_counter() - t:.0f} s")
    work = Path(tmp) / "runs"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    total = time.perf_counter()
    for name in names:
        raw = tomllib.loads(CONFIGS[name].read_text())
        cfg = rehearsal_config(name, raw, root, args.quick, budget)
        row = run_one(name, cfg, work, int(args.max_rss_gib * 2**30), args.timeout, not args.no_plan)
        rows.append(row)
        print(f"  {name}: {'ok' if row['rc'] == 0 else 'FAILED'} in {row['wall_s']:.0f} s, peak "
              f"{row['peak_gib']:.2f} GiB {row['why']} (load average {_load()})", flush=True)
        if not args.no_plan:
            print_plan(row)
    header = (f"{'config':<9}{'batch':>6}{'part':>5}{'images':>7}{'passes':>9}{'wall s':>8}{'s/image':>9}"
              f"{'peak GiB':>9}{'run MiB':>9}{'resume MiB':>11}{'report':>8}")
    print(header)
    for r in rows:
        print(f"{r['config']:<9}{r['batch']:>6}{r['part']:>5}{r['images']:>7}{r['passes']:>9}{r['wall_s']:>8.0f}"
              f"{r['per_image_s']:>9.1f}{r['peak_gib']:>9.2f}{r['run_mib']:>9.1f}{r['ckpt_mib']:>11.1f}"
              f"{'yes' if r['report'] else 'NO':>8}")
    failed = [r for r in rows if r["rc"] != 0 or not r["report"]]
    over = [r["config"] for r in rows if r["peak_gib"] > 8.0]
    if not args.no_plan:
        print(f"{'config':<9}{'pred s':>8}{'wall s':>8}{'ratio':>7}{'pred GiB':>9}{'peak GiB':>9}{'ratio':>7}"
              f"{'plan s':>8}{'within 1.5x':>12}")
        for r in rows:
            t, m = _ratio(r.get("pred_s", math.nan), r["wall_s"]), _ratio(r.get("pred_gib", math.nan), r["peak_gib"])
            ok = all(1 / 1.5 <= v <= 1.5 for v in (t, m))
            print(f"{r['config']:<9}{r.get('pred_s', math.nan):>8.0f}{r['wall_s']:>8.0f}{t:>7.2f}"
                  f"{r.get('pred_gib', math.nan):>9.2f}{r['peak_gib']:>9.2f}{m:>7.2f}{r.get('plan_s', math.nan):>8.0f}"
                  f"{'yes' if ok else 'NO':>12}")
    runs_s = sum(r["wall_s"] for r in rows)
    plans_s = sum(r.get("plan_s", 0.0) for r in rows)
    print(f"the runs: {runs_s:.0f} s ({runs_s / 60:.1f} min; target {'10' if args.quick else '60'} min: "
          f"{'met' if runs_s <= (600 if args.quick else 3600) else 'NOT met'}); the plans: {plans_s:.0f} s")
    print(f"total {time.perf_counter() - total:.0f} s (load average now {_load()}); "
          f"completed {len(rows) - len(failed)}/{len(rows)}; peak <= 8 GiB: "
          f"{'all' if not over else 'NOT ' + ', '.join(over)}")
    for r in failed:
        print(f"  {r['config']} failed (exit {r['rc']}): {r['why']}  [log: {work / (r['config'] + '.log')}]")
    if not args.keep and not failed:
        shutil.rmtree(work, ignore_errors=True)
    if args.root is None and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
