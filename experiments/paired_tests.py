"""Paired comparisons of strategies over seeds, from a finished `pdegrow compare` study (or run dirs).

For each pair (A, B) and metric: the per-seed differences d_k = err_A(k) − err_B(k) of the mean test
errors, their mean ± std, how many seeds A wins, and the two-sided paired t-test (scipy.stats.ttest_rel)
and Wilcoxon signed-rank p-values. Runs with the same seed share the data split and initial draw
conventions of the study, so the seed is the pairing unit.

    python experiments/paired_tests.py runs/study-heat-paper-posterior \
        --pairs topological_insertion:random_insertion random_insertion:fixed-same-size
    python experiments/paired_tests.py runs/study-ns-simulated --datasets T0_2 T1 T5 \
        --metrics rel_error_target --pairs topological_insertion:fixed-same-size

With several data sets, ``--datasets`` pairs the seeds within each one (without it, runs of the same seed
on different data sets would overwrite each other). ``--b-study DIR`` reads strategy B's runs from another
study (same data set names and seeds), e.g. a baseline whose per-run config the new study did not change:

    python experiments/paired_tests.py runs/study-ns-goal4 --datasets T0_2 T1 --metrics rel_error_target \
        --pairs topological_insertion:fixed-same-size --b-study runs/study-ns-simulated

``--runs LABEL=PATTERN`` reads the runs of LABEL (as A or B) from plain `pdegrow train` directories
instead, one per seed (``{seed}`` in PATTERN), e.g. the runs of a best configuration that a study's fixed
row repeats:

    python experiments/paired_tests.py runs/study-heat-sensors50-regimes --datasets sim20000 \
        --pairs topological_insertion:fixed-same-size --runs 'fixed-same-size=runs/s50-best-s{seed}'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats


def seed_errors(study: Path, strategy: str, metric: str, dataset: str = "*") -> dict[int, float]:
    out = {}
    for summary in sorted(study.glob(f"runs/{dataset}/{strategy}/seed-*/summary.json")):
        value = json.loads(summary.read_text()).get("test", {}).get(metric)
        if value is not None:
            out[int(summary.parent.name.removeprefix("seed-"))] = float(value)
    return out


def run_errors(pattern: str, seeds: list[int], metric: str) -> dict[int, float]:
    """Test errors of plain run directories ``pattern.format(seed=k)`` (those that finished)."""
    out = {}
    for seed in seeds:
        summary = Path(pattern.format(seed=seed)) / "summary.json"
        if summary.is_file():
            value = json.loads(summary.read_text()).get("test", {}).get(metric)
            if value is not None:
                out[seed] = float(value)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", type=Path, help="a `pdegrow compare --out` directory")
    p.add_argument("--pairs", nargs="+", required=True, help="A:B strategy labels (A is tested against B)")
    p.add_argument("--metrics", nargs="+", default=["rel_error_field", "rel_error_conductivity"])
    p.add_argument("--datasets", nargs="+", default=["*"],
                   help="compare within each of these data sets of the study (default: all pooled by seed, "
                        "for one-data-set studies), e.g. --datasets T0_2 T1 T5")
    p.add_argument("--b-study", type=Path, default=None,
                   help="read strategy B's runs from this study directory (default: STUDY)")
    p.add_argument("--runs", nargs="+", default=[], metavar="LABEL=PATTERN",
                   help="read LABEL's runs from plain run directories, {seed} in PATTERN "
                        "(e.g. 'fixed-same-size=runs/s50-best-s{seed}'), seeds 0-99")
    args = p.parse_args()
    b_study = args.b_study or args.study
    plain = dict(item.split("=", 1) for item in args.runs)
    print("| data set | A vs B | metric | seeds | mean(A − B) ± std | A better | paired t p | Wilcoxon p |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for dataset in args.datasets:
        label = "all" if dataset == "*" else dataset
        for pair in args.pairs:
            a, _, b = pair.partition(":")
            for metric in args.metrics:
                ea = (run_errors(plain[a], list(range(100)), metric) if a in plain
                      else seed_errors(args.study, a, metric, dataset))
                eb = (run_errors(plain[b], list(range(100)), metric) if b in plain
                      else seed_errors(b_study, b, metric, dataset))
                seeds = sorted(set(ea) & set(eb))
                if len(seeds) < 2:
                    print(f"| {label} | {a} vs {b} | {metric} | {len(seeds)} | – | – | – | – |")
                    continue
                d = np.array([ea[s] - eb[s] for s in seeds])
                t_p = stats.ttest_rel([ea[s] for s in seeds], [eb[s] for s in seeds]).pvalue
                w_p = stats.wilcoxon(d).pvalue if np.any(d != 0) else 1.0
                print(f"| {label} | {a} vs {b} | {metric} | {len(seeds)} | {d.mean():+.4f} ± "
                      f"{d.std(ddof=1):.4f} | {int((d < 0).sum())}/{len(seeds)} | {t_p:.3g} | {w_p:.3g} |")


if __name__ == "__main__":
    main()
