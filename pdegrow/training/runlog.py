"""Run-directory bookkeeping: the run marker, metrics as JSONL + CSV, events, atomic writes."""

from __future__ import annotations

import csv
import json
import os
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


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
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
    return info


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLog:
    """Rows appended to ``metrics.jsonl`` (one per epoch) and mirrored to ``metrics.csv``."""

    def __init__(self, run_dir: Path, keep_rows: int | None = None):
        self.jsonl, self.csv = run_dir / "metrics.jsonl", run_dir / "metrics.csv"
        rows = read_jsonl(self.jsonl)
        self.rows = rows[:keep_rows] if keep_rows is not None else []
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.rows))

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with self.jsonl.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    def write_csv(self) -> None:
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        tmp = self.csv.with_name(self.csv.name + ".tmp")
        with tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.csv)
