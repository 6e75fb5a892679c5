"""Where this process sits in a job, and joining the process group.

:func:`launch_info` reads rank, world size and local rank from the variables of the launcher
that started the process: torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, …), Open MPI
(``OMPI_COMM_WORLD_*``), MPICH/Intel MPI (``PMI_*``) or srun (``SLURM_*``); a process started by
none of them is rank 0 of 1. :func:`init_distributed` fills ``MASTER_ADDR``/``MASTER_PORT`` when
the launcher did not (from MPI, or localhost on one node) and joins torch.distributed's default
group: NCCL with one GPU a local rank, else gloo. torch.distributed and mpi4py are imported
inside functions only.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from pdegrow.errors import PdegrowError

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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it), for a local rendezvous (``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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
                free = free_port("")
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


__all__ = ["DEFAULT_PORT", "TIMEOUT_ENV", "LaunchInfo", "free_port", "init_distributed", "launch_info",
           "launched_by_torchrun"]
