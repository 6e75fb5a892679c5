"""The life of a run directory: one writer at a time, nothing written before the run is valid.

:class:`RunDirectory` is what the trainer holds while it writes a run:

* :meth:`~RunDirectory.open` checks the directory and takes its exclusive lock
  (:mod:`pdegrow.locks`); a second ``train`` on it is refused with "… is in use by process N".
  An existing run is replaced only with ``overwrite`` — or when it is *stale*: its ``run.json``
  says ``"failed"``, or ``"running"`` with no checkpoint and nobody holding its lock (a run killed
  before its first checkpoint; there is nothing to resume).
* Nothing is written until the trainer has read the data and built the model, optimizer and
  strategy (all validation); then :meth:`~RunDirectory.start` clears a replaced run and writes
  ``run.json`` (status ``"running"``), ``config.json`` and ``splits.json``. If validation fails,
  :meth:`~RunDirectory.abandon` leaves the directory as it was found (a directory it created is
  removed again).
* :meth:`~RunDirectory.fail` records ``"failed"`` and the one-line reason when training stops on
  bad data or settings, so every later command (``train``, ``report``, ``evaluate``, ``compare``)
  recognises the run as failed; :meth:`~RunDirectory.finish` records ``"finished"``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pdegrow.errors import PdegrowError
from pdegrow.locks import LOCK_NAME, DirectoryLock, clear_directory
from pdegrow.training.runlog import RUN_FILE, RUN_KIND, read_run, run_environment, write_json


def is_stale(run_dir: Path, info: dict[str, Any]) -> bool:
    """A run that can be replaced without ``--overwrite`` (the lock of ``run_dir`` must be held)."""
    status = info.get("status")
    return status == "failed" or (status == "running" and not (run_dir / "checkpoint.pt").is_file())


class RunDirectory:
    """A run directory held by one writer (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock: DirectoryLock | None = None
        self.created = False      # this object made the directory
        self.replace = False      # an existing run is to be cleared by start()
        self.written = False      # run.json of this run exists
        self.device: Any = None   # the torch device the run trains on (recorded in run.json)

    # ------------------------------------------------------------------ before validation

    def open(self, resume: bool, overwrite: bool) -> None:
        """Check the directory for a fresh run (or a resume) and lock it; writes nothing."""
        d = self.path
        try:
            if d.exists() and not d.is_dir():
                raise PdegrowError(f"{d} is a file, not a run directory")
            if resume:
                read_run(d)
                self._lock()
                if not (d / "checkpoint.pt").is_file():
                    raise PdegrowError(f"{d}: nothing to resume (no checkpoint.pt)")
                self.written = True
                return
            if not d.exists():
                try:
                    d.mkdir(parents=True)
                    self.created = True
                except FileExistsError:
                    pass
            self._lock()
            if not any(p.name != LOCK_NAME for p in d.iterdir()):
                return
            exists = (f"{d} exists and is not empty (use --resume to continue a run, "
                      f"--overwrite to replace it)")
            if not (d / RUN_FILE).is_file():
                raise PdegrowError(f"{d} is not a pdegrow run directory; refusing to overwrite it"
                                   if overwrite else exists)
            try:
                stale = is_stale(d, read_run(d))
            except PdegrowError:
                if not overwrite:
                    raise
                stale = False
            if not (overwrite or stale):
                raise PdegrowError(exists)
            self.replace = True
        except OSError as exc:
            self.abandon()
            raise PdegrowError(f"cannot use the run directory {d} ({exc.strerror or exc})") from None
        except PdegrowError:
            self.abandon()
            raise

    def _lock(self) -> None:
        self.lock = DirectoryLock(self.path / LOCK_NAME, f"run directory {self.path}")
        try:
            self.lock.acquire()
        except PdegrowError:
            self.lock = None
            raise

    # ------------------------------------------------------------------ after validation

    def start(self, data_path: str, config: dict[str, Any], splits: dict[str, list[int]],
              architecture: dict[str, Any]) -> None:
        """Validation passed: clear a replaced run, write ``run.json`` (running), ``config.json``,
        ``splits.json``, an empty ``events.jsonl`` and the first line of ``architecture.jsonl``."""
        d = self.path
        if self.replace:
            clear_directory(d)
        data = Path(data_path).resolve()
        write_json(d / RUN_FILE, {"kind": RUN_KIND, "version": 1, "status": "running",
                                  "data": str(data), "data_relative": os.path.relpath(data, d.resolve()),
                                  "created": datetime.now(UTC).isoformat(timespec="seconds"),
                                  **run_environment(self.device)})
        self.written = True
        write_json(d / "config.json", config)
        write_json(d / "splits.json", splits)
        (d / "events.jsonl").write_text("")
        (d / "architecture.jsonl").write_text(json.dumps({"epoch": 0, "event": None, **architecture}) + "\n")

    def set_status(self, status: str, error: str | None = None) -> None:
        info = read_run(self.path)
        info["status"] = status
        if status == "running":       # a resume: where it runs now
            info.update(run_environment(self.device))
        info.pop("error", None)
        if error is not None:
            info["error"] = error
        write_json(self.path / RUN_FILE, info)

    def fail(self, error: str) -> None:
        """Record that training stopped on ``error`` (one line) and release the lock."""
        try:
            if self.written:
                self.set_status("failed", error.splitlines()[0] if error else "failed")
        finally:
            self.release()

    def finish(self) -> None:
        self.set_status("finished")
        self.release()

    def abandon(self) -> None:
        """Validation failed: leave the directory as found, release the lock."""
        self.release()
        if self.created and not self.written:
            try:
                self.path.rmdir()
            except OSError:
                pass
            self.created = False

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


__all__ = ["RunDirectory", "is_stale"]
