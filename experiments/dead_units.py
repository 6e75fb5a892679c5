"""Dead units of the inserted blocks of finished runs: output units whose weights and bias are all exactly 0.

An inserted (perceptron / conv_perceptron) block g(x) = σ(W x + b) with σ = silu_tanh has σ′(0) = 0, so a
row of W, b that starts at zero gets no gradient and stays zero for the rest of the run (topological
insertion with ``fraction`` > 0 gives such rows to the units below the threshold). This counts, for every
such block of each run's ``model.pt``, the rows (dense) or output channels (conv) that are identically 0.

    python experiments/dead_units.py runs/study-ns-goal4/runs/T1/topological_insertion/seed-*

One line per run: its directory, then ``dead/units`` for each inserted block in depth order.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pdegrow.errors import PdegrowError
from pdegrow.inference import load_model

INSERTED = ("perceptron", "conv_perceptron")


def dead_rows(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[int, int]:
    """(units whose weight row / output-channel kernel and bias are all exactly zero, units)."""
    rows = weight.detach().reshape(weight.shape[0], -1)
    zero = (rows == 0).all(dim=1)
    if bias is not None:
        zero &= bias.detach() == 0
    return int(zero.sum()), int(rows.shape[0])


def block_counts(run: Path) -> list[tuple[int, str, int, int]]:
    """(depth, kind, dead, units) for every inserted block of the run's model."""
    model = load_model(run).model
    out = []
    for t, block in enumerate(model.blocks):
        kind = getattr(block, "kind", "")
        if kind in INSERTED:
            layer = block.last_layer()
            out.append((t, kind, *dead_rows(layer.weight, layer.bias)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    args = p.parse_args()
    for run in args.runs:
        try:
            counts = block_counts(run)
        except PdegrowError as exc:
            print(f"{run}: {exc}")
            continue
        cells = ", ".join(f"block {t} ({kind}) {d}/{n}" for t, kind, d, n in counts) or "no inserted block"
        print(f"{run}: {cells}")


if __name__ == "__main__":
    main()
