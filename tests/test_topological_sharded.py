"""The topological-derivative pass sharded over 2 gloo processes against the 1-process pass.

A_r = σ″(0) Σ_s λ_{s,r} x̃_s x̃_sᵀ, J, the second-order coefficient C = Σ_s c_s and its standard
error are sums over samples: each rank sums its share and the sums are all-reduced (the dense
blocks too; the matrix-free Lanczos solve splits the units over the ranks instead), so both
ranks must propose the insertion of the 1-process trainer — the same depth, the same rows,
eigenvalues and ε to the solver's tolerance.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import write_synthetic_heat_file

from pdegrow.errors import PdegrowError
from pdegrow.growth.base import build_strategy
from pdegrow.growth.topological_operators import ShardedOperator
from pdegrow.training.config import build_config
from pdegrow.training.launch import free_port
from pdegrow.training.trainer import Trainer

torch.set_num_threads(1)

#: Strategy options of the two cases: matrix-free Lanczos on kept features, and stored dense blocks.
CASES = {
    "lanczos": {"method": "lanczos", "mode": "features", "tol": 1e-10},
    "dense": {"method": "dense", "mode": "blocks"},
    "pruned": {"method": "lanczos", "mode": "features", "tol": 1e-10, "prune_depths": True},
}


def _config() -> dict:
    return {
        "run": {"seed": 5, "progress": False, "threads": 1, "dtype": "float64", "device": "cpu"},
        "data": {"n_train": 40, "n_val": 8, "n_test": 8, "aux": [], "noisy_copies": 1},
        "model": {"kind": "mlp", "width": 12, "depth": 2, "block": "perceptron", "activation": "tanh"},
        # 80 rows in batches of 14: the last batch of 10 rows, shares of 7 + 7, …, 5 + 5
        "optim": {"lr": 1e-2, "batch_size": 14},
        "train": {"max_epochs": 3, "phase_epochs": 3, "patience": 100},
        "growth": {"strategy": "fixed"},
    }


def _strategy(case: str):  # noqa: ANN202
    return build_strategy("topological_insertion", {"min_significance": 0.0, **CASES[case]})


def _summary(prop, strategy) -> dict:  # noqa: ANN001
    cache = strategy._cache
    return {"depth": prop.depth, "info": dict(prop.info),
            "weight": prop.block.last_layer().weight.detach().clone(),
            "bias": prop.block.last_layer().bias.detach().clone(),
            "values": [None if p is None else p.values.clone() for p in cache.pairs],
            "sharded": [isinstance(op, ShardedOperator) for op in cache.ops],
            "rows": [int(op.features[0].shape[0]) for op in cache.ops]}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic 'heat' file: 12 targets, 10 noisy observations of a nonlinear map of them."""
    return write_synthetic_heat_file(tmp_path_factory.mktemp("sharded") / "synthetic.h5", n=56, seed=1)


def _train(trainer: Trainer) -> None:
    trainer.terms = trainer._active_terms()
    for _ in range(3):
        trainer._train_epoch()


def _worker(rank: int, world: int, port: int, data: str, root: str) -> None:
    import torch.distributed as dist

    from pdegrow.training.distributed import DistributedTrainer

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    tr = DistributedTrainer(build_config(_config(), "ddp"), data, Path(root) / "run")
    _train(tr)
    out = {}
    for case in CASES:
        strategy = _strategy(case)
        out[case] = _summary(strategy.propose(tr.ctx), strategy)
    torch.save(out, Path(root) / f"rank{rank}.pt")
    tr.cleanup()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory, data_file: Path) -> list[dict]:
    import torch.multiprocessing as mp

    root = tmp_path_factory.mktemp("sharded-runs")
    mp.spawn(_worker, args=(2, free_port(), str(data_file), str(root)), nprocs=2, join=True)
    return [torch.load(root / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("case", list(CASES))
def test_sharded_pass_proposes_the_serial_insertion(tmp_path, data_file, two_ranks, case):
    tr = Trainer(build_config(_config(), "serial"), data_file, tmp_path / "serial")
    _train(tr)
    strategy = _strategy(case)
    ref = _summary(strategy.propose(tr.ctx), strategy)
    r0, r1 = two_ranks[0][case], two_ranks[1][case]
    # each rank held its share only (of the 80 rows), the features local
    assert r0["rows"][0] + r1["rows"][0] == ref["rows"][0] == 80 and 0 < r0["rows"][0] < 80
    assert all(r0["sharded"]) == all(r1["sharded"]) == (case != "dense") and not any(ref["sharded"])
    # both ranks: bitwise the same proposal (they solved the same all-reduced operators)
    assert r0["depth"] == r1["depth"] and torch.equal(r0["weight"], r1["weight"])
    assert r0["info"]["eps"] == r1["info"]["eps"]
    # ... and that of the serial pass, to float tolerance
    assert r0["depth"] == ref["depth"]
    for a, b in zip(r0["values"], ref["values"], strict=True):
        if a is None or b is None:   # pruned depth (bounds: sharded trace vs serial min(trace, Frobenius))
            continue
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(r0["weight"], ref["weight"], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(r0["bias"], ref["bias"], rtol=1e-6, atol=1e-8)
    for key in ("eps", "lambda_max", "eigenvalue_sum", "coefficient", "coefficient_se", "significance",
                "predicted_change", "realised_change_at_eps", "eps_max"):
        assert r0["info"][key] == pytest.approx(ref["info"][key], rel=1e-8), key
    for a, b in zip(r0["info"]["derivative"], ref["info"]["derivative"], strict=True):
        assert a is None or b is None or a == pytest.approx(b, rel=1e-9)   # null: a depth skipped
    assert r0["info"]["n_rows"] == ref["info"]["n_rows"] > 0


def test_statistics_from_sums_equal_the_per_sample_statistics():
    from pdegrow.growth.topological import contribution_statistics, statistics_from_sums

    c = torch.randn(37, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.4
    halves = (c[:20], c[20:])   # two processes' shares
    sums = [sum(float(h.sum()) for h in halves), sum(float(h.pow(2).sum()) for h in halves), 37]
    got = statistics_from_sums(*sums)
    assert got == pytest.approx(contribution_statistics(c), rel=1e-12)
    assert statistics_from_sums(3.0, 3.0, 3) == (3.0, 0.0, float("inf"))   # every term the same


def test_early_stopped_lanczos_matches_eigh_in_float32():
    """Default tolerance in float32: blocks converge (and leave the compacted basis) at different
    steps; every top eigenpair still matches batched eigh of the float64 blocks."""
    from pdegrow.growth.topological_operators import DenseFeatureOperator, top_eigenpairs

    g = torch.Generator().manual_seed(4)
    x = torch.randn(400, 48, generator=g)
    lam = torch.randn(400, 48, generator=g) * torch.linspace(0.1, 2.0, 48) / 400
    op = DenseFeatureOperator(x, lam)
    dense = top_eigenpairs(DenseFeatureOperator(x.double(), lam.double()), method="dense")
    lan = top_eigenpairs(op, method="lanczos")
    assert lan.iterations < op.dim                      # stopped early, not a full Krylov space
    scale = float(dense.values.abs().max())
    assert torch.allclose(lan.values.double(), dense.values, atol=1e-5 * scale, rtol=0)
    cos = (lan.vectors.double() * dense.vectors).sum(1).abs()
    assert torch.all(cos > 1 - 1e-4)


def test_pruned_depth_search_proposes_the_same_insertion(tmp_path, data_file):
    """``prune_depths``: the eigen-solve only where the derivative's upper bound can win; the same
    depth, rows and ε as solving every depth, pruned depths logged as null beside their bounds."""
    tr = Trainer(build_config(_config(), "serial"), data_file, tmp_path / "serial")
    _train(tr)
    opts = {"min_significance": 0.0, **CASES["lanczos"]}
    full = build_strategy("topological_insertion", opts).propose(tr.ctx)
    pruned = build_strategy("topological_insertion", {**opts, "prune_depths": True}).propose(tr.ctx)
    assert pruned.depth == full.depth
    torch.testing.assert_close(pruned.block.last_layer().weight, full.block.last_layer().weight)
    assert pruned.info["eps"] == full.info["eps"]
    bounds, derivs = pruned.info["derivative_bound"], pruned.info["derivative"]
    for b, d, ref in zip(bounds, derivs, full.info["derivative"], strict=True):
        assert b >= ref and (d is None or d == pytest.approx(ref, rel=1e-9))   # null: skipped


def test_sample_every_estimates_from_every_kth_batch(tmp_path, data_file):
    """``sample_every = k``: the pass holds the rows of batches 0, k, 2k, … only, J is their mean loss,
    and k = 1 is the full pass."""
    tr = Trainer(build_config(_config(), "serial"), data_file, tmp_path / "serial")
    _train(tr)
    batches = list(tr.ctx.train_batches())          # 80 rows in batches of 14: 6 batches
    opts = {"min_significance": 0.0, **CASES["lanczos"]}
    full = build_strategy("topological_insertion", opts)
    one = build_strategy("topological_insertion", {**opts, "sample_every": 1})
    three = build_strategy("topological_insertion", {**opts, "sample_every": 3})
    d_full, d_one, d_three = full._pass(tr.ctx), one._pass(tr.ctx), three._pass(tr.ctx)
    kept = batches[::3]
    assert d_three.ops[0].features[0].shape[0] == sum(len(b) for b in kept) == 28
    with torch.no_grad():
        j = sum(float(tr.ctx.batch_loss(b)) * len(b) for b in kept) / 28
    assert d_three.loss == pytest.approx(j, rel=1e-12)
    assert d_one.loss == d_full.loss and torch.equal(d_one.derivatives, d_full.derivatives)
    assert d_three.ops[0].features[0].shape[0] < d_full.ops[0].features[0].shape[0] == 80
    prop = three.propose(tr.ctx)
    assert prop is not None and prop.info["eps"] != 0.0
    with pytest.raises(PdegrowError, match="sample_every must be ≥ 1"):
        build_strategy("topological_insertion", {"sample_every": 0})
