"""The posterior of the initial vorticity w₀ given w(T) (full field or sensors): 4D-Var's objective.

Prior. w₀ ~ N(0, C), C = σ_p(−Δ + τ²I)^{−α} with eigenvalues λ_k (``operators/prior_eigenvalues``,
``fft2`` order, λ₀ = 0). In whitened coordinates ξ ∈ ℝ^{R×R}, ξ ~ N(0, I),

    w₀ = L ξ = R · IFFT(√λ ⊙ FFT(ξ)),     Cov(L ξ) = C restricted to the grid,

exactly the generator's draw (``solvers.navier_stokes.sample_vorticity``); the prior term is ½‖ξ‖².

Likelihood. y = obs(w(T)) + σ ε, ε ~ N(0, I_m), obs the full grid (m = R²) or the sensor nodes,
with the file's noise model σ = η · RMS_grid(w(T)) (η = ``noise_level``). σ depends on the
unknown w₀, so the negative log posterior carries its log-determinant:

    Φ(ξ) = ½‖ξ‖² + ½‖obs(G(Lξ)) − y‖² / σ(ξ)² + m log σ(ξ),     G = the discrete dynamics w₀ ↦ w(T).

The MAP minimises Φ (4D-Var with the exact noise model); its gradient is by reverse-mode
AD through the time stepping (the discrete adjoint). The Fisher (expected Gauss–Newton)
information of the likelihood at ξ, used by the Laplace approximation, is

    F(ξ) = J̃ᵀJ̃ + g gᵀ,   J̃ = ∂obs(G(Lξ))/∂ξ / σ,   g = √(2m) ∂ log σ / ∂ξ,

i.e. JᵀJ of the map r(ξ) = [obs(G(Lξ)) / σ(ξ*) ; √(2m) log σ(ξ)] at the MAP ξ* (the mean
and the variance of y both depend on ξ; for y ~ N(μ(ξ), σ(ξ)² I_m) the Fisher matrix is
J_μᵀJ_μ/σ² + 2m ∇log σ ∇log σᵀ).
"""

from __future__ import annotations

import math

import torch

from pdegrow.reference.ns_forward import TorusP1Dynamics


def whitening_symbol(prior_eigenvalues: torch.Tensor) -> torch.Tensor:
    """R·√λ on the ``rfft2`` half-spectrum (R, R//2+1): w₀ = IRFFT2(symbol ⊙ RFFT2(ξ))."""
    r = prior_eigenvalues.shape[-1]
    return r * prior_eigenvalues[:, : r // 2 + 1].clamp_min(0.0).sqrt()


def apply_sqrt_prior(xi: torch.Tensor, symbol: torch.Tensor) -> torch.Tensor:
    """w₀ = L ξ (…, R, R); L is symmetric (a real even convolution), so Lᵀ = L."""
    r = xi.shape[-1]
    return torch.fft.irfft2(torch.fft.rfft2(xi) * symbol, s=(r, r))


def prior_pointwise_variance(symbol: torch.Tensor) -> float:
    """diag(L Lᵀ), the same at every grid point: Σ_x c(x)² with c = L δ₀ the kernel of L."""
    r = symbol.shape[0]
    delta = torch.zeros(r, r, dtype=symbol.real.dtype, device=symbol.device)
    delta[0, 0] = 1.0
    return float((apply_sqrt_prior(delta, symbol) ** 2).sum())


class NSPosterior:
    """Φ(ξ) of the module docstring for a batch of observations; ``sensor_index`` None = full field."""

    def __init__(self, dynamics: TorusP1Dynamics, prior_eigenvalues: torch.Tensor, noise_level: float,
                 sensor_index: torch.Tensor | None = None) -> None:
        self.dynamics = dynamics
        self.prior_eigenvalues = prior_eigenvalues.to(dynamics.dtype).to(dynamics.device)
        self.symbol = whitening_symbol(self.prior_eigenvalues)
        self.noise_level = float(noise_level)
        self.sensor_index = None if sensor_index is None else sensor_index.to(dynamics.device)
        r = dynamics.resolution
        self.n_obs = r * r if sensor_index is None else int(len(sensor_index))

    def initial_field(self, xi: torch.Tensor) -> torch.Tensor:
        return apply_sqrt_prior(xi, self.symbol)

    def observe(self, wT: torch.Tensor) -> torch.Tensor:
        """obs(w(T)) (…, m)."""
        flat = wT.flatten(-2)
        return flat if self.sensor_index is None else flat[..., self.sensor_index]

    def sigma(self, wT: torch.Tensor) -> torch.Tensor:
        """σ = η · RMS_grid(w(T)) (…,)."""
        return self.noise_level * wT.flatten(-2).pow(2).mean(-1).sqrt()

    def terms(self, xi: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parts of Φ per sample: ``prior`` ½‖ξ‖², ``misfit`` ½‖r‖²/σ², ``logdet`` m log σ, ``total``."""
        wT = self.dynamics(self.initial_field(xi))
        sig = self.sigma(wT)
        res = self.observe(wT) - y
        prior = 0.5 * xi.flatten(-2).pow(2).sum(-1)
        misfit = 0.5 * res.pow(2).sum(-1) / sig**2
        logdet = self.n_obs * torch.log(sig)
        return {"prior": prior, "misfit": misfit, "logdet": logdet, "total": prior + misfit + logdet,
                "sigma": sig, "wT": wT}

    def value_and_grad(self, xi: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Φ (B,) and ∂Φ/∂ξ (B, R, R), by reverse-mode AD (the discrete adjoint)."""
        with torch.enable_grad():
            x = xi.detach().requires_grad_(True)
            total = self.terms(x, y)["total"]
            (grad,) = torch.autograd.grad(total.sum(), x)
        return total.detach(), grad

    def fisher_map(self, sigma_star: torch.Tensor):
        """r(ξ) = [obs(G(Lξ)) / σ* ; √(2m) log σ(ξ)] (…, m+1), whose JᵀJ at the MAP is F (module doc).
        ``sigma_star`` broadcasts against the leading axes of ξ."""
        scale = math.sqrt(2.0 * self.n_obs)

        def r(xi: torch.Tensor) -> torch.Tensor:
            wT = self.dynamics(self.initial_field(xi))
            return torch.cat([self.observe(wT) / sigma_star[..., None],
                              scale * torch.log(self.sigma(wT))[..., None]], dim=-1)
        return r


def fourier_preconditioner(prior_eigenvalues: torch.Tensor, nu: float, final_time: float, n_obs: int,
                           sigma: torch.Tensor) -> torch.Tensor:
    """p_k = (1 + F_kk)^{−1/2} on the ``rfft2`` half-spectrum, (B, R, R//2+1), for σ (B,).

    F_kk = m λ_k e^{−2ν(2π|k|)²T} / σ² approximates the diagonal of the Fisher information in
    the Fourier basis of ξ: L scales mode k by R√λ_k, viscosity damps it by e^{−ν(2π|k|)²T},
    and m observations of R² grid values see a fraction m/R² of its energy. The MAP is then
    sought in η with ξ = IRFFT2(p ⊙ RFFT2(η)) (a fixed symmetric change of variables, so
    L-BFGS sees a Hessian with eigenvalues of order one instead of up to m λ₁/σ²).
    """
    r = prior_eigenvalues.shape[-1]
    k = torch.fft.fftfreq(r, d=1.0 / r, dtype=prior_eigenvalues.dtype, device=prior_eigenvalues.device)
    k2 = (k[None, :] ** 2 + k[:, None] ** 2)[:, : r // 2 + 1]
    lam = prior_eigenvalues[:, : r // 2 + 1].clamp_min(0.0)
    damp = torch.exp(-2.0 * nu * 4.0 * math.pi**2 * k2 * final_time)
    fkk = n_obs * lam * damp / sigma[:, None, None] ** 2
    return (1.0 + fkk).rsqrt()


def apply_multiplier(x: torch.Tensor, multiplier: torch.Tensor) -> torch.Tensor:
    """IRFFT2(multiplier ⊙ RFFT2(x)) for a real even multiplier on the half-spectrum."""
    r = x.shape[-1]
    return torch.fft.irfft2(torch.fft.rfft2(x) * multiplier, s=(r, r))
