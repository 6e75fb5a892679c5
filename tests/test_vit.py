"""The growable vision transformer: exact preservation at insertion, the topological derivative over
samples and tokens against finite differences (token-wise and attention sub-layers), matrix-free vs
dense eigen-solves, the strategies on a tiny ViT, refusals, and a trainer run on the digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_growth_ctx as make_ctx

from pdegrow.errors import PdegrowError
from pdegrow.growth.base import build_strategy
from pdegrow.growth.topological import BlockOperator, rows_from_eigenpairs, top_eigenpairs
from pdegrow.growth.topological_insertion import admissible_block, model_depth_operators
from pdegrow.growth.topological_vit import (
    InsertedAttentionBlock,
    TokenFeatureOperator,
    accumulate_token_operators,
    attention_mixed_tokens,
)
from pdegrow.models import GrowableResNet
from pdegrow.models.blocks import PerceptronBlock
from pdegrow.models.vit import build_vit, sinusoidal_positions
from pdegrow.training.config import build_config

DT = torch.float64


def vit_case(position: str = "learned", vector: bool = False):
    """A tiny ViT (8×8 fields, patch 2 → 16 tokens of width 8, one transformer block) and data."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    y = torch.randn(24, 1, 8, 8, generator=g, dtype=DT)
    if vector:
        model = build_vit([64], [3], 8, 1, heads=2, patch_size=2, hidden=[12], position=position,
                          image_size=[8, 8]).to(DT)
        t = torch.stack([y.mean((1, 2, 3)), y[:, 0, :4].std((1, 2)), y[:, 0, 4:, 4:].amax((1, 2))], 1)
        return model, y.reshape(24, 64), t
    model = build_vit([1, 8, 8], [1, 8, 8], 8, 1, heads=2, patch_size=2, hidden=[12], position=position)
    model = model.to(DT)
    t = torch.tanh(torch.roll(y, 1, dims=2) + 0.5 * y**2)
    return model, y, t


def test_shapes_positions_and_spec_roundtrip():
    model, y, _ = vit_case("sinusoidal")
    out, states = model(y, return_states=True)
    assert out.shape == y.shape and model.depth == 2
    assert all(s.shape == (24, 16, 8) for s in states)
    pos = sinusoidal_positions((4, 4), 8)
    assert pos.shape == (16, 8) and torch.equal(pos[0], torch.tensor([0, 0, 1, 1, 0, 0, 1, 1.0]))
    assert torch.equal(model.lift.pos, pos.to(DT))  # fixed table, not trained
    assert not any(p is model.lift.pos for p in model.parameters())
    copy = GrowableResNet.from_spec(json.loads(json.dumps(model.spec()))).to(DT)
    copy.load_state_dict(model.state_dict())
    assert torch.equal(copy(y), out)
    vec, yv, tv = vit_case(vector=True)
    assert vec(yv).shape == tv.shape


def test_every_insertion_keeps_the_function_exactly():
    """ε = 0 admissible blocks with non-zero rows; zero-initialised attention, MLP, perceptron blocks."""
    model, y, _ = vit_case()
    with torch.no_grad():
        before = model(y)
    g = torch.Generator().manual_seed(5)
    for t in range(model.depth + 1):
        blk = PerceptronBlock(8, activation="silu_tanh", scale=0.0).to(DT)
        with torch.no_grad():
            blk.linear.weight.copy_(torch.randn(8, 8, generator=g, dtype=DT))
            blk.linear.bias.copy_(torch.randn(8, generator=g, dtype=DT))
        model.insert_block(t, blk)
        model.insert_block(t, model.new_block("vit_attention", zero_init=True))  # takes no activation
        for kind in ("vit_mlp", "perceptron"):
            model.insert_block(t, model.new_block(kind, zero_init=True, activation="gelu"))
    with torch.no_grad():
        assert torch.equal(model(y), before)
    wq, wk = torch.randn(2, 4, 8, generator=g, dtype=DT)
    att = InsertedAttentionBlock(torch.randn(8, 8, generator=g, dtype=DT), torch.ones(8, dtype=DT), wq, wk)
    model.insert_block(1, att)
    with torch.no_grad():
        assert torch.equal(model(y), before)


def _token_ops(model, y, t, mode="features"):
    ctx = make_ctx(model, y, t, batch=10)
    return model_depth_operators(ctx, mode=mode, keep_features=True), ctx


def test_token_operator_is_the_sum_over_samples_and_tokens():
    model, y, t = vit_case()
    (ops, _), _ = _token_ops(model, y, t)
    op = ops[1]
    assert isinstance(op, TokenFeatureOperator)
    x, lam = op.features
    xt = torch.cat([x, torch.ones_like(x[..., :1])], -1)
    brute = torch.einsum("sir,sia,sib->rab", lam, xt, xt)   # Σ_s Σ_i λ_{s,i,r} x̃ x̃ᵀ
    torch.testing.assert_close(op.blocks(), brute)
    (blk_ops, _), _ = _token_ops(model, y, t, mode="blocks")
    assert isinstance(blk_ops[1], BlockOperator)
    torch.testing.assert_close(blk_ops[1].blocks(), brute)


def test_matrix_free_lanczos_agrees_with_dense():
    torch.manual_seed(3)
    s, n, w = 40, 25, 12
    x = torch.randn(s, n, w, dtype=DT)
    lam = torch.randn(s, n, w, dtype=DT) / (s * n) + 0.3 / (s * n) * x
    op = TokenFeatureOperator(x, lam, chunk_elements=97)   # many row chunks
    v = torch.randn(w, w + 1, dtype=DT)
    idx = torch.arange(w)
    torch.testing.assert_close(op.matvec(v, idx), torch.bmm(op.blocks(), v[:, :, None])[:, :, 0])
    sub = torch.tensor([2, 7])
    torch.testing.assert_close(op.matvec(v[sub], sub), op.matvec(v, idx)[sub])
    dense = top_eigenpairs(op, method="dense")
    lanczos = top_eigenpairs(op, method="lanczos", tol=1e-10, max_basis=w + 1)
    torch.testing.assert_close(lanczos.values, dense.values, rtol=1e-8, atol=1e-12)
    overlap = (lanczos.vectors * dense.vectors).sum(1).abs()
    torch.testing.assert_close(overlap, torch.ones(w, dtype=DT), rtol=1e-6, atol=1e-6)


def _fd_ratios(model, y, t, depth, block, coefficient, epsilons):
    ctx = make_ctx(model, y, t, batch=10)
    j0 = ctx.train_loss()
    model.insert_block(depth, block)
    out = []
    for eps in epsilons:
        with torch.no_grad():
            block.eps.fill_(eps) if hasattr(block, "eps") else block.scale.fill_(eps)
        out.append((ctx.train_loss() - j0) / (-0.5 * eps * eps * coefficient))
    del model.blocks[depth]
    return out


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_token_sublayer_second_order_term_matches_finite_differences(depth):
    """J(ε) − J(0) = −(ε²/2) Σ_r λ_r through the whole ViT (tokens, attention, un-patchify head)."""
    model, y, t = vit_case()
    (ops, _), _ = _token_ops(model, y, t)
    rows = rows_from_eigenpairs(top_eigenpairs(ops[depth], method="dense"), fraction=0.0)
    assert rows.coefficient > 0
    block = admissible_block(model, rows, 0.0)
    assert isinstance(block, PerceptronBlock)
    r1, r2, r3 = _fd_ratios(model, y, t, depth, block, rows.coefficient, [1e-2, 1e-3, 1e-4])
    assert abs(r3 - 1) < 2e-3 and abs(r3 - 1) < abs(r1 - 1)
    assert abs(r2 - 1) < 2e-2


def test_attention_sublayer_second_order_term_matches_finite_differences():
    """σ(ε(A(x) x̃) W̃ᵀ) with a fixed pattern A: the operator of the attention-averaged tokens."""
    model, y, t = vit_case()
    depth = 1
    (ops, _), _ = _token_ops(model, y, t)
    x, lam = ops[depth].features
    g = torch.Generator().manual_seed(7)
    wq, wk = 0.5 * torch.randn(2, 4, 8, generator=g, dtype=DT)
    op = TokenFeatureOperator(attention_mixed_tokens(x, wq, wk), lam)
    rows = rows_from_eigenpairs(top_eigenpairs(op, method="dense"), fraction=0.0)
    block = InsertedAttentionBlock(rows.weight, rows.bias, wq, wk)
    ratios = _fd_ratios(model, y, t, depth, block, rows.coefficient, [1e-2, 1e-3, 1e-4])
    assert abs(ratios[-1] - 1) < 2e-3 and abs(ratios[-1] - 1) < abs(ratios[0] - 1)
    # the token-wise operator is not the attention one (the pattern mixes tokens)
    assert not torch.allclose(ops[depth].blocks(), op.blocks())


def test_accumulate_refuses_non_token_states():
    x = torch.randn(4, 3, requires_grad=True)
    with pytest.raises(ValueError, match=r"\(B, N, n\)"):
        accumulate_token_operators([([x], x.sum(), 4)])


@pytest.mark.parametrize("name,opts", [("topological_insertion", {"line_search_evals": 10}),
                                       ("random_insertion", {}), ("net2deeper", {}),
                                       ("net2deeper", {"block": "vit_mlp", "activation": "gelu"}),
                                       ("layerwise", {}), ("forward_thinking", {}), ("fixed", {})])
def test_strategies_on_a_tiny_vit(name, opts):
    model, y, t = vit_case()
    ctx = make_ctx(model, y, t, batch=10)
    j0 = ctx.train_loss()
    strat = build_strategy(name, dict(opts))
    prop = strat.propose(ctx)
    if name == "fixed":
        assert prop is None
        return
    assert prop is not None and prop.action == "insert" and 0 <= prop.depth <= model.depth
    strat.apply(ctx, prop)
    after = ctx.train_loss()
    assert model.depth == 3
    with torch.no_grad():
        assert model(y).shape == t.shape
    if name in ("net2deeper", "layerwise", "forward_thinking"):
        assert after == j0   # identity (zero-initialised) sub-layer
    else:
        assert after < j0 and prop.predicted_change < 0
        assert after - j0 == pytest.approx(prop.info["line_search_change"], rel=1e-9, abs=1e-12)
        assert type(model.blocks[prop.depth]).__name__ == "PerceptronBlock"   # token-wise
    if name == "topological_insertion":
        (ops, _), _ = _token_ops(*vit_case())
        assert prop.info["derivative"] == pytest.approx(
            [float(top_eigenpairs(op).values.max()) for op in ops], rel=1e-6)


def test_vit_config_refuses_unsupported_strategies_and_bad_sizes():
    base = {"data": {"problem": ""}, "model": {"kind": "vit", "width": 8}}
    for name in ("tiny", "gradmax", "folding", "net2wider", "random_neurons"):
        with pytest.raises(PdegrowError, match=rf"strategy '{name}' does not support model kind 'vit'"):
            build_config({**base, "growth": {"strategy": name}}, "cfg.toml")
    assert build_config({**base, "growth": {"strategy": "topological_insertion"}}, "c").model.kind == "vit"
    with pytest.raises(PdegrowError, match="heads = 3 must divide the width 8"):
        build_vit([1, 8, 8], [1, 8, 8], 8, 1, heads=3)
    with pytest.raises(PdegrowError, match="patch_size = 3 must divide the image size 8×8"):
        build_vit([1, 8, 8], [1, 8, 8], 8, 1, patch_size=3)
    with pytest.raises(PdegrowError, match="position"):
        build_vit([1, 8, 8], [1, 8, 8], 8, 1, position="rotary")


def test_trainer_grows_a_vit_on_the_digits(tmp_path: Path):
    """`pdegrow train` with model.kind = "vit" on the 8×8 digits (vector inputs → images, pooled head)."""
    pytest.importorskip("sklearn")
    from pdegrow.cli import main
    from pdegrow.data.prototypes import load_table, write_table

    data = write_table(load_table("digits"), tmp_path / "digits.h5", seed=0)
    cfg = tmp_path / "vit.toml"
    cfg.write_text("""
[run]
progress = false
threads = 1
[data]
problem = "classification"
input = "inputs/features"
target = "targets/one_hot"
aux = []
n_train = 120
n_val = 40
n_test = 40
normalize_inputs = "scalar"
normalize_targets = "none"
[model]
kind = "vit"
width = 8
depth = 1
hidden = [8]
patch_size = 4
heads = 2
activation = "gelu"
[optim]
lr = 3e-3
batch_size = 60
[train]
max_epochs = 4
phase_epochs = 2
loss = "cross_entropy"
[growth]
strategy = "topological_insertion"
max_layers = 1
min_significance = 0.0
""")
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--data", str(data), "--out", str(run), "--no-progress"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert summary["epochs"] == 4 and 0.0 <= summary["test"]["error_rate"] <= 1.0
    assert len(events) == 1 and events[0]["where"]["block"]["kind"] == "perceptron"
    assert summary["architecture"]["depth"] == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_vit_on_cuda_with_bfloat16_autocast_and_topological_proposal():
    model, y, t = vit_case()
    model, y, t = model.float().cuda(), y.float().cuda(), t.float().cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert torch.isfinite(model(y)).all()
    ctx = make_ctx(model, y, t, batch=10)
    ctx.device = torch.device("cuda")
    strat = build_strategy("topological_insertion", {"line_search_evals": 10, "method": "lanczos"})
    prop = strat.propose(ctx)
    assert prop is not None and prop.predicted_change < 0
    x = torch.randn(30, 16, 24, device="cuda", dtype=DT)
    op = TokenFeatureOperator(x, torch.randn_like(x) / 480, chunk_elements=101)
    torch.testing.assert_close(top_eigenpairs(op, method="lanczos", tol=1e-10, max_basis=25).values,
                               top_eigenpairs(op, method="dense").values, rtol=1e-8, atol=1e-12)
