"""Regularizers as composable loss terms (manifold, sparsity, heat physics)."""

from pdegrow.regularizers.heat_physics import (
    HeatOperators,
    HeatPhysicsTerm,
    ModelConstrainedTerm,
    heat_residual,
    kl_to_field,
    model_constrained_penalty,
    physics_penalty,
    solve_temperature,
)
from pdegrow.regularizers.manifold import (
    ManifoldTerm,
    knn_graph,
    manifold_penalty_clusters,
    manifold_penalty_pairs,
)
from pdegrow.regularizers.sparsity import SparsityTerm, l1_penalty, prune_small_weights
from pdegrow.regularizers.terms import Forward, LossTerm

__all__ = ["Forward", "HeatOperators", "HeatPhysicsTerm", "LossTerm", "ManifoldTerm",
           "ModelConstrainedTerm", "SparsityTerm", "heat_residual", "kl_to_field", "knn_graph",
           "l1_penalty", "manifold_penalty_clusters", "manifold_penalty_pairs", "model_constrained_penalty",
           "physics_penalty", "prune_small_weights", "solve_temperature"]
