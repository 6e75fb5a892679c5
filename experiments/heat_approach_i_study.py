"""Approach I study on the papers' heat inversion: baseline vs layerwise vs layerwise + SRL over seeds.

Preset ``paper`` (9×9 mesh, 12 KL modes, 10 sensors, 5 % noise); 50 training samples with 10 noisy
copies each, 10 validation, 500 test. Figure of merit: the average relative error of the recovered
log-conductivity field on the test set, mean_b ‖m̂_b − m_b‖ / ‖m_b‖ (mean ± std over seeds).

    python experiments/heat_approach_i_study.py --seeds 0 1 2 3 4 --workers 2 \
        --out runs/heat-approach-i --table experiments/results/heat-paper-approach-i.md

Runs that finished already are not redone (their summary.json is read).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "baseline": "experiments/heat-paper-baseline.toml",
    "layerwise": "experiments/heat-paper-layerwise.toml",
    "layerwise+SRL": "experiments/heat-paper-layerwise-srl.toml",
}


def one_run(args: tuple[str, str, int, str, str]) -> dict:
    name, config, seed, data, out = args
    run_dir = Path(out) / f"{name.replace('+', '-')}-seed{seed}"
    summary = run_dir / "summary.json"
    t0 = time.perf_counter()
    if not summary.is_file():
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run([sys.executable, "-m", "pdegrow", "train", "--config", str(ROOT / config),
                        "--data", data, "--out", str(run_dir), "--overwrite", "--no-progress",
                        "--seed", str(seed),
                        "--set", "run.threads=1", "--set", 'run.device="cpu"'],
                       check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    s = json.loads(summary.read_text())
    return {"method": name, "seed": seed, "rel_error_field": s["test"]["rel_error_field"],
            "rel_error_field_l2": s["test"]["rel_error_field_l2"], "depth": s["architecture"]["depth"],
            "n_correctors": s["architecture"]["n_correctors"], "n_params": s["architecture"]["n_params"],
            "epochs": s["epochs"], "wall_s": time.perf_counter() - t0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="datasets/heat-paper-560.h5")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs/heat-approach-i")
    p.add_argument("--table", default="experiments/results/heat-paper-approach-i.md")
    args = p.parse_args()
    data = Path(args.data)
    if not data.is_file():
        data.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pdegrow", "generate", "heat", "--preset", "paper",
                        "--n-samples", "560", "--seed", "0", "--out", str(data), "--no-progress"],
                       check=True, cwd=ROOT)
    jobs = [(name, cfg, seed, str(data.resolve()), args.out)
            for seed in args.seeds for name, cfg in CONFIGS.items()]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(one_run, jobs))
    table = Path(args.table)
    table.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Approach I on the papers' heat inversion", "",
             "Command: `python experiments/heat_approach_i_study.py "
             f"--seeds {' '.join(map(str, args.seeds))} "
             f"--workers {args.workers} --data {args.data}`", "",
             "Data: `pdegrow generate heat --preset paper --n-samples 560 --seed 0` (50 train × 10 noisy "
             "copies, 10 validation, 500 test). Metric: average relative error of the recovered "
             "log-conductivity field on the 500 test samples (nodal norm; L2(Ω) norm in the next column), "
             "mean ± std over seeds.", "",
             "| method | test rel. field error | L2(Ω) rel. error | depth | SRL nets | parameters | epochs |",
             "|---|---|---|---|---|---|---|"]
    for name in CONFIGS:
        rs = [r for r in results if r["method"] == name]
        e = np.array([r["rel_error_field"] for r in rs])
        e2 = np.array([r["rel_error_field_l2"] for r in rs])
        avg = {k: float(np.mean([r[k] for r in rs])) for k in ("depth", "n_correctors", "n_params", "epochs")}
        lines.append(f"| {name} | {e.mean():.4f} ± {e.std():.4f} | {e2.mean():.4f} ± {e2.std():.4f} | "
                     f"{avg['depth']:.1f} | {avg['n_correctors']:.1f} | {avg['n_params']:.0f} | "
                     f"{avg['epochs']:.0f} |")
    lines += ["", "Per run:", "", "| method | seed | rel. field error | depth | SRL | params |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['seed']} | {r['rel_error_field']:.4f} | {r['depth']} | "
              f"{r['n_correctors']} | {r['n_params']} |" for r in results]
    table.write_text("\n".join(lines) + "\n")
    (table.with_suffix(".csv")).write_text(
        "method,seed,rel_error_field,rel_error_field_l2,depth,n_correctors,n_params,epochs\n" + "".join(
            f"{r['method']},{r['seed']},{r['rel_error_field']},{r['rel_error_field_l2']},{r['depth']},"
            f"{r['n_correctors']},{r['n_params']},{r['epochs']}\n" for r in results))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
