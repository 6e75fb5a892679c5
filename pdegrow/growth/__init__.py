"""Growth strategies behind one interface (:mod:`pdegrow.growth.base`)."""

from pdegrow.growth.base import (
    STRATEGIES,
    GrowthContext,
    GrowthEvent,
    GrowthProposal,
    GrowthStrategy,
    TrainingState,
    apply_proposal,
    build_strategy,
    register_strategy,
)

__all__ = ["STRATEGIES", "GrowthContext", "GrowthEvent", "GrowthProposal", "GrowthStrategy",
           "TrainingState", "apply_proposal", "build_strategy", "register_strategy"]
