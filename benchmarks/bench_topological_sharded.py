"""CPU time of the topological-derivative pass on 2 gloo processes against 1 process.

The pass of topological insertion — one forward + backward over the training set, the operators
A_r = σ″(0) Σ_s λ_{s,r} x̃_s x̃_sᵀ at every depth and their top eigenpairs — runs sharded: each
process runs the forward + backward pass on its share of the samples; the Lanczos solve splits
the units over the processes (states and costates exchanged once, eigenpairs gathered), dense
blocks are summed by an all-reduce.  For each
width a network is trained ``--warmup`` epochs on one process (the study's heat `paper` data:
50 training samples × 11 copies, batch 55), its weights are saved, and then the pass and the
whole proposal are timed (``time.process_time``, 1 torch thread a process, median of
``--repeats``) on 1 process and on each of 2 processes loading the same weights.  Printed: the
CPU seconds, the ratio per rank / serial, and whether the proposals agree (depth, ε, eigenvalues).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_topological_sharded.py --widths 256 1024

Nothing here is asserted by the tests (tests/test_topological_sharded.py checks the equality);
the numbers in experiments/RESULTS.md come from this script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench_insertion_proposal import bench_config

from pdegrow.growth.base import build_strategy
from pdegrow.training.launch import free_port


def time_proposals(trainer: Any, repeats: int) -> dict[str, Any]:
    """Median CPU s of the derivative pass (forward + backward, operators, eigen-solves; and its two
    parts) and of the whole proposal, and the last proposal's depth, ε and eigenvalues per depth."""
    passes, props, fwd, solve = [], [], [], []
    out: dict[str, Any] = {}
    for _ in range(repeats):
        strat = build_strategy("topological_insertion", {"max_layers": 100, "min_significance": 0.0})
        c0 = time.process_time()
        d = strat._pass(trainer.ctx)
        passes.append(time.process_time() - c0)
        fwd.append(d.cpu["pass_cpu_s"])
        solve.append(d.cpu["solve_cpu_s"])
        strat._cache = None
        c0 = time.process_time()
        prop = strat.propose(trainer.ctx)
        props.append(time.process_time() - c0)
        out = {"depth": None if prop is None else prop.depth,
               "eps": None if prop is None else prop.info["eps"],
               "values": [p.values.double() for p in d.pairs]}
    return {"pass": statistics.median(passes), "proposal": statistics.median(props),
            "fwd": statistics.median(fwd), "solve": statistics.median(solve), **out}


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, width: int, weights: str,
            root: str) -> None:
    import torch.distributed as dist

    from pdegrow.training.distributed import DistributedTrainer

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    tr = DistributedTrainer(bench_config(width, args.n_train, args.copies, args.batch), args.data,
                            Path(root) / f"run{width}")
    tr.model.load_state_dict(torch.load(weights))
    torch.save(time_proposals(tr, args.repeats), Path(root) / f"w{width}-rank{rank}.pt")
    tr.cleanup()
    dist.destroy_process_group()


def main() -> None:
    import torch.multiprocessing as mp

    from pdegrow.training.trainer import Trainer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="datasets/heat-paper-560.h5")
    ap.add_argument("--widths", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--n-train", type=int, default=50)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--batch", type=int, default=55)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"threads 1 a process, load {os.getloadavg()[0]:.2f}, data {args.data}, {args.n_train} × "
          f"{args.copies + 1} rows, batch {args.batch}")
    print("| width | serial pass CPU (s) | 2 ranks: pass CPU per rank (s) | ratio (max rank / serial) | "
          "of which forward + backward: ratio | eigen-solve: ratio | "
          "serial proposal (s) | 2 ranks: proposal per rank (s) | ratio | same depth, ε, eigenvalues |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for width in args.widths:
            cfg = bench_config(width, args.n_train, args.copies, args.batch)
            tr = Trainer(cfg, args.data, Path(tmp) / f"s{width}", progress=False)
            tr.terms = tr._active_terms()
            for _ in range(args.warmup):
                tr._train_epoch()
            weights = str(Path(tmp) / f"w{width}.pt")
            torch.save(tr.model.state_dict(), weights)
            serial = time_proposals(tr, args.repeats)
            mp.spawn(_worker, args=(2, free_port(), args, width, weights, tmp), nprocs=2, join=True)
            ranks = [torch.load(Path(tmp) / f"w{width}-rank{r}.pt") for r in range(2)]
            same = all(r["depth"] == serial["depth"] and r["eps"] == serial["eps"] or
                       (r["eps"] is not None and serial["eps"] is not None
                        and abs(r["eps"] - serial["eps"]) <= 1e-4 * abs(serial["eps"])) for r in ranks)
            diff = max(float((a - b).abs().max() / b.abs().max()) for r in ranks
                       for a, b in zip(r["values"], serial["values"], strict=True))
            p_r = max(r["pass"] for r in ranks)
            q_r = max(r["proposal"] for r in ranks)
            print(f"| {width} | {serial['pass']:.3f} | {' / '.join(f'{r['pass']:.3f}' for r in ranks)} | "
                  f"{p_r / serial['pass']:.2f} | "
                  f"{max(r['fwd'] for r in ranks) / serial['fwd']:.2f} (serial {serial['fwd']:.3f} s) | "
                  f"{max(r['solve'] for r in ranks) / serial['solve']:.2f} "
                  f"(serial {serial['solve']:.3f} s) | "
                  f"{serial['proposal']:.3f} | "
                  f"{' / '.join(f'{r['proposal']:.3f}' for r in ranks)} | {q_r / serial['proposal']:.2f} | "
                  f"{'yes' if same else 'NO'} (eigenvalues rel. {diff:.1e}) |", flush=True)
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
