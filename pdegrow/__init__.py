"""pdegrow: grow neural surrogates for PDE inverse problems.

Importing the package is cheap and imports neither torch nor dolfinx (nor h5py or numpy), so the
FEniCSx side (``solvers/``) can use the data contract without torch and ``pdegrow --help`` starts
fast. The Python API is loaded on first use of one of its names (reference: ``docs/api.md``)::

    import pdegrow
    run = pdegrow.load_run("runs/lw")
    pred = run.predict("my_observations.npy")      # recovered fields + geometry
    pred.fields["log_conductivity"], pred.plot(0)

* :func:`load_dataset` — a data set as a ``torch.utils.data.Dataset`` (and its splits);
* :func:`generate` — a data set from a FEniCSx forward solver (as ``pdegrow generate``);
* :func:`train` — train and grow a network (as ``pdegrow train``), nested-dict overrides;
* :func:`compute_reference` — the Bayesian reference (MAP, Laplace, MCMC) of a data set's samples;
* :func:`load_run` — a trained run: ``.predict(obs)``, ``.evaluate(data)``, ``.report()``, ``.export()``;
* :func:`load_model` — a ``model.pt`` alone (:class:`~pdegrow.inference.PortableModel`);
* :class:`PdegrowError` — every error that is the user's to fix (one line, as the CLI prints it).
"""

from __future__ import annotations

import importlib

from pdegrow.errors import PdegrowError

__version__ = "0.1.0"

#: public name → the module that defines it (imported on first use)
_LAZY = {
    "load_dataset": "pdegrow.api", "generate": "pdegrow.api", "train": "pdegrow.api",
    "load_run": "pdegrow.api", "Run": "pdegrow.api", "PdegrowDataset": "pdegrow.api",
    "compute_reference": "pdegrow.api",
    "load_model": "pdegrow.inference", "PortableModel": "pdegrow.inference",
    "Prediction": "pdegrow.predictions",
}

__all__ = ["PdegrowError", "__version__", *_LAZY]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pdegrow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
