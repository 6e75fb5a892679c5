"""Distributed training of one growing model: 2 gloo processes against the 1-process trainer.

Why equality is expected: every rank draws the same shuffled epoch and takes its share of each
global batch; rank r's mean loss over n_r samples is scaled by n_r·W/B, so DDP's averaged gradient
is the gradient of the mean loss over the B samples — the 1-process trainer's gradient with the
same ``batch_size``, up to the rounding of one extra sum (float64 here). Growth decisions come from
rank 0 and are checked on every rank; after each growth the ranks hold bitwise the same weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import run_cli, write_synthetic_heat_file

from pdegrow.growth.base import GrowthContext, GrowthProposal, GrowthStrategy, register_strategy
from pdegrow.training.config import build_config
from pdegrow.training.distributed import DistributedTrainer, launch_info, shard
from pdegrow.training.launch import free_port
from pdegrow.training.runfiles import load_run_file
from pdegrow.training.trainer import Trainer

torch.set_num_threads(1)


@register_strategy
class WidenTwiceStrategy(GrowthStrategy):
    """Test strategy: widen block 0's hidden layer by 2 units (random fan-in, zero fan-out), twice."""

    name = "test_widen_twice"

    def __init__(self) -> None:
        self.done = 0

    def propose(self, ctx: GrowthContext) -> GrowthProposal | None:
        if self.done >= 2:
            return None
        width = ctx.model.stream_width
        fan_in = torch.rand(2, width, generator=ctx.generator, dtype=torch.float64) - 0.5
        self.done += 1
        return GrowthProposal("widen", depth=0, layer=0, k=2, fan_in=fan_in, predicted_change=0.0)

    def state_dict(self) -> dict:
        return {"done": self.done}

    def load_state_dict(self, state: dict) -> None:
        self.done = int(state["done"])


def _config(strategy: str) -> dict:
    growth = ({"strategy": "layerwise", "max_layers": 1, "saturation_tol": -1.0, "srl_steps": 1,
               "srl_hidden": [4]} if strategy == "layerwise" else {"strategy": strategy})
    return {
        "run": {"seed": 3, "progress": False, "threads": 1, "dtype": "float64", "device": "cpu",
                "checkpoint_every": 1},
        "data": {"n_train": 40, "n_val": 8, "n_test": 16, "aux": [],
                 "noisy_copies": 1 if strategy == "layerwise" else 0},
        "model": {"width": 6, "depth": 1, "block": "mlp" if strategy != "layerwise" else "perceptron",
                  "hidden": [5]},
        # uneven shards on purpose: 40 items in batches of 13 leave rank 1 an empty last shard;
        # 40 groups of 2 copies in batches of 7 groups split 4 + 3
        "optim": {"lr": 1e-2, "batch_size": 15 if strategy == "layerwise" else 13},
        "train": {"max_epochs": 12, "phase_epochs": 4, "patience": 100},
        "growth": growth,
    }


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic 'heat' file: 12 targets, 10 noisy observations of a nonlinear map of them."""
    return write_synthetic_heat_file(tmp_path_factory.mktemp("ddp") / "synthetic.h5", n=64, seed=0)


class _Preempted(Exception):
    pass


class _Recording(DistributedTrainer):
    """Records the weights after each growth event; 'pre-empted' right after the checkpoint of ``stop_at``."""

    stop_at: int | None = None

    def _grow(self) -> bool:
        grew = super()._grow()
        if grew:
            self.after_growth.append((self.state.epoch, {k: v.clone() for k, v in
                                                         self.model.state_dict().items()}))
        return grew

    def _checkpoint(self) -> None:
        super()._checkpoint()
        if self.stop_at is not None and self.state.epoch == self.stop_at:
            raise _Preempted


def _worker(rank: int, world: int, port: int, data: str, root: str) -> None:
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    out: dict = {"launch": launch_info().__dict__}
    root_p = Path(root)

    def run(name: str, strategy: str, resume: bool = False, stop_at: int | None = None) -> None:
        cfg = build_config(_config(strategy), name)
        tr = _Recording(cfg, data, root_p / name, resume=resume)
        tr.after_growth, tr.stop_at = [], stop_at
        scratch = tr.scratch
        assert (scratch is None) == (rank == 0) and (scratch is None or scratch.is_dir())
        try:
            tr.run()
        except _Preempted:
            tr.cleanup()
        out[name] = {"growth": tr.after_growth, "scratch": str(scratch) if scratch else None,
                     "scratch_gone": scratch is None or not scratch.exists(),
                     "final": {k: v.clone() for k, v in tr.model.state_dict().items()},
                     "epoch": tr.state.epoch}

    run("layerwise", "layerwise")
    run("widen", "test_widen_twice")
    run("tiny", "tiny")   # growth statistics: each rank sums its share, the moments are all-reduced
    run("killed", "layerwise", stop_at=6)
    out["killed_scratch_gone"] = out["killed"]["scratch_gone"]
    run("killed", "layerwise", resume=True)
    torch.save(out, root_p / f"rank{rank}.pt")
    dist.destroy_process_group()


def _model(run: Path) -> dict[str, torch.Tensor]:
    return load_run_file(run / "model.pt", "model")["state"]


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory, data_file: Path) -> tuple[Path, list[dict]]:
    import torch.multiprocessing as mp

    root = tmp_path_factory.mktemp("ddp-runs")
    mp.spawn(_worker, args=(2, free_port(), str(data_file), str(root)), nprocs=2, join=True)
    return root, [torch.load(root / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("strategy, name", [("layerwise", "layerwise"), ("test_widen_twice", "widen"),
                                            ("tiny", "tiny")])
def test_two_ranks_match_one_process(tmp_path, data_file, two_ranks, strategy, name):
    root, ranks = two_ranks
    ref_dir = tmp_path / "ref"
    Trainer(build_config(_config(strategy), "ref"), data_file, ref_dir).run()
    ddp_dir = root / name
    # growth events: the same epochs and locations as the 1-process run
    ev_ref, ev_ddp = _events(ref_dir), _events(ddp_dir)
    assert [(e["epoch"], e["where"]) for e in ev_ddp] == [(e["epoch"], e["where"]) for e in ev_ref]
    assert len(ev_ddp) == 2 or (name == "tiny" and len(ev_ddp) >= 1)
    # ... and on both ranks, with bitwise identical weights right after each growth
    g0, g1 = ranks[0][name]["growth"], ranks[1][name]["growth"]
    assert [e for e, _ in g0] == [e for e, _ in g1] == [e["epoch"] for e in ev_ref]
    for (_, s0), (_, s1) in zip(g0, g1, strict=True):
        assert s0.keys() == s1.keys()
        assert all(torch.equal(s0[k], s1[k]) for k in s0)
    # final weights: the same as the 1-process run with the same global batch
    a, b = _model(ref_dir), _model(ddp_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        torch.testing.assert_close(b[k], a[k], rtol=1e-9, atol=1e-11, msg=k)
    for k, v in ranks[1][name]["final"].items():
        assert torch.equal(v, ranks[0][name]["final"][k]), k
    # metrics: one row an epoch, the all-reduced training loss equal to the 1-process one
    rows_ref = [json.loads(x) for x in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    rows_ddp = [json.loads(x) for x in (ddp_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows_ddp) == len(rows_ref) == 12
    for r, d in zip(rows_ref, rows_ddp, strict=True):
        assert d["train_loss"] == pytest.approx(r["train_loss"], rel=1e-9)
        assert d["val_loss"] == pytest.approx(r["val_loss"], rel=1e-9)
        assert d["n_params"] == r["n_params"]


def test_preempted_two_rank_run_resumes_bitwise(two_ranks):
    root, ranks = two_ranks
    killed, full = root / "killed", root / "layerwise"
    assert ranks[0]["killed"]["epoch"] == 12 and ranks[1]["killed"]["epoch"] == 12
    a, b = _model(full), _model(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    launches = json.loads((killed / "distributed.json").read_text())["launches"]
    assert [(x["world_size"], x["start_epoch"]) for x in launches] == [(2, 0), (2, 6)]
    # only rank 0 wrote the run directory; rank 1's scratch directory is gone
    assert ranks[1]["layerwise"]["scratch"] is not None and ranks[0]["layerwise"]["scratch"] is None
    assert ranks[1]["killed_scratch_gone"] and ranks[1]["layerwise"]["scratch_gone"]
    assert not list(killed.glob("*.tmp")) and (killed / "checkpoint.pt").is_file()
    assert len(_events(killed)) == len(_events(full)) == 2


def test_shard_and_launch_info():
    idx = torch.tensor([7, 3, 5, 1, 0])
    assert shard(idx, 0, 2).tolist() == [7, 5, 0] and shard(idx, 1, 2).tolist() == [3, 1]
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])          # item → group (noisy copies)
    batch = torch.tensor([4, 5, 0, 1, 6, 7])                  # groups 2, 0, 3 in a batch
    assert shard(batch, 0, 2, groups).tolist() == [4, 5, 6, 7]
    assert shard(batch, 1, 2, groups).tolist() == [0, 1]
    assert shard(torch.tensor([3]), 1, 2).numel() == 0
    info = launch_info({"PMI_RANK": "3", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"})
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size, info.launcher) == (3, 4, 1, 2,
                                                                                                    "mpi")
    info = launch_info({"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1",
                        "SLURM_STEP_TASKS_PER_NODE": "4(x2)"})
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size) == (5, 8, 1, 4)
    # the batch script itself (SLURM_NTASKS but no step) is not a rank of a distributed job
    assert launch_info({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}).world_size == 1


def test_cli_under_mpiexec(tmp_path, data_file):
    """`mpiexec -n 2 pdegrow train --distributed`: ranks and rendezvous from MPI, one summary printed."""
    cfg = tmp_path / "c.json"
    values = _config("layerwise")
    values["train"]["max_epochs"] = 5
    cfg.write_text(json.dumps(values))
    out = tmp_path / "run"
    proc = run_cli("train", "--distributed", "--config", str(cfg), "--data", str(data_file),
                   "--out", str(out), "--no-progress", mpi_ranks=2, timeout=120)
    assert proc.stdout.count(str(out)) == 1, proc.stdout
    launch = json.loads((out / "distributed.json").read_text())["launches"]
    assert launch == [{"world_size": 2, "backend": "gloo", "launcher": "mpi", "start_epoch": 0,
                       "device": "cpu", "global_batch_size": 15}]
    assert json.loads((out / "summary.json").read_text())["growth_events"] == 1
