"""The wind problem's pieces that need no FEniCSx: terrain, first guess, grid operators (numpy/scipy).

Terrain-following coordinates. The domain is [0, L]² × [h(x, y), H]; a point is
named by (x, y, σ) with the height fraction σ = (z − h)/(H − h) ∈ [0, 1], i.e.

    z(x, y, σ) = h(x, y) + σ (H − h(x, y)).

The regular (nx, ny, nz) grid of the targets is regular in (x, y) and in s with
σ = s^p (``vertical_stretch`` p ≥ 1 puts the levels closer near the ground).

Divergence on that grid (the chain rule of the coordinate change): with f_i, f_j,
f_k the index-space differences of a grid function (second-order central inside,
second-order one-sided at the ends) and x_i, y_j, z_i, z_j, z_k those of the
coordinates,

    ∂f/∂x = f_i/x_i − (z_i/(x_i z_k)) f_k,   ∂f/∂y = f_j/y_j − (z_j/(y_j z_k)) f_k,
    ∂f/∂z = f_k/z_k,      ∇·u = ∂u/∂x + ∂v/∂y + ∂w/∂z.

Every difference is linear, so a field linear in (x, y, z) is differentiated exactly
(its divergence too); on smooth fields the error is O(grid spacing²).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse


def gaussian_hills(x: np.ndarray, y: np.ndarray, hills: np.ndarray) -> np.ndarray:
    """h(x, y) = Σ_m a_m exp(−((x − x_m)² + (y − y_m)²) / (2 s_m²)); ``hills`` rows (x_m, y_m, a_m, s_m)."""
    h = np.zeros(np.broadcast(x, y).shape)
    for xm, ym, am, sm in np.asarray(hills, dtype=float).reshape(-1, 4):
        h = h + am * np.exp(-((x - xm) ** 2 + (y - ym) ** 2) / (2.0 * sm**2))
    return h


def gaussian_hills_normal(x: np.ndarray, y: np.ndarray, hills: np.ndarray) -> np.ndarray:
    """Outward (downward) unit normals (n, 3) of the ground z = h(x, y) of :func:`gaussian_hills`:
    n = (h_x, h_y, −1)/√(1 + h_x² + h_y²) with h_x = −Σ_m a_m (x − x_m)/s_m² e_m, h_y alike."""
    hx, hy = np.zeros(np.shape(x)), np.zeros(np.shape(x))
    for xm, ym, am, sm in np.asarray(hills, dtype=float).reshape(-1, 4):
        e = am * np.exp(-((x - xm) ** 2 + (y - ym) ** 2) / (2.0 * sm**2)) / sm**2
        hx, hy = hx - (x - xm) * e, hy - (y - ym) * e
    n = np.column_stack([hx, hy, -np.ones_like(hx)])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def draw_hills(rng: np.random.Generator, n_hills: int, length: float, height_range: tuple[float, float],
               width_range: tuple[float, float]) -> np.ndarray:
    """``n_hills`` rows (x_m, y_m, a_m, s_m): centres uniform in [0.2 L, 0.8 L]², heights, widths uniform."""
    centres = rng.uniform(0.2 * length, 0.8 * length, size=(n_hills, 2))
    heights = rng.uniform(*height_range, size=n_hills)
    widths = rng.uniform(*width_range, size=n_hills)
    return np.column_stack([centres, heights, widths])


def log_profile(height: np.ndarray, speed: float, reference_height: float, roughness: float) -> np.ndarray:
    """U(z_ag) = U_ref ln((z_ag + z₀)/z₀) / ln((z_ref + z₀)/z₀): the neutral log law through U_ref at z_ref
    (z_ag ≥ 0 the height above ground; U(0) = 0)."""
    return speed * np.log((np.maximum(height, 0.0) + roughness) / roughness) / math.log(
        (reference_height + roughness) / roughness)


def first_guess(points: np.ndarray, height: np.ndarray, speed: float, direction: float,
                reference_height: float, roughness: float, amplitude: float, wavevectors: np.ndarray,
                phases: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """u₀(x) = U(z_ag) [(cos θ, sin θ, 0) + ε Σ_m c_m cos(k_m·x + φ_m)] at ``points`` (n, 3); (n, 3).

    θ the direction the wind blows *towards* (radians from the x axis), ε = ``amplitude``,
    c_m ∈ ℝ³ the rows of ``coefficients``; the perturbation vanishes at the ground with U."""
    mean = np.array([math.cos(direction), math.sin(direction), 0.0])
    waves = np.cos(points @ np.asarray(wavevectors).T + phases)              # (n, M)
    shape = mean[None, :] + amplitude * waves @ np.asarray(coefficients)      # (n, 3)
    return log_profile(height, speed, reference_height, roughness)[:, None] * shape


def grid_levels(nz: int, stretch: float) -> np.ndarray:
    """σ_k = (k/(nz − 1))^p, k = 0 … nz − 1 (σ_0 = 0 the ground, σ_{nz−1} = 1 the top)."""
    return (np.arange(nz) / max(nz - 1, 1)) ** stretch


def _index_difference(n: int) -> scipy.sparse.csr_matrix:
    """d/d(index) on n points: (f_{i+1} − f_{i−1})/2 inside, (∓3f₀ ± 4f₁ ∓ f₂)/2 at the ends (n ≥ 3)."""
    if n < 3:
        raise ValueError(f"a grid axis needs at least 3 points for second-order differences, got {n}")
    d = scipy.sparse.lil_matrix((n, n))
    for i in range(1, n - 1):
        d[i, i - 1], d[i, i + 1] = -0.5, 0.5
    d[0, :3] = [-1.5, 2.0, -0.5]
    d[n - 1, n - 3:] = [0.5, -2.0, 1.5]
    return d.tocsr()


def divergence_operator(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> scipy.sparse.csr_matrix:
    """The grid divergence D with (D u)_p = (∇·u)(p) (module docstring), shape (P, 3P), P = nz·ny·nx.

    ``x`` (nx,), ``y`` (ny,) the horizontal ticks, ``z`` (nz, ny, nx) the heights of the grid
    points; u is flattened from (3, nz, ny, nx) in C order (component, level, row, column)."""
    nz, ny, nx = z.shape
    eye = scipy.sparse.identity
    di = scipy.sparse.kron(eye(nz * ny), _index_difference(nx), format="csr")
    dj = scipy.sparse.kron(scipy.sparse.kron(eye(nz), _index_difference(ny)), eye(nx), format="csr")
    dk = scipy.sparse.kron(_index_difference(nz), eye(ny * nx), format="csr")
    X = np.broadcast_to(x[None, None, :], z.shape).ravel()
    Y = np.broadcast_to(y[None, :, None], z.shape).ravel()
    Z = z.ravel()
    x_i, y_j = di @ X, dj @ Y
    z_i, z_j, z_k = di @ Z, dj @ Z, dk @ Z
    if np.any(z_k <= 0) or np.any(x_i <= 0) or np.any(y_j <= 0):
        raise ValueError("grid coordinates must increase along every axis")
    diag = scipy.sparse.diags
    ddx = diag(1.0 / x_i) @ di - diag(z_i / (x_i * z_k)) @ dk
    ddy = diag(1.0 / y_j) @ dj - diag(z_j / (y_j * z_k)) @ dk
    ddz = diag(1.0 / z_k) @ dk
    return scipy.sparse.hstack([ddx, ddy, ddz], format="csr")


def ground_normals(x: np.ndarray, y: np.ndarray, z_ground: np.ndarray) -> np.ndarray:
    """Outward unit normals (3, ny, nx) of the ground z = h(x, y) at the grid columns:
    n = (h_x, h_y, −1)/√(1 + h_x² + h_y²), h_x, h_y by the grid's second-order differences."""
    hx = _index_difference(len(x)) @ z_ground.T / (_index_difference(len(x)) @ x)[:, None]
    hy = _index_difference(len(y)) @ z_ground / (_index_difference(len(y)) @ y)[:, None]
    n = np.stack([hx.T, hy, -np.ones_like(z_ground)])
    return n / np.linalg.norm(n, axis=0, keepdims=True)
