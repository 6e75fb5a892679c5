"""What strategies use to make regularizer terms for a phase (weights from ``[regularizers]``)."""

from __future__ import annotations

import torch
from torch import nn

from pdegrow.regularizers.manifold import ManifoldTerm, knn_graph
from pdegrow.regularizers.sparsity import SparsityTerm, prune_small_weights
from pdegrow.regularizers.terms import LossTerm


class RegularizerKit:
    """Builds manifold/sparsity terms over the training split; the k-NN graph is built once, lazily.

    ``train_inputs``: the (normalised) training inputs, item order (needed only for ``knn``).
    """

    def __init__(self, cfg: object, n_train: int, train_inputs: torch.Tensor | None = None):
        self.cfg = cfg
        self.n_train = int(n_train)
        self.train_inputs = train_inputs
        self._graph: tuple[torch.Tensor, torch.Tensor] | None = None

    def manifold_weight(self, layer: int) -> float:
        """w_l = w_0 · factor^l for the l-th added layer (l = 0: the initial network)."""
        return float(self.cfg.manifold_weight * self.cfg.manifold_factor ** layer)

    def manifold(self, weight: float, state: int = -1) -> LossTerm | None:
        if weight <= 0:
            return None
        if self.cfg.manifold_similarity == "knn":
            if self.train_inputs is None:
                from pdegrow.errors import PdegrowError

                raise PdegrowError("the knn manifold similarity needs the training set in memory")
            if self._graph is None:
                self._graph = knn_graph(self.train_inputs, self.cfg.manifold_k)
            nb, beta = self._graph
            return ManifoldTerm(weight, self.n_train, "knn", state, nb, beta, self.train_inputs)
        return ManifoldTerm(weight, self.n_train, "clusters", state)

    def sparsity(self, module: nn.Module, weight: float | None = None) -> LossTerm | None:
        w = self.cfg.sparsity_weight if weight is None else weight
        return SparsityTerm(w, module) if w > 0 else None

    def prune(self, module: nn.Module) -> int:
        return prune_small_weights(module, self.cfg.prune_tol) if self.cfg.prune_tol > 0 else 0
