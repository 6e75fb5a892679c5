"""Cost of the last step of parallel generation: rank 0 stitching the part files into one data set.

    .venv/bin/python benchmarks/bench_merge.py [--sizes 1024 4096 16384] [--flush 32 256] [--ranks 2]

Real samples (``pdegrow generate heat --preset default``, 256 of them, made once) are written
as part files the way ``pdegrow generate`` writes them (each rank a part every ``--flush-every``
samples, samples dealt round robin), repeated to reach each size; then
:func:`pdegrow.generation_merge.merge_parts` — what rank 0 runs at the end — is timed. Printed: samples,
compressed size, part files, time to write the parts (all ranks' I/O, done here serially), merge
time, merge throughput, merge time a sample and a part file. Load average printed with it.
This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from pdegrow.generation import make_manifest, parts_dir, write_part
from pdegrow.generation_merge import merge_parts

ROOT = Path(__file__).resolve().parents[1]


class FileProblem:
    """The ForwardProblem surface merge_parts needs, read from a finished data set."""

    def __init__(self, path: Path):
        with h5py.File(path, "r") as f:
            self.name = str(f.attrs["problem"])
            self.config = json.loads(f.attrs["config"])
            self.static = {f"{g}/{k}": f[g][k][()] for g in ("geometry", "operators") if g in f for k in f[g]}
            self.rows = {f"{g}/{k}": f[g][k][()] for g in ("inputs", "targets") if g in f for k in f[g]}
            self.attrs = {k: f.attrs[k] for k in ("noise_level", "noise_model") if k in f.attrs}

    def static_arrays(self) -> dict[str, np.ndarray]:
        return self.static

    def sample_specs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        return {k: (v.shape[1:], v.dtype) for k, v in self.rows.items()}

    def file_attrs(self) -> dict:
        return self.attrs


def write_parts(out: Path, prob: FileProblem, n: int, ranks: int, flush: int) -> int:
    parts = parts_dir(out)
    parts.mkdir()
    m = len(next(iter(prob.rows.values())))
    count = 0
    for r in range(ranks):
        mine = list(range(r, n, ranks))
        for p, start in enumerate(range(0, len(mine), flush)):
            idx = mine[start:start + flush]
            samples = [{k: v[i % m] for k, v in prob.rows.items()} for i in idx]
            write_part(parts / f"part-bench-r{r:05d}-{p:06d}.h5", idx, samples)
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--flush", type=int, nargs="+", default=[32, 256], help="--flush-every values")
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src.h5"
        subprocess.run([sys.executable, "-m", "pdegrow", "generate", "heat", "--preset", "default",
                        "--n-samples", "256", "--out", str(src), "--no-progress"], check=True, cwd=ROOT,
                       capture_output=True)
        prob = FileProblem(src)
        per_sample = sum(int(np.prod(s)) * np.dtype(d).itemsize for s, d in prob.sample_specs().values())
        print(f"heat default preset: {per_sample / 1024:.1f} KiB a sample uncompressed, {args.ranks} ranks")
        print(f"{'samples':>8} {'flush':>6} {'parts':>6} {'size MiB':>9} {'write s':>8} {'merge s':>8} "
              f"{'MiB/s':>7} {'µs/sample':>10} {'ms/part':>8}")
        for n in args.sizes:
            for flush in args.flush:
                out = Path(tmp) / f"d{n}-{flush}.h5"
                t = time.perf_counter()
                n_parts = write_parts(out, prob, n, args.ranks, flush)
                t_write = time.perf_counter() - t
                manifest = make_manifest(prob.name, prob.config, n, 0)
                t = time.perf_counter()
                merge_parts(out, prob, manifest)
                t_merge = time.perf_counter() - t
                size = out.stat().st_size / 2**20
                print(f"{n:8d} {flush:6d} {n_parts:6d} {size:9.1f} {t_write:8.2f} {t_merge:8.2f} "
                      f"{size / t_merge:7.1f} {t_merge / n * 1e6:10.1f} {t_merge / n_parts * 1e3:8.2f}")
                out.unlink()
                shutil.rmtree(parts_dir(out), ignore_errors=True)
    end = os.getloadavg()
    print(f"load average (1, 5, 15 min): start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"end {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
