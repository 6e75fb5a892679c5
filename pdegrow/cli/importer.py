"""``pdegrow import SOURCE --out FILE``: FNO / PDEBench vorticity data → a pdegrow data set."""

from __future__ import annotations

import argparse

from pdegrow.cli.helpfmt import ExampleHelpFormatter

FORMATS = ("auto", "fno-mat", "fno-pt", "pdebench")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="convert FNO .mat/.pt or PDEBench HDF5 vorticity data to a data set",
        formatter_class=ExampleHelpFormatter,
        description="Write a navier_stokes data set (inputs/vorticity_T → targets/vorticity_0, the task "
        "of 'pdegrow generate navier-stokes' with full observations) from vorticity trajectories in "
        "another project's convention:\n"
        "fno-mat: FNO's Navier-Stokes .mat (a = w0 [N, x, y], u = trajectory [N, x, y, T], t = times "
        "when present; MATLAB v5 or v7.3).\n"
        "fno-pt: the same arrays as torch tensors (a tensor, or a dict of tensors), loaded with "
        "torch.load(weights_only=True): a file holding any other object is refused, nothing is unpickled.\n"
        "pdebench: PDEBench-style HDF5, fields [b, t, x, y] with x-, y- and t-coordinate arrays; the "
        "field named by --field (default: vorticity, w or omega), or the vorticity computed from Vx, Vy; "
        "w0 is the state at the first time.\n"
        "Files without a time array get times k * --record-interval, k = 1, 2, … . The output opens "
        "in xarray with named dimensions (sample, time, y, x).",
        epilog="examples:\n"
        "  pdegrow import ns_V1e-3_N5000_T50.mat --out datasets/fno-ns.h5 --final-time 10\n"
        "  pdegrow import ns_V1e-3_N5000_T50.mat --out datasets/fno-traj.h5 --snapshots all --nu 1e-3\n"
        "  pdegrow import ns_data.pt --out datasets/ns-pt.h5 --initial-key x --trajectory-key y\n"
        "  pdegrow import 2D_CFD_Rand_periodic_128_Train.hdf5 --out datasets/cfd.h5 --snapshots 0.5,1.0 "
        "--noise-level 0.01")
    p.add_argument("source", help="the file to convert (.mat, .pt/.pth, .h5/.hdf5)")
    p.add_argument("--out", required=True, metavar="FILE", help="the pdegrow data set to write")
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="source format (default: from the suffix)")
    p.add_argument("--field", help="pdebench: the [b, t, x, y] dataset holding the vorticity")
    p.add_argument("--initial-key", default="a", help="fno: the array of w0 (default: %(default)s)")
    p.add_argument("--trajectory-key", default="u", help="fno: the trajectory array (default: %(default)s)")
    p.add_argument("--record-interval", type=float, default=1.0,
                   help="fno files without 't': time between stored states (default: %(default)s)")
    p.add_argument("--final-time", type=float,
                   help="time of the observed state w(T) (default: the last stored time)")
    p.add_argument("--snapshots", default="none", metavar="all|none|T1,T2,…",
                   help="also store the trajectory at these times as targets/vorticity_snapshots "
                   "(default: none)")
    p.add_argument("--noise-level", type=float, default=0.0,
                   help="additive noise on w(T), sigma = level * RMS of w(T) (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    p.add_argument("--nu", type=float, help="the viscosity, recorded in the file when known")
    p.add_argument("--max-samples", type=int, help="import only the first N samples")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pdegrow.importing import import_dataset

    summary = import_dataset(
        args.source, args.out, fmt=args.format, field=args.field, initial_key=args.initial_key,
        trajectory_key=args.trajectory_key, record_interval=args.record_interval,
        final_time=args.final_time, snapshots=args.snapshots, noise_level=args.noise_level,
        seed=args.seed, nu=args.nu, max_samples=args.max_samples, overwrite=args.overwrite)
    print(summary.format())
    return 0
