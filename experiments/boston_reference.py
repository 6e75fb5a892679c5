"""Non-network references for the Boston-housing study: test MSE (k$²) on the study's own split.

Same file and split as ``experiments/study-prototypes-boston.toml`` (``datasets/proto-boston.h5``,
split seed 0: 354 training, 50 validation, 102 test rows); features standardised on the training
rows. Ridge regression (α chosen on the validation rows), scikit-learn's gradient boosting and
random forest (default settings, fixed seeds; fitted on the training rows only).

    python experiments/prototype_data.py boston
    python experiments/boston_reference.py
    python experiments/boston_reference.py --protocol paper     # the first paper's split (--split paper file)
    python experiments/boston_reference.py --protocol keras
    python experiments/boston_reference.py --split-seeds 1 2 3 4 5   # repeated random splits: mean ± std

``--protocol paper|keras``: the file written by ``prototype_data.py boston --split paper|keras``
taken in its order (``[data] split = "ordered"``): the last 50 of the published training rows
validate (ridge's α), the published test rows test.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from pdegrow.contract import open_dataset
from pdegrow.data.splits import make_splits
from pdegrow.errors import PdegrowError

#: protocol → (file, (n_train, n_val, n_test), ordered)
PROTOCOLS = {"ours": ("datasets/proto-boston.h5", (354, 50, 102), False),
             "paper": ("datasets/proto-boston-paper.h5", (304, 50, 152), True),
             "keras": ("datasets/proto-boston-keras.h5", (354, 50, 102), True)}


def references(path: str, sizes: tuple[int, int, int], split_seed: int = 0,
               ordered: bool = False) -> dict[str, float]:
    """Test MSE of ridge / gradient boosting / random forest on the study's split of ``path``."""
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import Ridge

    with open_dataset(path, "regression") as f:
        x = f["inputs/features"][()].astype(np.float64)
        y = f["targets/value"][()].astype(np.float64)[:, 0]
    s = make_splits(len(x), *sizes, seed=split_seed, ordered=ordered)
    tr, va, te = (np.asarray(s[k]) for k in ("train", "val", "test"))
    mu, sd = x[tr].mean(0), x[tr].std(0)
    z = (x - mu) / np.where(sd > 0, sd, 1.0)

    def mse(model: object) -> float:
        return float(np.mean((model.predict(z[te]) - y[te]) ** 2))  # type: ignore[attr-defined]

    best = min((Ridge(alpha=a).fit(z[tr], y[tr]) for a in np.logspace(-3, 3, 13)),
               key=lambda m: float(np.mean((m.predict(z[va]) - y[va]) ** 2)))
    return {"ridge": mse(best),
            "gradient boosting": mse(GradientBoostingRegressor(random_state=0).fit(z[tr], y[tr])),
            "random forest": mse(RandomForestRegressor(300, random_state=0).fit(z[tr], y[tr])),
            "predicting the training mean": float(np.mean((y[tr].mean() - y[te]) ** 2))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="ours")
    ap.add_argument("--data", default=None, help="the data file (default: the protocol's)")
    ap.add_argument("--split-seeds", type=int, nargs="+", default=None,
                    help="protocol 'ours' only: repeat on these split seeds, print mean ± std")
    args = ap.parse_args(argv)
    path, sizes, ordered = PROTOCOLS[args.protocol]
    seeds = args.split_seeds or [0]
    if args.split_seeds and ordered:
        print("error: --split-seeds needs --protocol ours (a published split is one split)", file=sys.stderr)
        return 2
    try:
        runs = [references(args.data or path, sizes, s, ordered) for s in seeds]
    except PdegrowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"| reference ({args.protocol}, split seeds {seeds}) | test MSE (k$²) |\n|---|---:|")
    for name in runs[0]:
        v = np.array([r[name] for r in runs])
        spread = f" ± {v.std(ddof=1):.2f}" if len(v) > 1 else ""
        print(f"| {name} | {v.mean():.2f}{spread} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
