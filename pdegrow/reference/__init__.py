"""Bayesian references: the error the data allow, against which every network is read.

``pdegrow reference DATA --method map|laplace|mcmc`` computes, from the operators and the
prior stored in the data file (no FEniCSx at run time), the MAP estimate, a Laplace
(Gaussian) approximation of the posterior, or posterior samples by MCMC, and writes the
per-sample errors in the trainer's metrics to ``<data stem>.reference-<method>.h5``.
``pdegrow evaluate``, ``compare`` and ``report`` read that file and print the gap
error_network / error_reference − 1.

Modules: :mod:`~pdegrow.reference.results` (the results file, gaps),
:mod:`~pdegrow.reference.dispatch` (samples → problem module), one module family per
problem (``heat*``, ``navier_stokes*``).
"""

from pdegrow.reference.dispatch import resolve_samples, run_reference
from pdegrow.reference.results import (
    ReferenceResult,
    default_reference_path,
    find_reference,
    gap_summary,
    read_reference,
    write_reference,
)

__all__ = ["ReferenceResult", "default_reference_path", "find_reference", "gap_summary",
           "read_reference", "resolve_samples", "run_reference", "write_reference"]
