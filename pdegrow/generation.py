"""The data-set generation driver, shared by every forward problem.

Samples are split over MPI ranks (round robin over the samples not yet done);
each rank solves its samples on its own communicator and writes them into
*part files* under ``OUT.parts/``. A part file is written under a temporary
name and renamed when closed, so a part either exists whole or not at all:
a run killed at any moment loses at most the samples buffered since the last
part, and ``--resume`` regenerates exactly those. Sample ``i`` is drawn from
``numpy.random.default_rng([base_seed, i])`` alone, so the data set does not
depend on the number of ranks nor on interruptions. When every sample is
done, rank 0 merges the parts, in sample order, into ``OUT`` (again written
under a temporary name and renamed), and removes ``OUT.parts/``.

mpi4py is imported only when a communicator is needed, never at module level.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np

from pdegrow.contract import create_dataset_file, mark_complete, sample_storage
from pdegrow.errors import DataContractError, PdegrowError

_PROGRESS_TAG = 7301


class ForwardProblem(Protocol):
    """What the driver needs from a forward model (``solvers/``)."""

    name: str

    def static_arrays(self) -> dict[str, np.ndarray]:
        """``geometry/…`` and ``operators/…`` arrays, identical for every sample."""

    def sample_specs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Shape of one sample and dtype of every ``inputs/…``/``targets/…`` array."""

    def solve(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw sample ``index`` from ``rng`` (its only source of randomness) and solve."""

    def file_attrs(self) -> dict[str, Any]:
        """Extra root attributes of the data set (e.g. the noise level)."""


@dataclass
class GenerationSummary:
    """What a generation run did; rank 0's copy is complete."""

    out: Path
    problem: str
    n_samples: int
    n_generated: int
    n_ranks: int
    seconds: float
    file_size_bytes: int

    def format(self) -> str:
        rate = self.n_generated / self.seconds if self.seconds > 0 else float("nan")
        return "\n".join([
            f"wrote {self.out}",
            f"  problem       {self.problem}",
            f"  samples       {self.n_samples} ({self.n_generated} generated in this run"
            f"{', the rest resumed' if self.n_generated < self.n_samples else ''})",
            f"  ranks         {self.n_ranks}",
            f"  time          {self.seconds:.2f} s   ({rate:.2f} samples/s)",
            f"  file size     {self.file_size_bytes / 2**20:.2f} MiB",
        ])


def sample_rng(base_seed: int, index: int) -> np.random.Generator:
    """The random stream of sample ``index``: a function of (base_seed, index) only."""
    return np.random.default_rng([int(base_seed), int(index)])


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def write_part(path: Path, indices: list[int], samples: list[dict[str, np.ndarray]]) -> None:
    """Write buffered samples to a part file atomically (temporary name, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("indices", data=np.asarray(indices, dtype=np.int64))
        for name in samples[0]:
            rows = np.stack([s[name] for s in samples])
            f.create_dataset(name, data=rows, **sample_storage(rows.shape[1:]))
        f.attrs["complete"] = True
    os.replace(tmp, path)


def read_part_indices(path: Path) -> np.ndarray:
    """The sample indices held by a part file; :class:`DataContractError` if it is damaged."""
    try:
        with h5py.File(path, "r") as f:
            if not f.attrs.get("complete", False) or "indices" not in f:
                raise DataContractError(f"part file {path} is incomplete")
            return np.asarray(f["indices"][...], dtype=np.int64)
    except OSError as exc:
        raise DataContractError(
            f"part file {path} is corrupt ({exc}); delete it to regenerate its samples") from None


def _manifest(problem: str, config: dict[str, Any], n_samples: int, seed: int) -> dict[str, Any]:
    return {"problem": problem, "config": config, "n_samples": n_samples, "base_seed": seed}


def _prepare(out: Path, manifest: dict[str, Any], resume: bool, overwrite: bool) -> list[int]:
    """Rank-0 checks of the output location; returns the sample indices still to do."""
    parts = parts_dir(out)
    if not out.parent.exists():
        raise PdegrowError(f"cannot write {out}: directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise PdegrowError(f"cannot write {out}: directory {out.parent} is not writable")
    if out.is_dir():
        raise PdegrowError(f"cannot write {out}: it is a directory")
    if overwrite:
        if out.exists():
            out.unlink()
        shutil.rmtree(parts, ignore_errors=True)
    elif out.exists():
        raise PdegrowError(f"{out} exists; pass --overwrite to replace it")
    if parts.exists() and not resume:
        raise PdegrowError(
            f"{parts} holds an interrupted run; pass --resume to finish it or --overwrite to restart")
    parts.mkdir(exist_ok=True)
    manifest_path = parts / "manifest.json"
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        if previous != json.loads(json.dumps(manifest)):
            changed = sorted(k for k in manifest if previous.get(k) != manifest[k])
            raise PdegrowError(
                f"cannot resume {out}: the interrupted run had a different {', '.join(changed)}; "
                "pass --overwrite to restart")
    else:
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, manifest_path)
    done = np.zeros(manifest["n_samples"], dtype=bool)
    for part in sorted(parts.glob("part-*.h5")):
        indices = read_part_indices(part)
        if indices.size and (indices.min() < 0 or indices.max() >= done.size):
            raise DataContractError(f"part file {part} holds samples outside 0…{done.size - 1}")
        done[indices] = True
    for stale in parts.glob("*.tmp"):
        stale.unlink()
    return [int(i) for i in np.flatnonzero(~done)]


def _merge(out: Path, problem: ForwardProblem, manifest: dict[str, Any]) -> None:
    """Merge all part files, in sample order, into ``out`` (atomically)."""
    parts = parts_dir(out)
    n = manifest["n_samples"]
    tmp = out.with_name(out.name + ".tmp")
    seen = np.zeros(n, dtype=bool)
    with create_dataset_file(
        tmp, problem=manifest["problem"], config=manifest["config"], n_samples=n,
        base_seed=manifest["base_seed"], static=problem.static_arrays(),
        sample_specs=problem.sample_specs(), attrs=problem.file_attrs(),
    ) as f:
        for part in sorted(parts.glob("part-*.h5")):
            with h5py.File(part, "r") as p:
                idx = p["indices"][...]
                order = np.argsort(idx)
                idx = idx[order]
                if seen[idx].any():
                    raise DataContractError(f"part file {part} repeats samples already merged")
                seen[idx] = True
                for name in problem.sample_specs():
                    _copy_rows(p[name], f[name], order, idx)
        if not seen.all():
            missing = np.flatnonzero(~seen)
            raise DataContractError(f"samples {missing[:10].tolist()} … are missing from {parts}")
        mark_complete(f)
    os.replace(tmp, out)
    shutil.rmtree(parts)


def _copy_rows(src: h5py.Dataset, dst: h5py.Dataset, rows: np.ndarray, targets: np.ndarray) -> None:
    """dst[targets[k]] = src[rows[k]]; one-sample chunks are copied still compressed."""
    if src.chunks is None or src.chunks != dst.chunks or src.compression != dst.compression:
        dst[targets] = src[...][rows]
        return
    tail = (0,) * (src.ndim - 1)
    for row, target in zip(rows, targets, strict=True):
        mask, chunk = src.id.read_direct_chunk((int(row), *tail))
        dst.id.write_direct_chunk((int(target), *tail), chunk, mask)


def _collective(comm: Any, func: Callable[[], Any]) -> Any:
    """Run ``func`` on rank 0 and broadcast its result, or its user error, to every rank."""
    result: Any = None
    error: str | None = None
    if comm.rank == 0:
        try:
            result = func()
        except PdegrowError as exc:
            error = str(exc)
    result, error = comm.bcast((result, error), root=0)
    if error is not None:
        raise PdegrowError(error)
    return result


def generate(
    make_problem: Callable[[], ForwardProblem],
    *,
    problem: str,
    config: dict[str, Any],
    n_samples: int,
    seed: int,
    out: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    flush_every: int = 256,
    progress: bool = True,
    comm: Any = None,
) -> GenerationSummary:
    """Generate ``n_samples`` samples of ``problem`` into ``out``, on every rank of ``comm``.

    ``make_problem`` builds the forward model on one rank (it is called on rank
    0 first, so that its JIT compilation fills the form cache before the other
    ranks compile). A rank writes a part file every ``flush_every`` samples or 30 s,
    whichever comes first.
    """
    from mpi4py import MPI

    if comm is None:
        comm = MPI.COMM_WORLD
    if n_samples <= 0:
        raise PdegrowError(f"n_samples must be positive, got {n_samples}")
    if flush_every <= 0:
        raise PdegrowError(f"flush_every must be positive, got {flush_every}")
    out = Path(out).resolve() if comm.rank == 0 else Path(out)
    out = Path(comm.bcast(str(out), root=0))
    manifest = _manifest(problem, config, n_samples, seed)
    start = time.perf_counter()
    remaining = _collective(comm, lambda: _prepare(out, manifest, resume, overwrite))
    run_id = comm.bcast(uuid.uuid4().hex[:8], root=0)

    forward: ForwardProblem | str | None = None
    if comm.rank == 0:
        forward = _build(make_problem)
    comm.barrier()
    if comm.rank != 0:
        forward = _build(make_problem)
    errors = comm.allgather(forward if isinstance(forward, str) else None)
    if any(errors):
        raise PdegrowError(next(e for e in errors if e))

    mine = remaining[comm.rank :: comm.size]
    counts = [len(remaining[r :: comm.size]) for r in range(comm.size)]
    bar = None
    if progress and comm.rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=n_samples, initial=n_samples - len(remaining), unit="sample",
                   desc=f"{problem} ({comm.size} rank{'s' if comm.size > 1 else ''})",
                   file=sys.stderr, dynamic_ncols=True)
    others_done = [0] * comm.size
    requests = []
    buffer_idx: list[int] = []
    buffer: list[dict[str, np.ndarray]] = []
    part_no = 0
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal part_no, last_flush
        if buffer_idx:
            name = f"part-{run_id}-r{comm.rank:05d}-{part_no:06d}.h5"
            write_part(parts_dir(out) / name, buffer_idx, buffer)
            part_no += 1
            buffer_idx.clear()
            buffer.clear()
        last_flush = time.monotonic()

    def poll(wait_for_all: bool = False) -> None:
        """Rank 0: take the other ranks' progress messages (all of them when ``wait_for_all``)."""
        while True:
            if wait_for_all:
                if sum(others_done) >= sum(counts[1:]):
                    return
            elif not comm.iprobe(source=MPI.ANY_SOURCE, tag=_PROGRESS_TAG):
                return
            rank, done = comm.recv(source=MPI.ANY_SOURCE, tag=_PROGRESS_TAG)
            bar.update(done - others_done[rank])
            others_done[rank] = done

    for k, index in enumerate(mine, start=1):
        sample = forward.solve(index, sample_rng(seed, index))
        buffer_idx.append(index)
        buffer.append(sample)
        if len(buffer_idx) >= flush_every or time.monotonic() - last_flush > 30.0:
            flush()
        if comm.rank == 0:
            if bar is not None:
                bar.update(1)
                poll()
        elif progress:
            requests.append(comm.isend((comm.rank, k), dest=0, tag=_PROGRESS_TAG))
    flush()
    if comm.rank == 0 and bar is not None and comm.size > 1:
        poll(wait_for_all=True)
    for req in requests:
        req.wait()
    if bar is not None:
        bar.close()
    comm.barrier()
    _collective(comm, lambda: _merge(out, forward, manifest))
    seconds = time.perf_counter() - start
    size = out.stat().st_size if comm.rank == 0 else 0
    return GenerationSummary(out=out, problem=problem, n_samples=n_samples,
                             n_generated=len(remaining), n_ranks=comm.size,
                             seconds=seconds, file_size_bytes=size)


def _build(make_problem: Callable[[], ForwardProblem]) -> ForwardProblem | str:
    try:
        return make_problem()
    except PdegrowError as exc:
        return str(exc)
