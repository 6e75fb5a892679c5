"""Training one growing model on several GPUs (or CPU processes) with torch.distributed.

Launch (one process a GPU; NCCL on CUDA, gloo on CPU)::

    torchrun --nproc-per-node 4 -m pdegrow train --config C.toml --data D.h5 --out RUN
    mpiexec -n 4 pdegrow train --distributed --config C.toml --data D.h5 --out RUN
    srun --ntasks-per-node 4 pdegrow train --distributed …   (MASTER_ADDR/MASTER_PORT exported)

How it works — the ordinary :class:`~pdegrow.training.trainer.Trainer`, with:

* **data**: every rank opens the data set and draws the *same* shuffled epoch
  (the trainer's checkpointed shuffle generator); each global batch of
  ``optim.batch_size`` is split over the ranks (strided, like
  ``DistributedSampler``; whole noisy-copy groups stay on one rank). Rank r's
  loss on its n_r samples is scaled by n_r·W/B, so DDP's gradient *average*
  is exactly the gradient of the mean loss over the global batch: a W-rank
  run takes the same optimisation steps as a 1-rank run with the same
  ``batch_size`` (to floating-point rounding). Validation/test are sharded
  too and their sums gathered in rank order, so every rank sees the same number.
* **growth**: rank 0's *when* decision is broadcast; every rank runs the
  strategy's *propose* on identical weights, data and generator state, and
  the proposals' locations (``GrowthProposal.where()``) are compared — a
  mismatch is an error, never a silent divergence; after *apply* rank 0's
  parameters and buffers are broadcast (so the new block's values are
  bitwise identical everywhere), the optimizer keeps the state of untouched
  parameters (:func:`~pdegrow.models.optim.sync_optimizer`, as in the 1-rank
  trainer), and DDP is re-wrapped around the grown model (new parameters,
  changed shapes, newly frozen blocks).
* **files**: only rank 0 writes the run directory (checkpoints, metrics,
  events, model, summary); the other ranks write into a private scratch
  directory that is removed at the end. A checkpoint holds nothing that
  depends on the number of ranks, so ``--resume`` works with any W.

torch.distributed is imported inside functions only: the module costs nothing
to a 1-process run.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pdegrow.data.loaders import LazySplit, MemorySplit, Split, epoch_batches
from pdegrow.errors import PdegrowError
from pdegrow.regularizers.terms import Forward
from pdegrow.training import problems
from pdegrow.training.config import ExperimentConfig
from pdegrow.training.runlog import write_json
from pdegrow.training.trainer import Trainer

DEFAULT_PORT = 29500
TIMEOUT_ENV = "PDEGROW_DIST_TIMEOUT"      # seconds a collective may wait (default 1800)


@dataclass(frozen=True)
class LaunchInfo:
    """Where this process sits in the job, as told by its launcher."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    launcher: str             # "torchrun", "mpi", "slurm" or "spawn"


def _int(env: Mapping[str, str], *names: str, default: int | None = None) -> int | None:
    for name in names:
        if env.get(name, "").strip():
            return int(env[name])
    return default


def launched_by_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """True when torchrun (or another launcher that sets its variables) started this process."""
    env = os.environ if env is None else env
    return all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def launch_info(env: Mapping[str, str] | None = None) -> LaunchInfo:
    """Rank, world size and local rank from torchrun, MPI (MPICH/Intel MPI, Open MPI) or srun variables.

    A process started by none of them is rank 0 of 1.
    """
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        local_world = _int(env, "LOCAL_WORLD_SIZE", default=world)
        return LaunchInfo(int(env["RANK"]), world, _int(env, "LOCAL_RANK", default=0), local_world,
                          "torchrun" if "TORCHELASTIC_RUN_ID" in env else "spawn")
    if "OMPI_COMM_WORLD_SIZE" in env:
        return LaunchInfo(int(env["OMPI_COMM_WORLD_RANK"]), int(env["OMPI_COMM_WORLD_SIZE"]),
                          _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", default=0),
                          _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", default=1), "mpi")
    if "PMI_SIZE" in env and "PMI_RANK" in env:
        return LaunchInfo(int(env["PMI_RANK"]), int(env["PMI_SIZE"]),
                          _int(env, "MPI_LOCALRANKID", "SLURM_LOCALID", default=0),
                          _int(env, "MPI_LOCALNRANKS", default=1), "mpi")
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:   # inside srun (not the batch script)
        per_node = env.get("SLURM_STEP_TASKS_PER_NODE", "1").split("(")[0].split(",")[0]
        return LaunchInfo(int(env["SLURM_PROCID"]), int(env["SLURM_STEP_NUM_TASKS"]),
                          _int(env, "SLURM_LOCALID", default=0), int(per_node or 1), "slurm")
    return LaunchInfo(0, 1, 0, 1, "none")


def _rendezvous(info: LaunchInfo, env: dict[str, str]) -> None:
    """Fill MASTER_ADDR/MASTER_PORT when the launcher did not: from MPI (rank 0's host and a free
    port, broadcast), else localhost:29500 for a single-node job; multi-node srun needs them exported."""
    if env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        return
    addr = port = None
    if info.launcher == "mpi":
        try:
            from mpi4py import MPI
        except ImportError:
            MPI = None  # noqa: N806
        if MPI is not None and MPI.COMM_WORLD.size == info.world_size:
            comm = MPI.COMM_WORLD
            mine = None
            if comm.rank == 0:
                with socket.socket() as s:
                    s.bind(("", 0))
                    free = s.getsockname()[1]
                host = "127.0.0.1" if info.local_world_size == info.world_size else socket.gethostname()
                mine = (host, str(free))
            addr, port = comm.bcast(mine, root=0)
    if addr is None:
        if info.local_world_size != info.world_size and not env.get("MASTER_ADDR"):
            raise PdegrowError("multi-node distributed training needs MASTER_ADDR (and MASTER_PORT) in "
                               "the environment: rank 0's host (see experiments/slurm/train-ddp.sbatch)")
        addr, port = env.get("MASTER_ADDR", "127.0.0.1"), env.get("MASTER_PORT", str(DEFAULT_PORT))
    env.setdefault("MASTER_ADDR", addr)
    env.setdefault("MASTER_PORT", port)


def init_distributed(device: str = "auto") -> tuple[LaunchInfo, torch.device, str]:
    """Join (or create) the default process group: NCCL with one GPU per local rank, else gloo.

    Returns the launch info, this rank's device and the backend name. ``device`` is the config's
    ``[run] device`` (``auto``/``cpu``/``cuda``).
    """
    import torch.distributed as dist

    info = launch_info()
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise PdegrowError("device = 'cuda' but no CUDA device is available")
    if use_cuda:
        n_gpu = torch.cuda.device_count()
        if info.local_rank >= n_gpu:
            raise PdegrowError(f"local rank {info.local_rank} has no GPU of its own ({n_gpu} visible): "
                               f"start at most {n_gpu} ranks a node")
        torch.cuda.set_device(info.local_rank)
        dev = torch.device("cuda", info.local_rank)
    else:
        dev = torch.device("cpu")
    backend = "nccl" if use_cuda else "gloo"
    if dist.is_initialized():
        return LaunchInfo(dist.get_rank(), dist.get_world_size(), info.local_rank, info.local_world_size,
                          info.launcher), dev, dist.get_backend()
    _rendezvous(info, os.environ)  # type: ignore[arg-type]
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, 1800)))
    kwargs: dict[str, Any] = {"backend": backend, "rank": info.rank, "world_size": info.world_size,
                              "timeout": timeout, "init_method": "env://"}
    if use_cuda:
        kwargs["device_id"] = dev
    dist.init_process_group(**kwargs)
    return info, dev, backend


def shard(idx: torch.Tensor, rank: int, world: int, groups: torch.Tensor | None = None) -> torch.Tensor:
    """This rank's part of a global batch ``idx``: every ``world``-th item from ``rank`` on, or with
    ``groups`` (the group id of each item) every ``world``-th group in order of appearance."""
    if groups is None:
        return idx[rank::world]
    g = groups[idx.to(groups.device)].cpu()
    _, first = torch.unique_consecutive(g, return_inverse=True)  # groups are contiguous in a batch
    return idx[(first % world) == rank]


class DistributedTrainer(Trainer):
    """The trainer over a torch.distributed process group (see the module docstring).

    The default process group must be initialised (:func:`init_distributed`); every rank builds
    one with the same arguments.
    """

    def __init__(self, cfg: ExperimentConfig, data_path: str | Path, run_dir: str | Path, *,
                 resume: bool = False, overwrite: bool = False, progress: bool | None = None,
                 local_rank: int | None = None):
        import torch.distributed as dist

        if not dist.is_initialized():
            raise PdegrowError("DistributedTrainer needs an initialised process group (init_distributed)")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.backend = dist.get_backend()
        self.local_rank = launch_info().local_rank if local_rank is None else local_rank
        self.real_run_dir = Path(run_dir)
        self.scratch: Path | None = None
        self.ddp: torch.nn.Module | None = None
        if cfg.run.threads <= 0 and "OMP_NUM_THREADS" not in os.environ and self.backend == "gloo":
            local = max(1, launch_info().local_world_size)
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
        if self.rank != 0:
            progress = False
            self.scratch = Path(tempfile.mkdtemp(prefix=f"pdegrow-rank{self.rank}-"))
            if resume:
                self._mirror_run(Path(run_dir), self.scratch)
            run_dir = self.scratch
            overwrite = True
        error: str | None = None
        try:
            super().__init__(cfg, data_path, run_dir, resume=resume, overwrite=overwrite, progress=progress)
        except PdegrowError as exc:
            error = str(exc)
        self._raise_if_any(error)
        self._hook_strategy()
        self._check_consistent("start")
        self._wrap()
        if self.rank == 0:
            self._record_launch(resume)

    # ------------------------------------------------------------------ collectives

    def _gather(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def _raise_if_any(self, error: str | None) -> None:
        """Every rank raises the first rank's error (no rank is left waiting in a collective)."""
        errors = self._gather(error)
        first = next((e for e in errors if e), None)
        if first is not None:
            self.cleanup()
            raise PdegrowError(first)

    def _broadcast_flag(self, flag: bool) -> bool:
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._comm_device())
        dist.broadcast(t, 0)
        return bool(t.item())

    def _agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (e.g. whether a checkpoint is due by its clock)."""
        return self._broadcast_flag(flag)

    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def _broadcast_model(self) -> None:
        """Rank 0's parameters and buffers, in place, on every rank."""
        import torch.distributed as dist

        with torch.no_grad():
            for t in [*self.model.parameters(), *self.model.buffers()]:
                dist.broadcast(t.data, 0)

    def _fingerprint(self) -> str:
        spec = json.dumps(self.model.spec(), sort_keys=True, default=str)
        shapes = [(n, tuple(p.shape), p.requires_grad) for n, p in self.model.named_parameters()]
        return hashlib.sha1((spec + repr(shapes) + str(self.state.epoch)).encode()).hexdigest()

    def _check_consistent(self, when: str) -> None:
        prints = self._gather(self._fingerprint())
        if len(set(prints)) != 1:
            raise PdegrowError(f"ranks hold different architectures or epochs {when} (a growth strategy "
                               f"that is not deterministic across ranks, or checkpoints that differ?)")

    def _hook_strategy(self) -> None:
        """Make the strategy's when/propose/apply collective (decided by / checked against rank 0)."""
        strategy = self.strategy
        when, propose, apply = strategy.when, strategy.propose, strategy.apply

        def agreed_when(ctx: Any) -> bool:  # every rank asks (side effects stay in step), rank 0 decides
            return self._broadcast_flag(bool(when(ctx)))

        def agreed_propose(ctx: Any) -> Any:
            proposal = propose(ctx)
            where = None if proposal is None else json.dumps(proposal.where(), sort_keys=True, default=str)
            wheres = self._gather(where)
            if any(w != wheres[0] for w in wheres):
                raise PdegrowError(f"ranks disagree on the growth proposal: rank 0 {wheres[0]}, "
                                   f"others {sorted({str(w) for w in wheres[1:]})}")
            return proposal

        def synced_apply(ctx: Any, proposal: Any) -> None:
            apply(ctx, proposal)
            self._broadcast_model()

        strategy.when = agreed_when            # type: ignore[method-assign]
        strategy.propose = agreed_propose      # type: ignore[method-assign]
        strategy.apply = synced_apply          # type: ignore[method-assign]

    # ------------------------------------------------------------------ DDP

    def _wrap(self) -> None:
        """(Re-)wrap the model in DistributedDataParallel; the old wrapper's hooks go with it."""
        from torch.nn.parallel import DistributedDataParallel

        self.ddp = None  # freed by reference count: its reducer removes its gradient hooks
        if not any(p.requires_grad for p in self.model.parameters()):
            self.ddp = self.model         # nothing to train, nothing to reduce
            return
        import inspect

        # buffers (constants here) are synced from rank 0 when wrapping, not at every forward
        params = inspect.signature(DistributedDataParallel.__init__).parameters
        kwargs: dict[str, Any] = ({"forward_sync_buffers": False} if "forward_sync_buffers" in params
                                  else {"broadcast_buffers": False})
        if self.device.type == "cuda":
            kwargs["device_ids"] = [self.device.index if self.device.index is not None
                                    else torch.cuda.current_device()]
        self.ddp = DistributedDataParallel(self.model, **kwargs)

    def _grow(self) -> bool:
        grew = super()._grow()
        if grew:
            self._check_consistent(f"after growth event {len(self.events)}")
            self._wrap()
        return grew

    # ------------------------------------------------------------------ training and evaluation

    def _groups(self, split: Split) -> torch.Tensor | None:
        if not self.keep_groups:
            return None
        if isinstance(split, MemorySplit):
            return split.groups.cpu()
        assert isinstance(split, LazySplit)
        return torch.arange(len(split)) % len(split.file_indices)

    def _train_epoch(self) -> dict[str, float]:
        import torch.distributed as dist

        self.model.train()
        split = self.data.train
        groups = self._groups(split)
        keys = ["train_loss", "train_data_loss", *(f"term_{t.name}" for t in self.terms)]
        sums = [0.0] * len(keys)
        n_local = 0
        assert self.ddp is not None
        for idx in epoch_batches(len(split), self.cfg.optim.batch_size, self.shuffle, groups):
            mine = shard(idx, self.rank, self.world, groups)
            b_global, n = len(idx), len(mine)
            batch = split.get(mine if n else idx[:1])  # an empty shard runs one sample, weighted 0
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                pred, states = self.ddp(batch.inputs, return_states=True)
                if n == 0:  # still joins the gradient all-reduce, with zeros
                    objective = pred.sum() * 0.0
                else:
                    fwd = Forward(self.model, pred, states, self.data.to_physical_target,
                                  self.data.to_physical_input)
                    loss = self._objective(pred, batch)
                    total = loss
                    for term in self.terms:
                        total = total + term(batch, fwd)
                    objective = total * (n * self.world / b_global)
            objective.backward()
            self.optimizer.step()
            if n:
                sums[0] += float(total.detach()) * n
                sums[1] += float(loss.detach()) * n
                for k, term in enumerate(self.terms, start=2):
                    sums[k] += term.last_value * n
                n_local += n
        t = torch.tensor([*sums, float(n_local)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        values = t.tolist()
        if not all(map(_finite, values)):
            raise PdegrowError(f"the training loss became {values[0]} at epoch {self.state.epoch + 1} "
                               f"(lower optim.lr or the regularizer weights)")
        if self.scheduler is not None:
            self.scheduler.step()
        n_total = max(values[-1], 1.0)
        return {k: v / n_total for k, v in zip(keys, values[:-1], strict=True)}

    def evaluate_split(self, split: Split) -> dict[str, float]:
        """Mean data loss and per-sample metrics over ``split``, each rank evaluating a strided share."""
        mine = torch.arange(len(split))[self.rank::self.world]
        sums, n = self.split_sums(split.get(idx) for idx in mine.split(max(self.cfg.optim.batch_size, 256)))
        total: dict[str, float] = {}
        count = 0
        for part, m in self._gather((sums, n)):   # rank order: the same sum on every rank
            count += m
            for k, v in part.items():
                total[k] = total.get(k, 0.0) + v
        return problems.metric_means(total, count)

    # ------------------------------------------------------------------ files

    def _checkpoint(self) -> None:
        import torch.distributed as dist

        if self.rank == 0:
            super()._checkpoint()
        dist.barrier()  # the checkpoint is complete before any rank goes on (or stops)

    @staticmethod
    def _mirror_run(src: Path, dst: Path) -> None:
        """What a non-zero rank reads to resume: small files copied, the checkpoint linked (read only)."""
        for name in ("run.json", "config.json", "splits.json", "metrics.jsonl", "events.jsonl",
                     "architecture.jsonl"):
            if (src / name).is_file():
                shutil.copy2(src / name, dst / name)
        if (src / "checkpoint.pt").is_file():
            (dst / "checkpoint.pt").symlink_to((src / "checkpoint.pt").resolve())

    def _record_launch(self, resume: bool) -> None:
        path = self.real_run_dir / "distributed.json"
        history = json.loads(path.read_text())["launches"] if resume and path.is_file() else []
        history.append({"world_size": self.world, "backend": self.backend, "launcher": launch_info().launcher,
                        "start_epoch": self.state.epoch, "device": str(self.device),
                        "global_batch_size": self.cfg.optim.batch_size})
        write_json(path, {"launches": history})

    def cleanup(self) -> None:
        """Remove this rank's scratch directory (non-zero ranks)."""
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def run(self) -> dict[str, Any]:
        try:
            return super().run()
        finally:
            self.cleanup()


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def train_distributed(cfg: ExperimentConfig, data_path: str | Path, run_dir: str | Path, *,
                      resume: bool = False, overwrite: bool = False,
                      progress: bool | None = None) -> dict[str, Any] | None:
    """Train (or resume) one run over all the ranks of this job; the summary on rank 0, None elsewhere.

    Joins the default process group (:func:`init_distributed`) and leaves it at the end if it
    created it.
    """
    import torch.distributed as dist

    created = not dist.is_initialized()
    info, _, _ = init_distributed(cfg.run.device)
    try:
        trainer = DistributedTrainer(cfg, data_path, run_dir, resume=resume, overwrite=overwrite,
                                     progress=progress, local_rank=info.local_rank)
        summary = trainer.run()
        dist.barrier()
        return summary if info.rank == 0 else None
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["DistributedTrainer", "LaunchInfo", "init_distributed", "launch_info", "launched_by_torchrun",
           "shard", "train_distributed"]
