"""``pdegrow reference DATA --method map|laplace|mcmc``: the Bayesian reference of a data set."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EPILOG = """\
what it writes:
  DATA_STEM.reference-METHOD.h5 next to DATA (or --out FILE) with the per-sample errors in the
  trainer's metrics, the estimates (MAP, posterior mean of m and of e^m, posterior std) and the
  diagnostics, plus a JSON summary beside it. 'pdegrow evaluate', 'pdegrow compare' and
  'pdegrow report' pick it up and print every network's gap = error / reference - 1.

methods:
  map       multistart Gauss-Newton MAP (exact relative-noise likelihood, adjoint gradients)
  laplace   MAP + Gaussian approximation (Gauss-Newton Hessian): posterior std, lognormal
            mean of e^m, coverage of the 95 % intervals
  mcmc      posterior means of m and of e^m by MCMC (independence-t + random-walk Metropolis,
            several chains per sample); refused while split-R-hat > --rhat-max
  Navier-Stokes files: map is the 4D-Var MAP (batched L-BFGS, gradients by reverse mode through
  the file's own time stepping), laplace adds the low-rank Fisher posterior std (--rank)

examples:
  pdegrow reference datasets/heat-paper-560.h5 --method map
  pdegrow reference datasets/heat-paper-560.h5 --method mcmc              # the test split
  pdegrow reference datasets/heat-paper-560.h5 --method mcmc --samples 0:40 --chains 8
  pdegrow reference datasets/heat-default.h5 --method laplace --samples all
  pdegrow reference data.h5 --method map --samples test --n-train 100 --n-val 20
  pdegrow reference datasets/ns32-T1-full.h5 --method laplace --n-train 400 --n-val 50 --n-test 5 \\
      --rank 256 --device cuda
"""


NS_OPTIONS = ("device", "rank", "power_iters", "batch_size", "max_iter")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reference", help="Bayesian reference (MAP, Laplace, MCMC): the error the data allow",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compute the best error an estimator can reach on a data set's samples given the "
        "file's prior and noise model, from the operators stored in the file (no FEniCSx needed), so "
        "that networks can be read against it. Implemented for heat data sets (KL and full-field SPDE "
        "priors; mcmc for KL) and Navier-Stokes data sets (map, laplace).", epilog=EPILOG)
    p.add_argument("data", metavar="DATA", help="pdegrow data set (HDF5)")
    p.add_argument("--method", required=True, choices=("map", "laplace", "mcmc"), help="estimator")
    p.add_argument("--samples", default="test", metavar="SPEC",
                   help="'test' (the trainer's default test split, see --n-train …), 'all', 'A:B' (half-open "
                   "range) or 'I,J,K' (default: test)")
    g = p.add_argument_group("the test split (as in a training config's [data] section)")
    g.add_argument("--n-train", type=int, default=50, help="default: 50")
    g.add_argument("--n-val", type=int, default=10, help="default: 10")
    g.add_argument("--n-test", type=int, default=-1, help="default: -1 (every remaining sample)")
    g.add_argument("--split-seed", type=int, default=0, help="default: 0")
    p.add_argument("--out", metavar="FILE",
                   help="results file (default: DATA_STEM.reference-METHOD.h5 beside DATA)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results file")
    s = p.add_argument_group("optimisation and sampling")
    s.add_argument("--starts", type=int, help="MAP starts per sample (default: 4 for KL, 1 for full-field)")
    s.add_argument("--chains", type=int, default=4, help="MCMC chains per sample (default: 4)")
    s.add_argument("--warmup", type=int, default=300,
                   help="adaptation steps per chain, discarded (default: 300)")
    s.add_argument("--steps", type=int, default=1000, help="kept steps per chain (default: 1000)")
    s.add_argument("--max-steps", type=int,
                   help="samples whose R-hat is still too high get further blocks of --steps, up to this "
                   "many (default: 4 x --steps)")
    s.add_argument("--rhat-max", type=float, default=1.05,
                   help="largest accepted split-R-hat (default: 1.05)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    s.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: leave as is)")
    n = p.add_argument_group("Navier-Stokes (4D-Var MAP and Laplace through the file's own dynamics)")
    n.add_argument("--device", help="auto (CUDA when present), cpu, cuda, cuda:1 ... (default: auto)")
    n.add_argument("--rank", type=int,
                   help="Laplace, full field: Hessian rank kept (default: 256; sensors are exact)")
    n.add_argument("--power-iters", type=int,
                   help="Laplace: power iterations of the randomised SVD (default: 1)")
    n.add_argument("--batch-size", type=int, help="samples optimised together (default: 50)")
    n.add_argument("--max-iter", type=int, help="L-BFGS iterations per sample (default: 300)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def _progress(enabled: bool) -> tuple[Any, Any]:
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def cb(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = bars[stage] = tqdm(total=total, desc=stage, leave=False, file=sys.stderr)
        bar.n = done
        bar.refresh()

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return cb, close


def run(args: argparse.Namespace) -> int:
    from pdegrow.errors import PdegrowError
    from pdegrow.reference.dispatch import run_reference
    from pdegrow.reference.results import default_reference_path, summary_dict, write_reference

    out = Path(args.out) if args.out else default_reference_path(args.data, args.method)
    if out.exists() and not args.overwrite:
        raise PdegrowError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise PdegrowError(f"{out}: directory {out.parent} does not exist")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    opts: dict[str, Any] = {"seed": args.seed}
    for key in ("starts", "max_steps"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    ns_opts = {key: getattr(args, key) for key in NS_OPTIONS if getattr(args, key) is not None}
    if ns_opts:
        from pdegrow.contract import open_dataset

        with open_dataset(args.data) as f:
            problem = str(f.attrs["problem"])
        if problem != "navier_stokes":
            flags = ", ".join("--" + key.replace("_", "-") for key in ns_opts)
            raise PdegrowError(f"{flags}: Navier-Stokes options, but {args.data} is a {problem} data set")
        opts.update(ns_opts)
    if args.method == "mcmc":
        opts.update(chains=args.chains, warmup=args.warmup, steps=args.steps, rhat_max=args.rhat_max)
    cb, close = _progress(not args.no_progress)
    try:
        result = run_reference(args.data, args.method, args.samples, progress=cb,
                               split={"n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test,
                                      "split_seed": args.split_seed}, **opts)
    finally:
        close()
    write_reference(out, result)
    summary = summary_dict(result)
    if args.json:
        print(json.dumps(summary, indent=1, allow_nan=True))
        return 0
    print(f"wrote {out} ({result.method}, {result.n} samples of {args.data})")
    for key, s in summary["errors"].items():
        print(f"  {key:<30} {s['mean']:.4f} ± {s['stderr']:.4f} (mean ± standard error, n = {s['n']})")
    for section in ("map", "laplace", "mcmc"):
        if section in result.info:
            items = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in result.info[section].items())
            print(f"  {section}: {items}")
    print(f"  time: {result.info.get('wall_s')} s wall, {result.info.get('cpu_s')} s CPU")
    return 0
