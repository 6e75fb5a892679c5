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
from pdegrow.growth.fixed import FixedStrategy
from pdegrow.growth.layerwise import LayerwiseStrategy

__all__ = ["STRATEGIES", "FixedStrategy", "LayerwiseStrategy",
           "GrowthContext", "GrowthEvent", "GrowthProposal", "GrowthStrategy",
           "TrainingState", "apply_proposal", "build_strategy", "register_strategy"]
