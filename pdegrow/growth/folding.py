"""Grow by folding on typical instances (manifold folding at mistakes).

After "Growing Networks by Folding Manifolds at Mistakes" (ICLR 2026
submission, OpenReview cI2UehQ6g4): a hidden unit σ(wᵀx + b) of ReLU type
folds its input space along the hyperplane wᵀx + b = 0; a new unit is a new
fold, placed where the network makes a *typical* mistake.

In pdegrow the space folded is the input x of a hidden layer of an MLP block
(the stream state x_t for its first hidden layer). One growth event:

1. **Typical mistakes** — loss-weighted k-means (weights = per-sample squared
   error ℓ_s) on a random sample of the training set's rows x (from the shared
   statistics pass); the ``neurons`` clusters of largest total loss are the
   typical mistakes; each one's *typical instance* x_t is its member closest
   to the cluster's weighted centroid.
2. **Activated linear segment** — on the segment from x_t towards the
   centroid a of the sample, the activation pattern of the layer's units
   (sign of z_j = w_jᵀx + b_j) is that of x_t up to the first τ > 0 where a
   unit switches: τ_j = z_j(x_t) / (z_j(x_t) − z_j(a)) for units with
   z_j(x_t)·(z_j(x_t) − z_j(a)) > 0.
3. **Fold point** — x_f = x_t + τ*(a − x_t), τ* = min_j τ_j (the nearest
   switching point on the ray; if no unit switches on it, the orthogonal
   projection of x_t on the nearest unit hyperplane).
4. **New neuron** — hyperplane through x_f, normal along x_t − x_f:
   w = s (x_t − x_f)/‖x_t − x_f‖²,  b = −wᵀx_f  (so W x_f + b = 0 and
   wᵀx_t + b = s, default s = 1); fan-out 0 (predictions unchanged).

Clustering and fold points are batched tensor operations (no loop over samples).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pdegrow.growth.base import GrowthContext, GrowthProposal, register_strategy
from pdegrow.growth.neurons import NeuronGrowth, fan_layers
from pdegrow.growth.statistics import shared_statistics


def weighted_kmeans(x: Tensor, weights: Tensor, k: int, iters: int = 25,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Loss-weighted k-means (Lloyd; k-means++ seeding ∝ weight·distance²).

    Returns (centroids (k, d), labels (M,))."""
    m = x.shape[0]
    k = max(1, min(int(k), m))
    w = weights.clamp_min(0).to(x.dtype)
    if float(w.sum()) <= 0:
        w = torch.ones_like(w)
    first = int(torch.multinomial(w.cpu(), 1, generator=generator))
    centroids = x[first : first + 1]
    for _ in range(1, k):
        d2 = torch.cdist(x, centroids).pow(2).min(1).values
        p = (w * d2).cpu()
        if float(p.sum()) <= 0:
            p = w.cpu()
        idx = int(torch.multinomial(p, 1, generator=generator))
        centroids = torch.cat([centroids, x[idx : idx + 1]])
    labels = torch.cdist(x, centroids).argmin(1)
    for _ in range(iters):
        onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype) * w[:, None]   # (M, k)
        mass = onehot.sum(0)
        new = (onehot.T @ x) / mass.clamp_min(1e-300)[:, None]
        centroids = torch.where(mass[:, None] > 0, new, centroids)
        new_labels = torch.cdist(x, centroids).argmin(1)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return centroids, labels


def typical_instances(x: Tensor, weights: Tensor, centroids: Tensor, labels: Tensor, n: int) -> Tensor:
    """Indices (≤ n) of the typical instance of each of the n clusters of largest total weight."""
    k = centroids.shape[0]
    mass = torch.zeros(k, dtype=weights.dtype, device=weights.device).index_add_(0, labels, weights)
    order = torch.argsort(mass, descending=True)[: max(1, int(n))]
    order = order[mass[order] > 0] if bool((mass[order] > 0).any()) else order[:1]
    d = torch.cdist(centroids[order], x)                       # (n, M)
    d = torch.where(labels[None, :] == order[:, None], d, torch.full_like(d, float("inf")))
    return d.argmin(1)


def fold_points(x_t: Tensor, anchor: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest switching points of the units z = W x + b on the rays x_t → anchor (batched over rows of x_t).

    Returns (x_f (n, d), unit index (n,), τ (n,); τ = nan where the fallback — the orthogonal
    projection on the nearest unit hyperplane — was used)."""
    z_t = x_t @ weight.T + bias                                   # (n, h)
    z_a = anchor @ weight.T + bias                                # (h,)
    dz = z_t - z_a                                                # z(τ) = z_t − τ·dz
    ok = (z_t * dz > 0) & (dz.abs() > 1e-12)
    tau = torch.where(ok, z_t / torch.where(ok, dz, torch.ones_like(dz)), torch.full_like(z_t, float("inf")))
    tau_min, unit = tau.min(1)
    on_ray = torch.isfinite(tau_min)
    x_ray = x_t + torch.where(on_ray, tau_min, torch.zeros_like(tau_min))[:, None] * (anchor - x_t)
    wn2 = weight.pow(2).sum(1).clamp_min(1e-300)                  # (h,)
    dist = z_t.abs() / wn2.sqrt()
    near = dist.argmin(1)
    proj = x_t - (z_t.gather(1, near[:, None]) / wn2[near][:, None]) * weight[near]
    x_f = torch.where(on_ray[:, None], x_ray, proj)
    nan = torch.full_like(tau_min, float("nan"))
    return x_f, torch.where(on_ray, unit, near), torch.where(on_ray, tau_min, nan)


def folding_neurons(x_t: Tensor, x_f: Tensor, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """(W (n, d), b (n,)): hyperplanes through x_f (W x_f + b = 0) with normals along x_t − x_f,
    W x_t + b = ``scale``."""
    d = x_t - x_f
    w = scale * d / d.pow(2).sum(1, keepdim=True).clamp_min(1e-300)
    b = -(w * x_f).sum(1)
    return w, b


@register_strategy
class FoldingStrategy(NeuronGrowth):
    """Grow by folding on typical instances (see the module docstring)."""

    name = "folding"

    def __init__(self, neurons: int = 2, every: int = 0, max_events: int = 10, max_params: int | None = None,
                 max_width: int | None = None, layer_choice: str = "cycle", clusters: int = 8,
                 sample_size: int = 2048, kmeans_iters: int = 25, scale: float = 1.0):
        super().__init__(neurons=neurons, every=every, max_events=max_events, max_params=max_params,
                         max_width=max_width, layer_choice=layer_choice)
        self.clusters, self.sample_size = int(clusters), int(sample_size)
        self.kmeans_iters, self.scale = int(kmeans_iters), float(scale)

    def propose(self, ctx: GrowthContext) -> GrowthProposal | None:
        if (where := self.next_layer(ctx)) is None:
            return None
        key, k = where
        stats = shared_statistics(ctx, keep_samples=self.sample_size)
        x = stats.layers[key].samples
        w = stats.sample_loss
        if x is None or w is None or x.shape[0] == 0:
            return None
        centroids, labels = weighted_kmeans(x, w, max(self.clusters, k), self.kmeans_iters, ctx.generator)
        idx = typical_instances(x, w, centroids, labels, k)
        x_t = x[idx]
        first, second = fan_layers(ctx.model, key)
        wt, bt = first.weight.detach().double(), first.bias.detach().double()
        x_f, unit, tau = fold_points(x_t, x.mean(0), wt, bt)
        keep = (x_t - x_f).norm(dim=1) > 1e-9
        if not bool(keep.any()):
            return None
        x_t, x_f, unit, tau, idx = x_t[keep], x_f[keep], unit[keep], tau[keep], idx[keep]
        fan_in, bias = folding_neurons(x_t, x_f, self.scale)
        fan_out = torch.zeros(second.out_features, fan_in.shape[0], dtype=torch.float64)
        info: dict[str, Any] = {
            "typical_loss": [float(v) for v in w[idx]], "mean_loss": float(w.mean()),
            "fold_unit": [int(u) for u in unit], "tau": [float(v) for v in tau],
            "fold_distance": [float(v) for v in (x_t - x_f).norm(dim=1)],
            "sample_index": ([int(stats.sample_index[i]) for i in idx]
                             if stats.sample_index is not None else [])}
        return self.widen_proposal(key, fan_in, bias, fan_out, 0.0, info)


__all__ = ["FoldingStrategy", "fold_points", "folding_neurons", "typical_instances", "weighted_kmeans"]
