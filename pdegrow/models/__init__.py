"""Growable networks: blocks, the residual network, optimizers that survive growth.

See :mod:`pdegrow.models.resnet` for the stable interface growth strategies use.
"""

from pdegrow.models.activations import make_activation, silu_tanh
from pdegrow.models.blocks import (
    BLOCK_REGISTRY,
    ConvBlock,
    ConvCorrector,
    ConvHead,
    ConvLift,
    ConvPerceptronBlock,
    LinearHead,
    LinearLift,
    MLPBlock,
    MLPCorrector,
    PerceptronBlock,
    SpecModule,
    build_module,
    register_block,
    widen_pair,
)
from pdegrow.models.linear_skip import LinearSkip  # registers the skip's kind (for from_spec)
from pdegrow.models.optim import make_optimizer, sync_optimizer
from pdegrow.models.resnet import GrowableResNet
from pdegrow.models.vit import build_vit  # registers the ViT modules (for from_spec)

__all__ = [
    "BLOCK_REGISTRY", "ConvBlock", "ConvCorrector", "ConvHead", "ConvLift", "ConvPerceptronBlock",
    "GrowableResNet",
    "LinearHead", "LinearSkip", "LinearLift", "MLPBlock", "MLPCorrector", "PerceptronBlock", "SpecModule",
    "build_module", "build_vit", "make_activation", "make_optimizer", "register_block", "silu_tanh",
    "sync_optimizer", "widen_pair",
]
