"""Topological derivative (Approach II): closed form against finite differences, solvers, insertion."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pdegrow.growth.eigensolvers import canonical_sign, dense_top_eigenpairs, lanczos_top_eigenpairs
from pdegrow.growth.topological import (
    BlockOperator,
    ConvFeatureOperator,
    DenseFeatureOperator,
    admissible_activation,
    augment,
    collect_depth_operators,
    conv_patches,
    form_blocks,
    line_search_epsilon,
    predicted_change,
    rows_from_eigenpairs,
    states_and_costates,
    top_eigenpairs,
    topological_derivatives,
)
from pdegrow.growth.topological_insertion import fold_scale
from pdegrow.models.blocks import ConvPerceptronBlock, PerceptronBlock

DT = torch.float64


class Res(nn.Module):
    """Minimal residual network x_{t+1} = x_t + g(x_t) with an optional inserted block at depth t."""

    def __init__(self, lift: nn.Module, blocks: list[nn.Module], head: nn.Module):
        super().__init__()
        self.lift, self.blocks, self.head = lift, nn.ModuleList(blocks), head

    def forward(self, y, insert=None):
        x = self.lift(y)
        states = [x]
        for i, blk in enumerate(self.blocks):
            if insert is not None and insert[0] == i:
                x = x + insert[1](x)
            x = x + blk(x)
            states.append(x)
        if insert is not None and insert[0] == len(self.blocks):
            x = x + insert[1](x)
        return states, self.head(x)


class Branch(nn.Module):
    def __init__(self, layer: nn.Module, scale: float = 0.5):
        super().__init__()
        self.layer, self.scale = layer, scale

    def forward(self, x):
        return self.scale * torch.tanh(self.layer(x))


class PoolHead(nn.Module):
    def __init__(self, c: int, k: int):
        super().__init__()
        self.conv = nn.Conv2d(c, k, 1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def mlp_model(n_in=3, width=6, depth=3, n_out=2):
    torch.manual_seed(0)
    lift = nn.Sequential(nn.Linear(n_in, width), nn.Tanh())
    blocks = [Branch(nn.Linear(width, width)) for _ in range(depth)]
    return Res(lift, blocks, nn.Linear(width, n_out)).to(DT)


def conv_model(c=3, depth=2, head="field"):
    torch.manual_seed(1)
    lift = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.Tanh())
    blocks = [Branch(nn.Conv2d(c, c, 3, padding=1)) for _ in range(depth)]
    h = nn.Conv2d(c, 1, 1) if head == "field" else PoolHead(c, 4)
    return Res(lift, blocks, h).to(DT)


def batches(y, target, size):
    return [(y[i : i + size], target[i : i + size]) for i in range(0, y.shape[0], size)]


def full_loss(model, loss_fn, y, target, insert=None) -> float:
    with torch.no_grad():
        return float(loss_fn(model(y, insert)[1], target))


CASES = {
    "mlp-mse": (
        lambda: mlp_model(),
        lambda g: torch.randn(40, 3, generator=g, dtype=DT),
        lambda g: torch.randn(40, 2, generator=g, dtype=DT),
        F.mse_loss,
    ),
    "mlp-ce": (
        lambda: mlp_model(n_out=4),
        lambda g: torch.randn(40, 3, generator=g, dtype=DT),
        lambda g: torch.randint(0, 4, (40,), generator=g),
        F.cross_entropy,
    ),
    "conv-mse": (
        lambda: conv_model(),
        lambda g: torch.randn(6, 1, 5, 5, generator=g, dtype=DT),
        lambda g: torch.randn(6, 1, 5, 5, generator=g, dtype=DT),
        F.mse_loss,
    ),
    "conv-ce": (
        lambda: conv_model(head="pool"),
        lambda g: torch.randn(6, 1, 5, 5, generator=g, dtype=DT),
        lambda g: torch.randint(0, 4, (6,), generator=g),
        F.cross_entropy,
    ),
}


def admissible(n: int, weight: torch.Tensor, bias: torch.Tensor, eps: float, conv: bool = False) -> nn.Module:
    """The production block σ(ε(W x + b)), σ = silu_tanh, ε its fixed ``scale`` (what strategies insert)."""
    block = (ConvPerceptronBlock(n, 3, activation="silu_tanh", scale=eps) if conv
             else PerceptronBlock(n, activation="silu_tanh", scale=eps)).to(DT)
    layer = block.last_layer()
    with torch.no_grad():
        layer.weight.copy_(weight.reshape(layer.weight.shape))
        layer.bias.copy_(bias)
    return block


def make_block(model, x_state, rows, eps):
    return admissible(x_state.shape[1], rows.weight, rows.bias, eps, conv=x_state.ndim == 4)


def test_admissible_activation_derivatives_at_zero():
    z = torch.zeros((), dtype=DT, requires_grad=True)
    s = admissible_activation(z)
    (d1,) = torch.autograd.grad(s, z, create_graph=True)
    (d2,) = torch.autograd.grad(d1, z)
    assert float(s.detach()) == 0.0 and abs(float(d1.detach())) < 1e-15 and abs(float(d2) - 1.0) < 1e-12


@pytest.mark.parametrize("case", sorted(CASES))
def test_finite_differences_match_closed_form_at_every_depth(case):
    make_model, make_y, make_t, loss_fn = CASES[case]
    g = torch.Generator().manual_seed(3)
    model, y, target = make_model(), make_y(g), make_t(g)
    ops, j0 = collect_depth_operators(lambda u: model(u), loss_fn, batches(y, target, 16), mode="auto")
    assert j0 == pytest.approx(full_loss(model, loss_fn, y, target), rel=1e-12)
    states, _ = model(y)
    eps = 1e-3
    for t, op in enumerate(ops):
        pairs = top_eigenpairs(op, method="dense")
        for top_only in (True, False):
            rows = rows_from_eigenpairs(pairs, fraction=0.3, top_only=top_only)
            assert rows.coefficient > 0
            if top_only:
                assert rows.coefficient == pytest.approx(float(pairs.values.max()))
            block = make_block(model, states[t], rows, eps)
            fd = (full_loss(model, loss_fn, y, target, (t, block)) - j0) / (eps**2 / 2)
            assert fd == pytest.approx(-rows.coefficient, rel=1e-2), (case, t, top_only)
            pred = predicted_change(eps, rows.coefficient)
            assert pred == pytest.approx(-(eps**2) / 2 * rows.coefficient)


def test_finite_difference_error_shrinks_like_epsilon():
    make_model, make_y, make_t, loss_fn = CASES["mlp-mse"]
    g = torch.Generator().manual_seed(4)
    model, y, target = make_model(), make_y(g), make_t(g)
    ops, j0 = collect_depth_operators(lambda u: model(u), loss_fn, [(y, target)])
    states, _ = model(y)
    rows = rows_from_eigenpairs(top_eigenpairs(ops[1]), top_only=True)
    errs = []
    for eps in (1e-1, 1e-2):
        block = make_block(model, states[1], rows, eps)
        fd = (full_loss(model, loss_fn, y, target, (1, block)) - j0) / (eps**2 / 2)
        errs.append(abs(fd + rows.coefficient))
    assert errs[1] < 0.2 * errs[0]


def test_costates_are_minus_gradient_of_mean_loss_over_batches():
    model = mlp_model()
    g = torch.Generator().manual_seed(5)
    y, target = torch.randn(30, 3, generator=g, dtype=DT), torch.randn(30, 2, generator=g, dtype=DT)
    xs, lams, j = states_and_costates(lambda u: model(u), F.mse_loss, batches(y, target, 7))
    states, out = model(y)
    ref = torch.autograd.grad(F.mse_loss(out, target), states)
    for lam, r, x, s in zip(lams, ref, xs, states, strict=True):
        torch.testing.assert_close(lam, -r)
        torch.testing.assert_close(x, s.detach())
    assert j == pytest.approx(float(F.mse_loss(out, target).detach()))


def test_blocks_and_features_accumulation_agree():
    model = mlp_model()
    g = torch.Generator().manual_seed(6)
    y, target = torch.randn(50, 3, generator=g, dtype=DT), torch.randn(50, 2, generator=g, dtype=DT)
    data = batches(y, target, 12)  # uneven last batch
    ops_b, _ = collect_depth_operators(lambda u: model(u), F.mse_loss, data, mode="blocks")
    ops_f, _ = collect_depth_operators(lambda u: model(u), F.mse_loss, data, mode="features")
    for ob, of in zip(ops_b, ops_f, strict=True):
        assert isinstance(ob, BlockOperator) and isinstance(of, DenseFeatureOperator)
        torch.testing.assert_close(ob.blocks(), of.blocks())
        # the naive sum Σ_s λ_{s,r} x̃_s x̃_sᵀ
        naive = torch.einsum("sr,si,sj->rij", of.lam, of.x_aug, of.x_aug)
        torch.testing.assert_close(ob.blocks(), naive)


def test_conv_patches_reproduce_convolution():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 5, 4, generator=g, dtype=DT)
    w = torch.randn(3, 3, 3, 3, generator=g, dtype=DT)
    b = torch.randn(3, generator=g, dtype=DT)
    for mode in ("zeros", "circular"):
        conv = nn.Conv2d(3, 3, 3, padding=1, padding_mode=mode).to(DT)
        with torch.no_grad():
            conv.weight.copy_(w)
            conv.bias.copy_(b)
        ref = conv(x).permute(0, 2, 3, 1).reshape(-1, 3)
        rows = augment(conv_patches(x, 3, mode)) @ torch.cat([w.reshape(3, -1), b[:, None]], 1).T
        torch.testing.assert_close(rows, ref.detach())


def _random_dense_op(s=300, n=24, seed=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(s, n, generator=g, dtype=DT)
    lam = torch.randn(s, n, generator=g, dtype=DT) / s
    return DenseFeatureOperator(x, lam)


def _random_conv_op(seed=9, mode="zeros"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 6, 6, generator=g, dtype=DT)
    lam = torch.randn(4, 3, 6, 6, generator=g, dtype=DT) / 4
    return ConvFeatureOperator(x, lam, 3, padding_mode=mode)


def _circular_conv_op():
    return _random_conv_op(mode="circular")


@pytest.mark.parametrize("make_op", [_random_dense_op, _random_conv_op, _circular_conv_op])
def test_dense_and_lanczos_agree(make_op):
    op = make_op()
    dense = top_eigenpairs(op, method="dense")
    # a basis smaller than d forces restarts; the default basis covers d and is exact
    for max_basis in (None, op.dim // 2):
        lan = top_eigenpairs(op, method="lanczos", tol=1e-11, max_basis=max_basis, max_restarts=20)
        scale = float(dense.values.abs().max())
        assert torch.allclose(lan.values, dense.values, atol=1e-9 * scale, rtol=0)
        # up to sign (both canonical), for simple eigenvalues
        cos = (lan.vectors * dense.vectors).sum(1).abs()
        assert torch.all(cos > 1 - 1e-6)
        torch.testing.assert_close(lan.vectors, dense.vectors, atol=1e-4, rtol=0)


def test_matrix_free_product_matches_dense_blocks():
    for op in (_random_dense_op(s=40, n=5), _random_conv_op()):
        a = op.blocks()
        v = torch.randn(op.n_blocks, op.dim, dtype=DT)
        idx = torch.arange(op.n_blocks)
        torch.testing.assert_close(op.matvec(v, idx), torch.einsum("rij,rj->ri", a, v))
        sub = torch.tensor([2, 0])
        torch.testing.assert_close(op.matvec(v[sub], sub), torch.einsum("rij,rj->ri", a[sub], v[sub]))
        # A_r is symmetric; the top eigenvalue is the largest algebraic one, not the largest |·|
        torch.testing.assert_close(a, a.transpose(1, 2))
        pairs = dense_top_eigenpairs(a)
        assert torch.allclose(pairs.values, torch.linalg.eigvalsh(a)[:, -1])


def test_largest_algebraic_not_largest_magnitude():
    a = torch.diag_embed(torch.tensor([[-10.0, 1.0, 0.5], [-3.0, -2.0, -1.0]], dtype=DT))
    q, _ = torch.linalg.qr(torch.randn(2, 3, 3, dtype=DT, generator=torch.Generator().manual_seed(1)))
    a = q @ a @ q.transpose(1, 2)
    for pairs in (
        dense_top_eigenpairs(a),
        lanczos_top_eigenpairs(lambda v, i: torch.einsum("rij,rj->ri", a[i], v), 2, 3, dtype=DT),
    ):
        torch.testing.assert_close(pairs.values, torch.tensor([1.0, -1.0], dtype=DT))
        torch.testing.assert_close(pairs.vectors, canonical_sign(q[:, :, [1, 2]][[0, 1], :, [0, 1]]))
    rows = rows_from_eigenpairs(dense_top_eigenpairs(-a.abs() - torch.eye(3, dtype=DT)))
    assert not rows.mask.any() and rows.coefficient == 0.0


def test_form_blocks_chunking_is_exact():
    op = _random_dense_op(s=97, n=7)
    full = form_blocks(op.x_aug, op.lam)
    torch.testing.assert_close(form_blocks(op.x_aug, op.lam, chunk_elems=50), full)


def test_epsilon_zero_insertion_preserves_outputs_exactly():
    model = mlp_model()
    y = torch.randn(9, 3, dtype=DT)
    w = torch.randn(6, 6, dtype=DT)
    ref = model(y)[1]
    for t in range(4):
        blk = admissible(6, w, torch.ones(6, dtype=DT), 0.0)
        out = model(y, (t, blk))[1]
        assert torch.equal(out, ref)
    cm = conv_model()
    u = torch.randn(2, 1, 5, 5, dtype=DT)
    ref = cm(u)[1]
    w4 = torch.randn(3, 3, 3, 3, dtype=DT)
    blk = admissible(3, w4, torch.ones(3, dtype=DT), 0.0, conv=True)
    for t in range(3):
        assert torch.equal(cm(u, (t, blk))[1], ref)
    # ε ≠ 0 then changes the output, and folding ε keeps the function
    blk.scale.fill_(0.3)
    out = cm(u, (1, blk))[1]
    assert not torch.equal(out, ref)
    fold_scale(blk)
    torch.testing.assert_close(cm(u, (1, blk))[1], out)


def test_deficiency_at_known_depth_is_chosen():
    """Coordinate 0 of the input is amplified ×10 by block 1 and damped ×0.01 by block 2.

    The target is u₀² read from output coordinate 1: a quadratic feature of coordinate 0
    is best computed where coordinate 0 is largest, at depth 1.
    """
    n = 4

    class Diag(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.register_buffer("d", torch.tensor(d, dtype=DT))

        def forward(self, x):
            return x * self.d

    blocks = [Diag([9.0, 0, 0, 0]), Diag([-0.99, 0, 0, 0]), Diag([0.0, 0, 0, 0])]
    head = nn.Linear(n, 2).to(DT)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2, n, dtype=DT))
        head.bias.zero_()
    model = Res(nn.Identity(), blocks, head)
    g = torch.Generator().manual_seed(11)
    y = torch.randn(200, n, generator=g, dtype=DT)
    target = torch.stack([y[:, 0], y[:, 0] ** 2], 1)
    ops, _ = collect_depth_operators(lambda u: model(u), F.mse_loss, batches(y, target, 64))
    derivs, pairs = topological_derivatives(ops)
    assert int(derivs.argmax()) == 1
    assert float(derivs[1]) > 10 * float(derivs[0])
    # the chosen row is output unit 1 and its eigenvector points along coordinate 0
    assert int(pairs[1].values.argmax()) == 1
    assert abs(float(pairs[1].vectors[1, 0])) > 0.99


def test_line_search_finds_minimum_and_refuses_increase():
    res = line_search_epsilon(lambda e: (e - 0.37) ** 2 - 0.1 * e**3, eps_init=0.01)
    assert res.eps == pytest.approx(0.37, abs=0.04) and res.loss < res.loss0
    res = line_search_epsilon(lambda e: 1.0 + e**2, eps_init=0.1)
    assert res.eps == 0.0 and res.loss == res.loss0
    res = line_search_epsilon(lambda e: (e + 0.5) ** 2, eps_init=0.1)  # best at negative ε
    assert res.eps < 0 and res.loss < res.loss0
    with pytest.raises(ValueError):
        line_search_epsilon(lambda e: e, eps_init=0.0)
    assert math.isfinite(res.loss)
