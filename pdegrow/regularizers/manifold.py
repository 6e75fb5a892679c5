"""Manifold regularization Φ_m (Krishnanunni & Bui-Thanh, arXiv 2211.06860, §3).

    Φ_m = (1/M²) Σ_{i,j} β_ij ‖N(x_i) − N(x_j)‖²

N the output of the newly added block (a state x_t of the network), β a
similarity between training samples. β is never a dense M×M matrix:

* **clusters / noisy copies** — β_ij = 1 if i and j carry the same label
  (e.g. noisy copies of one training sample), else 0. The within-cluster sum
  uses Σ_{i,j∈c} ‖z_i − z_j‖² = 2 n_c Σ_{i∈c} ‖z_i − z̄_c‖²: O(M·d).
* **k-nearest-neighbour kernel** — β_ij = exp(−‖u_i − u_j‖²/(2h²)) for j among
  the k nearest neighbours of i in input space u (h: median neighbour
  distance), 0 otherwise. The exact graph is built once (:func:`knn_graph`:
  a k-d tree for low-dimensional inputs on the CPU, chunked brute force on
  the device otherwise), stored as an (M, k) neighbour table and (M, k) weights.

Mini-batch estimate. For a batch of B items the term returns
(1/(B·M)) Σ_{i∈batch} Σ_j β_ij ‖N(x_i) − N(x_j)‖². For clusters kept whole in
the batch (the loaders keep noisy copies together) this is the clusters' part
of Φ_m; for the k-NN kernel each batch item's k neighbours are evaluated with
the *current* parameters in the same training step (the batch's own states
where the neighbour is in the batch, one extra forward pass on the others),
and the gradient flows through both ends of every edge. Over a uniformly
random batch the expectation is exactly Φ_m (each i's row sum is counted with
probability B/M), and the mean over an epoch's equal-sized batches is Φ_m:
an unbiased estimate of the penalty and of its gradient. (A table of N(x_j)
cached per epoch would be stale within the epoch and drop the j-end of the
gradient, so it is not used.) Cost per batch O(B·k·(d + log B)) — neighbour ids
come from the (M, k) table indexed by the batch's item ids, nothing touches all
M items — hence O(M·k) per epoch and a constant overhead factor as M grows.
"""

from __future__ import annotations

from typing import Any

import torch

from pdegrow.regularizers.terms import Forward, LossTerm


def manifold_penalty_clusters(z: torch.Tensor, labels: torch.Tensor, normalizer: float) -> torch.Tensor:
    """Σ_{i,j: labels_i = labels_j} ‖z_i − z_j‖² / normalizer, in O(M·d) (no M×M matrix).

    ``z``: (M, …) features (flattened per sample); ``labels``: (M,) integers.
    """
    z = z.reshape(z.shape[0], -1)
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    sums = torch.zeros(counts.shape[0], z.shape[1], dtype=z.dtype, device=z.device)
    sums.index_add_(0, inverse, z)
    n = counts.to(z.dtype)
    centred = z - (sums / n[:, None])[inverse]
    return (2.0 * n[inverse] * centred.pow(2).sum(1)).sum() / normalizer


def manifold_penalty_pairs(z: torch.Tensor, z_neighbours: torch.Tensor, beta: torch.Tensor,
                           normalizer: float) -> torch.Tensor:
    """Σ_i Σ_k β_ik ‖z_i − z_{j(i,k)}‖² / normalizer for a sparse graph given by neighbour features.

    ``z``: (B, d…); ``z_neighbours``: (B, k, d…); ``beta``: (B, k). O(B·k·d).
    """
    diff = z.reshape(z.shape[0], 1, -1) - z_neighbours.reshape(z.shape[0], z_neighbours.shape[1], -1)
    return (beta * diff.pow(2).sum(-1)).sum() / normalizer


KDTREE_MAX_DIM = 16
"""``method="auto"`` uses the k-d tree up to this input dimension (on CPU), brute force above it."""


def _exclude_self(idx: torch.Tensor, k: int) -> torch.Tensor:
    """Drop each row's own index from ``k + 1`` candidates (or the last one when a duplicate displaced it)."""
    m = idx.shape[0]
    own = idx == torch.arange(m, device=idx.device)[:, None]
    keep = ~own
    keep[~own.any(1), -1] = False
    return idx[keep].reshape(m, k)


def _knn_kdtree(u: torch.Tensor, k: int) -> torch.Tensor:
    from scipy.spatial import cKDTree

    pts = u.detach().cpu().to(torch.float64).numpy()
    _, idx = cKDTree(pts).query(pts, k + 1, workers=max(1, torch.get_num_threads()))
    return _exclude_self(torch.as_tensor(idx, dtype=torch.long).reshape(-1, k + 1), k)


def _knn_brute(u: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    # float64 where the device has it: ‖a‖² + ‖b‖² − 2a·b in float32 loses the order of close neighbours
    v = u.detach().to(torch.float32 if u.device.type == "mps" else torch.float64)
    m = v.shape[0]
    sq = v.pow(2).sum(1)
    idx = torch.empty(m, k, dtype=torch.long, device=u.device)
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        d2 = torch.addmm(sq[None, :], v[start:stop], v.T, alpha=-2.0).add_(sq[start:stop, None])
        rows = torch.arange(stop - start, device=u.device)
        d2[rows, rows + start] = float("inf")  # not one's own neighbour
        idx[start:stop] = torch.topk(d2, k, dim=1, largest=False).indices
    return idx


def knn_graph(u: torch.Tensor, k: int, chunk: int = 1024, bandwidth: float | None = None,
              method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest other rows of ``u``: indices (M, k), nearest first, and Gaussian weights (M, k).

    β_ik = exp(−d_ik²/(2h²)), h = ``bandwidth`` or the median neighbour distance.
    ``method``: ``"kdtree"`` (scipy ``cKDTree`` in float64 on the CPU, O(M·k) memory, about
    O(M log M) for low-dimensional inputs such as sensor data), ``"brute"`` (``chunk`` rows at a
    time on ``u``'s device, O(M²·d) time, peak memory O(chunk·M), never M×M), or ``"auto"``:
    the k-d tree when ``u`` is on the CPU with at most :data:`KDTREE_MAX_DIM` features, brute
    force otherwise (high dimension, or a GPU). The returned tensors are on ``u``'s device;
    the distances in β are recomputed from the differences u_i − u_j.
    """
    if method not in ("auto", "kdtree", "brute"):
        raise ValueError(f"method must be 'auto', 'kdtree' or 'brute', not {method!r}")
    u = u.reshape(u.shape[0], -1)
    m = u.shape[0]
    if m < 2:
        raise ValueError("a k-NN graph needs at least two rows")
    k = min(int(k), m - 1)
    if method == "auto":
        method = "kdtree" if u.device.type == "cpu" and u.shape[1] <= KDTREE_MAX_DIM else "brute"
    idx = _knn_kdtree(u, k).to(u.device) if method == "kdtree" else _knn_brute(u, k, chunk)
    dist = (u[:, None, :] - u[idx]).norm(dim=-1)  # (M, k): O(M·k·d)
    h = float(bandwidth) if bandwidth is not None else float(dist.median().clamp_min(1e-12))
    return idx, torch.exp(-dist.pow(2) / (2 * h * h))


class ManifoldTerm(LossTerm):
    """Φ_m on state x_``state`` (default the last, i.e. the newest block's output N⁽ˡ⁾).

    ``similarity="clusters"`` uses ``batch.group`` (noisy copies share a group);
    ``similarity="knn"`` uses a precomputed graph over the training items
    (``neighbours`` (M, k) item indices, ``beta`` (M, k)) and the training
    inputs ``inputs`` (M, …) to evaluate N at the neighbours.
    """

    name = "manifold"

    def __init__(self, weight: float, n_train: int, similarity: str = "clusters", state: int = -1,
                 neighbours: torch.Tensor | None = None, beta: torch.Tensor | None = None,
                 inputs: torch.Tensor | None = None):
        super().__init__(weight)
        if similarity not in ("clusters", "knn"):
            raise ValueError(f"similarity must be 'clusters' or 'knn', not {similarity!r}")
        if similarity == "knn" and (neighbours is None or beta is None or inputs is None):
            raise ValueError("the knn similarity needs neighbours, beta and inputs")
        self.similarity, self.state_index, self.n_train = similarity, state, int(n_train)
        self.neighbours, self.beta, self.inputs = neighbours, beta, inputs

    def value(self, batch: Any, fwd: Forward) -> torch.Tensor:
        z = fwd.states[self.state_index]
        normalizer = float(z.shape[0] * self.n_train)
        if self.similarity == "clusters":
            return manifold_penalty_clusters(z, batch.group, normalizer)
        nb = self.neighbours[batch.item]                          # (B, k)
        z_nb = self._neighbour_states(z, batch.item, nb, fwd)     # (B, k, …)
        return manifold_penalty_pairs(z, z_nb, self.beta[batch.item], normalizer)

    def _neighbour_states(self, z: torch.Tensor, item: torch.Tensor, nb: torch.Tensor,
                          fwd: Forward) -> torch.Tensor:
        """N(x_j) for the batch's neighbours j, differentiable, with the current parameters.

        Neighbours inside the batch reuse the batch's own states (the trainer's forward pass);
        the others are evaluated once each (unique ids) in one extra forward pass. Everything is
        O(B·k·log B): no lookup touches all M items.
        """
        b = z.shape[0]
        order = torch.argsort(item)
        sorted_items = item[order]
        pos = torch.searchsorted(sorted_items, nb).clamp_max(b - 1)
        inside = sorted_items[pos] == nb
        src = torch.where(inside, order[pos], 0)
        table = z
        if not bool(inside.all()):
            uniq, inv = torch.unique(nb[~inside], return_inverse=True)
            z_out = fwd.model(self.inputs[uniq], return_states=True)[1][self.state_index]
            src[~inside] = b + inv
            table = torch.cat([z, z_out])
        return table[src.reshape(-1)].reshape(*nb.shape, *z.shape[1:])
