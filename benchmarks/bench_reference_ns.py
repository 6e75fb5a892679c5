"""Benchmark: the Navier–Stokes Bayesian reference (4D-Var MAP, Laplace) on data sets.

    .venv/bin/python benchmarks/bench_reference_ns.py datasets/ns32-T1-full.h5 [more files …]
        [--method map|laplace] [--samples test] [--n-train 400 --n-val 50 --n-test 50]
        [--device auto] [--threads 1] [--rank 256] [--power-iters 1] [--write]

For every file: the forward check (the torch P1 dynamics from the stored w₀ against the
stored clean w(T), max relative L² error over the samples), one batched forward solve and
one forward + adjoint (gradient) solve of all samples, and the whole ``run_reference`` run
(L-BFGS iterations, CPU and wall seconds, error ‖ŵ₀ − w₀‖/‖w₀‖ mean ± standard error).
Printed as a Markdown table with the load average before and after each row.
Measurements are what this machine did; CPU seconds are the comparable number on a shared
machine. This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pdegrow.contract import open_dataset  # noqa: E402
from pdegrow.reference.dispatch import resolve_samples  # noqa: E402
from pdegrow.reference.navier_stokes import (  # noqa: E402
    build,
    forward_mismatch,
    load_data,
    resolve_device,
    run_reference,
)
from pdegrow.reference.results import data_fingerprint, default_reference_path, write_reference  # noqa: E402


def _fingerprint(path: str) -> dict:
    with open_dataset(path) as f:
        return data_fingerprint(f)


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def bench(path: str, args: argparse.Namespace) -> dict:
    with open_dataset(path, "navier_stokes") as f:
        n_samples = int(f.attrs["n_samples"])
    idx = resolve_samples(args.samples, n_samples, n_train=args.n_train, n_val=args.n_val,
                          n_test=args.n_test, split_seed=args.split_seed)
    load0 = os.getloadavg()[0]
    data = load_data(path, idx)
    device = resolve_device(args.device)
    post = build(data, device)
    mismatch = forward_mismatch(post, data)
    w0 = torch.as_tensor(data.w0, device=device)

    def fwd() -> None:
        with torch.no_grad():
            post.dynamics(w0)

    def grad() -> None:
        x = w0.clone().requires_grad_(True)
        post.dynamics(x).pow(2).sum().backward()

    grad()                                                    # warm-up (autograd, FFT plans)
    _, fwd_wall, fwd_cpu = _timed(fwd)
    _, grad_wall, grad_cpu = _timed(grad)
    opts = {"device": args.device} | (
        {"rank": args.rank, "power_iters": args.power_iters} if args.method == "laplace" else {})
    res, wall, cpu = _timed(lambda: run_reference(path, args.method, idx, **opts))
    if args.write:
        res.info |= {"data_fingerprint": _fingerprint(path), "data_path": path, "samples": args.samples,
                     "split": {"n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test,
                               "split_seed": args.split_seed}}
        write_reference(default_reference_path(path, args.method), res)
    err = res.errors["rel_error_target"]
    row = {
        "file": os.path.basename(path), "T": data.final_time, "obs": data.observation, "n": len(idx),
        "steps": data.n_steps,
        "forward_check": float(mismatch.max()) if mismatch is not None else float("nan"),
        "fwd_cpu": fwd_cpu, "grad_cpu": grad_cpu, "iters": res.info["map"]["iterations_mean"],
        "iters_max": res.info["map"]["iterations_max"], "converged": res.info["map"]["converged"],
        "cpu": cpu, "wall": wall, "err": float(err.mean()), "se": float(err.std(ddof=1) / np.sqrt(len(err))),
        "load": f"{load0:.1f} → {os.getloadavg()[0]:.1f}", "device": str(device),
    }
    if "laplace" in res.info:
        row["coverage"] = res.info["laplace"]["coverage_95_mean"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+", help="navier_stokes data sets (P1)")
    ap.add_argument("--method", choices=("map", "laplace"), default="map")
    ap.add_argument("--samples", default="test")
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-val", type=int, default=50)
    ap.add_argument("--n-test", type=int, default=50)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rank", type=int, default=256, help="Laplace: Hessian rank (full field)")
    ap.add_argument("--power-iters", type=int, default=1, help="Laplace: randomised-SVD power iterations")
    ap.add_argument("--write", action="store_true",
                    help="also write DATA_STEM.reference-METHOD.h5 (as pdegrow reference does)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), method {args.method}")
    print("| file | T | obs | samples | steps | forward check | fwd CPU s | fwd+adjoint CPU s | L-BFGS iters "
          "(mean/max) | converged | run CPU s | run wall s | rel_error_target | coverage 95 % | load |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---|")
    for path in args.data:
        r = bench(path, args)
        cov = f"{r['coverage']:.3f}" if "coverage" in r else "—"
        print(f"| {r['file']} | {r['T']:g} | {r['obs']} | {r['n']} | {r['steps']} | "
              f"{r['forward_check']:.1e} | {r['fwd_cpu']:.2f} | {r['grad_cpu']:.2f} | "
              f"{r['iters']:.1f}/{r['iters_max']} | {r['converged']}/{r['n']} | {r['cpu']:.1f} | "
              f"{r['wall']:.1f} | {r['err']:.4f} ± {r['se']:.4f} | {cov} | {r['load']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
