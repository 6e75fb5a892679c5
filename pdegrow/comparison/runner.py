"""Run a comparison: every (data set, strategy, seed) through the one trainer, spread over MPI ranks.

* Rank 0 reads and validates the config and the data files, takes the exclusive
  lock of ``--out`` (:mod:`pdegrow.locks`; a second comparison on it is refused
  with "… is in use by process N") and broadcasts the plan (a bad config or a
  busy ``--out`` stops every rank with the same one-line error).
* Runs not yet finished are dealt round robin over the ranks (pending[r::size]);
  each rank trains its runs one after the other with ``torch`` limited to
  ``threads`` threads, on the GPU ``local_rank % n_gpus`` when CUDA is present
  (``device = "auto"``), else on the CPU.
* A run is finished when its ``result.json`` exists (written atomically after
  the trainer returned); a run directory with a checkpoint but no result is
  resumed exactly (``pdegrow train --resume``), one without a checkpoint is
  restarted — so an interrupted study continues where it stopped. A run already there must have
  the study's config, compared resolved (:mod:`pdegrow.comparison.same_config`: keys added to
  pdegrow since stand at their defaults); otherwise the study stops naming the differing keys.
* Rank 0 then writes the table and the figures from the result files
  (:mod:`pdegrow.comparison.table`, :mod:`pdegrow.comparison.figures`).

mpi4py is imported only here, inside functions, and only if present; without
it (or without ``mpiexec``) the study runs serially.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdegrow.comparison.config import CompareConfig, RunSpec, check_data_files, load_compare_config
from pdegrow.comparison.results import RESULT_FILE, read_result
from pdegrow.comparison.same_config import (
    config_differences,
    differences_line,
    resolved_config,
    result_differences,
)
from pdegrow.comparison.table import collect_results, write_tables
from pdegrow.errors import PdegrowError
from pdegrow.locks import LOCK_NAME, DirectoryLock


class SerialComm:
    """The part of an mpi4py communicator the runner uses, for one process."""

    rank, size = 0, 1

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def gather(self, obj: Any, root: int = 0) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        pass


def world_comm() -> Any:
    """MPI.COMM_WORLD when mpi4py is importable, else a :class:`SerialComm`."""
    try:
        from mpi4py import MPI
    except ImportError:
        return SerialComm()
    return MPI.COMM_WORLD


def local_rank(comm: Any) -> int:
    """This rank's index among the ranks on its node."""
    if isinstance(comm, SerialComm):
        return 0
    try:
        from mpi4py import MPI

        return int(comm.Split_type(MPI.COMM_TYPE_SHARED).rank)
    except Exception:  # an MPI without shared-memory split: fall back to the launchers' variables
        for var in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"):
            if var in os.environ:
                return int(os.environ[var])
        return 0


def pick_device(setting: str, rank_on_node: int) -> str:
    """``"cpu"`` or ``"cuda"`` for a run; with CUDA, select GPU ``rank_on_node % n_gpus``."""
    import torch

    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise PdegrowError("[compare] device = 'cuda' but no CUDA device is available")
    torch.cuda.set_device(rank_on_node % torch.cuda.device_count())
    return "cuda"


def training_wall_time(run_dir: Path) -> float:
    """Σ over training segments (a resumed run has several) of the trainer's wall clock."""
    from pdegrow.training.runlog import read_jsonl

    total, last = 0.0, 0.0
    for row in read_jsonl(run_dir / "metrics.jsonl"):
        w = float(row.get("wall_s", 0.0))
        if w < last:
            total += last
        last = w
    return total + last


def execute_run(spec: RunSpec, out: Path, device: str) -> dict[str, Any]:
    """Train one run (fresh, restarted or resumed) and write its ``result.json``; returns it."""
    from pdegrow.training.config import build_config
    from pdegrow.training.runlog import RUN_FILE, atomic_write_text, read_run, to_json
    from pdegrow.training.trainer import train

    run_dir = spec.run_dir(out)
    cfg_dict = json.loads(json.dumps(spec.config))
    cfg_dict["run"]["device"] = device
    cfg = build_config(cfg_dict, spec.run_id)
    resume = (run_dir / RUN_FILE).is_file() and (run_dir / "checkpoint.pt").is_file()
    if resume and read_run(run_dir).get("status") == "failed":
        resume = False  # failed on bad data or settings: start it again
    if resume:
        diffs = config_differences(json.loads((run_dir / "config.json").read_text()), spec.config)
        if diffs:
            raise PdegrowError(f"{run_dir} holds a run of another config ({differences_line(diffs)}); "
                               f"remove it or use another --out")
    t0 = time.perf_counter()
    summary = train(cfg, spec.data_path, run_dir, resume=resume, overwrite=not resume, progress=False)
    wall = time.perf_counter() - t0
    result = {
        "dataset": spec.dataset, "strategy": spec.strategy, "seed": spec.seed, "data": spec.data_path,
        "growth_strategy": spec.config["growth"]["strategy"], "config": spec.config,
        "resolved_config": resolved_config(spec.config, spec.run_id),
        "test": summary.get("test", {}), "val": summary.get("val", {}),
        "n_params": summary["architecture"]["n_params"], "depth": summary["architecture"]["depth"],
        "growth_events": summary["growth_events"], "epochs": summary["epochs"],
        "train_wall_s": training_wall_time(run_dir), "wall_s": wall, "resumed": resume, "device": device,
    }
    atomic_write_text(run_dir / RESULT_FILE, to_json(result, indent=1, sort_keys=True) + "\n")
    return result


@dataclass
class CompareSummary:
    """What a comparison did (on rank 0: for every rank)."""

    n_runs: int
    skipped: int
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)


def make_output_dir(out: Path) -> None:
    """Create ``--out`` (and its parents); one line naming the path and the cause if it cannot be."""
    if out.exists() and not out.is_dir():
        raise PdegrowError(f"--out {out} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PdegrowError(f"cannot create the output directory {out} ({exc.strerror or exc})") from None


def _plan(config_path: str, out: Path, data_overrides: dict[str, str] | None
          ) -> tuple[tuple[CompareConfig, list[int]], DirectoryLock]:
    """(the config and the pending runs, the lock of ``out``, held by the caller until the end)."""
    cfg = load_compare_config(config_path, data_overrides)
    check_data_files(cfg)
    make_output_dir(out)
    lock = DirectoryLock(out / LOCK_NAME, f"comparison {out}")
    lock.acquire()
    try:
        pending = []
        for i, spec in enumerate(cfg.runs):
            res = read_result(spec.run_dir(out))
            if res is None:
                pending.append(i)
            elif diffs := result_differences(res, spec.config):
                raise PdegrowError(f"{spec.run_dir(out)} was made with another config "
                                   f"({differences_line(diffs)}); set the run's values in the study's "
                                   f"config, remove the run, or use another --out")
    except BaseException:
        lock.release()
        raise
    return (cfg, pending), lock


def run_comparison(config_path: str | Path, out: str | Path, *, data_overrides: dict[str, str] | None = None,
                   comm: Any = None, figures: bool = True,
                   on_event: Callable[[str, dict[str, Any]], None] | None = None) -> CompareSummary:
    """Run (or continue) the study of ``config_path`` into ``out`` on every rank of ``comm``.

    ``on_event(kind, info)`` (``kind`` in ``"start"``, ``"done"``, ``"failed"``) reports
    progress on the rank that runs the run. Returns the summary (complete on rank 0).
    Raises :class:`PdegrowError` for a bad config or data file (on every rank), and on
    rank 0 after writing the table when a run failed.
    """

    comm = world_comm() if comm is None else comm
    out = Path(out).resolve() if comm.rank == 0 else Path(out)
    out = Path(comm.bcast(str(out), root=0))
    plan: Any = None
    error: str | None = None
    bug: BaseException | None = None
    lock: DirectoryLock | None = None   # rank 0 holds the lock of --out until the end
    if comm.rank == 0:
        try:
            plan, lock = _plan(str(config_path), out, data_overrides)
        except PdegrowError as exc:
            error = str(exc)
        except Exception as exc:  # not the user's: every rank stops, rank 0 with the traceback
            bug, error = exc, f"internal error on rank 0: {type(exc).__name__}: {exc}"
    plan, error = comm.bcast((plan, error), root=0)
    if bug is not None:
        raise bug
    if error is not None:
        if error.startswith("internal error on rank 0"):
            raise RuntimeError(error)
        raise PdegrowError(error)
    try:
        return _run_plan(plan, out, comm, figures, on_event)
    finally:
        if lock is not None:
            lock.release()


def progress(finished: int, mine: int, elapsed: float, pending: int, ranks: int) -> dict[str, Any]:
    """Where a rank stands: ``finished`` of its ``mine`` runs after ``elapsed`` seconds, and the time
    left if the others take as long on average (None before the first finishes); ``pending`` runs in
    all on ``ranks`` ranks."""
    left = elapsed / finished * (mine - finished) if finished else None
    return {"finished": finished, "of": mine, "elapsed_s": elapsed, "left_s": left,
            "pending": pending, "ranks": ranks}


def _run_plan(plan: tuple[CompareConfig, list[int]], out: Path, comm: Any, figures: bool,
              on_event: Callable[[str, dict[str, Any]], None] | None) -> CompareSummary:
    import torch

    cfg, pending = plan
    mine = pending[comm.rank :: comm.size]
    torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device, local_rank(comm))
    done: list[str] = []
    failed: dict[str, str] = {}
    started = time.monotonic()
    for k, i in enumerate(mine):
        spec = cfg.runs[i]
        if on_event:
            on_event("start", {"run": spec.run_id, "rank": comm.rank, "device": device,
                               **progress(k, len(mine), time.monotonic() - started, len(pending), comm.size)})
        try:
            res = execute_run(spec, out, device)
            done.append(spec.run_id)
            if on_event:
                on_event("done", {"run": spec.run_id, "rank": comm.rank, "result": res,
                                  **progress(k + 1, len(mine), time.monotonic() - started, len(pending),
                                             comm.size)})
        except PdegrowError as exc:
            failed[spec.run_id] = str(exc)
        except Exception as exc:  # a bug in one run must not stop the others; reported at the end
            failed[spec.run_id] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        if spec.run_id in failed and on_event:
            on_event("failed", {"run": spec.run_id, "rank": comm.rank, "error": failed[spec.run_id],
                                **progress(k + 1, len(mine), time.monotonic() - started, len(pending),
                                           comm.size)})
    gathered = comm.gather((done, failed), root=0)
    summary = CompareSummary(len(cfg.runs), len(cfg.runs) - len(pending))
    if comm.rank == 0:
        for d, f in gathered:
            summary.done += d
            summary.failed.update(f)
        results = collect_results(cfg, out)
        summary.outputs += write_tables(cfg, results, out)
        if figures:
            from pdegrow.comparison.figures import write_figures

            summary.outputs += write_figures(cfg, results, out)
    comm.barrier()
    if comm.rank == 0 and summary.failed:
        first = next(iter(summary.failed.items()))
        raise PdegrowError(f"{len(summary.failed)} run(s) failed (the table holds the finished ones); "
                           f"first: {first[0]}: {first[1].splitlines()[0]}")
    return summary
