"""Benchmark of the topological derivative (Approach II, issue 5).

Two tables (nothing here is asserted by the tests):

1. One proposal over all depths vs one training epoch on the same data, at
   width 100: the statistics pass (one forward + backward over the data),
   the eigen-solve at every depth, and the ε line search, each as a multiple
   of one Adam epoch in mini-batches.
2. One depth, widths 64 … 2048, S samples: time and peak extra memory of the
   dense solver (form the n blocks (n+1)², batched eigh) and of the
   matrix-free batched Lanczos (A_r v = X̃ᵀ(λ_r ⊙ X̃ v)), their agreement,
   and the Lanczos steps.  Peak memory on CPU is the growth of the process's
   peak resident set (VmHWM, reset through /proc/self/clear_refs) over the
   resident set before the solve; on CUDA torch.cuda.max_memory_allocated
   above the memory held before the solve.

    PYTHONPATH=. python3 benchmarks/bench_topological.py [--device cuda] [--samples 10000]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pdegrow.growth.topological import (
    DenseFeatureOperator,
    collect_depth_operators,
    line_search_epsilon,
    rows_from_eigenpairs,
    top_eigenpairs,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


class PeakMemory:
    """Peak extra memory (MiB) of a code region: CUDA allocator stats, or VmHWM on Linux CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mib = float("nan")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
                self.base = _status_kb("VmRSS")
            except OSError:
                self.base = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        elif self.base is not None:
            self.mib = (_status_kb("VmHWM") - self.base) / 1024


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


class Net(nn.Module):
    """lift (tanh) → L residual perceptron blocks x + tanh(Wx + b) → linear head; returns (states, out)."""

    def __init__(self, n_in: int, width: int, depth: int, n_out: int):
        super().__init__()
        self.lift = nn.Linear(n_in, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.head = nn.Linear(width, n_out)

    def forward(self, y: torch.Tensor, insert: tuple[int, nn.Module] | None = None):
        x = torch.tanh(self.lift(y))
        states = [x]
        for i, blk in enumerate(self.blocks):
            if insert is not None and insert[0] == i:
                x = x + insert[1](x)
            x = x + torch.tanh(blk(x))
            states.append(x)
        if insert is not None and insert[0] == len(self.blocks):
            x = x + insert[1](x)
        return states, self.head(x)


def data(samples: int, n_in: int, n_out: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(samples, n_in, generator=g)
    y = torch.sin(u @ torch.randn(n_in, n_out, generator=g)) + 0.1 * torch.randn(samples, n_out, generator=g)
    return u.to(device), y.to(device)


def batches(u: torch.Tensor, y: torch.Tensor, size: int):
    return [(u[i : i + size], y[i : i + size]) for i in range(0, u.shape[0], size)]


def proposal_vs_epoch(device: torch.device, samples: int, width: int, depth: int, batch: int) -> None:
    torch.manual_seed(0)
    u, y = data(samples, 16, 8, device)
    net = Net(16, width, depth, 8).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def epoch() -> None:
        perm = torch.randperm(samples, device=device)
        for i in range(0, samples, batch):
            idx = perm[i : i + batch]
            opt.zero_grad(set_to_none=True)
            F.mse_loss(net(u[idx])[1], y[idx]).backward()
            opt.step()

    epoch()  # warm-up (allocator, kernels)
    t_epoch = min(timed(epoch, device)[0] for _ in range(3))

    big = batches(u, y, 2048)
    t_pass, (ops, j0) = timed(
        lambda: collect_depth_operators(lambda v: net(v), F.mse_loss, big, mode="auto"), device
    )
    t_solve, results = timed(lambda: [top_eigenpairs(op) for op in ops], device)
    derivs = torch.stack([r.values.max() for r in results])
    t_star = int(derivs.argmax())
    rows = rows_from_eigenpairs(results[t_star], fraction=0.5)

    from pdegrow.models.blocks import PerceptronBlock

    block = PerceptronBlock(width, activation="silu_tanh").to(device)
    with torch.no_grad():
        block.linear.weight.copy_(rows.weight)
        block.linear.bias.copy_(rows.bias)

    def loss_at(eps: float) -> float:
        block.scale.fill_(eps)
        with torch.no_grad():
            return sum(float(F.mse_loss(net(a, (t_star, block))[1], b, reduction="sum")) for a, b in big) / (
                y.numel()
            )

    eps0 = math.sqrt(2 * 0.01 * j0 / max(rows.coefficient, 1e-30))
    t_ls, ls = timed(lambda: line_search_epsilon(loss_at, eps_init=eps0), device)
    total = t_pass + t_solve + t_ls
    print(f"\n## One proposal over all {depth + 1} depths vs one epoch  "
          f"(device {device.type}, S = {samples}, width {width}, {depth} blocks, Adam batch {batch})\n")
    print("| part | seconds | × epoch |")
    print("|---|---:|---:|")
    print(f"| one training epoch | {t_epoch:.3f} | 1.00 |")
    method = results[0].method
    print(f"| statistics pass (fwd+bwd, all depths, {type(ops[0]).__name__}) | {t_pass:.3f} | "
          f"{t_pass / t_epoch:.2f} |")
    print(f"| eigen-solve, all depths ({method}) | {t_solve:.3f} | {t_solve / t_epoch:.2f} |")
    print(f"| proposal without line search | {t_pass + t_solve:.3f} | {(t_pass + t_solve) / t_epoch:.2f} |")
    print(f"| ε line search ({len(ls.evaluations)} loss evaluations) | {t_ls:.3f} | {t_ls / t_epoch:.2f} |")
    print(f"| total proposal | {total:.3f} | {total / t_epoch:.2f} |")
    print(f"\nderivative per depth: {[f'{float(d):.3g}' for d in derivs]}; t* = {t_star}; "
          f"ε = {ls.eps:.3g}; predicted {-(ls.eps**2) / 2 * rows.coefficient:.3g}, "
          f"realised {ls.loss - ls.loss0:.3g}")


def solver_table(
    device: torch.device, samples: int, widths: list[int], dense_max: int, dtype: torch.dtype
) -> None:
    print(f"\n## One depth: dense vs matrix-free Lanczos (device {device.type}, S = {samples}, {dtype})\n")
    print("| width n | stats pass s | dense s | dense peak MiB | Lanczos s | Lanczos steps | "
          "Lanczos peak MiB | S·n MiB | max |Δλ|/λmax | min |cos| (top units) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in widths:
        torch.manual_seed(0)
        u, y = data(samples, 16, 8, device)
        net = Net(16, n, 1, 8).to(device=device, dtype=dtype)
        u, y = u.to(dtype), y.to(dtype)
        t_pass, (ops, _) = timed(
            lambda net=net, u=u, y=y: collect_depth_operators(
                lambda v: net(v), F.mse_loss, batches(u, y, 2048), mode="features", depths=[0]
            ),
            device,
        )
        op = ops[0]
        assert isinstance(op, DenseFeatureOperator)
        sn_mib = (op.x_aug.numel() + op.lam.numel()) * op.x_aug.element_size() / 2**20
        with PeakMemory(device) as mem_l:
            t_l, lan = timed(lambda op=op: top_eigenpairs(op, method="lanczos"), device)
        dense_cols = ["skipped"] * 2
        agree = ["–", "–"]
        if n <= dense_max:
            with PeakMemory(device) as mem_d:
                t_d, den = timed(lambda op=op: top_eigenpairs(op, method="dense"), device)
            dense_cols = [f"{t_d:.2f}", f"{mem_d.mib:.0f}"]
            vmax = float(den.values.max())
            agree[0] = f"{float((lan.values - den.values).abs().max()) / vmax:.1e}"
            top = den.values >= 0.5 * vmax
            cos = (lan.vectors[top] * den.vectors[top]).sum(1).abs()
            agree[1] = f"{float(cos.min()):.4f}"
        else:
            gib = n * (n + 1) ** 2 * op.x_aug.element_size() / 2**30
            dense_cols = [f"skipped ({gib:.0f} GiB blocks)", "–"]
        print(f"| {n} | {t_pass:.2f} | {dense_cols[0]} | {dense_cols[1]} | {t_l:.2f} | {lan.iterations} | "
              f"{mem_l.mib:.0f} | {sn_mib:.0f} | {agree[0]} | {agree[1]} |")
        del ops, op


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--widths", default="64,128,256,512,1024,2048")
    ap.add_argument("--dense-max-width", type=int, default=512)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--epoch-width", type=int, default=100)
    ap.add_argument("--epoch-depth", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--skip-epoch", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    if not args.skip_epoch:
        proposal_vs_epoch(device, args.samples, args.epoch_width, args.epoch_depth, args.batch)
    widths = [int(w) for w in args.widths.split(",") if w]
    solver_table(device, args.samples, widths, args.dense_max_width, dtype)


if __name__ == "__main__":
    main()
