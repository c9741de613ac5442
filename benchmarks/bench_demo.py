"""`robustlens demo` end to end: cold (training included) and warm (cached models).

Targets (skeleton issue), on a 2-core CPU machine with the venv installed:
- cold <= 10 min, warm <= 3 min;
- standard CNN clean test accuracy >= 89%;
- PGD-trained CNN robust accuracy under PGD L-inf eps 0.1 (20 steps) >= 55%, where the
  standard CNN's is <= 10%.
Run from the repository root: `.venv/bin/python benchmarks/bench_demo.py`.
`--cache-dir DIR` keeps the trained models in DIR (it must not hold them yet, or the cold run
is not cold); the default is a temporary folder.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def run_demo(out: Path, cache: Path) -> float:
    cmd = [str(Path(sys.executable).with_name("robustlens")), "demo", "--out", str(out), "--cache-dir",
           str(cache), "--quiet"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="keep the trained models here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = args.cache_dir or Path(tmp) / "cache", Path(tmp) / "run"
        if (cache / "models").is_dir() and any((cache / "models").iterdir()):
            print(f"note: {cache} already holds trained models (models/); the cold run may use them")
        cold = run_demo(out, cache)
        warm = run_demo(out, cache)
        acc = pd.read_parquet(out / "results" / "accuracy.parquet")
        models = pd.read_parquet(out / "results" / "models.parquet").set_index("model")
    a = acc.set_index(["model", "attack", "eps"])["accuracy"]
    checks = [
        ("cold demo (training included)", cold / 60, "min", cold <= 600, "<= 10"),
        ("warm demo (cached models)", warm / 60, "min", warm <= 180, "<= 3"),
        ("standard: clean test accuracy (10,000 images)", 100 * models.loc["standard", "clean_test_accuracy"],
         "%", models.loc["standard", "clean_test_accuracy"] >= 0.89, ">= 89"),
        ("pgd_trained: PGD-20 eps 0.1 accuracy", 100 * a[("pgd_trained", "pgd", 0.1)], "%",
         a[("pgd_trained", "pgd", 0.1)] >= 0.55, ">= 55"),
        ("standard: PGD-20 eps 0.1 accuracy", 100 * a[("standard", "pgd", 0.1)], "%",
         a[("standard", "pgd", 0.1)] <= 0.10, "<= 10"),
    ]
    for name, value, unit, ok, target in checks:
        print(f"{name:<48} {value:7.2f} {unit:<3} target {target:<6} {'PASS' if ok else 'FAIL'}")
    print(f"pgd_trained clean test accuracy: {100 * models.loc['pgd_trained', 'clean_test_accuracy']:.2f} %")
    print("PASS" if all(c[3] for c in checks) else "FAIL")


if __name__ == "__main__":
    main()
