"""Wind on the learning side: the divergence penalty (closed form, gradient), metrics, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import RUN_HEAD

from pdegrow.cli import main
from pdegrow.regularizers.wind_divergence import (
    divergence_matrix,
    divergence_penalty,
    grid_divergence,
    wind_metrics,
)
from solvers.wind_grid import divergence_operator


def _grid():
    x, y = np.linspace(0, 900, 4), np.linspace(0, 600, 5)
    sigma = np.linspace(0, 1, 4) ** 1.5
    ground = 30.0 + 40 * np.exp(-((x[None, :] - 450) ** 2 + (y[:, None] - 300) ** 2) / 2e5)
    z = ground[None] + sigma[:, None, None] * (1500.0 - ground[None])
    D = divergence_operator(x, y, z)
    ops = {"grid_divergence_data": D.data, "grid_divergence_indices": D.indices,
           "grid_divergence_indptr": D.indptr}
    return x, y, z, divergence_matrix(ops)


def test_divergence_penalty_closed_form_and_gradient():
    x, y, z, D = _grid()
    X, Y = np.broadcast_to(x[None, None], z.shape), np.broadcast_to(y[None, :, None], z.shape)
    # a linear field u = G (x, y, z) + c has ∇·u = tr G everywhere: Φ = (tr G)²
    G = np.array([[0.02, 0.01, 0.0], [0.0, -0.05, 0.003], [0.001, 0.0, 0.01]])
    u = np.stack([G[i, 0] * X + G[i, 1] * Y + G[i, 2] * z + 3.0 * i for i in range(3)])
    batch = torch.as_tensor(np.stack([u, 2 * u]))
    div = grid_divergence(batch, D)
    np.testing.assert_allclose(div[0].numpy(), np.trace(G), rtol=1e-10)
    np.testing.assert_allclose(div[1].numpy(), 2 * np.trace(G), rtol=1e-10)
    assert float(divergence_penalty(batch, D)) == pytest.approx(2.5 * np.trace(G) ** 2, rel=1e-10)
    # ∂Φ/∂u_b = (2/(B·P)) Dᵀ D u_b, and a central finite difference along a random direction
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(batch.shape, dtype=torch.float64, generator=gen)
    w = torch.randn(batch.shape, dtype=torch.float64, generator=gen)
    v.requires_grad_(True)
    (grad,) = torch.autograd.grad(divergence_penalty(v, D), v)
    B, P = v.shape[0], z.size
    Dd = D.to_dense()
    closed = (2.0 / (B * P)) * (v.detach().reshape(B, -1) @ Dd.T @ Dd).reshape(v.shape)
    torch.testing.assert_close(grad, closed, rtol=1e-12, atol=1e-14)
    h = 1e-5
    with torch.no_grad():
        fd = (divergence_penalty(v + h * w, D) - divergence_penalty(v - h * w, D)) / (2 * h)
    assert float(fd) == pytest.approx(float((grad * w).sum()), rel=1e-7)


def test_wind_metrics_by_level():
    target = torch.zeros(2, 3, 3, 2, 2, dtype=torch.float64)
    target[:, 0] = torch.tensor([1.0, 2.0, 4.0])[:, None, None]        # u = 1, 2, 4 on levels 0, 1, 2
    pred = target.clone()
    pred[0, 0, 1] += 1.0                                              # sample 0: error 1 on level 1
    m = wind_metrics(pred, target)
    assert float(m["mse_target"][0]) == pytest.approx(4 / 36)
    assert float(m["rel_error_level1"][0]) == pytest.approx(0.5)     # ‖1‖/‖2‖ over 4 points
    assert float(m["rel_error_level0"][0]) == 0.0 and float(m["rel_error_level1"][1]) == 0.0
    cols = wind_metrics(pred.reshape(2, 9, 2, 2), target.reshape(2, 9, 2, 2))   # the conv layout
    for k, value in m.items():
        torch.testing.assert_close(cols[k], value)


@pytest.fixture(scope="module")
def wind_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("wind") / "wind-small.h5"
    assert main(["generate", "wind", "--preset", "small", "--n-samples", "40", "--out", str(out),
                 "--no-progress"]) == 0
    return out


CONFIG = RUN_HEAD + """[data]
problem = "wind"
input = "{input}"
target = "{target}"
aux = []
n_train = 24
n_val = 8
n_test = 8
normalize_inputs = "feature"
normalize_targets = "scalar"
[model]
kind = "{kind}"
width = 8
depth = 1
block = "mlp"
hidden = [8]
[optim]
lr = 1e-3
batch_size = 24
[train]
max_epochs = 4
phase_epochs = 2
[regularizers]
physics_weight = 10.0
[growth]
strategy = "{strategy}"
max_layers = 1
"""


@pytest.mark.parametrize("kind, input, target, strategy", [
    ("mlp", "inputs/observations", "targets/velocity", "layerwise"),
    ("conv", "inputs/mast_image", "targets/velocity_columns", "topological_insertion"),
])
def test_wind_trains_with_the_divergence_term_and_grows(tmp_path, wind_file, kind, input, target, strategy):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(kind=kind, input=input, target=target, strategy=strategy))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--data", str(wind_file), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["term_physics"] > 0 for r in rows if "term_physics" in r)
    assert any("term_physics" in r for r in rows)
    assert {"val_mse_target", "val_rel_error_level0", "val_rel_error_level3"} <= set(rows[-1])
    assert (out / "events.jsonl").read_text().strip(), "no growth event"
