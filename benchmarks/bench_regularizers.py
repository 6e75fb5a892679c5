"""Benchmark of the Approach I regularizers (issue 4); nothing here is asserted by the tests.

1. Training throughput (samples/s) on the heat ``paper`` data (50 training samples × 10 noisy
   copies, the configs' network) with no regularizer and with each one alone: manifold
   (clusters of noisy copies), manifold (k-NN kernel, k = 5), sparsity, physics residual,
   model-constrained (dense batched solve), and all of the first four.
2. Φ_m overhead as the training set grows, M = 10³ … 10⁵ (synthetic inputs, same network):
   time of one epoch with/without the penalty, their ratio, and the one-off k-NN graph build.
   Φ_m with clusters costs O(B·d) per batch and k-NN O(B·k·d); neither ever forms an M×M array.

Times are process CPU seconds (``time.process_time``; with ``--threads 1`` this is the
training thread's time, which time-sharing with other jobs on the machine does not inflate
as it does wall time); the cases of one M are run interleaved, ``--repeats`` rounds, and the
median per case is reported, so a ratio compares epochs measured side by side.

    PYTHONPATH=. python3 benchmarks/bench_regularizers.py [--data FILE] [--threads 1] [--max-m 100000]
        [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pdegrow.data import iterate, prepare_data
from pdegrow.models import GrowableResNet
from pdegrow.regularizers import Forward, HeatPhysicsTerm, ManifoldTerm, ModelConstrainedTerm, SparsityTerm
from pdegrow.regularizers.heat_physics import HeatOperators
from pdegrow.regularizers.manifold import knn_graph
from pdegrow.training.config import DataConfig


def epoch_time(model, split, terms, batch_size, keep_groups, to_phys_t, to_phys_in, epochs=3) -> float:
    """Best CPU time of ``epochs`` epochs."""
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(0)
    best = float("inf")
    for _ in range(epochs):
        t0 = time.process_time()
        for batch in iterate(split, batch_size, gen, keep_groups):
            opt.zero_grad()
            pred, states = model(batch.inputs, return_states=True)
            fwd = Forward(model, pred, states, to_phys_t, to_phys_in)
            loss = (pred - batch.targets).pow(2).mean()
            for t in terms:
                loss = loss + t(batch, fwd)
            loss.backward()
            opt.step()
        best = min(best, time.process_time() - t0)
    return best


def throughput(data_path: str) -> None:
    cfg = DataConfig(n_train=50, n_val=10, n_test=10, noisy_copies=10, input_transform="log")
    data = prepare_data(data_path, cfg, 0, torch.device("cpu"))
    ops = HeatOperators.from_arrays(data.operators, data.geometry)
    m = len(data.train)
    torch.manual_seed(0)
    model = GrowableResNet.mlp(10, [12], width=30, depth=2)
    nb, beta = knn_graph(data.train.inputs, 5)
    cases = {
        "none": [],
        "manifold (clusters)": [ManifoldTerm(1.0, m, "clusters")],
        "manifold (k-NN, k=5)": [ManifoldTerm(1.0, m, "knn", -1, nb, beta, data.train.inputs)],
        "sparsity": [SparsityTerm(1e-5, model.blocks[-1])],
        "physics residual": [HeatPhysicsTerm(1e-3, ops, cfg.target)],
        "model-constrained": [ModelConstrainedTerm(1e-3, ops, cfg.target)],
    }
    cases["all but model-constrained"] = [t for k in list(cases)[1:5] for t in cases[k]]
    print(f"## Training throughput, heat paper data: M = {m} training items (50 × 11), batch 55, width 30, "
          f"depth 2, {torch.get_num_threads()} thread(s)\n")
    print("| regularizer | samples/s | time vs none |\n|---|---|---|")
    base = None
    for name, terms in cases.items():
        t = epoch_time(model, data.train, terms, 55, True, data.to_physical_target, data.to_physical_input)
        base = base or t
        print(f"| {name} | {m / t:,.0f} | {t / base:.2f}× |")


def scaling(max_m: int, repeats: int) -> None:
    print("\n## Φ_m overhead vs training-set size M (synthetic inputs in R¹⁰, width 30, batch 253 = 23 "
          f"groups of 11 for clusters; epoch CPU time, median of {repeats} interleaved rounds)\n")
    print("| M | epoch, no Φ_m (s) | clusters (s) | ratio | k-NN k=5 (s) | ratio | k-NN graph build (s) |")
    print("|---|---|---|---|---|---|---|")
    from pdegrow.data.loaders import MemorySplit

    m = 1000
    while m <= max_m:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(m, 10, generator=g)
        split = MemorySplit(x, torch.randn(m, 12, generator=g), torch.arange(m) // 11, {})
        torch.manual_seed(0)
        model = GrowableResNet.mlp(10, [12], width=30, depth=2)
        ident = lambda t: t  # noqa: E731
        tb = time.process_time()
        nb, beta = knn_graph(x, 5)
        tb = time.process_time() - tb
        cases = {"none": [], "clusters": [ManifoldTerm(1.0, m, "clusters")],
                 "knn": [ManifoldTerm(1.0, m, "knn", -1, nb, beta, x)]}
        times: dict[str, list[float]] = {c: [] for c in cases}
        for _ in range(repeats):
            for c, terms in cases.items():
                times[c].append(epoch_time(model, split, terms, 256, True, ident, ident, epochs=1))
        t0, t1, t2 = (statistics.median(times[c]) for c in cases)
        print(f"| {m:,} | {t0:.3f} | {t1:.3f} | {t1 / t0:.2f}× | {t2:.3f} | {t2 / t0:.2f}× | {tb:.2f} |",
              flush=True)
        m = m * 10 if m * 10 <= max_m or m == max_m else max_m


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="heat paper data set (default: generate 70 samples into a temporary file)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-m", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds per M in the scaling table")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = str(Path(tmp) / "heat.h5")
            subprocess.run([sys.executable, "-m", "pdegrow", "generate", "heat", "--preset", "paper",
                            "--n-samples", "70", "--out", data, "--no-progress"], check=True,
                           stdout=subprocess.DEVNULL)
        throughput(data)
    scaling(args.max_m, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
