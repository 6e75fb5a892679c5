"""The Navier–Stokes data sets' discrete dynamics, differentiable, in torch (no FEniCSx).

``pdegrow generate navier-stokes`` (degree 1) solves the vorticity equation

    ∂ₜw + u·∇w = νΔw + f,   u = ∇^⊥ψ = (∂ψ/∂y, −∂ψ/∂x),   −Δψ = w   on the unit torus

with P1 elements on the uniform R × R periodic grid cut into triangles by the diagonals
(i, j)–(i+1, j+1) ("right" diagonals). On that mesh every constant operator is a
convolution on the grid, hence diagonal in the discrete Fourier basis, and the
advection form is a stencil. This module writes the same discrete scheme with those
exact symbols, so from the stored w₀ it reproduces the stored w(T) up to round-off
(the LU solves of the generator become divisions by Fourier symbols):

    mass M:       (Mw)_p = h²/12 (6 w_p + Σ_{6 edge neighbours} w_q)   (neighbours ±x, ±y, ±(x+y))
    stiffness K:  (Kw)_p = 4 w_p − Σ_{±x, ±y} w_q                      (the 5-point Laplacian)
    stream:       K ψ = M w − w̄ M1,  Σ ψ = 0
    advection:    N(w)_p = Σ_{cells c ∋ p} |c|/3 (∂_yψ ∂_xw − ∂_xψ ∂_yw)|_c  (P1: ∇ constant per cell)
    forcing:      F = M f (f the nodal values, ``operators/forcing``)

and, with A = M + ½Δtν K, B = M − ½Δtν K, Crank–Nicolson diffusion with
Adams–Bashforth-2 advection (first step Heun) or Heun advection throughout:

    cn_ab2:   A wⁿ⁺¹ = B wⁿ + Δt F − Δt (3/2 N(wⁿ) − 1/2 N(wⁿ⁻¹))
    cn_heun:  A w* = B wⁿ + Δt F − Δt N(wⁿ),   A wⁿ⁺¹ = B wⁿ + Δt F − ½Δt (N(wⁿ) + N(w*)).

Fields are (…, R, R) tensors ``field[j, i] = w(i/R, j/R)`` as in the data files; every
function is batched over leading axes, differentiable (reverse and forward mode) and
device-agnostic. The state is marched in Fourier space (three real FFTs per step).
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint

from pdegrow.errors import PdegrowError

TIME_SCHEMES = ("cn_ab2", "cn_heun")


def _shift(u: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(S u)[j, i] = u[j + dy, i + dx] (periodic)."""
    return torch.roll(u, shifts=(-dy, -dx), dims=(-2, -1))


def mass_apply(w: torch.Tensor) -> torch.Tensor:
    """M w, the consistent P1 mass matrix of the right-diagonal periodic grid, times R² (= h⁻²)."""
    nb = (_shift(w, 0, 1) + _shift(w, 0, -1) + _shift(w, 1, 0) + _shift(w, -1, 0)
          + _shift(w, 1, 1) + _shift(w, -1, -1))
    return (6.0 * w + nb) / 12.0


def stiffness_apply(w: torch.Tensor) -> torch.Tensor:
    """K w, the P1 stiffness matrix of the right-diagonal periodic grid (the 5-point Laplacian stencil)."""
    return 4.0 * w - _shift(w, 0, 1) - _shift(w, 0, -1) - _shift(w, 1, 0) - _shift(w, -1, 0)


def symbol(apply, resolution: int, dtype: torch.dtype = torch.float64,
           device: torch.device | str | None = None) -> torch.Tensor:
    """The ``rfft2`` multiplier (R, R//2+1) of a translation-invariant operator: rfft2(op(δ₀))."""
    delta = torch.zeros(resolution, resolution, dtype=dtype, device=device)
    delta[0, 0] = 1.0
    return torch.fft.rfft2(apply(delta)).real          # symmetric stencils: real symbols


def advection(psi: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """N(w)_p = Σ_{cells c ∋ p} |c|/3 (∂_yψ ∂_xw − ∂_xψ ∂_yw)|_c for P1 ψ, w on the grid.

    Square (i, j) has the cells T₁ = {(i,j), (i+1,j), (i+1,j+1)} and T₂ = {(i,j), (i,j+1),
    (i+1,j+1)}; on T₁ ∂ₓ = (u_{i+1,j} − u_{i,j})/h, ∂_y = (u_{i+1,j+1} − u_{i+1,j})/h, on T₂
    ∂ₓ = (u_{i+1,j+1} − u_{i,j+1})/h, ∂_y = (u_{i,j+1} − u_{i,j})/h. |c| = h²/2, so h drops out.
    """
    def cell_terms(a):                                  # differences ×h on T₁ and T₂ of square (i, j)
        a10, a01, a11 = _shift(a, 0, 1), _shift(a, 1, 0), _shift(a, 1, 1)
        return (a10 - a, a11 - a10), (a11 - a01, a01 - a)
    (px1, py1), (px2, py2) = cell_terms(psi)
    (wx1, wy1), (wx2, wy2) = cell_terms(w)
    q1 = py1 * wx1 - px1 * wy1                          # h² (u·∇w) on T₁ of each square
    q2 = py2 * wx2 - px2 * wy2
    # node (i, j) is a vertex of T₁ in squares (i,j), (i−1,j), (i−1,j−1); of T₂ in (i,j), (i,j−1), (i−1,j−1)
    return (q1 + _shift(q1, 0, -1) + q2 + _shift(q2, -1, 0) + _shift(q1 + q2, -1, -1)) / 6.0


class TorusP1Dynamics:
    """The generator's discrete dynamics w₀ ↦ w(T) on the R × R torus grid (P1, CN + AB2/Heun).

    ``forcing``: (R, R) nodal f (``operators/forcing``). Symbols are built once on
    ``device`` in ``dtype``. ``checkpoint_every`` steps are recomputed in the backward
    pass instead of stored (memory O(n_steps / checkpoint_every + checkpoint_every)).
    """

    def __init__(self, resolution: int, nu: float, dt: float, n_steps: int, forcing: torch.Tensor,
                 time_scheme: str = "cn_ab2", checkpoint_every: int = 20,
                 dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> None:
        if time_scheme not in TIME_SCHEMES:
            raise PdegrowError(f"time scheme {time_scheme!r} is not one of {', '.join(TIME_SCHEMES)}")
        if n_steps < 1:
            raise PdegrowError(f"n_steps must be positive, got {n_steps}")
        self.resolution, self.nu, self.dt, self.n_steps = resolution, float(nu), float(dt), int(n_steps)
        self.time_scheme, self.checkpoint_every = time_scheme, max(1, int(checkpoint_every))
        self.dtype, self.device = dtype, torch.device(device) if device is not None else torch.device("cpu")
        m_hat = symbol(mass_apply, resolution, dtype, self.device)          # ×R² (h² scaled out)
        k_hat = symbol(stiffness_apply, resolution, dtype, self.device)
        scale = float(resolution) ** 2                                     # M = h² m_hat
        self.a_hat = m_hat / scale + 0.5 * self.dt * self.nu * k_hat       # A = M + ½Δtν K
        self.b_hat = m_hat / scale - 0.5 * self.dt * self.nu * k_hat
        stream = torch.where(k_hat > 0, m_hat / scale / torch.where(k_hat > 0, k_hat, 1.0), 0.0)
        self.stream_hat = stream                                           # ψ̂ = M̂ŵ / K̂, ψ̂₀ = 0
        f = torch.as_tensor(forcing, dtype=dtype, device=self.device)
        self.f_hat = torch.fft.rfft2(f) * m_hat / scale                    # F̂ = M̂ f̂
        # complex copies of the real multipliers: no type promotion, and A⁻¹ as a product
        # (the backward of a complex division is several times slower than that of a product)
        cplx = self.f_hat.dtype
        self._a_inv, self._b = (1.0 / self.a_hat).to(cplx), self.b_hat.to(cplx)
        self._stream = self.stream_hat.to(cplx)

    # -- one evaluation of the advection, in Fourier space
    def _advection_hat(self, w_hat: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        w = torch.fft.irfft2(w_hat, s=(r, r))
        psi = torch.fft.irfft2(w_hat * self._stream, s=(r, r))
        return torch.fft.rfft2(advection(psi, w))

    def _solve(self, rhs_hat: torch.Tensor) -> torch.Tensor:
        return rhs_hat * self._a_inv

    def _heun(self, w_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dt = self.dt
        n1 = self._advection_hat(w_hat)
        base = self._b * w_hat + dt * self.f_hat
        w_star = self._solve(base - dt * n1)
        n2 = self._advection_hat(w_star)
        return self._solve(base - 0.5 * dt * (n1 + n2)), n1

    def _ab2(self, w_hat: torch.Tensor, n_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dt = self.dt
        n_now = self._advection_hat(w_hat)
        rhs = self._b * w_hat + dt * self.f_hat - dt * (1.5 * n_now - 0.5 * n_prev)
        return self._solve(rhs), n_now

    def _segment(self, w_hat: torch.Tensor, n_prev: torch.Tensor, first: int, last: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps first+1 … last (1-based step numbers)."""
        for n in range(first + 1, last + 1):
            if self.time_scheme == "cn_ab2" and n > 1:
                w_hat, n_prev = self._ab2(w_hat, n_prev)
            else:
                w_hat, n_prev = self._heun(w_hat)
        return w_hat, n_prev

    def __call__(self, w0: torch.Tensor, n_steps: int | None = None, checkpoint: bool | None = None
                 ) -> torch.Tensor:
        """w(n_steps·Δt) from w₀ (…, R, R); ``checkpoint`` (default: when grad is on) trades
        recomputation for memory in the backward pass."""
        r = self.resolution
        if w0.shape[-2:] != (r, r):
            raise PdegrowError(f"initial vorticity has shape {tuple(w0.shape)}, expected (…, {r}, {r})")
        n_steps = self.n_steps if n_steps is None else int(n_steps)
        if checkpoint is None:
            checkpoint = torch.is_grad_enabled() and w0.requires_grad
        w_hat = torch.fft.rfft2(w0.to(self.dtype))
        n_prev = torch.zeros_like(w_hat)
        done = 0
        while done < n_steps:
            last = min(done + self.checkpoint_every, n_steps)
            if checkpoint:
                w_hat, n_prev = torch.utils.checkpoint.checkpoint(
                    self._segment, w_hat, n_prev, done, last, use_reentrant=False)
            else:
                w_hat, n_prev = self._segment(w_hat, n_prev, done, last)
            done = last
        return torch.fft.irfft2(w_hat, s=(r, r))
