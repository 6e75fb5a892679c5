"""Learning curves on the heat `paper` preset (issue 16, goal 2): test error in m against n_train.

Reads the run directories RUNS/{method}-n{N}-s{seed} (``pdegrow train`` with ``--set data.n_train=N
--set data.n_val=10 --set data.n_test=500`` on DATA), scores each on its own test split with
``pdegrow evaluate``'s code against the Bayes reference beside DATA (``pdegrow reference DATA --method
map --samples all``: every sample has one, so every split's test samples do), adds ridge regression
(log observations → m at the nodes, as in ``experiments/ridge_reference.py``: inputs standardised on
the training split, λ ∈ {1e-2 … 1e4} chosen on the validation split) on the same splits, prints one
Markdown table (N × method → mean relative error of m, gap = error / reference − 1 on the same
samples) and draws the error against N with the reference as a band (± 1 s.e.).

    python experiments/learning_curves.py --runs runs/lc --data datasets/heat-paper-5560.h5
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from pdegrow.contract import open_dataset
from pdegrow.data.splits import make_splits
from pdegrow.reference.lookup import load_reference_for
from pdegrow.reference.results import gap_summary
from pdegrow.training.evaluate import evaluate_run

METRIC = "rel_error_field"
LABELS = {"sup": "supervised MLP (fixed, 10 noisy copies)",
          "best": "posterior objective (heat-paper-best.toml)",
          "best-nc0": "posterior objective, the same with noisy_copies=0",
          "ridge": "ridge, log y → m"}
RUN_RE = re.compile(r"^(?P<method>.+)-n(?P<n>\d+)-s(?P<seed>\d+)$")


def ridge_per_sample(path: str, n_train: int, n_val: int, n_test: int,
                     split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample relative errors of m on the test split and the test indices (ridge_reference.py's fit)."""
    with open_dataset(path) as f:
        n = int(f.attrs["n_samples"])
        x = np.log(f["inputs/observations"][()].reshape(n, -1))
        y = f["targets/log_conductivity"][()].reshape(n, -1)
    s = make_splits(n, n_train, n_val, n_test, split_seed)
    tr, va, te = (np.asarray(s[k]) for k in ("train", "val", "test"))
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-12
    z = (x - mu) / sd
    ym = y[tr].mean(0)

    def errs(lam: float, idx: np.ndarray) -> np.ndarray:
        a = z[tr]
        w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y[tr] - ym))
        pred = z[idx] @ w + ym
        return np.linalg.norm(pred - y[idx], axis=1) / np.linalg.norm(y[idx], axis=1)

    lam = min((10.0 ** k for k in range(-2, 5)), key=lambda v: float(errs(v, va).mean()))
    return errs(lam, te), te


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/lc")
    p.add_argument("--data", default="datasets/heat-paper-5560.h5")
    p.add_argument("--fig", default="experiments/results/figures/heat-learning-curves.png")
    args = p.parse_args(argv)

    found = load_reference_for(args.data)
    if found is None:
        sys.exit(f"no reference beside {args.data}: run "
                 f"'pdegrow reference {args.data} --method map --samples all'")
    ref, ref_path = found
    # (method, N) -> list of (error, gap, gap s.e.); N -> (reference mean, s.e.) on that N's test split
    cells: dict[tuple[str, int], list[tuple[float, float, float]]] = defaultdict(list)
    refs: dict[int, tuple[float, float]] = {}
    for d in sorted(Path(args.runs).iterdir()):
        m = RUN_RE.match(d.name)
        if not m or not (d / "model.pt").is_file():
            continue
        r = evaluate_run(d, args.data, "test", use_reference=True)
        g = r["reference"]["metrics"][METRIC]
        n = int(m["n"])
        cells[(m["method"], n)].append((r[METRIC], g["gap"], g["gap_stderr"]))
        refs[n] = (g["reference"], g["reference_stderr"])
    for n in sorted(refs):
        e, te = ridge_per_sample(args.data, n, 10, 500)
        g = gap_summary(ref, {METRIC: e}, te)["metrics"][METRIC]
        cells[("ridge", n)].append((float(e.mean()), g["gap"], g["gap_stderr"]))

    methods = [k for k in LABELS if any(key[0] == k for key in cells)]
    methods += sorted({key[0] for key in cells} - set(methods))
    ns = sorted(refs)
    print(f"Test error in m (`{METRIC}`, 500 test samples per N, split seed 0); gap to the MAP "
          f"({ref.method}, `{ref_path}`) on the same samples; seeds per cell in brackets "
          "(then the per-seed errors when more than one).\n")
    print("| method | " + " | ".join(f"N = {n}" for n in ns) + " |")
    print("|---|" + "---:|" * len(ns))
    print(f"| Bayes reference ({ref.method}) | " + " | ".join(f"{refs[n][0]:.4f} ± {refs[n][1]:.4f}"
                                                           for n in ns) + " |")
    for k in methods:
        row = []
        for n in ns:
            v = cells.get((k, n))
            if not v:
                row.append("–")
                continue
            a = np.array(v)
            seeds = f" [{len(v)}]" if k != "ridge" else ""
            if len(v) > 1:
                seeds += " (" + ", ".join(f"{x:.4f}" for x in a[:, 0]) + ")"
            row.append(f"{a[:, 0].mean():.4f} ({100 * a[:, 1].mean():+.1f} %){seeds}")
        print(f"| {LABELS.get(k, k)} | " + " | ".join(row) + " |")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axg) = plt.subplots(1, 2, figsize=(11, 4))
    rn = np.array(ns, dtype=float)
    rm = np.array([refs[n][0] for n in ns])
    rs = np.array([refs[n][1] for n in ns])
    ax.fill_between(rn, rm - rs, rm + rs, color="0.8", label=f"Bayes reference ({ref.method}) ± s.e.")
    ax.plot(rn, rm, color="0.4", lw=1)
    axg.axhline(0, color="0.4", lw=1, label=f"Bayes reference ({ref.method})")
    for k in methods:
        xs = [n for n in ns if (k, n) in cells]
        ys = [np.mean([c[0] for c in cells[(k, n)]]) for n in xs]
        gs = [100 * np.mean([c[1] for c in cells[(k, n)]]) for n in xs]
        ge = [100 * np.mean([c[2] for c in cells[(k, n)]]) for n in xs]
        ax.plot(xs, ys, "o-", label=LABELS.get(k, k))
        axg.errorbar(xs, gs, yerr=ge, fmt="o-", capsize=3, label=LABELS.get(k, k))
    for a in (ax, axg):
        a.set_xscale("log")
        a.set_xlabel("labelled training samples N")
        a.grid(alpha=0.3)
    ax.set_ylabel("mean relative error of m (500 test samples)")
    axg.set_ylabel("gap to the reference on the same samples (%)")
    ax.set_title("heat paper preset: error in m")
    axg.set_title("gap = error / reference − 1 (± paired s.e.)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.fig).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.fig, dpi=120)
    print(f"\nfigure: {args.fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
