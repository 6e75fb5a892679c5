"""Transfer learning with the topological derivative (arXiv 2502.06885, the second paper's application).

Source task: Navier–Stokes w(·, 0.2) → w₀ (full field, 32×32). Target task: w(·, 1) → w₀ with few
training samples (100). A network trained on the source is carried over to the target and

* ``finetune``: trained further as it is (no growth);
* ``transfer-topological``: extended by layers the topological derivative chooses (where, how,
  ε by line search; ≤ ``--layers`` insertions), everything trainable;
* ``transfer-topological-frozen``: the same with the source lift and blocks frozen (the new
  blocks and the head learn);

compared with training on the target from scratch (``scratch``: the same start network;
``scratch-topological``: grown from scratch). Every run goes through the pdegrow trainer; the
source weights are loaded into the trainer's freshly built network before its first epoch.

``--model heat``: the same methods on the heat full-field problem (`default` preset, MLP of
study-heat-default.toml): source prior correlation length 0.25 (1400 training samples), target 0.5
(100 training samples; an independent data set drawn with another base seed); metric
``rel_error_field``.

The NS source never sees the target's validation or test samples: its file is the T = 0.2 file
restricted to the other samples (``<out>/source-T0.2.h5``). Both tasks share w₀ per sample.

    python experiments/ns_time_sets.py datasets/ns-32-T5.h5 --stem datasets/ns32     # once
    python experiments/transfer_study.py --out runs/study-transfer --workers 2
    python experiments/transfer_study.py --model conv --out runs/study-transfer-conv --workers 2
    mpiexec -n 2 pdegrow generate heat --preset default --set correlation_length=0.5 --n-samples 600 \
        --seed 1 --out datasets/heat-default-l05-600.h5
    python experiments/transfer_study.py --model heat --out runs/study-transfer-heat --workers 2
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

SOURCE = "datasets/ns32-T0.2-full.h5"
TARGET = "datasets/ns32-T1-full.h5"
TARGET_SPLIT = {"n_train": 100, "n_val": 50, "n_test": 150, "split_seed": 0}
METHODS = ("scratch", "scratch-topological", "finetune", "transfer-topological",
           "transfer-topological-frozen")

BASE: dict[str, Any] = {
    "run": {"device": "cpu", "progress": False, "threads": 1},
    "data": {"problem": "navier_stokes", "input": "inputs/vorticity_T", "target": "targets/vorticity_0",
             "aux": [], "normalize_inputs": "feature", "normalize_targets": "scalar"},
    "model": {"kind": "mlp", "width": 128, "depth": 1, "block": "mlp", "hidden": [128], "activation": "tanh"},
    "optim": {"name": "adam", "lr": 1e-3, "batch_size": 50},
    "train": {"max_epochs": 150, "phase_epochs": 150, "patience": 15, "loss": "mse"},
}
# --model conv: the convolutional network of experiments/study-ns-conv.toml
CONV: dict[str, Any] = {
    "model": {"kind": "conv", "width": 8, "depth": 1, "block": "conv", "hidden": [8], "activation": "tanh",
              "kernel_size": 3, "padding_mode": "circular"},
    "optim": {"name": "adam", "lr": 3e-3, "batch_size": 50},
    "train": {"max_epochs": 60, "phase_epochs": 60, "patience": 10, "loss": "mse"},
}


def subset_file(src: str, keep: np.ndarray, out: Path) -> Path:
    """A copy of data set ``src`` holding only samples ``keep`` (attributes, static arrays kept)."""
    from pdegrow.contract import mark_complete, open_dataset, sample_storage

    tmp = out.with_name(out.name + ".tmp")
    with open_dataset(src) as f, h5py.File(tmp, "w") as g:
        for k, v in f.attrs.items():
            g.attrs[k] = v
        g.attrs["n_samples"] = len(keep)
        g.attrs["complete"] = False
        cfg = json.loads(f.attrs["config"])
        g.attrs["config"] = json.dumps({**cfg, "subset_of": src, "n_samples": len(keep)}, sort_keys=True)

        def visit(name: str, obj: Any) -> None:
            if not isinstance(obj, h5py.Dataset):
                return
            if name.split("/")[0] in ("inputs", "targets"):
                g.create_dataset(name, data=obj[np.sort(keep)], **sample_storage(obj.shape[1:]))
            else:
                g.create_dataset(name, data=obj[()])

        f.visititems(visit)
        mark_complete(g)
    os.replace(tmp, out)
    return out


# --model heat: heat full field (`default` preset), prior correlation length 0.25 → 0.5; the MLP of
# experiments/study-heat-default.toml. Source and target files are independent draws (other seeds).
HEAT: dict[str, Any] = {
    "data": {"problem": "heat", "input": "inputs/observations", "target": "targets/log_conductivity",
             "aux": ["targets/log_conductivity"], "input_transform": "log", "normalize_inputs": "feature",
             "normalize_targets": "feature"},
    "model": {"kind": "mlp", "width": 64, "depth": 1, "block": "mlp", "hidden": [32], "activation": "tanh"},
    "optim": {"name": "adam", "lr": 1e-3, "batch_size": 50},
    "train": {"max_epochs": 200, "phase_epochs": 200, "patience": 15, "loss": "mse"},
}
HEAT_SOURCE = "datasets/heat-default-1500.h5"
HEAT_TARGET = "datasets/heat-default-l05-600.h5"


def base(model: str) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE)
    if model == "conv":
        cfg.update(copy.deepcopy(CONV))
    if model == "heat":
        cfg.update(copy.deepcopy(HEAT))
    return cfg


def metric(model: str) -> str:
    return "rel_error_field" if model == "heat" else "rel_error_target"


def config(method: str, seed: int, layers: int, model: str) -> dict[str, Any]:
    cfg = base(model)
    cfg["run"]["seed"] = seed
    cfg["data"].update(TARGET_SPLIT)
    if method.endswith("topological") or method.endswith("topological-frozen"):
        cfg["growth"] = {"strategy": "topological_insertion", "max_layers": layers}
        cfg["train"]["phase_epochs"] = cfg["train"]["max_epochs"] // 3
    return cfg


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from pdegrow.models.optim import sync_optimizer
    from pdegrow.training.config import build_config
    from pdegrow.training.runfiles import load_run_file
    from pdegrow.training.trainer import Trainer

    torch.set_num_threads(1)
    out = Path(job["run_dir"])
    if (out / "summary.json").is_file():                      # finished earlier: keep it
        return json.loads((out / "result.json").read_text())
    cfg = build_config(job["config"], job["run_dir"])
    trainer = Trainer(cfg, job["data"], out, overwrite=True, progress=False)
    if job.get("init_from"):
        blob = load_run_file(Path(job["init_from"]) / "model.pt", "model")
        trainer.model.load_state_dict(blob["state"])            # same architecture: the source network
        if job.get("freeze"):
            trainer.model.freeze("lift")
            trainer.model.freeze(list(range(trainer.model.depth)))
            sync_optimizer(trainer.optimizer, trainer.model)
    t0 = time.perf_counter()
    summary = trainer.run()
    result = {"method": job["method"], "seed": job["seed"], "test": summary["test"],
              "n_params": summary["architecture"]["n_params"],
              "n_trainable": summary["architecture"]["n_trainable"],
              "depth": summary["architecture"]["depth"],
              "epochs": summary["epochs"], "growth_events": summary["growth_events"],
              "wall_s": round(time.perf_counter() - t0, 2)}
    (out / "result.json").write_text(json.dumps(result))
    return result


def pm(a: list[float], digits: int = 4) -> str:
    x = np.asarray(a, dtype=float)
    return f"{x.mean():.{digits}f} ± {x.std(ddof=1) if len(x) > 1 else 0.0:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/study-transfer"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--layers", type=int, default=2, help="topological insertions at most")
    ap.add_argument("--model", choices=("mlp", "conv", "heat"), default="mlp",
                    help="NS with an MLP or a conv network, or heat (correlation length 0.25 → 0.5)")
    ap.add_argument("--source", default=None, help="source data (default: per --model)")
    ap.add_argument("--target", default=None, help="target data (default: per --model)")
    ap.add_argument("--table", type=Path, default=None, help="write the Markdown table here")
    args = ap.parse_args(argv)
    heat = args.model == "heat"
    args.source = args.source or (HEAT_SOURCE if heat else SOURCE)
    args.target = args.target or (HEAT_TARGET if heat else TARGET)
    for p in (args.source, args.target):
        if not Path(p).is_file():
            print(f"error: {p} missing (make it as in the docstring / experiments/run_studies.sh data)",
                  file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    from pdegrow.data.splits import make_splits

    with h5py.File(args.target) as f:
        n = int(f.attrs["n_samples"])
    held = make_splits(n, **{k: v for k, v in TARGET_SPLIT.items() if k != "split_seed"},
                       seed=TARGET_SPLIT["split_seed"])
    if heat:   # independent files: the whole source file is fair game
        with h5py.File(args.source) as f:
            keep = np.arange(int(f.attrs["n_samples"]))
        src = Path(args.source)
    else:      # NS files share w₀ per sample: drop the target's held-out samples from the source
        keep = np.setdiff1d(np.arange(n), np.asarray(held["val"] + held["test"]))
        src = args.out / "source-T0.2.h5"
        if not src.is_file():
            subset_file(args.source, keep, src)
    n_src_val = 100 if heat else 50
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.workers) as pool:
        src_jobs = []
        for seed in args.seeds:
            cfg = base(args.model)
            cfg["run"]["seed"] = seed
            cfg["data"].update({"n_train": len(keep) - n_src_val, "n_val": n_src_val, "n_test": 0,
                                "split_seed": 0})
            src_jobs.append({"method": "source", "seed": seed, "config": cfg, "data": str(src),
                             "run_dir": str(args.out / "source" / f"seed-{seed}")})
        sources = pool.map(run_one, src_jobs)
        jobs = []
        for seed in args.seeds:
            for method in METHODS:
                job = {"method": method, "seed": seed,
                       "config": config(method, seed, args.layers, args.model),
                       "data": args.target, "run_dir": str(args.out / method / f"seed-{seed}")}
                if not method.startswith("scratch"):
                    job["init_from"] = str(args.out / "source" / f"seed-{seed}")
                    job["freeze"] = method.endswith("frozen")
                jobs.append(job)
        results = pool.map(run_one, jobs)
    wall = time.perf_counter() - t0
    m = metric(args.model)
    tasks = ("heat, correlation length 0.5", "heat, correlation length 0.25") if heat else \
        ("w(·, 1) → w₀", "w(·, 0.2) → w₀")
    lines = [f"Network: {args.model} ({json.dumps(base(args.model)['model'])}).",
             f"Target task: {tasks[0]}, {TARGET_SPLIT['n_train']} training samples ({args.target}); test "
             f"{m} (mean ± std over seeds {', '.join(map(str, args.seeds))}); "
             f"source: {tasks[1]}, {len(keep) - n_src_val} training samples ({args.source}). "
             f"Study wall time {wall:.0f} s.",
             "", "| method | runs | test rel. error (target task) | parameters | trainable at the end "
             "| depth | growth events | epochs | wall (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method in METHODS:
        mine = [r for r in results if r["method"] == method]
        lines.append(f"| {method} | {len(mine)} | {pm([r['test'][m] for r in mine])} | "
                     f"{int(np.mean([r['n_params'] for r in mine]))} | "
                     f"{int(np.mean([r['n_trainable'] for r in mine]))} | "
                     f"{np.mean([r['depth'] for r in mine]):.1f} | "
                     f"{np.mean([r['growth_events'] for r in mine]):.1f} | "
                     f"{np.mean([r['epochs'] for r in mine]):.0f} | {pm([r['wall_s'] for r in mine], 1)} |")
    src_val = pm([r["test"].get(m, float("nan")) if r["test"] else float("nan")
                  for r in sources]) if all(r["test"] for r in sources) else "–"
    lines += ["", f"Source networks ({len(sources)}): {int(sources[0]['n_params'])} parameters, "
              f"{np.mean([r['epochs'] for r in sources]):.0f} epochs on average, "
              f"test error on the source task "
              f"{src_val} (no source test split: '–').", ""]
    text = "\n".join(lines)
    (args.out / "table.md").write_text(text)
    if args.table:
        args.table.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
