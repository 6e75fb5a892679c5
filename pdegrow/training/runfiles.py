"""The binary files of a run directory, ``model.pt`` and ``checkpoint.pt``: tensors + JSON, no pickle.

Both are written by :mod:`pdegrow.tensorfile` (the safetensors layout; the JSON tree in
``__metadata__["pdegrow"]``, ``__metadata__["kind"]`` = ``"model"`` or ``"checkpoint"``) and read
back without unpickling anything, so a crafted file is refused with one line instead of running
code.

``model.pt`` (portable: any safetensors reader gets the weights; the rest is JSON)::

    spec         the architecture (GrowableResNet.spec(): every block's kind and sizes, frozen flags)
    state        the weights, one tensor per state_dict entry (``state/<name>``)
    input_norm   {"mean", "std", "mode"} of the input standardisation (training split statistics)
    target_norm  the same for the targets; predictions are target_norm.inverse(model(input_norm(x)))
    config       the training config (all sections)
    dtype        "torch.float32" or "torch.float64"
    format       2 (files without the three keys below are format 1 and still load)
    setting      the forward-setting fingerprint of the training data (pdegrow.fingerprint)
    fields       input/target names and shapes, the field decoder (heat KL: prior mean, basis,
                 eigenvalues) and the geometry: what ``pdegrow predict`` needs without the data file
                 (pdegrow.inference, which loads the model without the training-config machinery)

``checkpoint.pt`` (exact resume): epoch, model spec + weights, optimizer, scheduler and strategy
state, training state, growth events, the best-weights snapshot, the number of metric rows, and
every RNG state (torch, Python's ``random``, CUDA, the shuffling and strategy generators).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pdegrow import tensorfile
from pdegrow.errors import PdegrowError

MODEL_KEYS = ("spec", "state", "input_norm", "target_norm", "config", "dtype")
CHECKPOINT_KEYS = ("epoch", "model_spec", "model_state", "optimizer", "scheduler", "strategy", "state",
                   "events", "best_snapshot", "finished", "n_metric_rows", "rng")


def save_run_file(path: str | Path, kind: str, tree: dict[str, Any]) -> None:
    """Write a run file of ``kind`` (``"model"`` or ``"checkpoint"``) atomically."""
    tensorfile.save(path, tree, {"kind": kind})


def load_run_file(path: str | Path, kind: str) -> dict[str, Any]:
    """The tree of a run file of ``kind``; anything else (pickle, foreign, damaged) is a PdegrowError."""
    path = Path(path)
    tree, meta = tensorfile.load(path)
    if meta.get("kind") != kind:
        raise PdegrowError(f"{path} is a pdegrow {meta.get('kind')!r} file, not a {kind} file")
    keys = MODEL_KEYS if kind == "model" else CHECKPOINT_KEYS
    missing = [k for k in keys if not isinstance(tree, dict) or k not in tree]
    if missing:
        raise PdegrowError(f"{path} is damaged (no {', '.join(missing)})")
    return tree


__all__ = ["CHECKPOINT_KEYS", "MODEL_KEYS", "load_run_file", "save_run_file"]
