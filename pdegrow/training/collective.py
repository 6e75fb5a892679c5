"""What the trainer needs from a group of processes, and nothing more.

The one :class:`~pdegrow.training.trainer.Trainer` is written against :class:`Collective`:

* ``shard(idx, groups)`` — this process's part of a global batch (strided like
  ``DistributedSampler``; whole noisy-copy groups stay together);
* ``all_reduce(values)`` — element-wise sums of floats, the same on every process;
* ``gather(obj)`` — every process's ``obj``, in rank order;
* ``broadcast_(tensors)`` — rank 0's values, in place, everywhere;
* ``decide(flag)`` — rank 0's decision, everywhere; ``all_true(flag)`` — whether it holds
  on every process.

:class:`Collective` itself is the serial case (one process: every operation returns its
argument, so a serial run computes exactly what it did before there were collectives);
:class:`TorchCollective` runs over torch.distributed's default process group (gloo on CPU,
NCCL on GPUs), imported only when one is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch


class Collective:
    """One process: rank 0 of 1 (see the module docstring)."""

    rank = 0
    world = 1

    def shard(self, idx: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        return shard(idx, self.rank, self.world, groups)

    def all_reduce(self, values: Sequence[float]) -> list[float]:
        return [float(v) for v in values]

    def all_reduce_tensors(self, tensors: Sequence[torch.Tensor]) -> None:
        """Σ over processes of each tensor, in place (float64 on the wire)."""

    def gather(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast_(self, tensors: Iterable[torch.Tensor]) -> None:
        """Rank 0's values of ``tensors``, in place, on every process."""

    def decide(self, flag: bool) -> bool:
        return bool(flag)

    def all_true(self, flag: bool) -> bool:
        return bool(flag)

    def barrier(self) -> None:
        pass


class TorchCollective(Collective):
    """The default torch.distributed process group (it must be initialised)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.backend = dist.get_backend()
        self.device = (torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl"
                       else torch.device("cpu"))

    def all_reduce(self, values: Sequence[float]) -> list[float]:
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t)
        return t.tolist()

    def all_reduce_tensors(self, tensors: Sequence[torch.Tensor]) -> None:
        if not tensors:
            return
        flat = torch.cat([t.detach().reshape(-1).to(self.device, torch.float64) for t in tensors])
        self.dist.all_reduce(flat)
        k = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[k:k + n].reshape(t.shape).to(t))
            k += n

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world
        self.dist.all_gather_object(out, obj)
        return out

    def broadcast_(self, tensors: Iterable[torch.Tensor]) -> None:
        with torch.no_grad():
            for t in tensors:
                self.dist.broadcast(t.data, 0)

    def decide(self, flag: bool) -> bool:
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        self.dist.broadcast(t, 0)
        return bool(t.item())

    def all_true(self, flag: bool) -> bool:
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MIN)
        return bool(t.item())

    def barrier(self) -> None:
        self.dist.barrier()


def shard(idx: torch.Tensor, rank: int, world: int, groups: torch.Tensor | None = None) -> torch.Tensor:
    """This rank's part of a global batch ``idx``: every ``world``-th item from ``rank`` on, or with
    ``groups`` (the group id of each item) every ``world``-th group in order of appearance."""
    if world == 1:
        return idx
    if groups is None:
        return idx[rank::world]
    g = groups[idx.to(groups.device)].cpu()
    _, first = torch.unique_consecutive(g, return_inverse=True)  # groups are contiguous in a batch
    return idx[(first % world) == rank]


__all__ = ["Collective", "TorchCollective", "shard"]
