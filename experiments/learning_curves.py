"""Learning curves on the heat `paper` preset (issue 16, goal 2): test error in m against n_train.

Reads the runs of a ``pdegrow compare`` study (``--study``: STUDY/runs/DATASET/STRATEGY/seed-K, N read
from each run's ``data.n_train``; ``experiments/study-heat-paper-lc.toml``) and/or single run directories
(``--runs``: RUNS/{method}-n{N}-s{seed}, ``pdegrow train`` with ``--set data.n_train=N --set data.n_val=10
--set data.n_test=500`` on DATA; ``--methods`` picks some of them). Scores each run on its own test split
with ``pdegrow evaluate``'s code against the Bayes reference beside DATA (``pdegrow reference DATA --method
map --samples all``: every sample has one, so every split's test samples do), adds ridge regression (log
observations → m at the nodes, as in ``experiments/ridge_reference.py``: inputs standardised on the
training split, λ ∈ {1e-2 … 1e4} chosen on the validation split) on the same splits, prints one Markdown
table (method × N → mean ± std over seeds of the relative error of m, and of the gap = error /
reference − 1 on the same samples) and draws the error against N (log x) with the reference as a band
(± 1 s.e.), one line per method with the std over seeds as error bars, and the gap beside it.

    python experiments/learning_curves.py --study runs/study-heat-paper-lc --data datasets/heat-paper-5560.h5
    python experiments/learning_curves.py --study runs/study-heat-paper-lc --runs runs/lc \
        --methods best best-nc0
"""

from __future__ import annotations

import argparse
import json
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
LABELS = {"fixed": "fixed (depth 2 × 64 from the start)",
          "layerwise-srl": "layerwise + SRL (Approach I)",
          "topological_insertion": "topological insertion (Approach II)",
          "random_insertion": "random insertion",
          "sup": "supervised MLP (fixed, 10 noisy copies)",
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


def find_runs(study: Path | None, runs: Path | None,
              methods: list[str] | None) -> list[tuple[str, int, Path]]:
    """(method, N, run directory) of every finished run (``model.pt`` present)."""
    found = []
    if study is not None:
        for d in sorted(study.glob("runs/*/*/seed-*")):
            if (d / "result.json").is_file() and (d / "config.json").is_file():   # finished runs only
                n = int(json.loads((d / "config.json").read_text())["data"]["n_train"])
                found.append((d.parent.name, n, d))
    if runs is not None:
        for d in sorted(runs.iterdir()):
            m = RUN_RE.match(d.name)
            if m and (d / "model.pt").is_file() and (methods is None or m["method"] in methods):
                found.append((m["method"], int(m["n"]), d))
    return found


def cell_stats(v: list[tuple[float, float, float]]) -> tuple[float, float, float, float]:
    """(mean error, std over seeds, mean gap, std of the gap over seeds); std 0 for one seed."""
    a = np.array(v)

    def sd(c: int) -> float:
        return float(a[:, c].std(ddof=1)) if len(a) > 1 else 0.0

    return float(a[:, 0].mean()), sd(0), float(a[:, 1].mean()), sd(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", type=Path, default=None, help="a `pdegrow compare --out` directory")
    p.add_argument("--runs", type=Path, default=None, help="a directory of METHOD-nN-sK run directories")
    p.add_argument("--methods", nargs="+", default=None, help="only these METHODs of --runs")
    p.add_argument("--data", default="datasets/heat-paper-5560.h5")
    p.add_argument("--fig", default="experiments/results/figures/heat-learning-curves.png")
    args = p.parse_args(argv)
    if args.study is None and args.runs is None:
        sys.exit("give --study and/or --runs")

    found = load_reference_for(args.data)
    if found is None:
        sys.exit(f"no reference beside {args.data}: run "
                 f"'pdegrow reference {args.data} --method map --samples all'")
    ref, ref_path = found
    # (method, N) -> list of (error, gap, gap s.e.); N -> (reference mean, s.e.) on that N's test split
    cells: dict[tuple[str, int], list[tuple[float, float, float]]] = defaultdict(list)
    refs: dict[int, tuple[float, float]] = {}
    for method, n, d in find_runs(args.study, args.runs, args.methods):
        r = evaluate_run(d, args.data, "test", use_reference=True)
        g = r["reference"]["metrics"][METRIC]
        cells[(method, n)].append((r[METRIC], g["gap"], g["gap_stderr"]))
        refs[n] = (g["reference"], g["reference_stderr"])
    for n in sorted(refs):
        e, te = ridge_per_sample(args.data, n, 10, 500)
        g = gap_summary(ref, {METRIC: e}, te)["metrics"][METRIC]
        cells[("ridge", n)].append((float(e.mean()), g["gap"], g["gap_stderr"]))

    methods = [k for k in LABELS if any(key[0] == k for key in cells)]
    methods += sorted({key[0] for key in cells} - set(methods))
    ns = sorted(refs)
    print(f"Test error in m (`{METRIC}`, 500 test samples per N, split seed 0), mean ± std over seeds "
          f"[seeds]; gap to the MAP ({ref.method}, `{ref_path}`) on the same samples, mean ± std over "
          "seeds.\n")
    print("| method | " + " | ".join(f"N = {n} | gap" for n in ns) + " |")
    print("|---|" + "---:|---:|" * len(ns))
    print(f"| Bayes reference ({ref.method}) ± s.e. | "
          + " | ".join(f"{refs[n][0]:.4f} ± {refs[n][1]:.4f} | 0" for n in ns) + " |")
    for k in methods:
        row = []
        for n in ns:
            v = cells.get((k, n))
            if not v:
                row.append("– | –")
                continue
            e, es, g, gs = cell_stats(v)
            if k == "ridge" or len(v) == 1:
                row.append(f"{e:.4f}{'' if k == 'ridge' else ' [1]'} | {100 * g:+.1f} %")
            else:
                row.append(f"{e:.4f} ± {es:.4f} [{len(v)}] | {100 * g:+.1f} ± {100 * gs:.1f} %")
        print(f"| {LABELS.get(k, k)} | " + " | ".join(row) + " |")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, (ax, axg) = plt.subplots(1, 2, figsize=(12, 4.5))
    rn = np.array(ns, dtype=float)
    rm = np.array([refs[n][0] for n in ns])
    rs = np.array([refs[n][1] for n in ns])
    ax.fill_between(rn, rm - rs, rm + rs, color="0.8", label=f"Bayes reference ({ref.method}) ± s.e.")
    ax.plot(rn, rm, color="0.4", lw=1)
    axg.axhline(0, color="0.4", lw=1, label=f"Bayes reference ({ref.method})")
    for i, k in enumerate(methods):
        xs = np.array([n for n in ns if (k, n) in cells], dtype=float)
        st = np.array([cell_stats(cells[(k, int(n))]) for n in xs])
        shift = xs * 1.04 ** (i - (len(methods) - 1) / 2)   # side by side on the log axis
        ax.errorbar(shift, st[:, 0], yerr=st[:, 1], fmt="o-", ms=4, capsize=3, label=LABELS.get(k, k))
        axg.errorbar(shift, 100 * st[:, 2], yerr=100 * st[:, 3], fmt="o-", ms=4, capsize=3,
                     label=LABELS.get(k, k))
    for a in (ax, axg):
        a.set_xscale("log")
        a.set_xticks(rn, [str(n) for n in ns])
        a.xaxis.set_minor_formatter(NullFormatter())
        a.set_xlabel("labelled training samples N")
        a.grid(alpha=0.3)
    ax.set_ylabel("mean relative error of m (500 test samples)")
    axg.set_ylabel("gap to the reference on the same samples (%)")
    ax.set_title("heat paper preset: error in m (± std over seeds)")
    axg.set_title("gap = error / reference − 1 (± std over seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(args.fig).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.fig, dpi=120)
    print(f"\nfigure: {args.fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
