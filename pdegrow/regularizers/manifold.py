"""Manifold regularization Φ_m (Krishnanunni & Bui-Thanh, arXiv 2211.06860, §3).

    Φ_m = (1/M²) Σ_{i,j} β_ij ‖N(x_i) − N(x_j)‖²

N the output of the newly added block (a state x_t of the network), β a
similarity between training samples. β is never a dense M×M matrix:

* **clusters / noisy copies** — β_ij = 1 if i and j carry the same label
  (e.g. noisy copies of one training sample), else 0. The within-cluster sum
  uses Σ_{i,j∈c} ‖z_i − z_j‖² = 2 n_c Σ_{i∈c} ‖z_i − z̄_c‖²: O(M·d).
* **k-nearest-neighbour kernel** — β_ij = exp(−‖u_i − u_j‖²/(2h²)) for j among
  the k nearest neighbours of i in input space u (h: median neighbour
  distance), 0 otherwise; the graph is built in row chunks, O(M·k) memory,
  and the penalty costs O(M·k) per epoch.

In mini-batches the trainer calls the penalty with ``normalizer = B·M`` (B the
batch size): with whole clusters inside a batch, the mean over an epoch's
batches is then Φ_m itself.
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


def knn_graph(u: torch.Tensor, k: int, chunk: int = 1024, bandwidth: float | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (M, k) of each row's k nearest other rows of ``u`` and Gaussian weights (M, k).

    β_ik = exp(−d_ik²/(2h²)), h = ``bandwidth`` or the median neighbour distance.
    Distances are computed ``chunk`` rows at a time: peak memory O(chunk·M), never M×M.
    """
    u = u.reshape(u.shape[0], -1)
    m = u.shape[0]
    k = min(k, m - 1)
    idx = torch.empty(m, k, dtype=torch.long, device=u.device)
    dist = torch.empty(m, k, dtype=u.dtype, device=u.device)
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        d = torch.cdist(u[start:stop], u)
        rows = torch.arange(stop - start, device=u.device)
        d[rows, rows + start] = float("inf")  # not one's own neighbour
        vals, inds = torch.topk(d, k, dim=1, largest=False)
        idx[start:stop], dist[start:stop] = inds, vals
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
        nb = self.neighbours[batch.item]                       # (B, k)
        y_nb = self.inputs[nb.reshape(-1)]                       # (B·k, …)
        z_nb = fwd.model(y_nb, return_states=True)[1][self.state_index]
        z_nb = z_nb.reshape(nb.shape[0], nb.shape[1], *z.shape[1:])
        return manifold_penalty_pairs(z, z_nb, self.beta[batch.item], normalizer)
