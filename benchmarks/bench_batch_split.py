"""Memory of a ResNet50 study recording every layer at 224 px: flat across batches, and under
a budget below one batch's need.

Targets (issue 12, item 6): recording every layer (the S1 dissimilarity study), nothing
accumulates across batches (peak resident memory after the last batch / after the first ~ 1);
a memory budget below what one config batch needs makes the run split each batch into parts
that fit, and its peak stays under the budget.

A torchvision ResNet50 with random weights on synthetic 224 x 224 images (1000 classes), one
FGSM unit, ``[analyses.dissimilarity] layers = "all"`` (every leaf call of the network, 158
activations per pass). Each run is a child process of its own (the allocator keeps freed
pages, so a second run in one process would start high); the peak is read from VmHWM after
each batch. First the run with the default budget (the batch runs whole), then the same study
with ``[study].max_memory`` set to what the process held before the batches plus half of
what the whole batch added on top of it.

Usage: python benchmarks/bench_batch_split.py [--batch-size 6] [--batches 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import current_rss_mib, device_line, peak_rss_mib  # noqa: E402

MIB = 1024**2


def _child(batch_size: int, batches: int, budget: int | None, out: Path) -> None:
    from robustlens.data import SyntheticImages
    from robustlens.study import parse_config, run_study, runner

    study: dict[str, object] = {"name": "split", "batch_size": batch_size, "device": "cpu",
                                "checkpoint_every": 0.0}
    if budget is not None:
        study["max_memory"] = budget
    config = parse_config({
        "study": study, "data": {"dataset": "digits"},  # replaced by the synthetic images
        "models": [{"name": "resnet50", "architecture": "resnet50", "random": True, "seed": 0}],
        "attacks": [{"type": "fgsm", "eps": [1 / 255]}],
        "analyses": {"dissimilarity": {"layers": "all"}}})
    data = SyntheticImages(batch_size * batches, image_shape=(3, 224, 224), num_classes=1000, seed=0)
    after: list[tuple[float, float, float]] = []  # (peak MiB so far, current MiB, seconds) per batch
    real = runner.run_batch
    t0 = time.perf_counter()

    def measured(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)  # type: ignore[arg-type]
        after.append((peak_rss_mib(), current_rss_mib(), time.perf_counter() - t0))

    runner.run_batch = measured  # type: ignore[assignment]
    Path("/proc/self/clear_refs").write_text("5")
    start = current_rss_mib()
    run_study(config, out / "run", cache_dir=out / "cache", data=data)
    manifest = json.loads((out / "run" / "manifest.json").read_text())
    print(json.dumps({"start_mib": start, "after": after, "memory": manifest["memory"]["resnet50"],
                      "micro_batch": manifest["micro_batch"]["resnet50"],
                      "evaluate_s": manifest["timings"]["resnet50"]["evaluate_s"],
                      "peak_mib": peak_rss_mib()}))


def _run(batch_size: int, batches: int, budget: int | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--child", tmp, "--batch-size", str(batch_size),
               "--batches", str(batches)] + (["--budget", str(budget)] if budget is not None else [])
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _report(label: str, r: dict[str, object]) -> None:
    after = r["after"]
    assert isinstance(after, list)
    mem = r["memory"]
    assert isinstance(mem, dict)
    print(f"{label}: parts of {r['micro_batch']} images; before the batches {mem['in_use_bytes'] / MIB:.0f} MiB, "
          f"one image ~{mem['per_image_bytes'] / MIB:.0f} MiB (probe), fits {mem['batch_size_fits']}; "
          f"evaluation {r['evaluate_s']:.1f} s")
    for i, (peak, current, seconds) in enumerate(after, 1):
        print(f"  after batch {i}: peak RSS {peak:7.1f} MiB, RSS now {current:7.1f} MiB, {seconds:6.1f} s")
    print(f"  whole run: peak RSS {r['peak_mib']:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.child is not None:
        _child(args.batch_size, args.batches, args.budget, args.child)
        return
    print(device_line())
    print(f"ResNet50 (random weights), 224 px, every layer recorded, FGSM; {args.batches} batches of "
          f"{args.batch_size} images")
    whole = _run(args.batch_size, args.batches, None)
    _report("default budget", whole)
    after = whole["after"]
    assert isinstance(after, list) and isinstance(whole["memory"], dict)
    growth = after[-1][0] / after[0][0]
    verdict = "PASS" if growth <= 1.10 else "FAIL"
    print(f"peak RSS after batch {len(after)} / after batch 1: {growth:.3f}  target ~1 (<= 1.10)  {verdict}")
    in_use = int(whole["memory"]["in_use_bytes"])
    need = after[0][0] * MIB - in_use  # what one whole batch added on top of what was held
    budget = int(in_use + 0.5 * need)
    print(f"one whole batch of {args.batch_size}: peak {after[0][0]:.0f} MiB, {need / MIB:.0f} MiB above the "
          f"{in_use / MIB:.0f} MiB held before; budget for the split run: {budget / MIB:.0f} MiB")
    split = _run(args.batch_size, args.batches, budget)
    _report(f"budget {budget / MIB:.0f} MiB", split)
    peak = float(split["peak_mib"])  # type: ignore[arg-type]
    verdict = "PASS" if peak * MIB <= budget and int(split["micro_batch"]) < args.batch_size else "FAIL"  # type: ignore[call-overload]
    print(f"split run peak / budget: {peak * MIB / budget:.3f}  target <= 1 (and the batch split)  {verdict}")
    s_after = split["after"]
    assert isinstance(s_after, list)
    print(f"split run: peak after batch {len(s_after)} / after batch 1: {s_after[-1][0] / s_after[0][0]:.3f}")


if __name__ == "__main__":
    main()
