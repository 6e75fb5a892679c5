"""The linear skip alone against the whole network, for finished runs with ``[model] linear_skip``.

A run with the skip predicts L(y) + f_θ(y); with the head of f_θ zeroed it predicts L(y), the ridge
estimator fitted on that run's own training pairs (labelled + simulated, λ on the validation split).
For each run: the test error ‖ŵ₀ − w₀‖/‖w₀‖ (mean over the run's test samples) of L alone and of the
network, the λ chosen and the network's size, as one JSON line per run.

    python experiments/ns_skip_ridge_only.py runs/study-ns-skip/runs/T0_2/*/seed-*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from pdegrow.training.evaluate import load_eval_data, load_trained, predict


def rel_error(pred: np.ndarray, target: np.ndarray) -> float:
    """mean_b ‖p_b − t_b‖ / ‖t_b‖."""
    p, t = pred.reshape(len(pred), -1), target.reshape(len(target), -1)
    return float(np.mean(np.linalg.norm(p - t, axis=1) / np.linalg.norm(t, axis=1)))


def skip_and_network(run_dir: Path) -> dict[str, object]:
    run = load_trained(run_dir)
    if run.model.skip is None:
        raise SystemExit(f"{run_dir}: the run has no linear skip")
    data = load_eval_data(run, run.info["data"], "test")
    target = data["targets"]
    network = rel_error(predict(run, data["inputs"]).reshape(target.shape), target)
    with torch.no_grad():
        run.model.head.zero_init()
    ridge = rel_error(predict(run, data["inputs"]).reshape(target.shape), target)
    arch = run.model.architecture()
    return {"run": str(run_dir), "ridge_only": ridge, "network": network, "lambda": run.model.skip.lam,
            "depth": arch["depth"], "n_params": arch["n_params"], "skip_entries": arch.get("skip_entries")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    for run_dir in parser.parse_args().runs:
        print(json.dumps(skip_and_network(run_dir)))


if __name__ == "__main__":
    main()
