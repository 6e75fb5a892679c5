"""Time the Bayesian references of the heat `paper` setting (prints a Markdown table).

    .venv/bin/python benchmarks/bench_reference.py                      # map, laplace, mcmc on the test split
    .venv/bin/python benchmarks/bench_reference.py --data datasets/heat-paper-560.h5 --methods map mcmc

Uses (or generates, 560 samples, seed 0) ``datasets/heat-paper-560.h5`` and the trainer's default
test split (500 samples). Single-threaded (OMP_NUM_THREADS=1, one torch thread). Reports wall
and CPU seconds, the machine load (1-min load average) before each run, and the errors.
Nothing is written next to the data.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    import torch

    from pdegrow.reference.dispatch import run_reference

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "datasets" / "heat-paper-560.h5")
    ap.add_argument("--methods", nargs="+", default=["map", "laplace", "mcmc"])
    ap.add_argument("--samples", default="test", help="sample spec (default: the 500-sample test split)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not args.data.is_file():
        subprocess.run([sys.executable, "-m", "pdegrow", "generate", "heat", "--preset", "paper",
                        "--n-samples", "560", "--seed", "0", "--out", str(args.data), "--no-progress"],
                       check=True, cwd=ROOT)
    print(f"data: {args.data}, samples: {args.samples}, torch threads: {torch.get_num_threads()}\n")
    print("| method | samples | wall (s) | CPU (s) | load before | error in m | error in e^m | diagnostics |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for method in args.methods:
        load = os.getloadavg()[0]
        res = run_reference(args.data, method, args.samples)
        err = res.mean_errors()
        diag = {"map": res.info["map"]}.get(method)
        if method == "laplace":
            diag = {"coverage_95": round(res.info["laplace"]["coverage_95"], 3)}
        elif method == "mcmc":
            mc = res.info["mcmc"]
            diag = {k: round(mc[k], 3) if isinstance(mc[k], float) else mc[k]
                    for k in ("max_rhat", "min_ess", "samples_extended", "acceptance_independence")}
        print(f"| {method} | {res.n} | {res.info['wall_s']:.1f} | {res.info['cpu_s']:.1f} | {load:.1f} | "
              f"{err['rel_error_field']['mean']:.4f} ± {err['rel_error_field']['stderr']:.4f} | "
              f"{err['rel_error_conductivity']['mean']:.4f} ± "
              f"{err['rel_error_conductivity']['stderr']:.4f} | {diag} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
