"""Navier–Stokes inverse data sets for several final times T from ONE generation run.

The solver stores w at ``snapshot_times`` beside w(T_final); the initial vorticity w₀ of sample i
depends on (seed, i) alone, so every derived file has the same w₀ and differs only in the
observation time. For each time t this writes two pdegrow data sets (problem ``navier_stokes``,
same schema as ``pdegrow generate navier-stokes``):

* ``<stem>-T<t>-full.h5``: ``inputs/vorticity_T`` = w(t) + noise on the whole grid,
  ``targets/vorticity_T`` (clean), ``targets/vorticity_0``;
* ``<stem>-T<t>-sensors.h5``: ``inputs/observations`` = w(t) + noise at an s×s sub-grid of nodes,
  ``inputs/observations_clean``, ``targets/vorticity_0``.

Noise: additive, σ = ``noise`` · RMS of that sample's w(t) over the grid (the generator's model),
drawn from ``numpy.random.default_rng([base_seed, i, k, 7])`` (k = time index).

    mpiexec -n 2 pdegrow generate navier-stokes --resolution 32 --final-time 5.0 --set dt=2.5e-3 \\
        --set 'snapshot_times=[0.2,1.0]' --n-samples 600 --seed 0 --out datasets/ns-32-T5.h5
    python experiments/ns_time_sets.py datasets/ns-32-T5.h5 --stem datasets/ns32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from pdegrow.contract import create_dataset_file, mark_complete, open_dataset


def derive(src: str, stem: str, noise: float, sensors_per_side: int, overwrite: bool) -> list[Path]:
    out: list[Path] = []
    with open_dataset(src, "navier_stokes") as f:
        if "inputs/vorticity_T" not in f:
            raise SystemExit(f"{src}: needs observation = 'full' (inputs/vorticity_T)")
        cfg = json.loads(f.attrs["config"])
        base_seed = int(f.attrs["base_seed"])
        w0 = f["targets/vorticity_0"][()]
        n, r, _ = w0.shape
        fields = [(float(f.attrs["final_time"]), f["inputs/vorticity_T"][()])]
        if "targets/vorticity_snapshots" in f:
            snaps = f["targets/vorticity_snapshots"][()]
            times = f["geometry/snapshot_times"][()]
            fields = [(float(t), snaps[:, k]) for k, t in enumerate(times)] + fields
        gx, gy = f["geometry/grid_x"][()], f["geometry/grid_y"][()]
        forcing = f["operators/forcing"][()]
        prior_eig = f["operators/prior_eigenvalues"][()] if "operators/prior_eigenvalues" in f else None
        keep = {k: f.attrs[k] for k in ("dt", "nu", "forcing", "degree", "resolution", "prior",
                                        "time_scheme", "grid_layout") if k in f.attrs}
    step = r // sensors_per_side
    jj, ii = np.meshgrid(np.arange(sensors_per_side) * step + step // 2,
                         np.arange(sensors_per_side) * step + step // 2, indexing="ij")
    sensor_index = (jj * r + ii).ravel()
    sensors = np.stack([gx.ravel()[sensor_index], gy.ravel()[sensor_index]], axis=1)
    for k, (t, w) in enumerate(fields):
        rms = np.sqrt((w.reshape(n, -1) ** 2).mean(1))
        xi = np.stack([np.random.default_rng([base_seed, i, k, 7]).standard_normal((r, r)) for i in range(n)])
        noisy = w + noise * rms[:, None, None] * xi
        tag = f"{t:g}"
        for obs in ("full", "sensors"):
            path = Path(f"{stem}-T{tag}-{obs}.h5")
            if path.exists() and not overwrite:
                raise SystemExit(f"{path} exists (--overwrite to replace it)")
            static = {"geometry/grid_x": gx, "geometry/grid_y": gy, "operators/forcing": forcing}
            if prior_eig is not None:
                static["operators/prior_eigenvalues"] = prior_eig
            specs: dict = {"targets/vorticity_0": ((r, r), np.float64)}
            if obs == "full":
                specs |= {"inputs/vorticity_T": ((r, r), np.float64),
                          "targets/vorticity_T": ((r, r), np.float64)}
            else:
                s = len(sensor_index)
                specs |= {"inputs/observations": ((s,), np.float64),
                          "inputs/observations_clean": ((s,), np.float64)}
                static |= {"geometry/sensors": sensors, "operators/sensor_index": sensor_index}
            config = {**cfg, "final_time": t, "observation": obs, "noise_level": noise, "snapshot_times": [],
                      "n_sensors": len(sensor_index), "sensor_layout": "grid", "derived_from": str(src)}
            attrs = {**keep, "final_time": t, "observation": obs, "noise_level": noise,
                     "noise_model": "additive", "snapshot_times": np.zeros(0)}
            tmp = path.with_name(path.name + ".tmp")
            h = create_dataset_file(tmp, problem="navier_stokes", config=config, n_samples=n,
                                    base_seed=base_seed, static=static, sample_specs=specs, attrs=attrs)
            try:
                h["targets/vorticity_0"][...] = w0
                if obs == "full":
                    h["inputs/vorticity_T"][...] = noisy
                    h["targets/vorticity_T"][...] = w
                else:
                    h["inputs/observations"][...] = noisy.reshape(n, -1)[:, sensor_index]
                    h["inputs/observations_clean"][...] = w.reshape(n, -1)[:, sensor_index]
                mark_complete(h)
            finally:
                h.close()
            os.replace(tmp, path)
            out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="a full-field NS file with snapshot_times")
    ap.add_argument("--stem", default="datasets/ns32")
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--sensors-per-side", type=int, default=8)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    for p in derive(args.source, args.stem, args.noise, args.sensors_per_side, args.overwrite):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
