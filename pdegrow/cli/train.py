"""``pdegrow train``: train (and grow) a network on a data set into a run directory."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pdegrow.config import parse_overrides
from pdegrow.errors import PdegrowError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train and grow a network on a data set",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a residual network mapping the data set's inputs to its targets, growing it "
        "with the config's strategy ([growth] strategy = 'fixed' | 'layerwise' | …). The run directory "
        "gets the config, the splits, metrics (JSONL + CSV), growth events, checkpoints, the final model "
        "and a summary. A killed run continues exactly where its last checkpoint left it with --resume. "
        "Nothing is written before the config and the data are checked; a run that stops on bad numbers "
        "is marked failed in run.json and the next train into it replaces it. While a train runs, a "
        "second one on the same RUN_DIR is refused ('… is in use by process N'). model.pt and "
        "checkpoint.pt hold tensors + JSON, never pickle.",
        epilog="config sections: [run] [data] [model] [optim] [train] [regularizers] [growth]\n"
        "examples:\n"
        "  pdegrow train --config experiments/heat-paper-layerwise.toml --data datasets/heat-paper.h5 "
        "--out runs/lw\n"
        "  pdegrow train --config experiments/heat-paper-baseline.toml --data d.h5 --out runs/b "
        "--set optim.lr=3e-3 --set run.seed=2\n"
        "  pdegrow train --out runs/lw --resume")
    p.add_argument("--config", metavar="FILE", help="training config (TOML); not needed with --resume")
    p.add_argument("--data", metavar="FILE", help="the HDF5 data set (with --resume: default the run's)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", dest="overrides",
                   help="override a config key (repeatable), e.g. --set train.max_epochs=50")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override [run] device")
    p.add_argument("--seed", type=int, help="override [run] seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--distributed", action="store_true",
                   help="one model over all ranks of an mpiexec/srun job (DDP; automatic under torchrun), "
                   "see pdegrow/training/distributed.py")
    p.set_defaults(run=run)


def _read_json(path: str) -> dict:
    """A JSON training config (e.g. a run's config.json); anything else is one line."""
    try:
        values = json.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise PdegrowError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise PdegrowError(f"config file {path} is a directory, not a config file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PdegrowError(f"config file {path} cannot be read as JSON ({exc})") from None
    if not isinstance(values, dict):
        raise PdegrowError(f"config file {path}: expected a JSON object of sections")
    return values


def run(args: argparse.Namespace) -> int:
    from pdegrow.training.config import apply_overrides, build_config, load_config
    from pdegrow.training.runlog import read_run, read_run_config

    overrides = parse_overrides(args.overrides)
    if args.device:
        overrides["run.device"] = args.device
    if args.seed is not None:
        overrides["run.seed"] = args.seed
    if args.resume:
        info = read_run(args.out)
        saved = read_run_config(args.out)
        if args.config or overrides:
            raise PdegrowError("--resume continues a run with its own config; drop --config/--set")
        cfg = build_config(saved, f"{args.out}/config.json")
        data = args.data or info["data"]
    else:
        if not args.config or not args.data:
            raise PdegrowError("--config and --data are required (unless --resume)")
        cfg = load_config(args.config, overrides) if Path(args.config).suffix != ".json" else \
            build_config(apply_overrides(_read_json(args.config), overrides), args.config)
        data = args.data
    from pdegrow.training import distributed

    try:
        with terminate_as_interrupt():
            if not (args.json or args.distributed or distributed.launched_by_torchrun()):
                announce_device(cfg.run.device)
            return _train(args, cfg, data, distributed)
    except Interrupted as exc:
        print(f"pdegrow train: {exc.signal_name} received, stopped. {resume_hint(Path(args.out))}",
              file=sys.stderr)
        return 128 + exc.signum


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM while training (a KeyboardInterrupt, so nothing swallows it as an error)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.signal_name = signal.Signals(signum).name


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM (a killed job, a scheduler's pre-emption) raise
    :class:`Interrupted`: the trainer unwinds, releases the run directory, and the caller says how to
    resume."""
    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def resume_hint(out: Path) -> str:
    """How to continue an interrupted run in ``out``."""
    if (out / "checkpoint.pt").is_file():
        return f"Continue it from its last checkpoint with: pdegrow train --out {out} --resume"
    return ("It stopped before its first checkpoint, so there is nothing to resume: run the same command "
            "again (it replaces the unfinished run).")


def announce_device(device: str) -> None:
    """Say (on stdout: stderr holds only errors, one line each) which device ``device = "auto"`` chose."""
    if device != "auto":
        return
    import torch

    if torch.cuda.is_available():
        chosen = f"cuda ({torch.cuda.get_device_name(0)})"
    else:
        chosen = "cpu (no CUDA device)"
    print(f"pdegrow train: device auto -> {chosen}", flush=True)


def _train(args: argparse.Namespace, cfg: Any, data: str, distributed: Any) -> int:
    from pdegrow.training.trainer import train

    if args.distributed or distributed.launched_by_torchrun():
        rank = distributed.launch_info().rank
        try:
            summary = distributed.train_distributed(cfg, data, args.out, resume=args.resume,
                                                    overwrite=args.overwrite,
                                                    progress=False if args.no_progress else None)
        except PdegrowError:
            if rank != 0:  # rank 0 reports it
                return 2
            raise
        if summary is None:  # not rank 0
            return 0
    else:
        summary = train(cfg, data, args.out, resume=args.resume, overwrite=args.overwrite,
                        progress=False if args.no_progress else None)
    if args.json:
        from pdegrow.training.runlog import to_json

        print(to_json(summary, indent=1))
    else:
        arch = summary["architecture"]
        test = summary.get("test") or summary["val"]
        which = "test" if summary.get("test") else "val"
        line = (f"{args.out}: {summary['strategy']}, {summary['epochs']} epochs, "
                f"{summary['growth_events']} growth events, depth {arch['depth']} "
                f"(+{arch['n_correctors']} SRL), {arch['n_params']} params")
        print(line)
        errs = ", ".join(f"{k} {v:.4f}" for k, v in test.items() if k.startswith("rel_error"))
        worse = any(k.startswith("rel_error") and v is not None and v > 1 for k, v in test.items())
        print(f"  {which}: loss {test['loss']:.4g}, {errs}"
              + ("  ⚠ above 1: worse than the prior mean" if worse else ""))
    return 0
