"""Non-network references for the Boston-housing study: test MSE (k$²) on the study's own split.

Same file and split as ``experiments/study-prototypes-boston.toml`` (``datasets/proto-boston.h5``,
split seed 0: 354 training, 50 validation, 102 test rows); features standardised on the training
rows. Ridge regression (α chosen on the validation rows), scikit-learn's gradient boosting and
random forest (default settings, fixed seeds; fitted on the training rows only).

    python experiments/prototype_data.py boston
    python experiments/boston_reference.py
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from pdegrow.contract import open_dataset
from pdegrow.data.splits import make_splits
from pdegrow.errors import PdegrowError


def references(path: str, sizes: tuple[int, int, int]) -> dict[str, float]:
    """Test MSE of ridge / gradient boosting / random forest on the study's split of ``path``."""
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import Ridge

    with open_dataset(path, "regression") as f:
        x = f["inputs/features"][()].astype(np.float64)
        y = f["targets/value"][()].astype(np.float64)[:, 0]
    s = make_splits(len(x), *sizes, seed=0)
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
    ap.add_argument("--data", default="datasets/proto-boston.h5")
    args = ap.parse_args(argv)
    try:
        refs = references(args.data, (354, 50, 102))
    except PdegrowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("| reference | test MSE (k$²) |\n|---|---:|")
    for name, v in refs.items():
        print(f"| {name} | {v:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
