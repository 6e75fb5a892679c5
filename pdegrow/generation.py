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

Nothing is written before the recipe, the forward model and the sizes are
checked (:mod:`pdegrow.generation_output`); one run at a time holds the lock of
``OUT.parts/``. A sample that fails on any rank (a solver error, non-finite
values, a full disk) stops every rank after its current sample: each rank keeps
what it finished (its part files), and all raise the same error naming the
sample. mpi4py is imported only when a communicator is needed, never at module level.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pdegrow.errors import PdegrowError
from pdegrow.generation_merge import merge_parts
from pdegrow.generation_output import (
    Claim,
    check_location,
    check_model_memory,
    check_resources,
    claim_location,
    release,
    sample_bytes,
)
from pdegrow.generation_parts import (
    make_manifest,
    parts_dir,
    pending_indices,
    read_part_indices,
    stack_samples,
    write_part,
)

log = logging.getLogger(__name__)

_PROGRESS_TAG = 7301
_FAILURE_TAG = 7302
BUFFER_BYTES = 256 * 2**20
"""A rank writes a part file at the latest when its buffered samples reach this many bytes."""

__all__ = ["ForwardProblem", "GenerationSummary", "SampleError", "generate", "make_manifest",
           "non_finite_rows", "parts_dir", "read_part_indices", "sample_rng", "write_part"]


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
    already_complete: bool = False

    def format(self) -> str:
        if self.already_complete:
            return (f"{self.out} is already complete (same recipe, seed and {self.n_samples} samples); "
                    "nothing to do")
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


class SampleError(PdegrowError):
    """Sample ``index`` could not be made (the solver failed, or its values are not finite)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def non_finite_rows(rows: dict[str, np.ndarray]) -> tuple[np.ndarray, str | None]:
    """Which rows (samples) of :func:`stack_samples` output hold NaN or Inf: a boolean mask, and
    the name of the first array where the first such row does (None when all are finite).

    One vectorised pass over a whole part file's rows: a per-sample check would cost more than
    1 % of a small heat solve.
    """
    bad = np.zeros(len(next(iter(rows.values()))), dtype=bool)
    first: tuple[int, str] | None = None
    for name, array in rows.items():
        row_bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
        if row_bad.any():
            k = int(np.argmax(row_bad))
            if first is None or k < first[0]:
                first = (k, name)
            bad |= row_bad
    return bad, None if first is None else first[1]


def _collective(comm: Any, func: Callable[[], Any]) -> Any:
    """Run ``func`` on rank 0 and broadcast its result, or its error, to every rank.

    Any exception on rank 0 reaches every rank (as a :class:`PdegrowError` on the others), so no
    rank is left waiting; rank 0 re-raises its own exception (a bug keeps its traceback there).
    """
    result: Any = None
    error: str | None = None
    failure: BaseException | None = None
    if comm.rank == 0:
        try:
            result = func()
        except Exception as exc:
            failure, error = exc, str(exc) if isinstance(exc, PdegrowError) else _describe(exc)
    shared, error = comm.bcast((result, error), root=0)
    if failure is not None:
        raise failure
    if error is not None:
        raise PdegrowError(error)
    return result if comm.rank == 0 else shared  # rank 0 keeps its own object (e.g. a held lock)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


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
    model_memory: int = 0,
) -> GenerationSummary:
    """Generate ``n_samples`` samples of ``problem`` into ``out``, on every rank of ``comm``.

    ``make_problem`` builds the forward model on one rank (it is called on rank
    0 first, so that its JIT compilation fills the form cache before the other
    ranks compile). A rank writes a part file every ``flush_every`` samples, every
    ``BUFFER_BYTES`` of samples or every 30 s, whichever comes first. With ``resume``, an
    ``out`` already complete with the same recipe, seed and size is left as it is (the
    summary says ``already_complete``). ``model_memory`` (bytes, estimated from the recipe)
    is what one rank's forward model needs: checked against the node's memory before any
    rank builds it.
    """
    from mpi4py import MPI

    if comm is None:
        comm = MPI.COMM_WORLD
    if n_samples <= 0:
        raise PdegrowError(f"n_samples must be positive, got {n_samples}")
    if flush_every <= 0:
        raise PdegrowError(f"flush_every must be positive, got {flush_every}")
    start = time.perf_counter()
    out = Path(comm.bcast(str(Path(out).resolve()) if comm.rank == 0 else None, root=0))
    manifest = make_manifest(problem, config, n_samples, seed)

    if _collective(comm, lambda: check_location(out, manifest, resume, overwrite)):
        return _summary(comm, out, problem, n_samples, 0, start, already_complete=True)

    local_ranks = 1
    if comm.size > 1:
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        local_ranks = node.size
        node.Free()
    _collective(comm, lambda: check_model_memory(model_memory, local_ranks))
    forward = _build_everywhere(comm, make_problem)
    specs = forward.sample_specs()
    one_sample = sample_bytes(specs)
    rows_per_part = max(1, min(flush_every, BUFFER_BYTES // max(one_sample, 1)))
    _collective(comm, lambda: check_resources(out, n_samples, one_sample, len(specs), rows_per_part,
                                              local_ranks))

    claim: Claim | None = None
    held: list[Claim | None] = []

    def take() -> tuple[np.ndarray, bool] | None:
        held.append(claim_location(out, manifest, resume, overwrite))
        return None if held[0] is None else (held[0].done, held[0].created)

    try:
        shared = _collective(comm, take)  # the lock itself stays on rank 0, never pickled
        claim = held[0] if held else None
        if shared is None:
            return _summary(comm, out, problem, n_samples, 0, start, already_complete=True)
        if comm.rank != 0:
            claim = Claim(done=shared[0], lock=None, created=shared[1])
        n_pending = n_samples - len(claim.done)
        run_id = comm.bcast(uuid.uuid4().hex[:8], root=0)
        failed = _solve_all(comm, forward, out, seed, n_samples, claim.done, run_id, rows_per_part,
                            progress, problem)
        if failed is not None:
            _collective(comm, lambda: release(claim, remove_if_empty=True))
            raise failed
        _collective(comm, lambda: merge_parts(out, forward, manifest))
    finally:
        if comm.rank == 0:
            release(claim)
    return _summary(comm, out, problem, n_samples, n_pending, start)


def _build_everywhere(comm: Any, make_problem: Callable[[], ForwardProblem]) -> ForwardProblem:
    """Build the forward model on rank 0 first (it fills the JIT cache), then on the others;
    an error on any rank reaches every rank."""
    forward: ForwardProblem | None = None
    error: str | None = None
    failure: BaseException | None = None

    def build() -> tuple[ForwardProblem | None, str | None, BaseException | None]:
        try:
            return make_problem(), None, None
        except PdegrowError as exc:
            return None, str(exc), None
        except Exception as exc:
            return None, _describe(exc), exc

    if comm.rank == 0:
        forward, error, failure = build()
    if comm.bcast(error, root=0) is None and comm.rank != 0:
        forward, error, failure = build()
    errors = comm.allgather(error)
    if failure is not None:
        raise failure
    first = next((e for e in errors if e), None)
    if first is not None:
        raise PdegrowError(first)
    assert forward is not None
    return forward


def _solve_all(comm: Any, forward: ForwardProblem, out: Path, seed: int, n_samples: int,
               done: np.ndarray, run_id: str, rows_per_part: int, progress: bool,
               problem: str) -> BaseException | None:
    """Every rank solves its share of the pending samples into part files.

    A failure on one rank (an exception from the solver, non-finite values, a part file that
    cannot be written) is sent to every other rank, which stops after its current sample; each
    rank writes what it finished. Returns the exception every rank is to raise (the same
    message on all of them), or None when all samples are done.
    """
    from mpi4py import MPI

    rank, size = comm.rank, comm.size
    parts = parts_dir(out)
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=n_samples, initial=len(done), unit="sample",
                   desc=f"{problem} ({size} rank{'s' if size > 1 else ''})",
                   file=sys.stderr, dynamic_ncols=True)
    others_done = [0] * size
    requests: list[Any] = []
    buffer_idx: list[int] = []
    buffer: list[dict[str, np.ndarray]] = []
    state = {"part_no": 0, "written": 0, "sent": 0}
    last_flush = time.monotonic()

    def flush() -> None:
        """Write the buffered samples; a sample with NaN/Inf is never written (the others are),
        it raises a :class:`SampleError`."""
        nonlocal last_flush
        if buffer_idx:
            rows = stack_samples(buffer)
            indices = np.asarray(buffer_idx, dtype=np.int64)
            bad, where = non_finite_rows(rows)
            if where is not None:
                rows = {key: value[~bad] for key, value in rows.items()}
                indices, first_bad = indices[~bad], int(indices[bad][0])
            buffer_idx.clear()
            buffer.clear()
            if len(indices):
                name = f"part-{run_id}-r{rank:05d}-{state['part_no']:06d}.h5"
                write_part(parts / name, indices, rows)
                state["part_no"] += 1
                state["written"] += len(indices)
            if where is not None:
                raise SampleError(first_bad, f"{where} holds non-finite values (NaN or Inf)")
        last_flush = time.monotonic()

    def poll() -> None:
        """Rank 0: take the other ranks' progress messages that have arrived."""
        while comm.iprobe(source=MPI.ANY_SOURCE, tag=_PROGRESS_TAG):
            other, count = comm.recv(source=MPI.ANY_SOURCE, tag=_PROGRESS_TAG)
            bar.update(count - others_done[other])
            others_done[other] = count

    current: int | None = None
    failure: BaseException | None = None
    try:
        for index in pending_indices(n_samples, done, rank, size):
            if size > 1 and comm.iprobe(source=MPI.ANY_SOURCE, tag=_FAILURE_TAG):
                break  # another rank failed: stop here, keep what is finished
            current = index
            sample = forward.solve(index, sample_rng(seed, index))
            current = None
            buffer_idx.append(index)
            buffer.append(sample)
            if len(buffer_idx) >= rows_per_part or time.monotonic() - last_flush > 30.0:
                flush()
            if bar is not None:
                bar.update(1)
                if size > 1:
                    poll()
            elif progress and rank != 0:
                state["sent"] += 1
                requests.append(comm.isend((rank, state["sent"]), dest=0, tag=_PROGRESS_TAG))
        flush()
    except Exception as exc:
        failure = exc
        if current is not None:
            try:
                flush()  # the samples finished before the failing one
            except PdegrowError:
                pass
        requests += [comm.isend(rank, dest=other, tag=_FAILURE_TAG) for other in range(size)
                     if other != rank]

    message = None if failure is None else _failure_message(failure, current, rank, size)
    outcomes = comm.allgather((message, state["sent"], state["written"]))
    if bar is not None:
        for other in range(1, size):  # receive every progress message that was sent
            while others_done[other] < outcomes[other][1]:
                _, count = comm.recv(source=other, tag=_PROGRESS_TAG)
                bar.update(count - others_done[other])
                others_done[other] = count
        bar.close()
    for other, (msg, _, _) in enumerate(outcomes):  # match the failure notices sent to this rank
        if msg is not None and other != rank:
            comm.recv(source=other, tag=_FAILURE_TAG)
    for req in requests:
        req.wait()
    messages = [msg for msg, _, _ in outcomes if msg is not None]
    if not messages:
        return None
    if failure is not None and not isinstance(failure, PdegrowError):
        log.error("generation failed on rank %d: %s", rank, message)
        return failure
    kept = len(done) + sum(written for _, _, written in outcomes)
    hint = (f"; the {kept} samples finished are kept in {parts}: rerun with --resume once the cause "
            "is fixed" if kept else "")
    return PdegrowError(messages[0] + hint)


def _failure_message(exc: BaseException, index: int | None, rank: int, size: int) -> str:
    text = str(exc) if isinstance(exc, PdegrowError) else _describe(exc)
    if isinstance(exc, SampleError):
        index = exc.index
    where = f" on rank {rank}" if size > 1 else ""
    if index is not None:
        return f"sample {index} failed{where}: {text}"
    return f"{text} (rank {rank})" if size > 1 else text


def _summary(comm: Any, out: Path, problem: str, n_samples: int, generated: int, start: float,
             already_complete: bool = False) -> GenerationSummary:
    size = out.stat().st_size if comm.rank == 0 and out.exists() else 0
    return GenerationSummary(out=out, problem=problem, n_samples=n_samples, n_generated=generated,
                             n_ranks=comm.size, seconds=time.perf_counter() - start,
                             file_size_bytes=size, already_complete=already_complete)
