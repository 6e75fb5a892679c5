"""Benchmark of the ViT topological derivative: matrix-free over S·N token rows vs dense blocks.

One depth of a ViT: states and costates (S, N, D) (random, costates with a planted positive
direction so that the top eigenvalues are separated as on trained networks).  For each size the
table gives the time of the matrix-free batched Lanczos (``TokenFeatureOperator``: A_r v =
X̃ᵀ(λ_r ⊙ X̃ v) in row chunks, no block formed), its steps, and — where the n blocks (D+1)² fit —
the time of forming them and the batched eigh, with the largest relative difference of the top
eigenvalues.  CPU time of this process (``time.process_time``) and wall time; on CUDA, wall time
after synchronisation and the peak memory above what was held before the solve.

    PYTHONPATH=. python benchmarks/bench_topological_vit.py [--device cuda] [--rows 100000 1000000]
        [--widths 64 256] [--tokens 64]

Nothing here is asserted by the tests (tests/test_vit.py checks the agreement on a small case).
"""

from __future__ import annotations

import argparse
import time

import torch

from pdegrow.growth.topological import top_eigenpairs
from pdegrow.growth.topological_vit import TokenFeatureOperator


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device):  # type: ignore[no-untyped-def]
    _sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.process_time() - c0, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", type=int, nargs="+", default=[20000, 100000], help="S·N token rows")
    p.add_argument("--widths", type=int, nargs="+", default=[64, 256])
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--max-dense-bytes", type=float, default=2e9)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print("| S·N rows | D | Lanczos CPU s | Lanczos wall s | steps | dense CPU s | dense wall s "
          "| max rel. diff of top eigenvalues | peak extra GPU MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rows in args.rows:
        for d in args.widths:
            s = max(1, rows // args.tokens)
            x = torch.randn(s, args.tokens, d, device=device)
            u = torch.randn(d, device=device)
            lam = (torch.randn(s, args.tokens, d, device=device) + 0.5 * (x @ u)[..., None]) / s
            op = TokenFeatureOperator(x, lam)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                held = torch.cuda.memory_allocated()
            lz, lc, lw = _timed(lambda op=op: top_eigenpairs(op, method="lanczos", tol=1e-6), device)
            peak = float("nan")
            if device.type == "cuda":
                peak = (torch.cuda.max_memory_allocated() - held) / 2**20
            dense_bytes = d * (d + 1) ** 2 * 4
            if dense_bytes <= args.max_dense_bytes:
                dn, dc, dw = _timed(lambda op=op: top_eigenpairs(op, method="dense"), device)
                diff = float(((lz.values - dn.values).abs() / dn.values.abs().clamp_min(1e-30)).max())
                dense = f"{dc:.2f} | {dw:.2f} | {diff:.1e}"
            else:
                dense = "— | — | —"
            print(f"| {s * args.tokens} | {d} | {lc:.2f} | {lw:.2f} | {lz.iterations} | {dense} "
                  f"| {peak:.0f} |")


if __name__ == "__main__":
    main()
