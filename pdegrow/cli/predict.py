"""``pdegrow predict RUN --obs FILE``: apply a trained surrogate to new observations."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="recover fields from new observations with a trained run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Apply RUN's network (its model.pt: architecture, weights and normalisers) to the "
        "observations in FILE and write the recovered fields as HDF5 with the geometry, so they plot "
        "directly: nodal log-conductivity m and conductivity e^m for heat, w0 images for Navier-Stokes "
        "(not KL coefficients; the raw network output is kept under predictions/).\n\n"
        "FILE is a .npy array (n, *input shape) or one sample, a .csv of one sample a row (field inputs "
        "flattened), or a pdegrow data set, whose inputs/ array the run was trained on is used (targets "
        "are not needed). A data set must come from the forward setting the run was trained on (mesh, "
        "sensors, noise model, prior, equation): another is refused naming what differs. When it has "
        "true fields they are copied to truth/ and the errors printed; a Bayesian reference beside it "
        "('pdegrow reference') adds its posterior mean, MAP and posterior std under reference/.",
        epilog="examples:\n"
        "  pdegrow predict runs/lw --obs my_observations.npy      # writes my_observations.predictions.h5\n"
        "  pdegrow predict runs/lw --obs sensors.csv --out recovered.h5\n"
        "  pdegrow predict runs/lw --obs datasets/heat-paper-560.h5 --out pred.h5 --json\n"
        "  python -c \"import h5py; f = h5py.File('pred.h5'); print(f['fields/log_conductivity'].shape)\"")
    p.add_argument("run_dir", metavar="RUN",
                   help="a finished 'pdegrow train' run directory (or its model.pt)")
    p.add_argument("--obs", required=True, metavar="FILE",
                   help="observations: .npy, .csv or a pdegrow data set")
    p.add_argument("--out", metavar="FILE",
                   help="output HDF5 file (default: FILE_STEM.predictions.h5 beside FILE)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--allow-different", action="append", default=[], metavar="PART",
                   choices=("mesh", "sensors", "noise", "prior", "equation", "other"),
                   help="use a data set of another forward setting anyway, where only PART differs "
                   "(repeatable)")
    p.add_argument("--no-reference", action="store_true", help="do not look for a Bayesian reference")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pdegrow.inference import load_model
    from pdegrow.predictions import default_output, predict_observations

    model = load_model(args.run_dir)
    pred = predict_observations(model, args.obs, args.allow_different, not args.no_reference)
    out = pred.save(args.out or default_output(args.obs), overwrite=args.overwrite)
    summary = {"run": str(args.run_dir), "observations": str(args.obs), "out": str(out),
               "n_samples": len(pred),
               "fields": {k: list(v.shape) for k, v in pred.fields.items()}, "errors": pred.errors(),
               "reference": {k: pred.reference[k] for k in ("method", "file")} if pred.reference else None,
               "setting_checked": pred.source.endswith(tuple(".h5 .hdf5 .hdf".split()))}
    if args.json:
        from pdegrow.training.runlog import to_json

        print(to_json(summary, indent=1))
        return 0
    fields = ", ".join(f"{k} {tuple(v)}" for k, v in summary["fields"].items())
    print(f"{out}: {len(pred)} samples, fields {fields}")
    for key, value in summary["errors"].items():
        print(f"  {key:<36} {value:.4f}")
    if pred.reference:
        n_ref = len(pred.reference["sample_indices"])
        print(f"  Bayes reference ({pred.reference['method']}): {n_ref} samples under reference/")
    if _is_training_file(args.run_dir, args.obs):
        print("  (the run's own data file: its errors include the training samples; 'pdegrow evaluate' "
              "scores the test split)")
    if not summary["setting_checked"]:
        print("  (an array carries no forward setting: make sure it was observed as the run's training data)")
    return 0


def _is_training_file(run_dir: str, obs: str) -> bool:
    from pathlib import Path

    from pdegrow.errors import PdegrowError
    from pdegrow.training.runlog import read_run

    try:
        data = read_run(run_dir).get("data") if Path(run_dir).is_dir() else None
    except PdegrowError:
        return False
    return bool(data) and Path(data).resolve() == Path(obs).resolve()
