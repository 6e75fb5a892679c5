"""The topological derivative's operator for 3-D conv blocks: patches k×k×k, the sum over voxels.

Inserting σ(ε(conv3d(x; W) + b)) ('same' padding, σ = 2·SiLU − tanh) at depth t of a residual
network on volumes x (S, C, D, H, W) changes the loss by −(ε²/2) Σ_r w̃_rᵀ A_r w̃_r + O(ε³) with

    A_r = σ″(0) Σ_s Σ_p λ_{s,r,p} x̃_{s,p} x̃_{s,p}ᵀ,    x̃_{s,p} = [patch_p(x_s) (C·k³); 1],

p running over the D·H·W voxels and λ = −∂J/∂x_t the costate (Krishnanunni, Bui-Thanh, Dawson,
arXiv 2502.06885; the convolutional case as in 2-D with one more axis, ``docs/growth.md``).
:class:`Conv3dFeatureOperator` applies every A_r without forming it (a 3-D convolution and a
weight-gradient convolution); :func:`conv3d_patches` gives the patches for the dense blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pdegrow.growth.topological_operators import (
    SIGMA_SECOND_DERIVATIVE,
    DepthOperator,
    augment,
    form_blocks,
)

__all__ = ["Conv3dFeatureOperator", "conv3d_patches", "pad3d"]


def pad3d(x: Tensor, p: int, padding_mode: str) -> Tensor:
    """Pad (S, C, D, H, W) by p on each side of the three spatial axes as nn.Conv3d(padding_mode=…) does."""
    if p == 0:
        return x
    if padding_mode == "zeros":
        return F.pad(x, (p,) * 6)
    if padding_mode in ("circular", "reflect", "replicate"):
        return F.pad(x, (p,) * 6, mode=padding_mode)
    raise ValueError(f"unknown padding_mode {padding_mode!r}")


def _patch_rows(xp: Tensor, k: int) -> Tensor:
    """Patches of an already padded (S, C, D+2p, H+2p, W+2p) as rows (S·D·H·W, C·k³), sample-major."""
    c = xp.shape[1]
    u = xp.unfold(2, k, 1).unfold(3, k, 1).unfold(4, k, 1)        # (S, C, D, H, W, k, k, k)
    return u.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(-1, c * k**3)


def conv3d_patches(x: Tensor, kernel_size: int, padding_mode: str = "zeros") -> Tensor:
    """'Same'-padded k×k×k patches of x (S, C, D, H, W) as rows (S·D·H·W, C·k³), sample-major, voxels in
    C order; the column order (c, i, j, l) is that of ``conv3d.weight.view(C_out, -1)``, so
    ``conv3d_patches(x) @ W.view(C_out, -1).T + b`` is the convolution, voxel by voxel."""
    return _patch_rows(pad3d(x, kernel_size // 2, padding_mode), kernel_size)


class Conv3dFeatureOperator(DepthOperator):
    """Matrix-free {A_r} of the 3-D conv block σ(ε(conv3d(x; W) + b)), states/costates (S, C, D, H, W).

    Block r is output channel r, w̃_r = [W_r.flatten() (C·k³); b_r].  For k blocks at once:
    Y = conv3d(x; V_W) + V_b, Z = λ[:, idx] ⊙ Y, A V = [∂/∂W Σ Z·conv3d(x; W); Σ Z] — O(S·C·D·H·W)
    memory, the patches never formed; :meth:`blocks` forms them (in sample chunks) for the dense solver.
    """

    def __init__(self, x: Tensor, lam: Tensor, kernel_size: int = 3, *, padding_mode: str = "zeros",
                 sigma2: float = SIGMA_SECOND_DERIVATIVE) -> None:
        if x.ndim != 5 or lam.ndim != 5 or lam.shape[0] != x.shape[0] or lam.shape[2:] != x.shape[2:]:
            raise ValueError(f"states {tuple(x.shape)} / costates {tuple(lam.shape)} must be (S, C, D, H, W)")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.x = self.reference = x
        self.lam = lam
        self.features = (x, lam)
        self.k = kernel_size
        self.sigma2 = sigma2
        self.padding_mode = padding_mode
        self.xp = pad3d(x, kernel_size // 2, padding_mode)
        self.channels_in = x.shape[1]
        self.n_blocks = lam.shape[1]
        self.dim = self.channels_in * kernel_size**3 + 1

    def matvec(self, v: Tensor, idx: Tensor) -> Tensor:
        k = v.shape[0]
        wshape = (k, self.channels_in, self.k, self.k, self.k)
        y = F.conv3d(self.xp, v[:, :-1].reshape(wshape), v[:, -1])
        lam = self.lam if idx.numel() == self.n_blocks else self.lam[:, idx]
        z = y.mul_(lam)
        gw = torch.nn.grad.conv3d_weight(self.xp, wshape, z)
        gb = z.sum(dim=(0, 2, 3, 4))
        return torch.cat([gw.reshape(k, -1), gb[:, None]], dim=1).mul_(self.sigma2)

    def blocks(self, chunk_samples: int | None = None) -> Tensor:
        s = self.x.shape[0]
        voxels = self.x.shape[2] * self.x.shape[3] * self.x.shape[4]
        if chunk_samples is None:
            chunk_samples = max(1, (1 << 22) // max(1, voxels * self.dim))
        a = torch.zeros(self.n_blocks, self.dim, self.dim, dtype=self.dtype, device=self.device)
        for i in range(0, s, chunk_samples):
            patches = augment(_patch_rows(self.xp[i : i + chunk_samples], self.k))
            lam = self.lam[i : i + chunk_samples].permute(0, 2, 3, 4, 1).reshape(-1, self.n_blocks)
            a += form_blocks(patches, lam, sigma2=self.sigma2)
        return a
