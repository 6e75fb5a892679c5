"""Throughput of the distributed trainer at 1 and 2 gloo processes (CPU), and the cost of a growth event.

    .venv/bin/python benchmarks/bench_distributed.py [--samples 8192] [--width 128] [--epochs 4]
        [--batch-size 512] [--ranks 1 2]

A synthetic vector data set (64 observations → 32 targets) is trained with the layerwise strategy
by :class:`pdegrow.training.distributed.DistributedTrainer`, one thread a process (torch and
OpenMP), W = 1, 2 processes on the gloo backend; the global batch is the same for every W, so
every W does the same optimisation. Printed for each W:

  epoch      mean wall time of a training epoch (after one warm-up epoch)
  samples/s  training samples a second over all ranks; speed-up and efficiency T₁ / (W·T_W)
  rewrap     broadcast of rank 0's weights + architecture check + DDP re-wrap (the distributed
             part of a growth event)
  grow       a whole growth event as the trainer runs it (propose, apply, broadcast, optimizer
             sync, loss before/after on the training set, validation, re-wrap)
  stats      the growth-statistics pass of the neuron-growth strategies (one forward + backward
             over the training set, second moments of every hidden layer): each rank passes over
             its share and the moments are all-reduced; ``ratio`` is its wall time over the
             1-process time, ``cpu ratio`` the CPU time of rank 0's process over the 1-process one
             (what a rank costs; on a machine with fewer free cores than ranks only this halves)

and the 1-process plain Trainer (no process group, no DDP) for reference. The machine's load
average is printed with the table: on a shared machine the numbers move with it.
This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pdegrow.contract import create_dataset_file, mark_complete  # noqa: E402
from pdegrow.training.config import build_config  # noqa: E402
from pdegrow.training.launch import free_port


def make_data(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    y = rng.standard_normal((n, 32)).astype(np.float32)
    x = np.tanh(y @ rng.standard_normal((32, 64)).astype(np.float32) / 4)
    f = create_dataset_file(path, problem="heat", config={}, n_samples=n, base_seed=0,
                            static={"geometry/sensors": np.zeros((64, 2))},
                            sample_specs={"inputs/observations": ((64,), np.float32),
                                          "targets/kl_coefficients": ((32,), np.float32)})
    f["inputs/observations"][:] = x
    f["targets/kl_coefficients"][:] = y
    mark_complete(f)
    f.close()


def config(args: argparse.Namespace) -> dict:
    n_val = max(args.samples // 16, 16)
    return {
        "run": {"seed": 0, "progress": False, "threads": 1, "device": "cpu", "checkpoint_every": 1000},
        "data": {"n_train": args.samples - n_val, "n_val": n_val, "n_test": 0, "aux": []},
        "model": {"width": args.width, "depth": 2, "block": "mlp", "hidden": [args.width]},
        "optim": {"lr": 1e-3, "batch_size": args.batch_size},
        "train": {"max_epochs": 1000, "phase_epochs": 1000, "patience": 1000},
        "growth": {"strategy": "layerwise", "max_layers": 50, "saturation_tol": -1.0, "block": "mlp",
                   "hidden": [args.width]},
    }


def measure(trainer, epochs: int, barrier=lambda: None) -> dict[str, float]:
    """Epoch and growth timings of a constructed trainer (1-process or distributed)."""
    trainer._train_epoch()  # warm-up
    times = []
    for _ in range(epochs):
        barrier()
        t = time.perf_counter()
        trainer._train_epoch()
        barrier()
        times.append(time.perf_counter() - t)
    out = {"epoch": statistics.median(times), "n_train": len(trainer.data.train),
           **dict(zip(("stats", "stats_cpu"), stats_pass(trainer, barrier), strict=True))}
    rewrap = []
    if hasattr(trainer, "_wrap"):
        for _ in range(5):
            barrier()
            t = time.perf_counter()
            trainer.collective.broadcast_([*trainer.model.parameters(), *trainer.model.buffers()])
            trainer._check_consistent("bench")
            trainer._wrap()
            rewrap.append(time.perf_counter() - t)
        out["rewrap"] = statistics.median(rewrap)
    grows = []
    for _ in range(3):
        trainer._end_phase()
        barrier()
        t = time.perf_counter()
        trainer._grow()
        barrier()
        grows.append(time.perf_counter() - t)
    out["grow"] = statistics.median(grows)
    return out


def stats_pass(trainer, barrier=lambda: None, repeats: int = 3) -> tuple[float, float]:
    """Median wall time and CPU time (this process) of one sharded, all-reduced growth-statistics pass."""
    from pdegrow.growth.statistics import gather_statistics

    times, cpu = [], []
    for _ in range(repeats):
        barrier()
        t, c = time.perf_counter(), time.process_time()
        batches, reduce = trainer.ctx.share()
        gather_statistics(trainer.model, batches, trainer.ctx.batch_loss, reduce=reduce)
        barrier()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(times), statistics.median(cpu)


def worker(rank: int, world: int, port: int, data: str, root: str, args: argparse.Namespace) -> None:
    import torch.distributed as dist

    from pdegrow.training.distributed import DistributedTrainer

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    tr = DistributedTrainer(build_config(config(args), "bench"), data, Path(root) / f"w{world}")
    res = measure(tr, args.epochs, dist.barrier)
    tr.cleanup()
    if rank == 0:
        torch.save(res, Path(root) / f"w{world}.pt")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=512, help="global batch")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    import torch.multiprocessing as mp

    from pdegrow.training.trainer import Trainer

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.h5"
        make_data(data, args.samples)
        rows = {}
        load_before = os.getloadavg()
        ref = measure(Trainer(build_config(config(args), "bench"), data, Path(tmp) / "plain"), args.epochs)
        rows["plain (no DDP)"] = (1, ref)
        for w in args.ranks:
            mp.spawn(worker, args=(w, free_port(), str(data), tmp, args), nprocs=w, join=True)
            rows[f"DDP gloo W={w}"] = (w, torch.load(Path(tmp) / f"w{w}.pt"))
        load_after = os.getloadavg()
    base = rows.get("DDP gloo W=1", (1, ref))[1]["epoch"]
    plain = rows["plain (no DDP)"][1]
    n_train = rows["plain (no DDP)"][1]["n_train"]
    print(f"{args.samples} samples ({n_train} training), MLP width {args.width}, "
          f"global batch {args.batch_size}, 1 thread a process, {os.cpu_count()} CPUs")
    print(f"{'':16} {'epoch':>9} {'samples/s':>10} {'speed-up':>9} {'eff.':>6} {'rewrap':>9} "
          f"{'grow':>9} {'rewrap/ep':>10} {'grow/ep':>8} {'stats':>9} {'ratio':>6} {'cpu ratio':>9}")
    for name, (w, r) in rows.items():
        rw = r.get("rewrap")
        print(f"{name:16} {r['epoch'] * 1e3:7.1f}ms {r['n_train'] / r['epoch']:10.0f} "
              f"{base / r['epoch']:9.2f} {base / (w * r['epoch']):6.0%} "
              f"{(f'{rw * 1e3:7.2f}ms') if rw is not None else '-':>9} {r['grow'] * 1e3:7.1f}ms "
              f"{(f'{rw / r["epoch"]:10.2%}') if rw is not None else '-':>10} {r['grow'] / r['epoch']:8.2f} "
              f"{r['stats'] * 1e3:7.1f}ms {r['stats'] / plain['stats']:6.2f} "
              f"{r['stats_cpu'] / plain['stats_cpu']:9.2f}")
    fmt = lambda load: " ".join(f"{x:.2f}" for x in load)  # noqa: E731
    print(f"load average (1, 5, 15 min): before {fmt(load_before)}, after {fmt(load_after)}")


if __name__ == "__main__":
    main()
