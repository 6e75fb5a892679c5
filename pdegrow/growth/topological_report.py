"""Report figure of Approach II: predicted vs realised loss change, and the derivative per depth.

Reads the growth events a run logged (``events.jsonl``: each topological
insertion carries ``predicted_change``, ``realised_change`` and
``info.derivative`` = [λ_max at depth 0 … L]) and draws

1. the predicted change against the realised change of the training loss,
   one point per event, with the line y = x. *Predicted* is the second-order
   model −(ε²/2)·C at the chosen ε (C = Σ_r λ_r of the inserted rows), which
   the strategy only logs where it was checked (ε bounded, realised/predicted
   within [½, 2] during the ε search: hollow markers where it was not);
   *realised* is J after − J before, measured by the trainer;
2. the topological derivative against the depth, one curve per event
   (coloured by epoch), the chosen depth t* marked. A depth that ``prune_depths``
   did not solve has no derivative (null in ``info.derivative``): the curve has
   a gap there, and its upper bound (``info.derivative_bound``) is drawn as ▽ —
   the true value lies below it, and below the derivative at t*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def depth_values(values: Sequence[float | None]) -> list[float]:
    """A logged per-depth list as floats, NaN where a depth has no value (null: not solved by
    ``prune_depths``, or no bound; runs logged before null was used hold NaN there)."""
    return [math.nan if v is None else float(v) for v in values]


def solved_derivatives(values: Sequence[float | None]) -> list[float]:
    """The derivatives of the depths that were solved (the finite entries of ``info.derivative``);
    their maximum is max_t D_t over all depths, since a skipped depth's bound is below it."""
    return [v for v in depth_values(values) if math.isfinite(v)]


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """The growth events of a run directory (``events.jsonl``), oldest first."""
    from pdegrow.training.runlog import read_events as read

    return read(run_dir)


def plot_topological_history(events: Sequence[dict[str, Any]] | str | Path, out: str | Path) -> Path | None:
    """Write the two-panel figure to ``out``; ``events`` is a list of event dicts or a run directory.

    Events without ``info.derivative`` (other strategies) are ignored; returns
    None when nothing is left to plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evs = read_events(events) if isinstance(events, (str, Path)) else list(events)
    evs = [e for e in evs if isinstance(e.get("info"), dict) and "derivative" in e["info"]]
    if not evs:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    pred = [float(e.get("predicted_change") or 0.0) for e in evs]
    real = [float(e.get("realised_change", e.get("loss_after", 0.0) - e.get("loss_before", 0.0)))
            for e in evs]
    valid = [e["info"].get("quadratic_valid", True) is not False for e in evs]
    k = _exponent(pred + real)                 # small changes: plotted in units of 10^k
    unit = f"  (×$10^{{{k}}}$)" if k else ""
    pred, real = [p / 10.0**k for p in pred], [r / 10.0**k for r in real]
    cmap = plt.get_cmap("viridis")
    colors = [cmap(i / max(1, len(evs) - 1)) for i in range(len(evs))]
    for i, (p, r) in enumerate(zip(pred, real, strict=True)):
        ax1.scatter([p], [r], color=colors[i] if valid[i] else "none", edgecolors=colors[i], zorder=3)
        ratio = r / p if p else float("nan")
        ax1.annotate(f"{i + 1} ({ratio:.2f})", (p, r), textcoords="offset points", xytext=(4, 4), fontsize=8)
    lo = min(min(pred), min(real), 0.0)
    ax1.plot([lo, 0.0], [lo, 0.0], "k--", lw=0.8, label="realised = predicted")
    ax1.set_xlabel(f"predicted −(ε²/2)·C at the chosen ε{unit}")
    ax1.set_ylabel(f"realised J after − J before{unit}")
    ax1.set_title("growth events (realised/predicted)")
    ax1.legend(fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for axis in (ax1.xaxis, ax1.yaxis):        # few ticks, so their labels never overlap
        axis.set_major_locator(MaxNLocator(4))
    bound_label = "upper bound, depth not solved"
    for i, e in enumerate(evs):
        d = depth_values(e["info"]["derivative"])
        color = cmap(i / max(1, len(evs) - 1))
        ax2.plot(range(len(d)), d, "-o", color=color, ms=3, label=f"event {i + 1} (epoch {e.get('epoch')})")
        bounds = depth_values(e["info"].get("derivative_bound") or [])
        skipped = [t for t, (v, b) in enumerate(zip(d, bounds, strict=False))
                   if not math.isfinite(v) and math.isfinite(b)]
        if skipped:
            ax2.plot(skipped, [bounds[t] for t in skipped], "v", color=color, mfc="none", ms=7,
                     label=bound_label)
            bound_label = "_nolegend_"
        t = e["info"].get("t_star")
        if isinstance(t, int) and 0 <= t < len(d):
            ax2.plot([t], [d[t]], "*", color=color, ms=12)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_xlabel("depth t")
    ax2.set_ylabel("topological derivative  max_r λ_max(A_r)")
    ax2.set_title("derivative per depth (★ = chosen t*)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _exponent(values: Sequence[float]) -> int:
    """k such that the largest |value| / 10^k lies in [1, 1000) when it is below 0.01 or above 1000;
    0 otherwise (values plotted as they are)."""
    import math

    top = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    if top == 0.0 or 1e-2 <= top < 1e3:
        return 0
    return 3 * math.floor(math.log10(top) / 3)
