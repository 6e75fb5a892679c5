"""Training and generation I/O before/after: CPU time of the same run under two source trees.

    git archive <old-commit> pdegrow solvers | tar -x -C /tmp/before
    .venv/bin/python benchmarks/bench_training_io.py --before /tmp/before [--epochs 300] [--repeats 3]
    .venv/bin/python benchmarks/bench_training_io.py --before /tmp/before --generate 2000

Runs `pdegrow train` on the heat `paper` data (generated into ``--data`` if missing) with
``experiments/heat-paper-topological.toml`` shortened to ``--epochs``, once with the code of
``--before`` (on ``PYTHONPATH``) and once with this checkout, alternating, ``--repeats`` times
each. It reports each run's CPU time (user + system of the child, which the other load of the
machine inflates far less than wall time), the ratio after/before of the medians, and whether
the two final summaries (validation and test metrics, architecture) agree. Both trees run with
their own defaults: the old one checkpointed and rewrote ``metrics.csv`` every epoch.

``--generate N`` times `pdegrow generate heat` (the `paper` recipe, N samples, one rank) instead,
and checks that the two files hold the same arrays (the old one chunked one sample a chunk).

Measured (2 shared CPU cores, load average 9–13; before = commit 4b0f867, after = the I/O change
with the collective-aware trainer):

  train, heat `paper`, topological insertion, 1500 epochs, 2 runs each: median CPU 35.5 s → 29.1 s
      (ratio 0.82); validation and test metrics, architecture and growth events identical
  generate heat `paper`, 2000 samples, 1 rank, 3 runs each: median CPU 2.20 s → 1.78 s (ratio
      0.81); the same arrays, file 4.02 MB → 3.19 MB
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(tree: Path, config: Path, data: Path, out: Path) -> tuple[float, dict]:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    before = child_cpu()
    subprocess.run([sys.executable, "-m", "pdegrow", "train", "--config", str(config), "--data", str(data),
                    "--out", str(out), "--overwrite", "--no-progress", "--set", "run.threads=1",
                    "--set", 'run.device="cpu"'], check=True, env=env, cwd=tree,
                   stdout=subprocess.DEVNULL)
    return child_cpu() - before, json.loads((out / "summary.json").read_text())


def generate(tree: Path, n: int, out: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    before = child_cpu()
    subprocess.run([sys.executable, "-m", "pdegrow", "generate", "heat", "--config",
                    str(ROOT / "datasets" / "heat-paper.toml"), "--set", f"n_samples={n}", "--out", str(out),
                    "--overwrite", "--no-progress"], check=True, env=env, cwd=tree, stdout=subprocess.DEVNULL)
    return child_cpu() - before


def same_arrays(a: Path, b: Path) -> bool:
    import h5py
    import numpy as np

    with h5py.File(a) as fa, h5py.File(b) as fb:
        names: list[str] = []
        fa.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        return all(n in fb and np.array_equal(fa[n][...], fb[n][...]) for n in names)


def bench_generate(before: Path, n: int, repeats: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-generation-io-"))
    times: dict[str, list[float]] = {"before": [], "after": []}
    for k in range(repeats):
        for name, tree in (("before", before), ("after", ROOT)):
            times[name].append(generate(tree, n, work / f"{name}.h5"))
            print(f"{name:6s} run {k}: {times[name][-1]:7.2f} s CPU", flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    sizes = {name: (work / f"{name}.h5").stat().st_size for name in times}
    print(json.dumps({"samples": n, "median_cpu_s": med, "ratio_after_before": med["after"] / med["before"],
                      "file_bytes": sizes, "same_arrays": same_arrays(work / "before.h5", work / "after.h5"),
                      "load": os.getloadavg()}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="source tree of the old code")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "bench-heat-paper.h5")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--generate", type=int, default=0, help="time generating this many heat samples instead")
    args = ap.parse_args()
    if args.generate:
        bench_generate(args.before.resolve(), args.generate, args.repeats)
        return
    args.data = args.data.resolve()
    if not args.data.is_file():
        subprocess.run([sys.executable, "-m", "pdegrow", "generate", "heat", "--config",
                        str(ROOT / "datasets" / "heat-paper.toml"), "--out", str(args.data), "--no-progress"],
                       check=True, cwd=ROOT)
    work = Path(tempfile.mkdtemp(prefix="bench-training-io-"))
    text = (ROOT / "experiments" / "heat-paper-topological.toml").read_text()
    text = text.replace("max_epochs = 1500", f"max_epochs = {args.epochs}")
    text = text.replace("phase_epochs = 300", f"phase_epochs = {max(args.epochs // 5, 1)}")
    config = work / "config.toml"
    config.write_text(text)
    times: dict[str, list[float]] = {"before": [], "after": []}
    summaries: dict[str, dict] = {}
    for k in range(args.repeats):
        for name, tree in (("before", args.before.resolve()), ("after", ROOT)):
            cpu, summary = run(tree, config, args.data, work / f"{name}-{k}")
            times[name].append(cpu)
            summaries[name] = summary
            print(f"{name:6s} run {k}: {cpu:7.2f} s CPU", flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    same = {key: summaries["before"][key] == summaries["after"][key]
            for key in ("val", "test", "architecture", "growth_events", "epochs")}
    ratio = med["after"] / med["before"]
    print(json.dumps({"epochs": args.epochs, "median_cpu_s": med, "ratio_after_before": ratio,
                      "summaries_equal": same, "load": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
