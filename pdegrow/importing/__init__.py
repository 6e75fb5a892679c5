"""``pdegrow import``: data sets in other projects' conventions → pdegrow data sets.

:func:`import_dataset` reads FNO's Navier–Stokes ``.mat``/``.pt`` arrays or a PDEBench-style HDF5
file (:mod:`pdegrow.importing.sources`) and writes a ``navier_stokes`` data set
(:mod:`pdegrow.importing.writer`) that trains, evaluates and opens in netCDF tools like a generated one.
"""

from __future__ import annotations

import os
from pathlib import Path

from pdegrow.importing.sources import FORMATS, open_source
from pdegrow.importing.writer import ImportSummary, write_navier_stokes

__all__ = ["FORMATS", "ImportSummary", "import_dataset"]


def import_dataset(source: str | os.PathLike, out: str | os.PathLike, *, fmt: str = "auto",
                   field: str | None = None, initial_key: str = "a", trajectory_key: str = "u",
                   record_interval: float = 1.0, final_time: float | None = None,
                   snapshots: str | None = None, noise_level: float = 0.0, seed: int = 0,
                   nu: float | None = None, max_samples: int | None = None,
                   overwrite: bool = False) -> ImportSummary:
    """Convert ``source`` into the pdegrow data set ``out``; see ``pdegrow import --help``."""
    src = open_source(source, fmt, field=field, initial_key=initial_key, trajectory_key=trajectory_key,
                      record_interval=record_interval)
    return write_navier_stokes(src, out, source_name=Path(source).name, final_time=final_time,
                               snapshots=snapshots, noise_level=noise_level, seed=seed, nu=nu,
                               max_samples=max_samples, overwrite=overwrite)
