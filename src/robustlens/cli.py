"""The ``robustlens`` command: a thin layer over the library.

User errors (missing data, invalid configs, unknown names, bad checkpoints) print one line
to stderr and exit with status 2; results already written stay on disk.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import torch

from robustlens.errors import ConfigError, OutputError, RobustlensError
from robustlens.io import check_output_dir, check_output_file
from robustlens.visualization import cli as _visualize

__all__ = ["build_parser", "main"]

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what was wrong and where to read the options."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"robustlens: error: {self.prog}: {message} "
                                   f"(see `{self.prog} --help`)\n")


def _int_at_least(minimum: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}; received {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}; received {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count where 0 would mean nothing to do)."""
    return _int_at_least(1, text)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(0, text)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0; received {text!r}") from None
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0; received {text}")
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="run directory (default: runs/<study name>)")
    p.add_argument("--data-root", help="folder with the dataset files (default: $ROBUSTLENS_DATA, "
                   "then Debian's /usr/share/datasets/fashion-mnist)")
    p.add_argument("--cache-dir", type=Path, help="trained-model cache (default: $ROBUSTLENS_CACHE "
                   "or ~/.cache/robustlens)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides the config's device")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--max-memory", metavar="SIZE", help="memory budget of the run, e.g. 6GiB (overrides "
                   "[study].max_memory; default: a safe share of the device's memory); a batch that would "
                   "not fit runs in parts")
    p.add_argument("--smoke", action="store_true", help="a much reduced run (few images, eps, steps and "
                   "epochs) that checks a config end to end in a minute or two; numbers are not meaningful")
    p.add_argument("--fresh", action="store_true", help="discard the resume points of an earlier run in "
                   "the run directory and start over (default: an interrupted run resumes)")
    p.add_argument("--allow-pickle", action="store_true", help="trust pickled weight files named in "
                   "the config (full unpickling can run code); only for files you trust")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="robustlens", description="Study the adversarial "
                                     "robustness of CNNs: train, attack, look inside, report.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the Fashion-MNIST demo study")
    _add_common(demo)
    demo.add_argument("--print-config", action="store_true", help="print the demo config and exit")

    study = sub.add_parser("study", help="run a study from a TOML config")
    study.add_argument("config", type=Path)
    _add_common(study)
    study.add_argument("--plan", action="store_true", help="print what the study will run (images, "
                       "forward and backward passes, predicted time, memory and disk) and exit without "
                       "training or writing anything")

    train = sub.add_parser("train", help="train a model and save it as a checkpoint")
    train.add_argument("--arch", default="fmnist_cnn", help="registered architecture")
    train.add_argument("--dataset", default="fashion_mnist")
    train.add_argument("--data-root")
    train.add_argument("--epochs", type=positive_int, default=4)
    train.add_argument("--batch-size", type=positive_int, default=128)
    train.add_argument("--lr", type=positive_float, default=2e-3)
    train.add_argument("--seed", type=nonnegative_int, default=0)
    train.add_argument("--adversarial-eps", type=float, help="PGD adversarial training at this "
                       "eps (pixel units, pixels in [0, 1]: L-inf <= 1, e.g. 0.1; L2 <= sqrt(C*H*W))")
    train.add_argument("--adversarial-norm", choices=["inf", "2"], default="inf",
                       help="threat model of the adversarial training (default: inf)")
    train.add_argument("--adversarial-steps", type=positive_int, default=5)
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    train.add_argument("--out", type=Path, required=True, help="checkpoint path (.safetensors + .json)")
    train.add_argument("--quiet", action="store_true")

    report = sub.add_parser("report", help="rebuild a finished (or interrupted) study's report.html "
                            "from its run directory")
    report.add_argument("run_dir", type=Path, help="the folder a study wrote (config.toml, manifest.json, "
                        "results/)")

    models = sub.add_parser("models", help="list the registered models")
    models.add_argument("pattern", nargs="?", default="*")
    _visualize.add_parser(sub)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser, to check a command line without running it.

    ``build_parser().parse_args(argv)`` accepts exactly what ``robustlens`` accepts; a usage
    error exits with status 2 after one line on stderr.
    """
    return _parser()


def _version() -> str:
    from robustlens import __version__

    return __version__


def _print_accuracy(result_tables: dict[str, Any]) -> None:
    from robustlens.report import accuracy_summary

    table = accuracy_summary(result_tables["accuracy"]).set_index("model")
    print("\nAccuracy (clean and robust, eps in pixel units):")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))


def _run_study(config_text: str, config_path: Path | None, args: argparse.Namespace) -> int:
    import tomllib

    from robustlens.study import parse_config, run_study

    raw = tomllib.loads(config_text)
    if args.smoke:
        from robustlens.study.smoke import smoke_config

        raw = smoke_config(raw)
    if args.data_root:
        raw.setdefault("data", {})["root"] = str(Path(args.data_root).resolve())
    if getattr(args, "max_memory", None) is not None:
        raw.setdefault("study", {})["max_memory"] = args.max_memory
    base = config_path.parent if config_path else Path.cwd()
    try:
        config = parse_config(raw, base_dir=base)
    except TypeError as err:
        raise RobustlensError(f"invalid study config: {err}") from None
    if args.allow_pickle:
        from dataclasses import replace

        config = replace(config, models=tuple(replace(m, allow_pickle=True) for m in config.models))
    if getattr(args, "plan", False):
        from robustlens.study.plan import plan_study
        from robustlens.study.preflight import preflight

        preflight(config)
        print(plan_study(config, device=args.device).text())
        return 0
    out = args.out or Path("runs") / (config.name + ("-smoke" if args.smoke else ""))
    check_output_dir(out, what="--out" if args.out else "run directory")
    result = run_study(config, out, cache_dir=args.cache_dir, progress=not args.quiet,
                       config_text=config_text, device=args.device, fresh=args.fresh)
    if not result.tables:  # a torchrun worker other than rank 0: rank 0 reports
        return 0
    _print_accuracy(result.tables)
    print(f"\nReport: {result.report.resolve()}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    text = resources.files("robustlens.study").joinpath("demo.toml").read_text()
    if args.print_config:
        print(text)
        return 0
    return _run_study(text, None, args)


def _cmd_study(args: argparse.Namespace) -> int:
    path: Path = args.config
    if path.is_dir():
        raise ConfigError(f"study config {path} is a folder; give the path of a .toml file (e.g. "
                          f"{path / 'study.toml'}), or `robustlens demo --print-config` for an example.")
    if not path.is_file():
        raise ConfigError(f"study config not found: {path}. Check the path; `robustlens demo "
                          "--print-config > study.toml` writes an example to start from.")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise RobustlensError(f"{path} is not a text file.") from None
    import tomllib

    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise RobustlensError(f"{path} is not valid TOML: {err}.") from None
    try:
        return _run_study(text, path, args)
    except RobustlensError as err:
        if str(path) in str(err):
            raise
        raise type(err)(f"{path}: {err}") from None


def _train_out(out: Path) -> Path:
    """Check ``train --out`` (a checkpoint path) before any training; the path with no suffix."""
    from robustlens.models.checkpoint import checkpoint_paths

    if str(out) in ("", "."):
        raise OutputError("--out is empty; give a checkpoint path such as --out models/digits "
                          "(writes digits.safetensors and digits.json).")
    if out.is_dir():
        raise OutputError(f"--out {out} is a folder; give a checkpoint path inside it, e.g. "
                          f"--out {out / 'model'} (writes model.safetensors and model.json).")
    if out.suffix not in ("", ".safetensors", ".json") and out.suffix in (".pth", ".pt", ".tar", ".ckpt"):
        raise OutputError(f"--out {out}: robustlens checkpoints are .safetensors files (plus a .json "
                          f"beside them), not {out.suffix}; give --out {out.with_suffix('')}.")
    for path in checkpoint_paths(out):
        check_output_file(path, what="--out")
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    from robustlens.data import DATASETS, load_dataset, to_memory
    from robustlens.errors import suggest
    from robustlens.models import model_info, save_checkpoint
    from robustlens.study.models import build_seeded
    from robustlens.study.runner import resolve_device
    from robustlens.training import (
        AdversarialTraining,
        TrainConfig,
        check_training_data,
        evaluate_accuracy,
        train_model,
    )

    # everything that can be checked is checked before the data is read and the model trained
    model_info(args.arch)
    if args.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {args.dataset!r}.{suggest(args.dataset, DATASETS)} "
                          f"Known: {', '.join(DATASETS)}.")
    if args.adversarial_eps is not None and args.adversarial_eps == 0:
        raise ConfigError("--adversarial-eps 0 is standard training; leave the flag out for standard "
                          "training, or give a radius > 0 (e.g. 0.1).")
    adv = (AdversarialTraining(eps=args.adversarial_eps, steps=args.adversarial_steps,
                               norm=args.adversarial_norm)
           if args.adversarial_eps is not None else None)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         adversarial=adv)
    out = _train_out(args.out)
    device = resolve_device(args.device)
    train_set = to_memory(load_dataset(args.dataset, "train", args.data_root))
    test_set = to_memory(load_dataset(args.dataset, "test", args.data_root))
    model = build_seeded(args.arch, {}, args.seed).to(device)
    check_training_data(model, train_set, adv)
    check_training_data(model, test_set)
    result = train_model(model, train_set, config, device=device, progress=not args.quiet)
    accuracy = evaluate_accuracy(model.eval(), test_set, device=device)
    from dataclasses import asdict

    path = save_checkpoint(model, out, args.arch, {}, dataset=args.dataset,
                           training=asdict(config), seed=args.seed, clean_test_accuracy=accuracy,
                           train_seconds=result.seconds, history=result.history)
    print(f"clean test accuracy {accuracy:.4f}; trained in {result.seconds:.0f} s; saved {path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from robustlens.report import build_report

    path = build_report(args.run_dir)
    print(f"Report: {path.resolve()}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from robustlens.models import list_models, model_info

    names = list_models(args.pattern)
    if not names:
        raise RobustlensError(f"no registered model matches {args.pattern!r}.")
    width = max(len(n) for n in names)
    for name in names:
        info = model_info(name)
        shape = "x".join(map(str, info.input_size))
        print(f"{name:<{width}}  {shape:>9}  {info.num_classes:>5} classes  {info.description}")
    return 0


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Warnings as one readable line (the library's warnings are meant for the user)."""
    print(f"robustlens: warning: {message}", file=sys.stderr)


def _one_line(text: str) -> str:
    """A message on one line (a user error is one line on stderr)."""
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``robustlens`` command; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error (already printed)
        return stop.code if isinstance(stop.code, int) else EXIT_USER_ERROR
    logging.basicConfig(level=os.environ.get("ROBUSTLENS_LOG", "WARNING").upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    warnings.showwarning = _show_warning
    commands = {"demo": _cmd_demo, "study": _cmd_study, "train": _cmd_train, "models": _cmd_models,
                "report": _cmd_report,
                "visualize": _visualize.run}
    try:
        return commands[args.command](args)
    except RobustlensError as err:
        print(f"robustlens: error: {_one_line(str(err))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:  # a file the user named, or the disk: one line, not a traceback
        where = f" {err.filename}" if err.filename else ""
        print(f"robustlens: error: cannot read or write{where}: {err.strerror or err}. Check the path, "
              "its permissions and the free disk space; results written so far are kept.", file=sys.stderr)
        return EXIT_USER_ERROR
    except (MemoryError, torch.OutOfMemoryError):
        print("robustlens: error: out of memory; lower the batch size (or the number of images) and run "
              "again; results written so far are kept.", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("robustlens: interrupted; results written so far are kept.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
