"""The operators of the topological derivative: A_r = σ″(0) Σ_s λ_{s,r} x̃_s x̃_sᵀ, dense or matrix-free.

For the insertion of σ(ε(W x + b)) at depth t (``pdegrow.growth.topological``, ``docs/growth.md``)
every output unit r has the (n+1)×(n+1) block A_r; :class:`BlockOperator` stores the blocks,
:class:`DenseFeatureOperator` and :class:`ConvFeatureOperator` apply them without forming them
(A_r v = X̃ᵀ(λ_r ⊙ X̃ v): O(S·n) memory; for convolutions x̃ are the k×k patches, summed over
positions too). :func:`top_eigenpairs` finds the largest eigenvalue of every block (dense or
batched Lanczos, :func:`choose_method`). Pure functions and small classes on tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pdegrow.growth.eigensolvers import TopEigenpairs, dense_top_eigenpairs, lanczos_top_eigenpairs

#: σ″(0) of the admissible activation σ = 2·SiLU − tanh.
SIGMA_SECOND_DERIVATIVE = 1.0

__all__ = ["SIGMA_SECOND_DERIVATIVE", "BlockOperator", "ConvFeatureOperator", "DenseFeatureOperator",
           "DepthOperator", "Reduce", "ShardedOperator", "accumulate_operators", "augment", "choose_method",
           "conv_patches", "form_blocks", "top_eigenpairs"]

#: The in-place sum over processes of a list of tensors (``GrowthContext.share``); None: one process.
Reduce = Callable[[list[Tensor]], None]

# --------------------------------------------------------------------------- features and blocks


def augment(x: Tensor) -> Tensor:
    """x̃ = [x; 1] along the last axis: (P, n) → (P, n + 1)."""
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def _pad(x: Tensor, p: int, padding_mode: str) -> Tensor:
    """Pad (S, C, *spatial) by p on each side of every spatial axis, as nn.Conv2d/3d(padding_mode=…)."""
    if p == 0:
        return x
    width = (p,) * (2 * (x.ndim - 2))
    if padding_mode == "zeros":
        return F.pad(x, width)
    if padding_mode in ("circular", "reflect", "replicate"):
        return F.pad(x, width, mode=padding_mode)
    raise ValueError(f"unknown padding_mode {padding_mode!r}")


def _unfold_rows(xp: Tensor, kernel_size: int) -> Tensor:
    """Patches of an already padded (S, C, H+2p, W+2p) or (S, C, D+2p, H+2p, W+2p) as rows
    (S·voxels, C·k^d), sample-major, columns in the order of ``conv.weight.view(C_out, -1)``."""
    c, k = xp.shape[1], kernel_size
    if xp.ndim == 4:
        return F.unfold(xp, k).transpose(1, 2).reshape(-1, c * k * k)  # F.unfold: (S, C·k², H·W)
    u = xp.unfold(2, k, 1).unfold(3, k, 1).unfold(4, k, 1)  # (S, C, D, H, W, k, k, k)
    return u.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(-1, c * k**3)


def conv_patches(x: Tensor, kernel_size: int, padding_mode: str = "zeros") -> Tensor:
    """Unfolded 'same'-padded patches of x (S, C, H, W) or (S, C, D, H, W) as rows (S·voxels, C·k^d),
    sample-major.

    The column order (c, i, j[, l]) is that of ``conv.weight.view(C_out, -1)``, so
    ``augment(conv_patches(x)) @ [W.view(C_out, -1), b].T`` is the convolution, voxel by voxel.
    """
    return _unfold_rows(_pad(x, kernel_size // 2, padding_mode), kernel_size)


def form_blocks(
    x_aug: Tensor, lam: Tensor, *, sigma2: float = SIGMA_SECOND_DERIVATIVE, chunk_elems: int = 1 << 24
) -> Tensor:
    """A_r = σ″(0) Σ_p λ_{p,r} x̃_p x̃_pᵀ for all r: (P, d), (P, n) → (n, d, d).

    One GEMM per chunk of rows: with W_p = λ_p ⊗ x̃_p (n·d entries),
    A.view(n·d, d) += Wᵀ X̃; the temporary W stays below ``chunk_elems``
    entries.  Cost 2·P·n·d² flops, memory n·d² (+ the chunk).
    """
    p, d = x_aug.shape
    n = lam.shape[1]
    a = torch.zeros(n * d, d, dtype=x_aug.dtype, device=x_aug.device)
    rows = max(1, chunk_elems // max(1, n * d))
    for s in range(0, p, rows):
        xs = x_aug[s : s + rows]
        w = (lam[s : s + rows, :, None] * xs[:, None, :]).reshape(xs.shape[0], n * d)
        a.addmm_(w.T, xs)
    a = a.view(n, d, d)
    a = 0.5 * (a + a.transpose(1, 2))
    return a * sigma2 if sigma2 != 1.0 else a


class DepthOperator:
    """The block-diagonal operator {A_r} at one depth, as dense blocks or matrix-free.

    Subclasses give ``n_blocks`` (output units), ``dim`` (fan-in + 1), ``reference`` (a
    tensor whose dtype and device the operator works in), ``matvec(V, idx)`` =
    [A_{idx_i} V_i]_i and ``blocks()`` = (n, d, d).  ``features`` is the per-sample
    (states x, costates λ) it was built from (λ carrying J's 1/S), when kept: the
    feature operators always hold them, stored blocks only with
    ``accumulate_depth_operators(keep_features=True)``.
    """

    n_blocks: int
    dim: int
    reference: Tensor
    features: tuple[Tensor, Tensor] | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.reference.dtype

    @property
    def device(self) -> torch.device:
        return self.reference.device

    def matvec(self, v: Tensor, idx: Tensor) -> Tensor:
        raise NotImplementedError

    def blocks(self) -> Tensor:
        raise NotImplementedError


class BlockOperator(DepthOperator):
    """Stored dense blocks A (n, d, d) (e.g. accumulated batch by batch)."""

    def __init__(self, blocks: Tensor) -> None:
        self.a = self.reference = blocks
        self.n_blocks, self.dim = blocks.shape[0], blocks.shape[1]

    def matvec(self, v: Tensor, idx: Tensor) -> Tensor:
        return torch.bmm(self.a[idx], v.unsqueeze(-1)).squeeze(-1)

    def blocks(self) -> Tensor:
        return self.a


class DenseFeatureOperator(DepthOperator):
    """Matrix-free A_r v = σ″(0) X̃ᵀ(λ_r ⊙ X̃ v) from states X (P, n_in) and costates Λ (P, n).

    For k blocks at once: Y = X̃ Vᵀ (P, k), Z = Λ[:, idx] ⊙ Y, AV = Zᵀ X̃ — two
    GEMMs, 4·P·k·d flops, no d×d matrix.  Memory: X̃ and Λ, O(P·n).
    """

    def __init__(self, x: Tensor, lam: Tensor, *, sigma2: float = SIGMA_SECOND_DERIVATIVE) -> None:
        if x.ndim != 2 or lam.ndim != 2 or x.shape[0] != lam.shape[0]:
            raise ValueError(f"states {tuple(x.shape)} and costates {tuple(lam.shape)} must be (P, n)")
        self.x_aug = self.reference = augment(x)
        self.lam = lam
        self.features = (x, lam)
        self.sigma2 = sigma2
        self.n_blocks = lam.shape[1]
        self.dim = self.x_aug.shape[1]

    def matvec(self, v: Tensor, idx: Tensor) -> Tensor:
        y = self.x_aug @ v.T
        lam = self.lam if idx.numel() == self.n_blocks else self.lam[:, idx]
        z = y.mul_(lam)
        return (z.T @ self.x_aug).mul_(self.sigma2)

    def blocks(self) -> Tensor:
        return form_blocks(self.x_aug, self.lam, sigma2=self.sigma2)


_CONVOLUTIONS = {2: (F.conv2d, torch.nn.grad.conv2d_weight), 3: (F.conv3d, torch.nn.grad.conv3d_weight)}


class ConvFeatureOperator(DepthOperator):
    """Matrix-free operator for the conv block σ(ε(conv(x; W) + b)), 'same' padding, 2-D or 3-D.

    States x (S, C, H, W) or (S, C, D, H, W), costates λ of the same shape; block r is the output
    channel r, its vector w̃_r = [W_r.flatten() (C·k^d); b_r].  For k blocks:
    Y = conv(x; V_W) + V_b (S, k, *spatial), Z = λ[:, idx] ⊙ Y, and
    AV = [∂/∂W Σ Z·conv(x; W) ; Σ Z] — a forward and a weight-gradient
    convolution; the unfolded patches (S·voxels × C·k^d) are never formed.
    """

    def __init__(
        self,
        x: Tensor,
        lam: Tensor,
        kernel_size: int = 3,
        *,
        padding_mode: str = "zeros",
        sigma2: float = SIGMA_SECOND_DERIVATIVE,
    ) -> None:
        if x.ndim not in (4, 5) or lam.shape[:1] + lam.shape[2:] != x.shape[:1] + x.shape[2:]:
            shapes = f"states {tuple(x.shape)} / costates {tuple(lam.shape)}"
            raise ValueError(f"{shapes} must be (S, C, H, W) or (S, C, D, H, W)")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.x = self.reference = x
        self.lam = lam
        self.features = (x, lam)
        self.k = kernel_size
        self.sigma2 = sigma2
        self.padding_mode = padding_mode
        self.spatial_dims = x.ndim - 2
        self.xp = _pad(x, kernel_size // 2, padding_mode)
        self.channels_in = x.shape[1]
        self.n_blocks = lam.shape[1]
        self.dim = self.channels_in * kernel_size**self.spatial_dims + 1

    def matvec(self, v: Tensor, idx: Tensor) -> Tensor:
        k = v.shape[0]
        conv, conv_weight_grad = _CONVOLUTIONS[self.spatial_dims]
        wshape = (k, self.channels_in) + (self.k,) * self.spatial_dims
        y = conv(self.xp, v[:, :-1].reshape(wshape), v[:, -1])
        lam = self.lam if idx.numel() == self.n_blocks else self.lam[:, idx]
        z = y.mul_(lam)
        gw = conv_weight_grad(self.xp, wshape, z)
        gb = z.sum(dim=(0, *range(2, z.ndim)))
        return torch.cat([gw.reshape(k, -1), gb[:, None]], dim=1).mul_(self.sigma2)

    def blocks(self, chunk_samples: int | None = None) -> Tensor:
        s = self.x.shape[0]
        voxels = self.x[0, 0].numel()
        if chunk_samples is None:
            chunk_samples = max(1, (1 << 22) // max(1, voxels * self.dim))
        channels_last = (0, *range(2, self.x.ndim), 1)
        a = torch.zeros(self.n_blocks, self.dim, self.dim, dtype=self.dtype, device=self.device)
        for i in range(0, s, chunk_samples):
            patches = augment(_unfold_rows(self.xp[i : i + chunk_samples], self.k))
            lam = self.lam[i : i + chunk_samples].permute(channels_last).reshape(-1, self.n_blocks)
            a += form_blocks(patches, lam, sigma2=self.sigma2)
        return a


class ShardedOperator(DepthOperator):
    """A feature operator built from this process's share of the samples, summed over processes.

    A_r = σ″(0) Σ_s λ_{s,r} x̃_s x̃_sᵀ is a sum over samples, so with the samples split over
    processes A_r = Σ_ranks A_r^(rank): every product (and the dense blocks) is computed on the
    local share and all-reduced (``reduce``), so every process holds the same A_r v and the
    eigen-solver takes the same steps everywhere.  ``features`` stay local (this share's states
    and costates).  With ``collective`` set (a :class:`pdegrow.training.collective.Collective`)
    the Lanczos solve splits the units over the processes instead
    (:func:`pdegrow.growth.topological_split.split_top_eigenpairs`), rebuilding the operator of
    all samples with ``rebuild(X, Λ)``.
    """

    collective: Any = None

    def __init__(self, local: DepthOperator, reduce: Reduce,
                 rebuild: Callable[[Tensor, Tensor], DepthOperator] | None = None) -> None:
        self.local, self.reduce, self.rebuild = local, reduce, rebuild
        self.n_blocks, self.dim, self.reference = local.n_blocks, local.dim, local.reference
        self.features = local.features

    def matvec(self, v: Tensor, idx: Tensor) -> Tensor:
        out = self.local.matvec(v, idx)
        self.reduce([out])
        return out

    def blocks(self) -> Tensor:
        a = self.local.blocks().clone()
        self.reduce([a])
        return a


# --------------------------------------------------------------------------- eigen-solve


def choose_method(
    n_blocks: int, dim: int, *, max_dense_dim: int = 65, max_dense_bytes: int = 1 << 28, itemsize: int = 4
) -> str:
    """"dense" if d ≤ max_dense_dim and n·d² entries fit ``max_dense_bytes``, else "lanczos".

    Forming the blocks costs ~2·P·n·d² flops against ~4·P·n·d per Lanczos
    step, so dense wins below d ≈ 2 × (Lanczos steps); on states and costates
    of trained networks Lanczos converges in ~10–20 steps (the top eigenvalue
    is well separated), and benchmarks/bench_topological.py measures the
    crossover near width 64 on CPU.  Dense memory is n·d².
    """
    if dim <= max_dense_dim and n_blocks * dim * dim * itemsize <= max_dense_bytes:
        return "dense"
    return "lanczos"


def top_eigenpairs(
    op: DepthOperator | Tensor,
    *,
    method: str = "auto",
    tol: float | None = None,
    max_basis: int | None = None,
    max_restarts: int = 3,
    seed: int = 0,
) -> TopEigenpairs:
    """Largest algebraic eigenvalue and eigenvector of every block A_r at one depth.

    ``op`` is a :class:`DepthOperator` or stacked dense blocks (n, d, d).
    ``method``: "dense" (form the blocks, batched eigh), "lanczos" (matrix-free
    batched Lanczos, see :func:`~pdegrow.growth.eigensolvers.lanczos_top_eigenpairs`)
    or "auto" (:func:`choose_method`; stored blocks are always solved densely).
    A dense-network feature operator with at most half as many rows as dimensions is solved
    by Lanczos in the row space of X̃ (:mod:`pdegrow.growth.topological_rowspace`).
    All linear algebra runs in torch on the operator's device and dtype.
    """
    if isinstance(op, Tensor):
        op = BlockOperator(op)
    if method == "auto":
        if isinstance(op, BlockOperator):
            method = "dense"
        else:
            itemsize = torch.empty((), dtype=op.dtype).element_size()
            method = choose_method(op.n_blocks, op.dim, itemsize=itemsize)
    if method == "dense":
        return dense_top_eigenpairs(op.blocks())
    if method == "lanczos":
        if isinstance(op, ShardedOperator) and op.collective is not None and op.rebuild is not None:
            from pdegrow.growth.topological_split import split_top_eigenpairs

            return split_top_eigenpairs(op, tol=tol, max_basis=max_basis, max_restarts=max_restarts,
                                        seed=seed)
        if isinstance(op, DenseFeatureOperator) and op.x_aug.shape[0] * 2 <= op.dim:
            # few rows: the same eigenpairs from the q ≤ P dimensional row space of X̃
            from pdegrow.growth.topological_rowspace import row_space_top_eigenpairs

            return row_space_top_eigenpairs(op.x_aug, op.lam, sigma2=op.sigma2, tol=tol, max_basis=max_basis,
                                            max_restarts=max_restarts, seed=seed)
        return lanczos_top_eigenpairs(
            op.matvec,
            op.n_blocks,
            op.dim,
            dtype=op.dtype,
            device=op.device,
            tol=tol,
            max_basis=max_basis,
            max_restarts=max_restarts,
            seed=seed,
        )
    raise ValueError(f"unknown eigen-solver method {method!r}: expected 'auto', 'dense' or 'lanczos'")


# --------------------------------------------------------------------------- accumulation over batches


def accumulate_operators(
    passes: Iterable[tuple[Sequence[Tensor], Tensor, int]],
    *,
    pick_mode: Callable[[Tensor], str],
    rows: Callable[[Tensor], Tensor],
    feature_operator: Callable[[Tensor, Tensor], DepthOperator],
    depths: Sequence[int] | None = None,
    sigma2: float = SIGMA_SECOND_DERIVATIVE,
    keep_features: bool = False,
    reduce: Reduce | None = None,
) -> tuple[list[DepthOperator], float]:
    """{A_r} per depth from per-batch (states, batch-mean loss, B): the loop of the dense and token nets.

    λ_t = −∂J/∂x_t with J = (1/S) Σ_batches B·loss_batch, one backward per batch.  On the first
    batch ``pick_mode(x_t)`` gives each depth "blocks" (A_t summed batch by batch from
    ``form_blocks(augment(rows(x)), rows(λ))``) or "features" (states and costates kept,
    concatenated and handed to ``feature_operator(X, Λ/S)`` at the end).  ``keep_features``
    also keeps them for "blocks" depths in ``op.features``.  Returns (operators, J).

    ``reduce`` (several processes, each passing its share of the batches): S and Σ B·loss are
    summed over processes, stored blocks too, and feature operators become
    :class:`ShardedOperator` (local features, all-reduced products), so every process gets the
    operators of the whole training set; ``op.features`` then hold this share's rows (λ with the
    global 1/S).
    """
    blocks: list[Tensor | None] = []
    xs: list[list[Tensor]] = []
    ls: list[list[Tensor]] = []
    modes: list[str] = []
    total = 0
    loss_sum = 0.0
    for states, loss, b in passes:
        sel = list(range(len(states))) if depths is None else list(depths)
        chosen = [states[t] for t in sel]
        need = [x for x in chosen if x.requires_grad]
        grads_need = iter(torch.autograd.grad(loss * b, need, allow_unused=True) if need else ())
        grads = [next(grads_need) if x.requires_grad else None for x in chosen]
        if not modes:
            modes.extend(pick_mode(x) for x in chosen)
            blocks = [None] * len(chosen)
            xs, ls = [[] for _ in chosen], [[] for _ in chosen]
        for i, (x, g) in enumerate(zip(chosen, grads, strict=True)):
            x = x.detach()
            lam = torch.zeros_like(x) if g is None else -g.detach()
            if modes[i] == "blocks":
                a = form_blocks(augment(rows(x)), rows(lam), sigma2=sigma2)
                blocks[i] = a if blocks[i] is None else blocks[i] + a
            if modes[i] == "features" or keep_features:
                xs[i].append(x)
                ls[i].append(lam)
        total += b
        loss_sum += float(loss.detach()) * b
    if reduce is not None:
        return _sharded_operators(modes, blocks, xs, ls, total, loss_sum, feature_operator, keep_features,
                                  reduce)
    if total == 0:
        raise ValueError("no training data: the batch iterable was empty")
    return _depth_operators(modes, blocks, xs, ls, total, feature_operator, keep_features), loss_sum / total


def _depth_operators(
    modes: list[str], blocks: list[Tensor | None], xs: list[list[Tensor]], ls: list[list[Tensor]], total: int,
    feature_operator: Callable[[Tensor, Tensor], DepthOperator], keep_features: bool,
) -> list[DepthOperator]:
    """One operator per depth from the accumulated sums: the stored blocks / S, or the features' operator
    with the costates / S (the features of a block depth kept too when ``keep_features``)."""
    ops: list[DepthOperator] = []
    for i, use in enumerate(modes):
        if use == "blocks":
            op: DepthOperator = BlockOperator(blocks[i] / total)  # type: ignore[operator]
            if keep_features:
                op.features = (torch.cat(xs[i]), torch.cat(ls[i]) / total)
        else:
            op = feature_operator(torch.cat(xs[i]), torch.cat(ls[i]) / total)
        ops.append(op)
    return ops


def _sharded_operators(
    modes: list[str], blocks: list[Tensor | None], xs: list[list[Tensor]], ls: list[list[Tensor]], total: int,
    loss_sum: float, feature_operator: Callable[[Tensor, Tensor], DepthOperator], keep_features: bool,
    reduce: Reduce,
) -> tuple[list[DepthOperator], float]:
    """The end of :func:`accumulate_operators` for a share of the samples: S, Σ B·loss and the stored
    blocks summed over processes (one all-reduce), feature operators wrapped in :class:`ShardedOperator`."""
    sums = torch.tensor([float(total), loss_sum, float(total == 0)], dtype=torch.float64)
    reduce([sums])   # first the counts, so that every process raises (or not) together
    total_all, loss_all = int(round(float(sums[0]))), float(sums[1])
    if total_all == 0:
        raise ValueError("no training data: the batch iterable was empty")
    if float(sums[2]) > 0:
        raise ValueError("a process has an empty share of the training set: use fewer processes")
    reduce([b for b, use in zip(blocks, modes, strict=True) if use == "blocks"])  # type: ignore[misc]
    def sharded(x: Tensor, lam: Tensor) -> DepthOperator:
        return ShardedOperator(feature_operator(x, lam), reduce, rebuild=feature_operator)

    ops = _depth_operators(modes, blocks, xs, ls, total_all, sharded, keep_features)
    return ops, loss_all / total_all
