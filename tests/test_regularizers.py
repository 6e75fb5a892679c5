"""Regularizers: hand-checked values, finite-difference gradients, no M×M memory, heat physics on data."""

import h5py
import numpy as np
import pytest
import torch

from pdegrow.regularizers import (
    HeatOperators,
    knn_graph,
    l1_penalty,
    manifold_penalty_clusters,
    manifold_penalty_pairs,
    model_constrained_penalty,
    physics_penalty,
    prune_small_weights,
    solve_temperature,
)
from pdegrow.regularizers.heat_physics import dense_stiffness, kl_to_field, stiffness_action

torch.set_num_threads(1)
D = torch.float64


def _dense_manifold(z, beta):
    diff = z[:, None, :] - z[None, :, :]
    return (beta * diff.pow(2).sum(-1)).sum()


def test_manifold_clusters_hand_checked():
    z = torch.tensor([[0.0], [1.0], [3.0]], dtype=D)
    labels = torch.tensor([0, 0, 1])
    # pairs (0,1) and (1,0): 2 · 1² = 2;  Φ = 2 / M² = 2/9
    assert manifold_penalty_clusters(z, labels, 9.0).item() == pytest.approx(2 / 9)


def test_manifold_clusters_matches_dense_formula():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(17, 4, dtype=D, generator=g)
    labels = torch.randint(0, 5, (17,), generator=g)
    beta = (labels[:, None] == labels[None, :]).to(D)
    ref = _dense_manifold(z, beta) / 17**2
    assert manifold_penalty_clusters(z, labels, 17.0**2).item() == pytest.approx(ref.item(), rel=1e-12)


def test_manifold_pairs_hand_checked_and_dense():
    z = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=D)
    zn = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]], dtype=D)
    beta = torch.tensor([[0.5], [2.0]], dtype=D)
    # 0.5·5 + 2·5 = 12.5
    assert manifold_penalty_pairs(z, zn, beta, 1.0).item() == pytest.approx(12.5)
    g = torch.Generator().manual_seed(1)
    u = torch.randn(30, 3, dtype=D, generator=g)
    idx, w = knn_graph(u, 4, chunk=7)
    dist = torch.cdist(u, u)
    dist.fill_diagonal_(float("inf"))
    ref_idx = dist.topk(4, largest=False).indices
    assert torch.equal(idx, ref_idx)
    beta_dense = torch.zeros(30, 30, dtype=D)
    beta_dense.scatter_(1, idx, w)
    zz = torch.randn(30, 5, dtype=D, generator=g)
    ref = _dense_manifold(zz, beta_dense)
    assert manifold_penalty_pairs(zz, zz[idx], w, 1.0).item() == pytest.approx(ref.item(), rel=1e-12)


def _reference_knn(u: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute force from explicit differences in float64 (no ‖a‖²+‖b‖²−2a·b shortcut)."""
    u = u.reshape(u.shape[0], -1).double()
    d = (u[:, None, :] - u[None, :, :]).pow(2).sum(-1)
    d.fill_diagonal_(float("inf"))
    vals, idx = torch.sort(d, dim=1, stable=True)
    return idx[:, :k], vals[:, :k].sqrt()


@pytest.mark.parametrize("method", ["kdtree", "brute", "auto"])
@pytest.mark.parametrize("dim", [2, 10, 40])
def test_knn_graph_equals_brute_force_reference(method, dim):
    g = torch.Generator().manual_seed(dim)
    u = torch.randn(600, dim, generator=g)  # float32 inputs, as the training set is stored
    u[:, 0] += torch.arange(600) % 3 * 0.5   # some structure, still no exact ties
    idx, w = knn_graph(u, 7, chunk=128, method=method)
    ref_idx, ref_d = _reference_knn(u, 7)
    assert idx.shape == (600, 7) and idx.dtype == torch.long
    assert torch.equal(idx, ref_idx)
    h = ref_d.median()
    torch.testing.assert_close(w.double(), torch.exp(-ref_d**2 / (2 * h * h)), rtol=1e-5, atol=1e-6)
    assert not (idx == torch.arange(600)[:, None]).any()  # nobody is their own neighbour


def test_knn_graph_duplicates_and_small_sets():
    u = torch.tensor([[0.0], [0.0], [0.0], [5.0]], dtype=D)  # three identical points
    for method in ("kdtree", "brute"):
        idx, w = knn_graph(u, 10, method=method)  # k is capped at M − 1
        assert idx.shape == (4, 3)
        assert not (idx == torch.arange(4)[:, None]).any()
        assert sorted(idx[0, :2].tolist()) == [1, 2] and idx[0, 2] == 3
    with pytest.raises(ValueError):
        knn_graph(u, 2, method="ball")


def test_knn_term_minibatch_is_unbiased_and_matches_dense():
    """Per-batch k-NN Φ_m (neighbours in and out of the batch) vs the dense formula, value and gradient."""
    from pdegrow.models import GrowableResNet
    from pdegrow.regularizers import Forward, ManifoldTerm

    torch.manual_seed(0)
    model = GrowableResNet.mlp(3, [2], width=6, depth=2).double()
    g = torch.Generator().manual_seed(5)
    m, k = 24, 4
    x = torch.randn(m, 3, dtype=D, generator=g)
    nb, beta = knn_graph(x, k)
    term = ManifoldTerm(1.0, m, "knn", -1, nb, beta, x)
    dense_beta = torch.zeros(m, m, dtype=D).scatter_(1, nb, beta)

    def dense():
        return _dense_manifold(model(x, return_states=True)[1][-1], dense_beta) / m**2

    class Batch:
        def __init__(self, item):
            self.item = item

    def batch_value(item):
        pred, states = model(x[item], return_states=True)
        return term.value(Batch(item), Forward(model, pred, states))

    ref = dense()
    params = [p for p in model.parameters() if torch.autograd.grad(ref, p, retain_graph=True,
                                                                   allow_unused=True)[0] is not None]
    assert len(params) >= 4  # lift and blocks (the head is after the regularized state)
    ref_grad = torch.autograd.grad(ref, params)
    perm = torch.randperm(m, generator=g)
    for bs in (6, 24):  # 6: most neighbours outside the batch; 24: all inside
        vals = [batch_value(b) for b in perm.split(bs)]
        mean = torch.stack(vals).mean()
        assert mean.item() == pytest.approx(ref.item(), rel=1e-12)
        for a, r in zip(torch.autograd.grad(mean, params), ref_grad, strict=True):
            torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-14)


def test_manifold_gradients_fd():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(8, 3, dtype=D, generator=g, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    assert torch.autograd.gradcheck(lambda x: manifold_penalty_clusters(x, labels, 64.0), (z,))
    zn = torch.randn(8, 2, 3, dtype=D, generator=g, requires_grad=True)
    beta = torch.rand(8, 2, dtype=D, generator=g)
    assert torch.autograd.gradcheck(lambda a, b: manifold_penalty_pairs(a, b, beta, 64.0), (z, zn))


def test_manifold_never_allocates_m_by_m():
    m = 100_000  # a dense M×M float64 matrix would need 80 GB
    z = torch.randn(m, 8, dtype=D, requires_grad=True)
    labels = torch.arange(m) // 5
    value = manifold_penalty_clusters(z, labels, float(m) ** 2)
    value.backward()
    assert torch.isfinite(value) and z.grad.shape == z.shape
    # k-NN graph: profile every allocation; none may approach M×M
    u = torch.randn(20_000, 4)
    cpu = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=cpu, profile_memory=True) as prof:
        idx, w = knn_graph(u, 5, chunk=256, method="brute")
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert idx.shape == (20_000, 5)
    # one float64 row chunk of squared distances, ≪ the 3.2 GB of a dense float64 M×M
    assert biggest <= 256 * 20_000 * 8 * 2, biggest


def test_sparsity_value_gradient_and_pruning():
    p = torch.tensor([[0.5, -2.0], [1e-4, 0.0]], dtype=D)
    assert l1_penalty([p, torch.tensor([-1.0], dtype=D)]).item() == pytest.approx(3.5001)
    q = torch.tensor([0.3, -0.7, 1.1], dtype=D, requires_grad=True)  # away from the kink at 0
    assert torch.autograd.gradcheck(lambda x: l1_penalty([x]), (q,))
    lin = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1e-4, 0.5, -2e-4], [0.2, 0.0, -0.3]]))
        lin.bias.fill_(1e-5)
    assert prune_small_weights(lin, 1e-3) == 2
    assert lin.weight[0, 0] == 0 and lin.weight[0, 1] == 0.5 and lin.bias[0] == 1e-5


@pytest.fixture(scope="module")
def heat(heat_paper_file):
    with h5py.File(heat_paper_file) as f:
        ops = HeatOperators.from_arrays({k: f["operators"][k][()] for k in f["operators"]},
                                        {k: f["geometry"][k][()] for k in f["geometry"]}, dtype=D)
        names = ("targets/log_conductivity", "targets/temperature", "targets/kl_coefficients",
                 "inputs/observations_clean")
        arrays = {k: torch.as_tensor(f[k][:]) for k in names}
    return ops, arrays


def test_physics_vanishes_for_true_pairs(heat):
    ops, a = heat
    m, T = a["targets/log_conductivity"], a["targets/temperature"]
    assert physics_penalty(m, T, ops).item() < 1e-20
    m_kl = kl_to_field(a["targets/kl_coefficients"], ops.prior_mean, ops.kl_basis, ops.kl_eigenvalues)
    assert torch.allclose(m_kl, m, atol=1e-10)
    assert physics_penalty(m_kl, T, ops).item() < 1e-18
    assert physics_penalty(m + 0.1, T, ops).item() > 1e-4  # and does not vanish for a wrong m


def test_physics_hand_checked_assembly(heat):
    ops, a = heat
    m, T = a["targets/log_conductivity"][:3], a["targets/temperature"][:3]
    K = dense_stiffness(m, ops)
    action = stiffness_action(m, T, ops.cells, ops.cell_stiffness)
    assert torch.allclose(torch.einsum("bij,bj->bi", K, T), action, atol=1e-12)
    assert torch.allclose(K, K.transpose(1, 2), atol=1e-12)
    # κ ≡ 1: K applied to constants is 0 (rows of a stiffness matrix sum to zero)
    ones = torch.ones(1, ops.n_nodes, dtype=D)
    zero = torch.zeros(1, ops.n_nodes, dtype=D)
    assert stiffness_action(zero, ones, ops.cells, ops.cell_stiffness).abs().max() < 1e-12


def test_model_constrained_solve_matches_file(heat):
    ops, a = heat
    m, T = a["targets/log_conductivity"][:5], a["targets/temperature"][:5]
    assert torch.allclose(solve_temperature(m, ops), T, atol=1e-10)
    y = a["inputs/observations_clean"][:5]
    assert model_constrained_penalty(m, y, ops).item() < 1e-20


def test_physics_gradients_fd(heat):
    ops, a = heat
    m = a["targets/log_conductivity"][:2].clone().requires_grad_(True)
    T = a["targets/temperature"][:2]
    assert torch.autograd.gradcheck(lambda x: physics_penalty(x, T, ops), (m,), eps=1e-6, atol=1e-8)
    xi = a["targets/kl_coefficients"][:1].clone().requires_grad_(True)
    y = a["inputs/observations_clean"][:1] * 1.05

    def mc(x):
        m = kl_to_field(x, ops.prior_mean, ops.kl_basis, ops.kl_eigenvalues)
        return model_constrained_penalty(m, y, ops)

    assert torch.autograd.gradcheck(mc, (xi,), eps=1e-6, atol=1e-8)


def test_physics_on_float32_batch_device(heat):
    ops, a = heat
    ops32 = HeatOperators(**{k: (v.float() if v is not None and v.is_floating_point() else v)
                             for k, v in ops.__dict__.items()})
    m = a["targets/log_conductivity"].float()
    T = a["targets/temperature"].float()
    assert physics_penalty(m, T, ops32).item() < 1e-8
    assert np.isfinite(physics_penalty(m, T, ops32).item())
