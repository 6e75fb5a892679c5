"""Low-rank Gauss–Newton Hessians and the Laplace posterior they give, batched over samples.

For a data map r: ℝᴰ → ℝᵐ in prior-whitened coordinates (prior N(0, I)), the Gauss–Newton
(Fisher) Hessian of the likelihood is F = JᵀJ, J = ∂r/∂ξ at the MAP. With F ≈ V diag(s²) Vᵀ
(V: D × k orthonormal) the Laplace posterior covariance is, by Sherman–Morrison–Woodbury,

    Γ_post = (I + F)⁻¹ ≈ I − V diag(s² / (1 + s²)) Vᵀ

(Bui-Thanh, Ghattas, Martin & Stadler, SIAM J. Sci. Comput. 35 (2013) A2494, eq. (4.3)),
exact when F has rank ≤ k, and otherwise an over-estimate by the dropped eigenvalues
s²_{k+1}… (each dropped direction keeps its prior variance instead of 1/(1 + s²)).

V and s come from the singular value decomposition of J, either exactly (m ≤ k: m
vector–Jacobian products with the rows of I_m) or by the randomised range finder
(Halko, Martinsson & Tropp, SIAM Rev. 53 (2011) 217, Alg. 4.1/4.4 + 5.1):
Y = (J Jᵀ)^q J Ω (Jacobian–vector products), Q = orth(Y), B = QᵀJ (vector–Jacobian
products), J ≈ Q B = (Q U) diag(s) Vᵀ.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: jvp(T (B, k, D)) → (B, k, m) = J T per sample;  vjp(U (B, k, m)) → (B, k, D) = Jᵀ U per sample
JVP = Callable[[torch.Tensor], torch.Tensor]
VJP = Callable[[torch.Tensor], torch.Tensor]


def jacobian_svd(jvp: JVP, vjp: VJP, batch: int, n_params: int, n_data: int, rank: int,
                 oversample: int = 10, power_iters: int = 0, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(s (B, k) descending, V (B, k, D) rows orthonormal, exact) with J_b ≈ Σ_i s_bi u_bi v_biᵀ.

    Exact (all m singular triplets) when ``n_data ≤ rank + oversample``; otherwise the top
    ``rank`` triplets of the randomised SVD with ``oversample`` extra columns.
    """
    if n_data <= rank + oversample:
        eye = torch.eye(n_data, dtype=dtype, device=device).expand(batch, n_data, n_data)
        jt = vjp(eye.contiguous())                                 # (B, m, D): the rows of J
        _, s, vh = torch.linalg.svd(jt, full_matrices=False)
        return s, vh, True
    k = min(rank + oversample, n_params)
    omega = torch.randn(batch, k, n_params, generator=generator, dtype=dtype, device=device)
    y = jvp(omega)                                                 # (B, k, m): rows (J ω_i)ᵀ
    for _ in range(power_iters):
        q = torch.linalg.qr(y.transpose(1, 2)).Q.transpose(1, 2)   # orthonormal rows in data space
        z = torch.linalg.qr(vjp(q).transpose(1, 2)).Q.transpose(1, 2)
        y = jvp(z)
    q = torch.linalg.qr(y.transpose(1, 2)).Q.transpose(1, 2)      # (B, k, m)
    b = vjp(q)                                                     # (B, k, D) = Qᵀ J
    _, s, vh = torch.linalg.svd(b, full_matrices=False)
    return s[:, :rank], vh[:, :rank], False


def posterior_variance_reduction(s: torch.Tensor) -> torch.Tensor:
    """d = s² / (1 + s²): Γ_post = I − V diag(d) Vᵀ."""
    s2 = s**2
    return s2 / (1.0 + s2)


def laplace_pointwise_variance(prior_variance: float | torch.Tensor, s: torch.Tensor, vh: torch.Tensor,
                               apply_sqrt_prior: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """diag(L Γ_post Lᵀ) = diag(L Lᵀ) − Σ_i d_i (L v_i)²  (B, …) for a symmetric square-root prior L.

    ``vh`` (B, k, …): the rows v_i in the shape ``apply_sqrt_prior`` takes; ``prior_variance``
    diag(L Lᵀ) (a number when it is the same everywhere). Clamped at 0 against round-off.
    """
    d = posterior_variance_reduction(s)                            # (B, k)
    lv = apply_sqrt_prior(vh)                                      # (B, k, …)
    d = d.reshape(*d.shape, *([1] * (lv.dim() - 2)))
    return (prior_variance - (d * lv**2).sum(1)).clamp_min(0.0)
