"""Problem-specific pieces the trainer plugs in: physics terms and field metrics.

Heat: the recovered log-conductivity field m (from KL coefficients or nodal
values) is compared with ``targets/log_conductivity``; the papers' figure of
merit is the average relative error  mean_b ‖m̂_b − m_b‖ / ‖m_b‖  (nodal
Euclidean norm; ``…_l2`` uses the lumped mass matrix, the discrete L²(Ω) norm).
"""

from __future__ import annotations

from typing import Any

import torch

from pdegrow.data.bundle import DataBundle
from pdegrow.regularizers.heat_physics import (
    HeatOperators,
    HeatPhysicsTerm,
    ModelConstrainedTerm,
    field_from_prediction,
)
from pdegrow.regularizers.heat_posterior import PosteriorTerm
from pdegrow.regularizers.terms import LossTerm
from pdegrow.training.config import RegularizerConfig, TrainConfig

FIELD = "targets/log_conductivity"


def heat_operators(data: DataBundle, device: torch.device, dtype: torch.dtype) -> HeatOperators | None:
    if data.problem != "heat" or "cell_stiffness" not in data.operators:
        return None
    return HeatOperators.from_arrays(data.operators, data.geometry, device=device, dtype=dtype)


def physics_terms(data: DataBundle, cfg: RegularizerConfig, ops: HeatOperators | None) -> list[LossTerm]:
    """The global physics terms (active in every phase) asked for by ``cfg``."""
    from pdegrow.errors import PdegrowError

    if data.problem == "wind":
        from pdegrow.regularizers.wind_divergence import wind_physics_terms

        return wind_physics_terms(data, cfg.physics_weight, cfg.model_constrained_weight)
    terms: list[LossTerm] = []
    if cfg.physics_weight > 0 or cfg.model_constrained_weight > 0:
        if ops is None:
            raise PdegrowError(f"physics regularizers need the heat operators; {data.path} holds "
                               f"the {data.problem!r} problem")
    if cfg.physics_weight > 0:
        if "targets/temperature" not in data.cfg.aux:
            raise PdegrowError("physics_weight > 0 needs 'targets/temperature' in [data] aux")
        terms.append(HeatPhysicsTerm(cfg.physics_weight, ops, data.cfg.target))
    if cfg.model_constrained_weight > 0:
        require_observation_matrix(data, ops, "model_constrained_weight > 0")
        terms.append(ModelConstrainedTerm(cfg.model_constrained_weight, ops, data.cfg.target))
    return terms


def posterior_term(data: DataBundle, cfg: TrainConfig, ops: HeatOperators | None) -> PosteriorTerm | None:
    """The label-free −log π(ŷ | y) term of the objective, when ``[train] posterior_weight > 0``."""
    from pdegrow.errors import PdegrowError

    if cfg.posterior_weight <= 0:
        return None
    level, model = data.noise
    if ops is None or ops.kl_basis is None:
        what = f"the {data.problem!r} problem" + ("" if ops is None else " with no KL basis")
        raise PdegrowError(f"posterior_weight > 0 needs a heat data set with a KL prior; "
                           f"{data.path} holds {what}")
    if not data.cfg.target.endswith("kl_coefficients"):
        raise PdegrowError(f"posterior_weight > 0 needs [data] target = 'targets/kl_coefficients' "
                           f"(the prior is N(0, I) in them), not {data.cfg.target!r}")
    if data.cfg.input != "inputs/observations":
        raise PdegrowError(f"posterior_weight > 0 needs [data] input = 'inputs/observations' "
                           f"(the noisy sensor values), not {data.cfg.input!r}")
    if model != "relative" or not level > 0:
        raise PdegrowError(f"posterior_weight > 0 needs relative noise of positive level; {data.path} "
                           f"has noise_model={model!r}, noise_level={level}")
    require_observation_matrix(data, ops, "posterior_weight > 0")
    return PosteriorTerm(cfg.posterior_weight, ops, level)


def require_observation_matrix(data: DataBundle, ops: HeatOperators, what: str) -> None:
    """Refuse a term that observes a solved temperature when the file has no ``observation_matrix``
    (heat files of degree > 1 written before it was stored for them)."""
    from pdegrow.errors import PdegrowError

    if ops.observation is None:
        raise PdegrowError(f"{what} needs operators/observation_matrix, which {data.path} lacks "
                           "(regenerate it with this pdegrow)")


def recovered_field(pred_phys: torch.Tensor, data: DataBundle, ops: HeatOperators | None,
                    ) -> torch.Tensor | None:
    """The predicted log-conductivity field (B, N), when it can be formed."""
    if ops is None:
        return None
    try:
        return field_from_prediction(pred_phys.to(ops.load.dtype), data.cfg.target, ops)
    except ValueError:
        return None


def relative_error(diff: torch.Tensor, ref_norm: torch.Tensor) -> torch.Tensor:
    """‖diff_b‖ / ref_norm_b per sample (``diff`` (B, …) or already its norms (B,)); NaN — *undefined* —
    where the reference norm is 0 (e.g. an all-zero target), never a huge number."""
    d = diff if diff.ndim == 1 else diff.reshape(diff.shape[0], -1).norm(dim=1)
    return torch.where(ref_norm > 0, d / torch.where(ref_norm > 0, ref_norm, 1.0), torch.nan)


def add_metric_sums(sums: dict[str, float], metrics: dict[str, torch.Tensor]) -> None:
    """Accumulate per-sample metrics: ``sums[k]`` over the samples where k is defined (not NaN),
    ``sums[k + "/n"]`` their number (see :func:`metric_means`)."""
    for k, v in metrics.items():
        ok = ~torch.isnan(v)
        sums[k] = sums.get(k, 0.0) + float(v[ok].sum())
        sums[f"{k}/n"] = sums.get(f"{k}/n", 0.0) + float(ok.sum())


def metric_means(sums: dict[str, float], n: int) -> dict[str, float]:
    """Means from accumulated sums: a metric with a count ``k/n`` is averaged over its defined samples
    (NaN when it is defined for none); others (the loss) over all ``n`` samples."""
    out = {}
    for k, v in sums.items():
        if k.endswith("/n"):
            continue
        count = sums.get(f"{k}/n", float(n))
        out[k] = v / count if count > 0 else float("nan")
    return out


def batch_metrics(pred_phys: torch.Tensor, target_phys: torch.Tensor, batch: Any, data: DataBundle,
                  ops: HeatOperators | None) -> dict[str, torch.Tensor]:
    """Per-sample metrics (each (B,)): relative error of the target (regression also its squared
    error ``mse_target``, classification ``error_rate``), and for heat of the
    log-conductivity field m (``rel_error_field``, Euclidean over nodes; ``…_l2``, lumped-mass L²)
    and of the conductivity e^m (``rel_error_conductivity``)."""
    b = pred_phys.shape[0]
    p, t = pred_phys.reshape(b, -1), target_phys.reshape(b, -1)
    out = {"rel_error_target": relative_error(p - t, t.norm(dim=1))}
    if data.cfg.problem == "classification":  # one-hot targets: misclassified samples
        out["error_rate"] = (p.argmax(1) != t.argmax(1)).to(p.dtype)
    if data.cfg.problem == "regression":      # squared error in the target's units (mean: the test MSE)
        out["mse_target"] = (p - t).pow(2).mean(1)
    if data.cfg.problem == "wind":            # test MSE of u and the relative error on each grid level
        from pdegrow.regularizers.wind_divergence import wind_metrics

        out.update(wind_metrics(pred_phys.reshape(target_phys.shape), target_phys))
    m = recovered_field(pred_phys, data, ops)
    if m is not None and FIELD in batch.aux:
        m_true = batch.aux[FIELD].to(m.dtype)
        diff = m - m_true
        out["rel_error_field"] = relative_error(diff, m_true.norm(dim=1))
        w = ops.lumped_mass
        out["rel_error_field_l2"] = relative_error((w * diff**2).sum(1).sqrt(), (w * m_true**2).sum(1).sqrt())
        kappa, kappa_true = m.exp(), m_true.exp()
        out["rel_error_conductivity"] = (kappa - kappa_true).norm(dim=1) / kappa_true.norm(dim=1)
    return out
