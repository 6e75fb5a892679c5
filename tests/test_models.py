"""Growable network: insertion/widening keep the function, freezing, optimizer state, specs."""

import copy

import pytest
import torch
from conftest import assert_same_function

from pdegrow.growth import GrowthProposal, apply_proposal
from pdegrow.models import (
    GrowableResNet,
    MLPCorrector,
    PerceptronBlock,
    make_optimizer,
    silu_tanh,
    sync_optimizer,
)

torch.set_num_threads(1)


def _mlp(depth=2, block="perceptron", **kw):
    torch.manual_seed(0)
    return GrowableResNet.mlp(5, [3], width=8, depth=depth, block=block, **kw).double()


def _train_steps(model, opt, y, n=3):
    for _ in range(n):
        opt.zero_grad()
        loss = model(y).pow(2).mean()
        loss.backward()
        opt.step()


def test_states_shapes_and_forward():
    model = _mlp(depth=3)
    y = torch.randn(4, 5, dtype=torch.float64)
    out, states = model(y, return_states=True)
    assert out.shape == (4, 3) and len(states) == 4
    assert torch.equal(model.run_blocks(states[1], 1), states[-1])


@pytest.mark.parametrize("t", [0, 1, 2])
def test_insert_identity_block_preserves_output_exactly(t):
    model = _mlp(depth=2)
    y = torch.randn(7, 5, dtype=torch.float64)
    before = model(y)
    model.insert_block(t, model.new_block("perceptron", activation="tanh"))
    assert model.depth == 3
    assert torch.equal(model(y), before)


def test_insert_eps_zero_silu_tanh_block_and_mlp_block():
    model = _mlp(depth=1)
    y = torch.randn(6, 5, dtype=torch.float64)
    before = model(y)
    blk = PerceptronBlock(8, activation="silu_tanh", scale=0.0).double()
    torch.nn.init.normal_(blk.linear.weight)
    model.insert_block(1, blk)  # eps = 0: sigma(0) = 0
    model.insert_block(0, model.new_block("mlp", hidden=[4]))
    assert torch.equal(model(y), before)
    z = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(silu_tanh(z), z, create_graph=True)
    (h,) = torch.autograd.grad(g, z)
    assert float(silu_tanh(z.detach())) == 0 and float(g.detach()) == 0 and abs(float(h) - 1) < 1e-12


def test_widen_preserves_output_and_pads_optimizer_state():
    model = _mlp(depth=2, block="mlp", hidden=[4])
    y = torch.randn(9, 5, dtype=torch.float64)
    opt = make_optimizer("adam", model, 1e-2)
    _train_steps(model, opt, y)
    w = model.blocks[1].layers[0].weight
    m_before = opt.state[w]["exp_avg"].clone()
    with torch.no_grad():  # no live graph across a widening (see _set_param)
        out = model(y)
    model.widen(1, 0, 3)
    assert model.blocks[1].hidden == [7] and model.blocks[1].layers[0].weight is w
    with torch.no_grad():
        assert_same_function(model(y), out)
    counts = sync_optimizer(opt, model)
    assert counts["padded"] == 3 and counts["added"] == 0  # W1, b1, W2 grew
    st = opt.state[w]["exp_avg"]
    assert st.shape == w.shape and torch.equal(st[:4], m_before) and not st[4:].any()
    _train_steps(model, opt, y)  # optimizer runs on the widened tensors


def test_conv_insert_and_widen_preserve_output():
    torch.manual_seed(1)
    model = GrowableResNet.conv(1, 1, width=4, depth=1, hidden=[3], padding_mode="circular").double()
    y = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    before = model(y)
    model.insert_block(1, model.new_block("conv", hidden=[2], padding_mode="circular"))
    model.insert_block(0, model.new_block("conv_perceptron", padding_mode="circular"))
    model.widen(1, 0, 2)
    with torch.no_grad():
        assert_same_function(model(y), before)
    assert model.blocks[1].layers[0].out_channels == 5


def test_frozen_blocks_do_not_change_and_state_of_untouched_params_survives():
    model = _mlp(depth=2)
    y = torch.randn(8, 5, dtype=torch.float64)
    opt = make_optimizer("adam", model, 1e-2)
    _train_steps(model, opt, y)
    saved = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()}
    frozen = copy.deepcopy(model.blocks[0].state_dict())
    lift = copy.deepcopy(model.lift.state_dict())
    model.freeze([0])
    model.freeze("lift")
    new = model.insert_block(2, model.new_block())
    counts = sync_optimizer(opt, model)
    assert counts == {"kept": 8, "padded": 0, "added": 2, "dropped": 0}
    for p in model.parameters():
        if id(p) in saved:
            for k, v in saved[id(p)].items():
                assert torch.equal(opt.state[p][k], v)
    _train_steps(model, opt, y, n=5)
    for k, v in frozen.items():
        assert torch.equal(model.blocks[0].state_dict()[k], v)
    for k, v in lift.items():
        assert torch.equal(model.lift.state_dict()[k], v)
    assert new.linear.weight.abs().sum() > 0  # the new block trained
    assert opt.state[new.linear.weight]["exp_avg"].abs().sum() > 0


def test_spec_roundtrip_with_frozen_and_corrector():
    model = _mlp(depth=2, block="mlp", hidden=[4])
    model.widen(0, 0, 2)
    model.freeze([1])
    q = MLPCorrector(5, [3], hidden=[6], scale=0.3)
    q.zero_init()
    model.add_corrector(q)
    y = torch.randn(3, 5, dtype=torch.float64)
    clone = GrowableResNet.from_spec(model.spec()).double()
    clone.load_state_dict(model.state_dict())
    assert clone.spec() == model.spec()
    assert torch.equal(clone(y), model(y))
    assert not any(p.requires_grad for p in clone.blocks[1].parameters())


def test_apply_proposal_insert_and_corrector():
    model = _mlp(depth=1)
    y = torch.randn(3, 5, dtype=torch.float64)
    before = model(y)
    apply_proposal(model, GrowthProposal("insert", depth=0, block=model.new_block()))
    q = MLPCorrector(5, [3], hidden=[4])
    q.zero_init()
    apply_proposal(model, GrowthProposal("corrector", block=q))
    assert torch.equal(model(y), before) and model.depth == 2 and len(model.correctors) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_growth_on_cuda():
    model = _mlp(depth=1).cuda()
    y = torch.randn(4, 5, dtype=torch.float64, device="cuda")
    opt = make_optimizer("adam", model, 1e-2)
    _train_steps(model, opt, y)
    before = model(y)
    model.insert_block(1, model.new_block("mlp", hidden=[3]))
    model.widen(1, 0, 2)
    sync_optimizer(opt, model)
    assert torch.equal(model(y), before)
    _train_steps(model, opt, y)


def test_conv_layerwise_pieces_keep_function():
    from pdegrow.models import ConvCorrector

    torch.manual_seed(2)
    model = GrowableResNet.conv(1, 1, width=3, depth=1, hidden=[2], padding_mode="circular").double()
    y = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    before = model(y)
    blk = model.insert_block(model.depth, model.new_block("conv_perceptron"))
    assert blk.padding_mode == "circular"
    q = ConvCorrector(1, 1, hidden=[2], padding_mode="circular", scale=0.5)
    q.zero_init()
    model.add_corrector(q)
    assert torch.equal(model(y), before)
    clone = GrowableResNet.from_spec(model.spec()).double()
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone(y), before)
