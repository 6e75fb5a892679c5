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

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from pdegrow.errors import PdegrowError
from pdegrow.training.collective import TorchCollective, shard  # noqa: F401  (shard re-exported)
from pdegrow.training.config import ExperimentConfig
from pdegrow.training.launch import (  # noqa: F401  (re-exported: the launcher detection lives there)
    DEFAULT_PORT,
    TIMEOUT_ENV,
    LaunchInfo,
    _rendezvous,
    init_distributed,
    launch_info,
    launched_by_torchrun,
)
from pdegrow.training.runlog import write_json
from pdegrow.training.trainer import Trainer


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
        collective = TorchCollective()
        self.collective = collective  # before the trainer's setup, which may fail (errors are gathered)
        self.rank, self.world = collective.rank, collective.world
        self.backend = collective.backend
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
            super().__init__(cfg, data_path, run_dir, resume=resume, overwrite=overwrite, progress=progress,
                             collective=collective)
        except PdegrowError as exc:
            error = str(exc)
        self._raise_if_any(error)
        self._check_consistent("start")
        self._wrap()
        if self.rank == 0:
            self._record_launch(resume)

    # ------------------------------------------------------------------ collectives

    def _raise_if_any(self, error: str | None) -> None:
        """Every rank raises the first rank's error (no rank is left waiting in a collective)."""
        errors = self.collective.gather(error)
        first = next((e for e in errors if e), None)
        if first is not None:
            self.cleanup()
            raise PdegrowError(first)

    def _fingerprint(self) -> str:
        spec = json.dumps(self.model.spec(), sort_keys=True, default=str)
        shapes = [(n, tuple(p.shape), p.requires_grad) for n, p in self.model.named_parameters()]
        return hashlib.sha1((spec + repr(shapes) + str(self.state.epoch)).encode()).hexdigest()

    def _check_consistent(self, when: str) -> None:
        prints = self.collective.gather(self._fingerprint())
        if len(set(prints)) != 1:
            raise PdegrowError(f"ranks hold different architectures or epochs {when} (a growth strategy "
                               f"that is not deterministic across ranks, or checkpoints that differ?)")

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

    def _net(self) -> torch.nn.Module:
        assert self.ddp is not None
        return self.ddp

    # ------------------------------------------------------------------ files

    def _checkpoint(self) -> None:
        if self.rank == 0:
            super()._checkpoint()
        self.collective.barrier()  # the checkpoint is complete before any rank goes on (or stops)

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
