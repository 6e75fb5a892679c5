"""TINY — spot expressivity bottlenecks and fix them optimally.

Verbockhaven, Rudkiewicz, Chevallier, Charpiat, "Growing Tiny Networks:
Spotting Expressivity Bottlenecks and Fixing Them Optimally", TMLR 2024.

**Setting in pdegrow.** The layer grown is hidden layer i of an MLP block t;
with the notation of :mod:`pdegrow.growth.statistics`: x̃ = [x; 1] the input
of the fan-in layer (TINY's b_{l−2}), h̃ = [h; 1] the input of the fan-out
layer (b_{l−1}), z the fan-out layer's output (v_l; the block output for the
last layer) and **V_goal** the desired update of z: per sample
g_s = −∂ℓ_s/∂z_s (the negative functional gradient of J = (1/n)Σ_s ℓ_s at z;
for the block output this is n times the costate λ_{t+1}). In matrix form
V_goal = [g_1 … g_n] (m × n), B = [h̃_1 … h̃_n], B_{l−2} = [x̃_1 … x̃_n].

1. **Best update of the existing fan-out weights** (ridge least squares)
   ΔW* = argmin_ΔW (1/n)‖V_goal − ΔW B‖² + ρ̄‖ΔW‖² = N_hidᵀ (S_hid + ρ̄ I)⁻¹
   with S_hid = B Bᵀ/n, N_hid = B V_goalᵀ/n and ρ̄ = ``ridge``·tr(S_hid)/dim
   (ρ̄ = 0: the paper's unregularised V_goal Bᵀ(B Bᵀ)⁻¹, pseudo-inverse on a
   singular S). Hidden activations are often nearly collinear (condition
   numbers 1e4–1e5 measured on the heat problem); there the unregularised ΔW*
   amplifies the sampling noise of N_hid along the small eigenvectors of
   S_hid and its norm reaches tens against weights of ≈ 0.5 — the ridge damps
   exactly those directions (:func:`ridge_shift`). Default ``ridge = 0.1``: on the heat
   `paper` study (5 seeds) it gave the lowest test error of {0, 1e-3, 1e-2, 1e-1}.
2. **What it cannot express**: V_goal_proj = V_goal − ΔW* B, whose cross moment
   with the fan-in input is N = (1/n) B_{l−2} V_goal_projᵀ = N_in − C ΔW*ᵀ, C = E[x̃ h̃ᵀ].
3. **New neurons**: with S = E[x̃ x̃ᵀ] (+ ρ̄ I, the same ridge), the SVD S^{-1/2} N =
   Σ_k λ_k u_k v_kᵀ; neuron k has fan-in α_k = √λ_k S^{-1/2} u_k (weights and bias) and
   fan-out ω_k = √λ_k v_k, so that Σ_k ω_k α_kᵀ = argmin_{rank K} (1/n)‖V_goal_proj −
   Ω A B_{l−2}‖² + ρ̄‖Ω A‖² (the optimal fix of the bottleneck; for ρ̄ = 0 invariant
   under an invertible reparametrisation x̃ → M x̃: α → M^{-T} α, ω unchanged). The
   bottleneck decreases by Σ_k λ_k² (first-order gain).
   Neurons: those with λ_k ≥ ``threshold``·λ_1, at most ``neurons``.
4. **Amplitude** γ ≥ 0: W ← W + γ ΔW*, new neurons √γ α_k, √γ ω_k; to first order
   J(γ) − J(0) = −γ·c with c = tr(ΔW* N_hid) + σ′(0) Σ_k α_kᵀ N_in ω_k
   (= σ′(0) Σ_k λ_k² exactly when no projection is made, ``project = false``);
   γ (``amplitude = "trust_region"``, the default) as large as the first-order model holds:
   grown/shrunk by 2 from the γ that predicts a ``target_decrease`` of J while the realised
   change stays within [``ratio_min``, 1/``ratio_min``] of −γ·c
   (:func:`~pdegrow.growth.topological.trust_region_scale`); or (``"line_search"``, the
   former behaviour) the minimiser of the training loss along the update
   (:func:`~pdegrow.growth.topological.line_search_epsilon`), which on 50 training
   samples takes γ ≈ 5–14, far past the linear regime, and overfits in one step.
5. **Where**: the layer with the largest first-order coefficient c (the
   expected loss decrease per unit amplitude) among all hidden layers.

Needs σ(0) = 0 (function preserved at γ = 0) and σ′(0) ≠ 0 for the linearisation
(tanh, SiLU, GELU, ELU; not ReLU, whose σ′(0) is 0 in PyTorch).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pdegrow.growth.base import GrowthContext, GrowthProposal, register_strategy
from pdegrow.growth.neurons import (
    NeuronGrowth,
    activation_at_zero,
    activation_slope_at_zero,
    fan_layers,
    widen_with_update,
)
from pdegrow.growth.statistics import LayerKey, LayerStatistics, shared_statistics
from pdegrow.growth.topological import line_search_epsilon, trust_region_scale

# --------------------------------------------------------------------------- the mathematics


def psd_power(s: Tensor, power: float, rel_tol: float = 1e-10) -> Tensor:
    """S^p of a symmetric positive semi-definite S on its range (eigenvalues below
    ``rel_tol``·max are treated as 0: a pseudo-inverse for p < 0)."""
    s = 0.5 * (s + s.T)
    vals, vecs = torch.linalg.eigh(s)
    cut = rel_tol * float(vals.abs().max().clamp_min(1e-300))
    keep = vals > cut
    powered = torch.where(keep, vals.clamp_min(cut) ** power, torch.zeros_like(vals))
    return (vecs * powered) @ vecs.T


def ridge_shift(s: Tensor, ridge: float) -> Tensor:
    """S + ρ̄ I with ρ̄ = ``ridge``·tr(S)/dim (a ridge relative to the mean eigenvalue of S)."""
    if ridge < 0:
        raise ValueError(f"ridge must be ≥ 0, got {ridge}")
    if ridge == 0:
        return s
    rho = ridge * float(torch.diagonal(s).sum()) / s.shape[0]
    return s + rho * torch.eye(s.shape[0], dtype=s.dtype, device=s.device)


def least_squares_update(b: Tensor, v_goal: Tensor, rel_tol: float = 1e-10) -> Tensor:
    """ΔW* = V_goal Bᵀ (B Bᵀ)⁻¹ from sample matrices B (p × n), V_goal (m × n) (TINY eq. for
    the best update of existing weights; pseudo-inverse when B Bᵀ is singular)."""
    return v_goal @ b.T @ psd_power(b @ b.T, -1.0, rel_tol)


def best_update(s_hid: Tensor, n_hid: Tensor, rel_tol: float = 1e-10, ridge: float = 0.0) -> Tensor:
    """ΔW* = N_hidᵀ (S_hid + ρ̄ I)⁻¹ (m × (h+1)) from the moments S_hid = E[h̃h̃ᵀ], N_hid = E[h̃ gᵀ],
    ρ̄ = ``ridge``·tr(S_hid)/dim (:func:`ridge_shift`); for ``ridge`` = 0 identical to
    :func:`least_squares_update` with S = BBᵀ/n, N = BV_goalᵀ/n."""
    return n_hid.T @ psd_power(ridge_shift(s_hid, ridge), -1.0, rel_tol)


def projected_cross(n_in: Tensor, c_in_hid: Tensor, delta_w: Tensor) -> Tensor:
    """N = (1/n) B_{l−2} V_goal_projᵀ = N_in − C ΔW*ᵀ, V_goal_proj = V_goal − ΔW* B."""
    return n_in - c_in_hid @ delta_w.T


@dataclass
class NewNeurons:
    """α (k, d+1) fan-in rows [weights, bias]; ω (m, k) fan-out; all singular values λ; gain Σ_{k} λ_k²."""

    alpha: Tensor
    omega: Tensor
    lambdas: Tensor
    gain: float

    @property
    def k(self) -> int:
        return int(self.alpha.shape[0])


def new_neurons(s_in: Tensor, n_proj: Tensor, max_neurons: int, threshold: float = 0.0,
                rel_tol: float = 1e-10, ridge: float = 0.0) -> NewNeurons:
    """TINY's optimal new neurons from the SVD of S^{-1/2} N (see the module docstring).

    Keeps the k ≤ ``max_neurons`` leading singular triplets with λ_k > ``threshold``·λ_1
    (and λ_k > 0). α_k = √λ_k S^{-1/2} u_k, ω_k = √λ_k v_k; gain = Σ_{kept} λ_k².
    With ``ridge`` > 0, S is S + ρ̄ I (:func:`ridge_shift`).
    """
    s_isqrt = psd_power(ridge_shift(s_in, ridge), -0.5, rel_tol)
    u, lam, vh = torch.linalg.svd(s_isqrt @ n_proj, full_matrices=False)
    lam_max = float(lam[0]) if lam.numel() else 0.0
    keep = (lam > threshold * lam_max) & (lam > 1e-300)
    k = min(int(keep.sum()), int(max_neurons))
    root = lam[:k].sqrt()
    alpha = (s_isqrt @ u[:, :k] * root).T
    omega = vh[:k].T * root
    return NewNeurons(alpha, omega, lam, float((lam[:k] ** 2).sum()))


def first_order_coefficient(delta_w: Tensor | None, n_hid: Tensor, alpha: Tensor, omega: Tensor,
                            n_in: Tensor, slope: float) -> float:
    """c with J(γ) − J(0) = −γ·c + o(γ): c = tr(ΔW* N_hid) + σ′(0)·Σ_k α_kᵀ N_in ω_k."""
    c = slope * float(torch.einsum("kd,dm,mk->", alpha, n_in, omega)) if alpha.numel() else 0.0
    if delta_w is not None:
        c += float(torch.trace(delta_w @ n_hid))
    return c


@dataclass
class TinyProposal:
    """Everything TINY proposes for one hidden layer."""

    key: LayerKey
    delta_w: Tensor | None      # (m, h+1) or None
    neurons: NewNeurons
    coefficient: float          # first-order decrease per unit γ
    update_norm: float


def tiny_layer_proposal(stats: LayerStatistics, max_neurons: int, *, threshold: float = 0.0,
                        update_existing: bool = True, project: bool = True, slope: float = 1.0,
                        rel_tol: float = 1e-10, ridge: float = 0.0) -> TinyProposal:
    """Steps 1–4 of the module docstring on one layer's statistics."""
    delta_w = best_update(stats.s_hid, stats.n_hid, rel_tol, ridge) if (update_existing or project) else None
    n_proj = projected_cross(stats.n_in, stats.c_in_hid, delta_w) if project and delta_w is not None \
        else stats.n_in
    neurons = new_neurons(stats.s_in, n_proj, max_neurons, threshold, rel_tol, ridge)
    applied = delta_w if update_existing else None
    coef = first_order_coefficient(applied, stats.n_hid, neurons.alpha, neurons.omega, stats.n_in, slope)
    norm = float(applied.norm()) if applied is not None else 0.0
    return TinyProposal((stats.block, stats.layer), applied, neurons, coef, norm)


# --------------------------------------------------------------------------- amplitude on the live model


class AmplitudeProbe:
    """Forward hooks that make the model compute as if TINY's update with amplitude γ were applied
    (z ← z + γ ΔW* h̃ + √γ Ω σ(√γ A x̃)), without touching its parameters (for the line search)."""

    def __init__(self, model: nn.Module, prop: TinyProposal):
        self.gamma = 0.0
        first, second = fan_layers(model, prop.key)
        self.act = model.blocks[prop.key[0]].act  # type: ignore[union-attr, index]
        ref = first.weight
        self.alpha = prop.neurons.alpha.to(ref)
        self.omega = prop.neurons.omega.to(ref)
        self.delta = prop.delta_w.to(ref) if prop.delta_w is not None else None
        self._x: Tensor | None = None
        self.handles = [first.register_forward_pre_hook(self._grab), second.register_forward_hook(self._add)]

    def _grab(self, _m: nn.Module, args: tuple[Tensor, ...]) -> None:
        self._x = args[0]

    def _add(self, _m: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
        if self.gamma == 0.0:
            return out
        g = self.gamma
        x, h = self._x, args[0]
        r = math.sqrt(g)
        new = self.act(r * (x @ self.alpha[:, :-1].T + self.alpha[:, -1])) @ (r * self.omega).T
        if self.delta is not None:
            new = new + g * (h @ self.delta[:, :-1].T + self.delta[:, -1])
        return out + new

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def apply_tiny(model: nn.Module, prop: TinyProposal, gamma: float) -> None:
    """Carry out ``prop`` at amplitude γ on the model (widen + in-place ΔW*)."""
    r = math.sqrt(max(gamma, 0.0))
    a = prop.neurons.alpha
    delta = None if prop.delta_w is None else gamma * prop.delta_w
    widen_with_update(model, prop.key, r * a[:, :-1], r * a[:, -1], r * prop.neurons.omega,
                      None if delta is None else delta[:, :-1], None if delta is None else delta[:, -1])


# --------------------------------------------------------------------------- the strategy

#: How γ is chosen: within the first-order model's trust region, or the training loss's minimiser.
AMPLITUDES = ("trust_region", "line_search")


@register_strategy
class TinyStrategy(NeuronGrowth):
    """TINY (see the module docstring). ``neurons`` caps the units added per event; ``ridge``
    the relative ridge ρ̄/(tr S/dim) of ΔW* and of the new neurons (0: the paper's unregularised
    least squares)."""

    name = "tiny"

    def __init__(self, neurons: int = 4, every: int = 0, max_events: int = 10, max_params: int | None = None,
                 max_width: int | None = None, threshold: float = 0.1, update_existing: bool = True,
                 project: bool = True, target_decrease: float = 0.01, line_search_evals: int = 12,
                 refine_steps: int = 4, min_gain: float = 0.0, rel_tol: float = 1e-10, ridge: float = 0.1,
                 amplitude: str = "trust_region", ratio_min: float = 0.5):
        super().__init__(neurons=neurons, every=every, max_events=max_events, max_params=max_params,
                         max_width=max_width)
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        self.threshold = float(threshold)
        self.update_existing, self.project = bool(update_existing), bool(project)
        self.target_decrease, self.line_search_evals = float(target_decrease), int(line_search_evals)
        self.refine_steps, self.min_gain, self.rel_tol = int(refine_steps), float(min_gain), float(rel_tol)
        if ridge < 0:
            raise ValueError(f"ridge must be ≥ 0, got {ridge}")
        self.ridge = float(ridge)
        if amplitude not in AMPLITUDES:
            raise ValueError(f"amplitude must be one of {', '.join(AMPLITUDES)}, got {amplitude!r}")
        if not 0.0 < ratio_min < 1.0:
            raise ValueError(f"ratio_min must be in (0, 1), got {ratio_min}")
        self.amplitude, self.ratio_min = amplitude, float(ratio_min)

    def setup(self, ctx: GrowthContext) -> None:
        super().setup(ctx)
        for t in {t for t, _ in _keys(ctx)}:
            if activation_at_zero(ctx.model.blocks[t]) != 0.0:
                from pdegrow.errors import PdegrowError

                raise PdegrowError("tiny needs an activation with σ(0) = 0 in the MLP blocks")

    def layer_proposals(self, ctx: GrowthContext) -> list[TinyProposal]:
        """TINY's proposal for every layer within the budget (one shared statistics pass)."""
        stats = shared_statistics(ctx)
        out = []
        for key in self.candidates(ctx):
            k = self.units_allowed(ctx, key, self.neurons)
            if k < 1:
                continue
            slope = activation_slope_at_zero(ctx.model.blocks[key[0]])
            out.append(tiny_layer_proposal(stats.layers[key], k, threshold=self.threshold,
                                           update_existing=self.update_existing, project=self.project,
                                           slope=slope, rel_tol=self.rel_tol, ridge=self.ridge))
        return out

    def propose(self, ctx: GrowthContext) -> GrowthProposal | None:
        t0 = time.perf_counter()
        props = [p for p in self.layer_proposals(ctx) if p.neurons.k > 0 or p.delta_w is not None]
        if not props:
            return None
        best = max(props, key=lambda p: p.coefficient)
        if not best.coefficient > self.min_gain:
            return None
        j0 = ctx.train_loss()
        probe = AmplitudeProbe(ctx.model, best)
        try:
            def loss_at(gamma: float) -> float:
                probe.gamma = gamma
                return float(ctx.train_loss())

            gamma0 = self.target_decrease * max(abs(j0), 1e-30) / best.coefficient
            if self.amplitude == "line_search":
                ls = line_search_epsilon(loss_at, eps_init=gamma0, both_signs=False,
                                         max_evals=self.line_search_evals, refine_steps=self.refine_steps)
                gamma, change, valid = ls.eps, ls.loss - ls.loss0, None
            else:
                coef = best.coefficient
                tr = trust_region_scale(loss_at, lambda g: -g * coef, loss0=j0, start=gamma0,
                                        ratio_min=self.ratio_min, max_evals=self.line_search_evals)
                gamma, change, valid = tr.eps, tr.realised, tr.valid
        finally:
            probe.remove()
        if gamma <= 0.0:
            return None
        info: dict[str, Any] = {
            "gamma": gamma, "first_order_coefficient": best.coefficient, "gain": best.neurons.gain,
            "lambdas": [float(v) for v in best.neurons.lambdas[: max(best.neurons.k, 1) + 2]],
            "update_norm": best.update_norm, "applied_update_norm": gamma * best.update_norm,
            "ridge": self.ridge, "amplitude": self.amplitude, "line_search_change": change,
            "ratio": change / (-gamma * best.coefficient), "first_order_valid": valid,
            "coefficients": {f"{p.key[0]}.{p.key[1]}": p.coefficient for p in props},
            "proposal_s": round(time.perf_counter() - t0, 4)}
        return GrowthProposal("custom", depth=best.key[0], layer=best.key[1], k=best.neurons.k,
                              predicted_change=-gamma * best.coefficient, info=info, payload=(best, gamma))

    def apply(self, ctx: GrowthContext, proposal: GrowthProposal) -> None:
        prop, gamma = proposal.payload
        apply_tiny(ctx.model, prop, gamma)


def _keys(ctx: GrowthContext) -> list[LayerKey]:
    from pdegrow.growth.statistics import widenable_layers

    return widenable_layers(ctx.model)


__all__ = ["AmplitudeProbe", "NewNeurons", "TinyProposal", "TinyStrategy", "apply_tiny", "best_update",
           "first_order_coefficient", "least_squares_update", "new_neurons", "projected_cross", "psd_power",
           "ridge_shift", "tiny_layer_proposal"]
