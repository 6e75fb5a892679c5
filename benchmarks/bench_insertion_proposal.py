"""Cost of one insertion proposal against one training epoch, through the real trainer.

For each width, a :class:`~pdegrow.training.trainer.Trainer` is built on a heat
`paper` data set (the study's data section: 50 training samples × 10 noisy
copies, batch 55 — or ``--n-train``/``--copies``), trained ``--warmup``
epochs, and then, interleaved ``--repeats`` times, one more epoch and one
proposal of each insertion strategy are timed in CPU time
(``time.process_time``, which counts every thread, so a busy machine changes
it less than wall time).  The proposal is undone (nothing is applied), so
every repeat sees the same network.  Printed: the median CPU time of an epoch,
of each proposal, and their ratio; and, where the proposal logs them, its
parts in epochs (the forward + backward pass, the eigen-solves, the choice of
ε from the stored states).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_insertion_proposal.py \\
        --data datasets/heat-paper-560.h5 --widths 30 256 1024

Nothing here is asserted by the tests; the numbers in experiments/RESULTS.md
come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pdegrow.errors import PdegrowError
from pdegrow.growth.base import GrowthStrategy, build_strategy
from pdegrow.training.config import build_config
from pdegrow.training.trainer import Trainer


def bench_config(width: int, n_train: int, copies: int, batch: int) -> Any:
    """The benchmark's training config: a heat MLP of depth 2 at this width, never growing by itself."""
    return build_config({
        "run": {"seed": 0, "device": "cpu", "progress": False, "threads": 1},
        "data": {"problem": "heat", "input": "inputs/observations", "target": "targets/kl_coefficients",
                 "aux": [], "n_train": n_train, "n_val": 10, "n_test": 10, "noisy_copies": copies,
                 "input_transform": "log"},
        "model": {"kind": "mlp", "width": width, "depth": 2, "block": "perceptron", "activation": "tanh"},
        "optim": {"name": "adam", "lr": 1e-3, "batch_size": batch},
        "train": {"max_epochs": 1000, "phase_epochs": 1000, "patience": 1000, "loss": "mse"},
        "growth": {"strategy": "fixed"},
    }, "bench")


def make_trainer(data: str, width: int, n_train: int, copies: int, batch: int, out: Path) -> Trainer:
    return Trainer(bench_config(width, n_train, copies, batch), data, out, progress=False)


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:key=value,key=value`` (values as JSON, e.g. ``prune_depths=true``)."""
    name, _, opts = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return name, options


def make_strategy(spec: str) -> GrowthStrategy:
    """The strategy with no budget limit and, where it has one, no significance test (always proposes),
    and the options of ``spec`` (:func:`parse_variant`)."""
    name, options = parse_variant(spec)
    try:
        return build_strategy(name, {"max_layers": 100, "min_significance": 0.0, **options})
    except PdegrowError:   # a version without the option
        return build_strategy(name, {"max_layers": 100, **options})


#: CPU-time parts a proposal logs: forward + backward pass, eigen-solves, ε choice from stored states.
PARTS = ("pass_cpu_s", "solve_cpu_s", "search_cpu_s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="datasets/heat-paper-560.h5")
    ap.add_argument("--widths", type=int, nargs="+", default=[30, 256, 1024])
    ap.add_argument("--n-train", type=int, default=50)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--batch", type=int, default=55)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strategies", nargs="+", default=["topological_insertion", "random_insertion"],
                    help="strategy names, each optionally with options: "
                         "topological_insertion:prune_depths=true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"threads 1, load {os.getloadavg()[0]:.2f}, data {args.data}, {args.n_train} × {args.copies + 1} "
          f"rows, batch {args.batch}")
    print("| width | epoch CPU (s) | " + " | ".join(f"{s} CPU (s) | ratio" for s in args.strategies)
          + " | parts (epochs) |")
    print("|---:|---:|" + "---:|---:|" * len(args.strategies) + "---|")
    for width in args.widths:
        with tempfile.TemporaryDirectory() as tmp:
            tr = make_trainer(args.data, width, args.n_train, args.copies, args.batch, Path(tmp) / "run")
            tr.terms = tr._active_terms()
            for _ in range(args.warmup):
                tr._train_epoch()
            strategies = {s: make_strategy(s) for s in args.strategies}
            epochs: list[float] = []
            props: dict[str, list[float]] = {s: [] for s in args.strategies}
            parts: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.repeats):
                state = {k: v.clone() for k, v in tr.model.state_dict().items()}
                opt = tr.optimizer.state_dict()
                c0 = time.process_time()
                tr._train_epoch()
                epochs.append(time.process_time() - c0)
                tr.model.load_state_dict(state)
                tr.optimizer.load_state_dict(opt)
                for name, strat in strategies.items():
                    strat._cache = None   # type: ignore[attr-defined]   # every repeat pays the whole pass
                    c0 = time.process_time()
                    prop = strat.propose(tr.ctx)
                    props[name].append(time.process_time() - c0)
                    info = prop.info if prop is not None else {}
                    for key in PARTS:
                        if key in info:
                            parts.setdefault((name, key), []).append(info[key])
            e = statistics.median(epochs)
            cells = " | ".join(f"{statistics.median(props[s]):.3f} | {statistics.median(props[s]) / e:.2f}"
                               for s in args.strategies)
            split = "; ".join(f"{n} {k.removesuffix('_cpu_s')} {statistics.median(v) / e:.2f}"
                              for (n, k), v in parts.items())
            print(f"| {width} | {e:.3f} | {cells} | {split} |", flush=True)
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
