"""3-D conv surrogates: extrusion, exact growth, the 3-D topological operator against finite differences,
and training every supported strategy on a small wind file."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import RUN_HEAD
from torch import nn

from pdegrow.cli import main
from pdegrow.growth.topological import (
    collect_depth_operators,
    rows_from_eigenpairs,
    top_eigenpairs,
)
from pdegrow.growth.topological_conv3d import Conv3dFeatureOperator, conv3d_patches
from pdegrow.growth.topological_operators import augment
from pdegrow.models.blocks import ConvCorrector, ConvPerceptronBlock, build_module
from pdegrow.models.conv3d import extrude
from pdegrow.models.resnet import GrowableResNet

DT = torch.float64


def net3d(depth: int = 2, block: str = "conv_perceptron", levels: int = 3, seed: int = 0) -> GrowableResNet:
    torch.manual_seed(seed)
    model = GrowableResNet.conv(2, 3, width=4, depth=depth, block=block, activation="tanh", kernel_size=3,
                                spatial_dims=3, levels=levels, hidden=[5])
    return model.to(DT)


def test_extrude_repeats_the_image_on_every_level_with_its_coordinate():
    y = torch.randn(2, 3, 4, 5, dtype=DT)
    v = extrude(y, 4)
    assert v.shape == (2, 4, 4, 4, 5)
    for k in range(4):
        torch.testing.assert_close(v[:, :3, k], y)
        assert torch.all(v[:, 3, k] == k / 3)


def test_conv3d_network_shapes_spec_and_exact_insertion_and_widening():
    model = net3d(block="conv")
    y = torch.randn(3, 2, 5, 4, dtype=DT)                      # images → volumes of 3 levels
    out = model(y)
    assert out.shape == (3, 3, 3, 5, 4)
    assert isinstance(model.blocks[0].layers[0], nn.Conv3d) and model.spatial_dims == 3
    # the spec round trip rebuilds the same function
    twin = GrowableResNet.from_spec(json.loads(json.dumps(model.spec()))).to(DT)
    twin.load_state_dict(model.state_dict())
    assert torch.equal(twin(y), out)
    # identity insertion at every depth, both block kinds: the function is kept exactly
    for t in range(model.depth + 1):
        for kind in ("conv_perceptron", "conv"):
            grown = copy.deepcopy(model)
            block = grown.insert_block(t, grown.new_block(kind, zero_init=True, activation="tanh"))
            assert block.spatial_dims == 3
            assert torch.equal(grown(y), out)
    # widening a hidden layer (zero fan-out) keeps it too (to rounding: the channel sums are longer)
    model.widen(0, 0, 3)
    assert model.blocks[0].hidden == [8]
    torch.testing.assert_close(model(y), out, rtol=1e-13, atol=1e-14)
    # a zero-initialised 3-D SRL corrector reading the image keeps it
    q = ConvCorrector(2, 3, [4], spatial_dims=3, levels=3).to(DT)
    q.zero_init()
    before = model(y)
    model.add_corrector(q)
    assert torch.equal(model(y), before)
    assert build_module(q.spec()).spec() == q.spec()


@pytest.mark.parametrize("mode", ["zeros", "circular", "replicate"])
def test_conv3d_patches_reproduce_the_convolution(mode):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 5, 3, generator=g, dtype=DT)
    conv = nn.Conv3d(3, 2, 3, padding=1, padding_mode=mode).to(DT)
    ref = conv(x).permute(0, 2, 3, 4, 1).reshape(-1, 2)
    w = torch.cat([conv.weight.reshape(2, -1), conv.bias[:, None]], 1)
    torch.testing.assert_close(augment(conv3d_patches(x, 3, mode)) @ w.T, ref.detach())


def _op(mode: str = "zeros") -> Conv3dFeatureOperator:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, 3, 4, 4, generator=g, dtype=DT)
    lam = torch.randn(3, 3, 3, 4, 4, generator=g, dtype=DT) / 3
    return Conv3dFeatureOperator(x, lam, 3, padding_mode=mode)


@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_conv3d_operator_matvec_blocks_and_solvers_agree(mode):
    op = _op(mode)
    a = op.blocks()
    assert a.shape == (3, 2 * 27 + 1, 2 * 27 + 1)
    # the naive sum Σ_{s,p} λ_{s,r,p} x̃ x̃ᵀ over samples and voxels
    rows = augment(conv3d_patches(op.x, 3, mode))
    lam = op.lam.permute(0, 2, 3, 4, 1).reshape(-1, 3)
    torch.testing.assert_close(a, torch.einsum("pr,pi,pj->rij", lam, rows, rows))
    torch.testing.assert_close(op.blocks(chunk_samples=1), a)
    v = torch.randn(3, op.dim, dtype=DT)
    torch.testing.assert_close(op.matvec(v, torch.arange(3)), torch.einsum("rij,rj->ri", a, v))
    sub = torch.tensor([2, 0])
    torch.testing.assert_close(op.matvec(v[sub], sub), torch.einsum("rij,rj->ri", a[sub], v[sub]))
    dense = top_eigenpairs(op, method="dense")
    lan = top_eigenpairs(op, method="lanczos", tol=1e-11)
    assert torch.allclose(lan.values, dense.values, atol=1e-9 * float(dense.values.abs().max()), rtol=0)


def test_topological_derivative_of_a_3d_block_matches_finite_differences():
    """(J(Ω_ε) − J(Ω₀))/(ε²/2) → −Σ_r λ_r for the 3-D admissible block built from the eigenvectors."""
    model = net3d(depth=2)
    g = torch.Generator().manual_seed(3)
    y = torch.randn(5, 2, 4, 3, generator=g, dtype=DT)
    target = torch.randn(5, 3, 3, 4, 3, generator=g, dtype=DT)

    def states_fn(u):
        out, states = model(u, return_states=True)
        return states, out

    batches = [(y[:3], target[:3]), (y[3:], target[3:])]
    ops, j0 = collect_depth_operators(states_fn, F.mse_loss, batches)
    assert all(isinstance(op, Conv3dFeatureOperator) for op in ops) and len(ops) == 3
    with torch.no_grad():
        assert j0 == pytest.approx(float(F.mse_loss(model(y), target)), rel=1e-12)
    eps = 1e-3
    for t, op in enumerate(ops):
        rows = rows_from_eigenpairs(top_eigenpairs(op, method="dense"), fraction=0.0)
        assert rows.coefficient > 0
        grown = copy.deepcopy(model)
        block = ConvPerceptronBlock(4, 3, activation="silu_tanh", scale=eps, spatial_dims=3).to(DT)
        with torch.no_grad():
            block.conv.weight.copy_(rows.weight.reshape(block.conv.weight.shape))
            block.conv.bias.copy_(rows.bias)
        grown.insert_block(t, block)
        with torch.no_grad():
            fd = (float(F.mse_loss(grown(y), target)) - j0) / (eps**2 / 2)
        assert fd == pytest.approx(-rows.coefficient, rel=1e-2), t


@pytest.fixture(scope="module")
def wind_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("wind3d") / "wind-small.h5"
    assert main(["generate", "wind", "--preset", "small", "--n-samples", "36", "--out", str(out),
                 "--no-progress"]) == 0
    return out


CONFIG = RUN_HEAD + """[data]
problem = "wind"
input = "inputs/mast_image"
target = "targets/velocity"
aux = []
n_train = 24
n_val = 6
n_test = 6
normalize_inputs = "feature"
normalize_targets = "scalar"
[model]
kind = "conv3d"
width = 4
depth = 1
block = "mlp"
hidden = [4]
activation = "gelu"
[optim]
lr = 1e-3
batch_size = 12
[train]
max_epochs = 4
phase_epochs = 2
[growth]
strategy = "{strategy}"
{extra}
"""


@pytest.mark.parametrize("strategy, extra", [
    ("fixed", ""),
    ("layerwise", "max_layers = 1\nsrl_steps = 1\nsrl_hidden = [4]"),
    ("random_insertion", "max_layers = 1\nmin_significance = 0.0"),
    ("topological_insertion", "max_layers = 1\nmin_significance = 0.0"),
    ("net2deeper", "max_layers = 1"),
])
def test_conv3d_trains_and_grows_on_wind(tmp_path, wind_file, strategy, extra):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(strategy=strategy, extra=extra))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--data", str(wind_file), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"val_mse_target", "val_rel_error_level0"} <= set(rows[-1])
    spec = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    assert spec.get("status", "finished") != "failed"
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()
              if line.strip()] if (out / "events.jsonl").exists() else []
    grown = [e for e in events if e.get("kind", "growth") == "growth"]
    if strategy == "fixed":
        assert not grown
    else:
        assert grown, f"{strategy}: no growth event"
        # every insertion logs its realised change beside the prediction; an identity block changes nothing
        assert all("realised_change" in e and "predicted_change" in e for e in grown)
        if strategy in ("layerwise", "net2deeper"):
            assert all(e["realised_change"] == 0.0 and e["loss_after"] == e["loss_before"] for e in grown)
    # the saved model is rebuilt from its file (3-D spec) and evaluated
    assert main(["evaluate", str(out), "--data", str(wind_file), "--json"]) == 0


def test_conv3d_refuses_other_strategies_in_one_line(tmp_path, wind_file, capsys):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(strategy="tiny", extra="neurons = 2"))
    assert main(["train", "--config", str(config), "--data", str(wind_file),
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not support model kind 'conv3d'" in err[0]
    assert not (tmp_path / "r").exists()
    # a 2-D target cannot be a conv3d target
    config.write_text(CONFIG.format(strategy="fixed", extra="").replace(
        'target = "targets/velocity"', 'target = "targets/velocity_columns"'))
    assert main(["train", "--config", str(config), "--data", str(wind_file),
                 "--out", str(tmp_path / "r")]) == 2
    assert "needs volume targets" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
