"""The pieces a training run is built from: the device, the seeds, the network for the data, the data loss."""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

from pdegrow.data.bundle import DataBundle
from pdegrow.errors import PdegrowError
from pdegrow.models.resnet import GrowableResNet
from pdegrow.training.config import ExperimentConfig

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is a :class:`PdegrowError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PdegrowError("device = 'cuda' but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's global generators."""
    random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: ExperimentConfig, data: DataBundle) -> GrowableResNet:
    """The network of ``cfg``'s ``[model]`` for the data's input and target shapes (with ``linear_skip =
    "ridge"``: plus the ridge map of the training pairs, :func:`attach_ridge_skip`)."""
    model = _network(cfg, data)
    if cfg.model.linear_skip == "ridge":
        if cfg.train.loss == "cross_entropy":
            raise PdegrowError("[model] linear_skip = 'ridge' is for regression targets, "
                               "not loss = 'cross_entropy'")
        attach_ridge_skip(model, data, cfg.model.linear_skip_lambda, cfg.model.linear_skip_trainable,
                          cfg.optim.batch_size)
    return model


def _split_tensors(split: Any, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All (normalised) inputs and targets of a split, in file order."""
    from pdegrow.data.loaders import iterate

    xs, ys = [], []
    for batch in iterate(split, max(batch_size, 256), None, keep_groups=False):
        xs.append(batch.inputs.detach().cpu())
        ys.append(batch.targets.detach().cpu())
    return torch.cat(xs), torch.cat(ys)


def attach_ridge_skip(model: GrowableResNet, data: DataBundle, lam: float = 0.0, trainable: bool = False,
                      batch_size: int = 256) -> dict[str, Any]:
    """Give ``model`` the linear skip output = L(y) + f_θ(y), L the ridge estimator fitted on the training
    split (labelled and simulated pairs, normalised as the network sees them; ``lam`` = 0: λ chosen on the
    validation split, :func:`pdegrow.models.linear_skip.fit_ridge`), and zero the head so that f_θ starts
    at 0 and the network at the ridge estimator. Returns the fit's record (λ, validation errors)."""
    from pdegrow.models.linear_skip import LAMBDA_GRID, LinearSkip, fit_ridge

    x, y = _split_tensors(data.train, batch_size)
    xv, yv = _split_tensors(data.val, batch_size) if len(data.val) else (None, None)
    wt, b, chosen, errors = fit_ridge(x, y, xv, yv, lam)
    skip = LinearSkip(data.input_shape, data.target_shape, trainable=trainable).to(dtype=x.dtype)
    skip.set_map(wt, b, chosen)
    model.to(dtype=x.dtype).set_skip(skip)      # in the training dtype: the map is not rounded on the way
    zero = getattr(model.head, "zero_init", None)
    if zero is not None:
        zero()
    record = {"lambda": chosen, "n_pairs": len(x)}
    if errors:
        record["val_mse"] = dict(zip([f"{v:.3g}" for v in LAMBDA_GRID], errors, strict=True))
    log.info("linear skip: ridge on %d training pairs, λ = %.3g%s", len(x), chosen,
             f" (validation MSE {min(errors):.4g})" if errors else "")
    return record


def _network(cfg: ExperimentConfig, data: DataBundle) -> GrowableResNet:
    """The residual network of ``[model]`` (no skip)."""
    m = cfg.model
    if m.kind == "vit":
        from pdegrow.models.vit import vit_for_data

        return vit_for_data(m, data.input_shape, data.target_shape, data.geometry)
    if m.kind == "conv3d":
        from pdegrow.models.conv3d import conv3d_for_data

        return conv3d_for_data(m, data.input_shape, data.target_shape)
    if m.kind == "conv":
        if not data.is_field:
            raise PdegrowError(f"[model] kind = 'conv' needs field inputs and targets; the data has input "
                               f"shape {data.input_shape} and target shape {data.target_shape}")
        block = {"perceptron": "conv_perceptron", "mlp": "conv"}.get(m.block, m.block)
        return GrowableResNet.conv(data.input_shape[0], data.target_shape[0], m.width, m.depth, block=block,
                                   activation=m.activation, kernel_size=m.kernel_size,
                                   padding_mode=m.padding_mode, hidden=m.hidden, coordinates=m.coordinates)
    return GrowableResNet.mlp(int(np.prod(data.input_shape)), list(data.target_shape), m.width, m.depth,
                              block=m.block, activation=m.activation, hidden=m.hidden)


def data_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """``mse``: mean (ŷ − y)²; ``relative_mse``: mean_b ‖ŷ_b − y_b‖² / ‖y_b‖² (normalised units);
    ``cross_entropy``: mean_b −Σ_c y_bc log softmax(ŷ_b)_c (ŷ logits, y one-hot or soft labels)."""
    if kind == "cross_entropy":
        return -(target.float() * torch.log_softmax(pred.float(), dim=-1)).sum(-1).mean()
    if kind == "mse":
        return (pred.float() - target.float()).pow(2).mean() if pred.dtype != target.dtype else \
            (pred - target).pow(2).mean()
    b = pred.shape[0]
    p, t = pred.reshape(b, -1), target.reshape(b, -1)
    return ((p - t).pow(2).sum(1) / t.pow(2).sum(1).clamp_min(1e-12)).mean()


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: ExperimentConfig) -> Any:
    """The learning-rate scheduler of ``[optim] scheduler`` (``step``, ``cosine``), or None."""
    o = cfg.optim
    if o.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, o.step_size, o.gamma)
    if o.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.train.max_epochs)
    return None


__all__ = ["attach_ridge_skip", "build_model", "data_loss", "make_scheduler", "resolve_device",
           "seed_everything"]
