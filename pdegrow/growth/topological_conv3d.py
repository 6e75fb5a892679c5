"""The topological derivative's operator for 3-D conv blocks: patches k×k×k, the sum over voxels.

Inserting σ(ε(conv3d(x; W) + b)) ('same' padding, σ = 2·SiLU − tanh) at depth t of a residual
network on volumes x (S, C, D, H, W) changes the loss by −(ε²/2) Σ_r w̃_rᵀ A_r w̃_r + O(ε³) with

    A_r = σ″(0) Σ_s Σ_p λ_{s,r,p} x̃_{s,p} x̃_{s,p}ᵀ,    x̃_{s,p} = [patch_p(x_s) (C·k³); 1],

p running over the D·H·W voxels and λ = −∂J/∂x_t the costate (Krishnanunni, Bui-Thanh, Dawson,
arXiv 2502.06885; the convolutional case as in 2-D with one more axis, ``docs/growth.md``).
:class:`Conv3dFeatureOperator` applies every A_r without forming it (a 3-D convolution and a
weight-gradient convolution); :func:`conv3d_patches` gives the patches for the dense blocks. Both are
the d-dimensional code of ``topological_operators`` restricted to volumes.
"""

from __future__ import annotations

from torch import Tensor

from pdegrow.growth.topological_operators import (
    SIGMA_SECOND_DERIVATIVE,
    ConvFeatureOperator,
    _pad,
    conv_patches,
)

__all__ = ["Conv3dFeatureOperator", "conv3d_patches", "pad3d"]


def pad3d(x: Tensor, p: int, padding_mode: str) -> Tensor:
    """Pad (S, C, D, H, W) by p on each side of the three spatial axes as nn.Conv3d(padding_mode=…) does."""
    if x.ndim != 5:
        raise ValueError(f"volumes must be (S, C, D, H, W), got {tuple(x.shape)}")
    return _pad(x, p, padding_mode)


def conv3d_patches(x: Tensor, kernel_size: int, padding_mode: str = "zeros") -> Tensor:
    """'Same'-padded k×k×k patches of x (S, C, D, H, W) as rows (S·D·H·W, C·k³), sample-major, voxels in
    C order; the column order (c, i, j, l) is that of ``conv3d.weight.view(C_out, -1)``, so
    ``conv3d_patches(x) @ W.view(C_out, -1).T + b`` is the convolution, voxel by voxel."""
    if x.ndim != 5:
        raise ValueError(f"volumes must be (S, C, D, H, W), got {tuple(x.shape)}")
    return conv_patches(x, kernel_size, padding_mode)


class Conv3dFeatureOperator(ConvFeatureOperator):
    """Matrix-free {A_r} of the 3-D conv block σ(ε(conv3d(x; W) + b)), states/costates (S, C, D, H, W).

    Block r is output channel r, w̃_r = [W_r.flatten() (C·k³); b_r].  For k blocks at once:
    Y = conv3d(x; V_W) + V_b, Z = λ[:, idx] ⊙ Y, A V = [∂/∂W Σ Z·conv3d(x; W); Σ Z] — O(S·C·D·H·W)
    memory, the patches never formed; :meth:`blocks` forms them (in sample chunks) for the dense solver.
    """

    def __init__(self, x: Tensor, lam: Tensor, kernel_size: int = 3, *, padding_mode: str = "zeros",
                 sigma2: float = SIGMA_SECOND_DERIVATIVE) -> None:
        if x.ndim != 5 or lam.ndim != 5:
            raise ValueError(f"states {tuple(x.shape)} / costates {tuple(lam.shape)} must be (S, C, D, H, W)")
        super().__init__(x, lam, kernel_size, padding_mode=padding_mode, sigma2=sigma2)
