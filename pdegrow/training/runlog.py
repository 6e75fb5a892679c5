"""Run-directory bookkeeping: the run marker, metrics as JSONL + CSV, events, atomic writes."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from pdegrow.errors import PdegrowError

RUN_KIND = "pdegrow-run"
RUN_FILE = "run.json"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (an undefined metric, e.g. a relative error of an
    all-zero target) replaced by ``None``: what pdegrow writes is strict JSON (null, never NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def to_json(obj: Any, **kw: Any) -> str:
    """Strict JSON of ``obj`` (see :func:`json_safe`); tensors and numpy values as numbers."""
    return json.dumps(json_safe(obj), allow_nan=False, default=_jsonable, **kw)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, to_json(obj, indent=1, sort_keys=True) + "\n")


def _jsonable(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return json_safe(x.tolist())
    if hasattr(x, "item"):
        return json_safe(x.item())
    return str(x)


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The run marker of a run directory, or a :class:`PdegrowError` if it is not one."""
    run_dir = Path(run_dir)
    marker = run_dir / RUN_FILE
    if not run_dir.is_dir():
        raise PdegrowError(f"{run_dir}: no such run directory")
    if not marker.is_file():
        raise PdegrowError(f"{run_dir}: not a pdegrow run directory (no {RUN_FILE})")
    try:
        info = json.loads(marker.read_text())
    except json.JSONDecodeError:
        raise PdegrowError(f"{run_dir}: damaged {RUN_FILE}") from None
    if info.get("kind") != RUN_KIND:
        raise PdegrowError(f"{run_dir}: not a pdegrow run directory ({RUN_FILE} of another kind)")
    relative = info.get("data_relative")
    if relative and not Path(str(info.get("data", ""))).is_file() and (run_dir / relative).is_file():
        info["data"] = str((run_dir / relative).resolve())   # run and data moved together
    return info


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The config values (``config.json``) a run was started with; a :class:`PdegrowError` when
    ``run_dir`` is not a run directory or the file is missing or damaged."""
    run_dir = Path(run_dir)
    read_run(run_dir)
    try:
        values = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        raise PdegrowError(f"{run_dir}: has no readable config.json") from None
    if not isinstance(values, dict):
        raise PdegrowError(f"{run_dir}/config.json is damaged")
    return values


def command_line() -> str:
    """The command this process runs, as a shell line (``pdegrow train …``)."""
    argv = list(sys.argv) or ["python"]
    program = Path(argv[0]).name
    if program == "__main__.py":
        program = f"python -m {Path(argv[0]).parent.name}"
        return " ".join([program, shlex.join(argv[1:])]).strip()
    return shlex.join([program, *argv[1:]])


def run_environment(device: torch.device | None) -> dict[str, Any]:
    """Where a run runs: the device actually used (its name on CUDA), torch and CUDA versions,
    Python, host and the command line; stored in ``run.json``."""
    from pdegrow import __version__

    env: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                           "python": platform.python_version(), "pdegrow": __version__,
                           "host": platform.node(), "command": command_line()}
    if device is not None:
        env["device"] = str(device)
        if device.type == "cuda":
            env["device_name"] = torch.cuda.get_device_name(device)
    return env


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_events(run_dir: str | Path, kind: str | None = "growth") -> list[dict[str, Any]]:
    """The events of ``events.jsonl`` of that ``kind`` (``"growth"``; ``"prune"``: pruning before a
    proposal; None: all), oldest first. Lines without a kind (older runs) are growth events."""
    rows = read_jsonl(Path(run_dir) / "events.jsonl")
    return rows if kind is None else [r for r in rows if r.get("kind", "growth") == kind]


class MetricsLog:
    """Rows appended to ``metrics.jsonl`` (one per epoch, O(1) each); :meth:`write_csv` writes
    ``metrics.csv`` from them once, when the run ends (rewriting it every epoch cost O(epochs²))."""

    def __init__(self, run_dir: Path, keep_rows: int | None = None):
        self.jsonl, self.csv = run_dir / "metrics.jsonl", run_dir / "metrics.csv"
        rows = read_jsonl(self.jsonl)
        self.rows = rows[:keep_rows] if keep_rows is not None else []
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.rows))

    def append(self, row: dict[str, Any]) -> None:
        row = json_safe(row)
        self.rows.append(row)
        with self.jsonl.open("a") as fh:
            fh.write(to_json(row) + "\n")

    def write_csv(self) -> None:
        """``metrics.csv``: every row, the columns in order of first appearance (atomically)."""
        keys: dict[str, None] = {}
        for r in self.rows:
            keys.update(dict.fromkeys(r))
        tmp = self.csv.with_name(self.csv.name + ".tmp")
        with tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.csv)
