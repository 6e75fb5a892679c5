"""Topological derivative for inserting a residual block (Approach II).

Krishnanunni, Bui-Thanh, Dawson, "Topological derivative approach for deep
neural network architecture adaptation", arXiv 2502.06885; ``docs/growth.md``.

Setting.  A residual network x_{t+1} = x_t + g_{t+1}(x_t), t = 0…L−1, output
head(x_L), training loss J averaged over the S training samples.  Inserting
at depth t (between x_t and g_{t+1}) the block

    g(x; ε, W, b) = σ(ε(W x + b)),     σ(0) = σ′(0) = 0, σ″(0) = 1,

(here σ(z) = 2·SiLU(z) − tanh(z)) changes x_t by σ(ε z) = (ε²/2) σ″(0) z² + O(ε³),
z = W x_t + b = W̃ x̃_t with x̃ = [x; 1].  With the costate
λ_s = −∂J/∂x_{t,s} (J including its 1/S average),

    J(Ω_ε) − J(Ω₀) = −(ε²/2) Σ_r w̃_rᵀ A_r w̃_r + O(ε³),
    A_r = σ″(0) Σ_s λ_{s,r} x̃_s x̃_sᵀ     (one (n+1)×(n+1) block per output unit r).

The topological derivative at depth t is the largest algebraic eigenvalue over
all blocks, the insertion depth t* = argmax_t, and the new block's rows are
the top eigenvectors w̃_r of the blocks whose top eigenvalue exceeds a
fraction of the largest (unit norm; the other rows are zero); then the
predicted change is −(ε²/2) Σ_{r selected} λ_r and ε comes from a line
search on the loss.

Convolutional blocks σ(ε(conv(x; W) + b)) with 'same' padding: the same with
x̃ the unfolded k×k patches (C·k² + 1 entries) and the sum over samples and
positions.  The matrix-free product for all r at once is a convolution and
a weight-gradient convolution, so patches are never unfolded there.

This module holds pure functions on tensors and small modules; the growth
strategy that drives a model lives elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdegrow.growth.eigensolvers import TopEigenpairs, dense_top_eigenpairs, lanczos_top_eigenpairs

__all__ = [
    "SIGMA_SECOND_DERIVATIVE",
    "AdmissibleActivation",
    "BlockOperator",
    "ConvFeatureOperator",
    "DenseFeatureOperator",
    "DepthOperator",
    "EpsilonChoice",
    "InsertedConvBlock",
    "InsertedDenseBlock",
    "LineSearchResult",
    "ProposedRows",
    "accumulate_depth_operators",
    "admissible_activation",
    "augment",
    "choose_epsilon",
    "choose_method",
    "collect_depth_operators",
    "contribution_statistics",
    "conv_patches",
    "epsilon_bound",
    "form_blocks",
    "line_search_epsilon",
    "predicted_change",
    "rows_from_eigenpairs",
    "second_order_contributions",
    "states_and_costates",
    "top_eigenpairs",
    "topological_derivatives",
    "trust_region_scale",
]

#: σ″(0) of :func:`admissible_activation`.
SIGMA_SECOND_DERIVATIVE = 1.0


# --------------------------------------------------------------------------- activation, blocks


def admissible_activation(z: Tensor) -> Tensor:
    """σ(z) = 2·SiLU(z) − tanh(z): σ(0) = 0, σ′(0) = 0, σ″(0) = 1 (so σ(εz) = ε²z²/2 + O(ε³))."""
    return 2.0 * F.silu(z) - torch.tanh(z)


class AdmissibleActivation(nn.Module):
    """Module form of :func:`admissible_activation`."""

    def forward(self, z: Tensor) -> Tensor:
        return admissible_activation(z)


class _EpsilonScaledBlock(nn.Module):
    """The ε of an inserted block σ(ε(·)): a buffer, or a parameter when trained."""

    weight: nn.Parameter
    bias: nn.Parameter

    def _init_eps(self, eps: float, trainable: bool, like: Tensor) -> None:
        e = torch.tensor(float(eps), dtype=like.dtype, device=like.device)
        if trainable:
            self.eps = nn.Parameter(e)
        else:
            self.register_buffer("eps", e)

    @torch.no_grad()
    def fold_epsilon(self) -> None:
        """W ← εW, b ← εb, ε ← 1: the same function, with ε absorbed into the trained weights."""
        self.weight.mul_(self.eps)
        self.bias.mul_(self.eps)
        self.eps.fill_(1.0)


class InsertedDenseBlock(_EpsilonScaledBlock):
    """Residual increment g(x) = σ(ε(W x + b)) for vectors (…, n) → (…, n).

    ε is a buffer (not trained) unless ``trainable_eps``; ε = 0 gives g ≡ 0
    exactly, i.e. the identity residual x + g(x) = x.  Because ∂g/∂W = 0 at
    ε = 0, train after choosing ε ≠ 0 (or call :meth:`fold_epsilon`).
    """

    def __init__(
        self,
        features: int,
        *,
        weight: Tensor | None = None,
        bias: Tensor | None = None,
        eps: float = 0.0,
        trainable_eps: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        w = torch.zeros(features, features, **kw) if weight is None else weight.detach().clone().to(**kw)
        b = torch.zeros(features, **kw) if bias is None else bias.detach().clone().to(**kw)
        if w.shape != (features, features) or b.shape != (features,):
            raise ValueError(f"weight {tuple(w.shape)} / bias {tuple(b.shape)} do not match width {features}")
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(b)
        self._init_eps(eps, trainable_eps, w)

    def forward(self, x: Tensor) -> Tensor:
        return admissible_activation(self.eps * F.linear(x, self.weight, self.bias))


class InsertedConvBlock(_EpsilonScaledBlock):
    """Residual increment g(x) = σ(ε(conv(x; W) + b)) for fields (N, C, H, W), 'same' padding."""

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        *,
        weight: Tensor | None = None,
        bias: Tensor | None = None,
        eps: float = 0.0,
        trainable_eps: bool = False,
        padding_mode: str = "zeros",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        kw = {"dtype": dtype, "device": device}
        shape = (channels, channels, kernel_size, kernel_size)
        w = torch.zeros(shape, **kw) if weight is None else weight.detach().clone().to(**kw).reshape(shape)
        b = torch.zeros(channels, **kw) if bias is None else bias.detach().clone().to(**kw)
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(b)
        self.padding = kernel_size // 2
        self.padding_mode = padding_mode
        self._init_eps(eps, trainable_eps, w)

    def forward(self, x: Tensor) -> Tensor:
        xp = _pad(x, self.padding, self.padding_mode)
        return admissible_activation(self.eps * F.conv2d(xp, self.weight, self.bias))


# --------------------------------------------------------------------------- features and blocks


def augment(x: Tensor) -> Tensor:
    """x̃ = [x; 1] along the last axis: (P, n) → (P, n + 1)."""
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def _pad(x: Tensor, p: int, padding_mode: str) -> Tensor:
    """Pad (S, C, H, W) by p on each side the way nn.Conv2d(padding_mode=…) does."""
    if p == 0:
        return x
    if padding_mode == "zeros":
        return F.pad(x, (p, p, p, p))
    if padding_mode in ("circular", "reflect", "replicate"):
        return F.pad(x, (p, p, p, p), mode=padding_mode)
    raise ValueError(f"unknown padding_mode {padding_mode!r}")


def _unfold_rows(xp: Tensor, kernel_size: int) -> Tensor:
    """Patches of an already padded (S, C, H+2p, W+2p) as rows (S·H·W, C·k²)."""
    s, c = xp.shape[:2]
    p = F.unfold(xp, kernel_size)  # (S, C·k², H·W)
    return p.transpose(1, 2).reshape(-1, c * kernel_size * kernel_size)


def conv_patches(x: Tensor, kernel_size: int, padding_mode: str = "zeros") -> Tensor:
    """Unfolded 'same'-padded patches of x (S, C, H, W) as rows (S·H·W, C·k²), sample-major.

    The column order (c, i, j) is that of ``conv.weight.view(C_out, -1)``.
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


class ConvFeatureOperator(DepthOperator):
    """Matrix-free operator for the conv block σ(ε(conv(x; W) + b)), 'same' padding.

    States x (S, C, H, W), costates λ (S, C, H, W); block r is the output
    channel r, its vector w̃_r = [W_r.flatten() (C·k²); b_r].  For k blocks:
    Y = conv(x; V_W) + V_b (S, k, H, W), Z = λ[:, idx] ⊙ Y, and
    AV = [∂/∂W Σ Z·conv(x; W) ; Σ Z] — a forward and a weight-gradient
    convolution; the unfolded patches (S·H·W × C·k²) are never formed.
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
        if x.ndim != 4 or lam.shape[0] != x.shape[0] or lam.shape[2:] != x.shape[2:]:
            raise ValueError(f"states {tuple(x.shape)} / costates {tuple(lam.shape)} must be (S, C, H, W)")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.x = self.reference = x
        self.lam = lam
        self.features = (x, lam)
        self.k = kernel_size
        self.sigma2 = sigma2
        self.padding_mode = padding_mode
        self.xp = _pad(x, kernel_size // 2, padding_mode)
        self.channels_in = x.shape[1]
        self.n_blocks = lam.shape[1]
        self.dim = self.channels_in * kernel_size * kernel_size + 1

    def matvec(self, v: Tensor, idx: Tensor) -> Tensor:
        k = v.shape[0]
        wshape = (k, self.channels_in, self.k, self.k)
        y = F.conv2d(self.xp, v[:, :-1].reshape(wshape), v[:, -1])
        lam = self.lam if idx.numel() == self.n_blocks else self.lam[:, idx]
        z = y.mul_(lam)
        gw = torch.nn.grad.conv2d_weight(self.xp, wshape, z)
        gb = z.sum(dim=(0, 2, 3))
        return torch.cat([gw.reshape(k, -1), gb[:, None]], dim=1).mul_(self.sigma2)

    def blocks(self, chunk_samples: int | None = None) -> Tensor:
        s = self.x.shape[0]
        hw = self.x.shape[2] * self.x.shape[3]
        if chunk_samples is None:
            chunk_samples = max(1, (1 << 22) // max(1, hw * self.dim))
        a = torch.zeros(self.n_blocks, self.dim, self.dim, dtype=self.dtype, device=self.device)
        for i in range(0, s, chunk_samples):
            xs = self.xp[i : i + chunk_samples]
            patches = augment(_unfold_rows(xs, self.k))
            lam = self.lam[i : i + chunk_samples].permute(0, 2, 3, 1).reshape(-1, self.n_blocks)
            a += form_blocks(patches, lam, sigma2=self.sigma2)
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


# --------------------------------------------------------------------------- states and costates

StatesFn = Callable[[Tensor], tuple[Sequence[Tensor], Tensor]]
LossFn = Callable[[Tensor, Tensor], Tensor]


def _leaf(inputs: Tensor) -> Tensor:
    """Inputs that require grad, so that x_0 = lift(y) is in the graph even if the lift is parameter-free."""
    if inputs.is_floating_point() and not inputs.requires_grad:
        return inputs.detach().requires_grad_(True)
    return inputs


def states_and_costates(
    states_fn: StatesFn,
    loss_fn: LossFn,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    depths: Sequence[int] | None = None,
) -> tuple[list[Tensor], list[Tensor], float]:
    """States x_t and costates λ_t = −∂J/∂x_t of every sample, one forward + backward per batch.

    ``states_fn(inputs)`` returns (states [x_0 … x_L], output) with every state
    a node of the autograd graph from which the rest of the network is
    computed (so ∂/∂x_t is the derivative of J through everything downstream
    of depth t).  ``loss_fn(output, target)`` is the batch *mean* of the
    per-sample loss, so J = (1/S) Σ_batches B·loss_batch; λ carries that 1/S.
    Returns (states per depth (S, …), costates per depth (S, …), J).
    Memory O(S·n) per depth; see :func:`collect_depth_operators` for the
    accumulated (n, d, d) alternative.
    """
    xs: list[list[Tensor]] = []
    ls: list[list[Tensor]] = []
    total = 0
    loss_sum = 0.0
    for inputs, target in batches:
        with torch.enable_grad():
            states, output = states_fn(_leaf(inputs))
            sel = list(range(len(states))) if depths is None else list(depths)
            chosen = [states[t] for t in sel]
            loss = loss_fn(output, target)
            b = inputs.shape[0]
            grads = torch.autograd.grad(loss * b, chosen, allow_unused=True)
        if not xs:
            xs = [[] for _ in sel]
            ls = [[] for _ in sel]
        for i, (x, g) in enumerate(zip(chosen, grads, strict=True)):
            xs[i].append(x.detach())
            ls[i].append(torch.zeros_like(x).detach() if g is None else -g.detach())
        total += b
        loss_sum += float(loss.detach()) * b
    if total == 0:
        raise ValueError("no training data: the batch iterable was empty")
    states_out = [torch.cat(x) for x in xs]
    costates = [torch.cat(g) / total for g in ls]
    return states_out, costates, loss_sum / total


def collect_depth_operators(
    states_fn: StatesFn,
    loss_fn: LossFn,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    mode: str = "auto",
    kernel_size: int = 3,
    padding_mode: str = "zeros",
    depths: Sequence[int] | None = None,
    sigma2: float = SIGMA_SECOND_DERIVATIVE,
) -> tuple[list[DepthOperator], float]:
    """The operator {A_r} at every candidate depth from one pass over the data.

    ``states_fn(inputs)`` → (states [x_0 … x_L], output), ``loss_fn(output, target)``
    the batch mean, as in :func:`states_and_costates`.  See
    :func:`accumulate_depth_operators` for ``mode`` and the result.
    """

    def passes() -> Iterator[tuple[Sequence[Tensor], Tensor, int]]:
        for inputs, target in batches:
            with torch.enable_grad():
                states, output = states_fn(_leaf(inputs))
                loss = loss_fn(output, target)
            yield states, loss, int(inputs.shape[0])

    return accumulate_depth_operators(
        passes(), mode=mode, kernel_size=kernel_size, padding_mode=padding_mode, depths=depths, sigma2=sigma2
    )


def accumulate_depth_operators(
    passes: Iterable[tuple[Sequence[Tensor], Tensor, int]],
    *,
    mode: str = "auto",
    kernel_size: int = 3,
    padding_mode: str = "zeros",
    depths: Sequence[int] | None = None,
    sigma2: float = SIGMA_SECOND_DERIVATIVE,
    keep_features: bool = False,
) -> tuple[list[DepthOperator], float]:
    """Accumulate {A_r} per depth from per-batch (states, batch-mean loss, batch size).

    Each item of ``passes`` is a forward pass still holding its graph: the
    states x_0 … x_L (graph nodes) and the batch's mean loss; λ_t = −∂J/∂x_t
    with J = (1/S) Σ_batches B·loss_batch comes from one backward per batch.

    Vector states (B, n): ``mode`` "blocks" accumulates A_t (n, n+1, n+1) batch
    by batch (GEMM, memory n·d² per depth); "features" keeps X̃_t and Λ_t
    (memory S·n per depth) for the matrix-free solver; "auto" picks by
    :func:`choose_method`.  Field states (B, C, H, W) always keep the features
    (conv operator with ``kernel_size``/``padding_mode`` of the inserted
    block); solve them with either method.  ``keep_features`` also keeps the
    per-sample states and costates of "blocks" depths in ``op.features`` (the
    feature operators hold them anyway).  Returns (operators per depth, J).
    """
    if mode not in ("auto", "blocks", "features"):
        raise ValueError(f"unknown mode {mode!r}: expected 'auto', 'blocks' or 'features'")
    blocks: list[Tensor | None] = []
    feats_x: list[list[Tensor]] = []
    feats_l: list[list[Tensor]] = []
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
            for x in chosen:
                if x.ndim == 2 and mode != "features":
                    n = x.shape[1]
                    dense = choose_method(n, n + 1, itemsize=x.element_size()) == "dense"
                    use = mode if mode == "blocks" else ("blocks" if dense else "features")
                else:
                    use = "features"
                modes.append(use)
            blocks = [None] * len(chosen)
            feats_x = [[] for _ in chosen]
            feats_l = [[] for _ in chosen]
        for i, (x, g) in enumerate(zip(chosen, grads, strict=True)):
            x = x.detach()
            lam = torch.zeros_like(x) if g is None else -g.detach()
            if modes[i] == "blocks":
                a = form_blocks(augment(x), lam, sigma2=sigma2)
                blocks[i] = a if blocks[i] is None else blocks[i] + a
                if keep_features:
                    feats_x[i].append(x)
                    feats_l[i].append(lam)
            else:
                feats_x[i].append(x)
                feats_l[i].append(lam)
        total += b
        loss_sum += float(loss.detach()) * b
    if total == 0:
        raise ValueError("no training data: the batch iterable was empty")
    ops: list[DepthOperator] = []
    for i, use in enumerate(modes):
        if use == "blocks":
            op = BlockOperator(blocks[i] / total)
            if keep_features:
                op.features = (torch.cat(feats_x[i]), torch.cat(feats_l[i]) / total)
            ops.append(op)
        else:
            x = torch.cat(feats_x[i])
            lam = torch.cat(feats_l[i]) / total
            if x.ndim == 2:
                ops.append(DenseFeatureOperator(x, lam, sigma2=sigma2))
            elif x.ndim == 4:
                ops.append(
                    ConvFeatureOperator(x, lam, kernel_size, padding_mode=padding_mode, sigma2=sigma2)
                )
            else:
                raise ValueError(f"states must be (B, n) or (B, C, H, W), got {tuple(x.shape)}")
    return ops, loss_sum / total


def topological_derivatives(
    ops: Sequence[DepthOperator], *, method: str = "auto", **solver_kw: object
) -> tuple[Tensor, list[TopEigenpairs]]:
    """Topological derivative per depth (max_r top eigenvalue of A_r) and the eigenpairs per depth."""
    results = [top_eigenpairs(op, method=method, **solver_kw) for op in ops]  # type: ignore[arg-type]
    derivs = torch.stack([r.values.max().to(torch.float64).cpu() for r in results])
    return derivs, results


# --------------------------------------------------------------------------- the new block


@dataclass
class ProposedRows:
    """Rows of the inserted block from the top eigenvectors.

    weight (n, d−1) — for conv reshape to (n, C, k, k) —, bias (n,), mask (n,)
    of contributing units, coefficient = Σ_{r selected} λ_r, so that the
    predicted change at scale ε is −(ε²/2)·coefficient.
    """

    weight: Tensor
    bias: Tensor
    mask: Tensor
    coefficient: float
    eigenvalues: Tensor = field(repr=False)


def rows_from_eigenpairs(
    pairs: TopEigenpairs, *, fraction: float = 0.5, top_only: bool = False
) -> ProposedRows:
    """Units r with λ_r ≥ fraction·max λ (and λ_r > 0) contribute their unit eigenvector w̃_r = [W_r, b_r].

    ``top_only`` keeps only the unit of the largest eigenvalue.  If no
    eigenvalue is positive no row is selected (coefficient 0): no inserted
    block decreases the loss at second order.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    vals = pairs.values
    vmax = vals.max()
    if top_only:
        mask = torch.zeros_like(vals, dtype=torch.bool)
        mask[vals.argmax()] = True
    else:
        mask = vals >= fraction * vmax
    mask = mask & (vals > 0)
    rows = pairs.vectors * mask[:, None].to(pairs.vectors.dtype)
    coef = float(vals[mask].sum()) if bool(mask.any()) else 0.0
    return ProposedRows(rows[:, :-1].clone(), rows[:, -1].clone(), mask, coef, vals)


def predicted_change(eps: float, coefficient: float) -> float:
    """Second-order prediction J(Ω_ε) − J(Ω₀) ≈ −(ε²/2)·Σ_r λ_r."""
    return -0.5 * eps * eps * coefficient


def second_order_contributions(z: Tensor, lam: Tensor, *, sigma2: float = SIGMA_SECOND_DERIVATIVE) -> Tensor:
    """Per-sample terms c_s of the second-order coefficient C = Σ_r w̃_rᵀ A_r w̃_r = Σ_s c_s.

    With z_s = W̃ x̃_s the inserted block's pre-activation at ε = 1 and λ_s the
    costate (carrying J's 1/S): c_s = σ″(0) Σ_r λ_{s,r} z_{s,r}², summed over
    positions too for conv blocks ((S, n, H, W) arrays).  Since A_r = σ″(0) Σ_s
    λ_{s,r} x̃_s x̃_sᵀ, Σ_s c_s is exactly the coefficient of the predicted
    change −(ε²/2)·C.  Returns (S,) in float64.
    """
    if z.shape != lam.shape:
        raise ValueError(f"pre-activations {tuple(z.shape)} and costates {tuple(lam.shape)} differ in shape")
    terms = lam.double() * z.double().pow(2)
    return terms.reshape(terms.shape[0], -1).sum(1) * sigma2


def contribution_statistics(contributions: Tensor) -> tuple[float, float, float]:
    """(C, its standard error, t = C / SE) from the per-sample terms c_s of C = Σ_s c_s.

    C = mean_s u_s with u_s = S·c_s, so its sampling standard error is
    std(u, ddof = 1)/√S = √S·std(c).  t ≥ 2 says that the predicted decrease is
    larger than two standard errors of the sampling noise (t = inf when every
    sample contributes the same, 0 when C = 0).  The block's rows are chosen
    on the same samples, so t is optimistic.
    """
    c = contributions.double().reshape(-1)
    s = c.numel()
    total = float(c.sum())
    if s < 2:
        return total, math.inf, math.inf if total > 0 else 0.0
    se = math.sqrt(s) * float(c.std())
    if se == 0.0:
        return total, 0.0, math.inf if total > 0 else (0.0 if total == 0 else -math.inf)
    return total, se, total / se


def epsilon_bound(z: Tensor, max_preactivation: float) -> float:
    """Largest |ε| with |ε z_{s,r}| ≤ ``max_preactivation`` for every sample, unit and position.

    σ(u) = u²/2 + u³/3 − u⁴/24 + … for σ = 2·SiLU − tanh: the second-order model
    is accurate while |u| = |ε z| is small (the cubic term is 1/3 of the
    quadratic one at |u| = 0.5 and 2/3 at |u| = 1); the bound keeps ε where that
    model can be trusted (inf when z ≡ 0).
    """
    zmax = float(z.detach().abs().max()) if z.numel() else 0.0
    return math.inf if zmax == 0.0 else float(max_preactivation) / zmax


@dataclass
class EpsilonChoice:
    """ε chosen from the second-order model and checked against the realised change.

    ``predicted`` = −(ε²/2)·C and ``realised`` = J(Ω_ε) − J(Ω₀) at the chosen ε,
    ``ratio`` = realised/predicted there, ``valid``: the ratio lies in
    [ratio_min, 1/ratio_min] (the second-order model holds at ε);
    ``evaluations`` every (ε, J(Ω_ε) − J(Ω₀)) tried; ε = 0 when no ε decreased the loss.
    """

    eps: float
    predicted: float
    realised: float
    ratio: float
    valid: bool
    eps_start: float
    eps_max: float
    evaluations: list[tuple[float, float]]


def choose_epsilon(
    loss_at: Callable[[float], float],
    coefficient: float,
    *,
    loss0: float,
    target_decrease: float,
    eps_max: float = math.inf,
    ratio_min: float = 0.5,
    growth: float = 2.0,
    max_evals: int = 8,
) -> EpsilonChoice:
    """ε of an inserted block from the second-order model J(Ω_ε) − J(Ω₀) ≈ −(ε²/2)·C, checked.

    Start where the model predicts a decrease of ``target_decrease``·|J₀|:
    ε₀ = min(√(2·target·|J₀|/C), ε_max); try both signs (the second-order term
    is even in ε, the cubic one is not) and keep the better one; then
    :func:`trust_region_scale`.
    """
    if not (coefficient > 0 and math.isfinite(coefficient)):
        raise ValueError(f"the second-order coefficient must be positive and finite, got {coefficient}")
    start = math.sqrt(2.0 * target_decrease * max(abs(loss0), 1e-30) / coefficient)
    return trust_region_scale(loss_at, lambda e: predicted_change(e, coefficient), loss0=loss0, start=start,
                              scale_max=eps_max, ratio_min=ratio_min, growth=growth, max_evals=max_evals,
                              both_signs=True)


def trust_region_scale(
    loss_at: Callable[[float], float],
    predicted_at: Callable[[float], float],
    *,
    loss0: float,
    start: float,
    scale_max: float = math.inf,
    ratio_min: float = 0.5,
    growth: float = 2.0,
    max_evals: int = 8,
    both_signs: bool = False,
) -> EpsilonChoice:
    """The scale s of a growth step from a local model ``predicted_at(s)`` ≈ J(s) − J(0) < 0, checked.

    From s₀ = min(``start``, ``scale_max``) (and −s₀ with ``both_signs``, keeping
    the better sign), a trust region on the ratio ρ = realised/predicted:
    while ρ ∈ [ρ_min, 1/ρ_min] and the loss still decreases, grow s by
    ``growth`` (never beyond ``scale_max``); while ρ is outside, shrink s by
    ``growth``.  The chosen s has the lowest loss among the evaluations where
    the model held (else among those that decreased the loss at all, flagged
    ``valid = False``; else s = 0).  ≤ ``max_evals`` evaluations of ``loss_at``
    (s = 0 is ``loss0``, not evaluated).  Unlike a line search for the minimum of
    the training loss, the step stays where the model that proposed it holds.
    """
    if not 0.0 < ratio_min < 1.0:
        raise ValueError(f"ratio_min must be in (0, 1), got {ratio_min}")
    if not (scale_max > 0):
        raise ValueError(f"the scale bound must be positive, got {scale_max}")
    if not (start > 0 and math.isfinite(start)):
        raise ValueError(f"the start scale must be positive and finite, got {start}")
    s0 = min(start, scale_max)
    evals: list[tuple[float, float]] = []

    def realised(e: float) -> float:
        v = float(loss_at(e))
        d = v - loss0 if math.isfinite(v) else math.inf
        evals.append((e, d))
        return d

    def ok(e: float, d: float) -> bool:
        pred = predicted_at(e)
        if not pred < 0:
            return False
        r = d / pred
        return ratio_min <= r <= 1.0 / ratio_min

    budget = max(2 if both_signs else 1, int(max_evals))
    d = realised(s0)
    sign = 1.0
    if both_signs:
        d_neg = realised(-s0)
        if d_neg < d:
            sign, d = -1.0, d_neg
    e = s0
    budget -= 2 if both_signs else 1
    if ok(sign * e, d):
        while budget > 0 and e < scale_max:
            e2 = min(e * growth, scale_max)
            d2 = realised(sign * e2)
            budget -= 1
            if not (d2 < d and ok(sign * e2, d2)):
                break
            e, d = e2, d2
    else:
        while budget > 0 and not ok(sign * e, d):
            e = e / growth
            d = realised(sign * e)
            budget -= 1
    valid = [(x, v) for x, v in evals if v < 0 and ok(x, v)]
    decreasing = [(x, v) for x, v in evals if v < 0]
    pool = valid or decreasing
    if not pool:
        return EpsilonChoice(0.0, 0.0, 0.0, math.nan, False, s0, scale_max, evals)
    best_e, best_d = min(pool, key=lambda p: p[1])
    pred = predicted_at(best_e)
    return EpsilonChoice(best_e, pred, best_d, best_d / pred, bool(valid), s0, scale_max, evals)


@dataclass
class LineSearchResult:
    """Chosen ε, loss there, the loss at ε = 0 and every (ε, loss) evaluated."""

    eps: float
    loss: float
    loss0: float
    evaluations: list[tuple[float, float]]


def line_search_epsilon(
    loss_at: Callable[[float], float],
    *,
    eps_init: float,
    growth: float = 2.0,
    max_evals: int = 24,
    both_signs: bool = True,
    refine_steps: int = 6,
) -> LineSearchResult:
    """Minimise ε ↦ J(Ω_ε) along the proposed direction by bracketing and golden-section refinement.

    From ``eps_init`` the step grows by ``growth`` while the loss decreases (or
    shrinks while it does not improve on J(Ω₀)); both signs of ε are tried
    (the second-order term is even in ε, higher orders are not).  The bracket
    [ε/growth, ε·growth] of the best point is refined by golden section.  If
    nothing beats ε = 0 the result is ε = 0.  Costs ≤ ``max_evals`` + 2·``refine_steps`` loss evaluations.
    """
    if not (eps_init > 0 and math.isfinite(eps_init)):
        raise ValueError(f"eps_init must be positive and finite, got {eps_init}")
    if growth <= 1.0:
        raise ValueError(f"growth must be > 1, got {growth}")
    loss0 = float(loss_at(0.0))
    evals: list[tuple[float, float]] = [(0.0, loss0)]

    def f(e: float) -> float:
        v = float(loss_at(e))
        if not math.isfinite(v):
            v = math.inf
        evals.append((e, v))
        return v

    best_e, best_v = 0.0, loss0
    budget = max_evals
    for sign in (1.0, -1.0) if both_signs else (1.0,):
        e = sign * eps_init
        v = f(e)
        budget -= 1
        if v < loss0:
            while budget > 0:
                e2 = e * growth
                v2 = f(e2)
                budget -= 1
                if v2 >= v:
                    break
                e, v = e2, v2
        else:
            while budget > 0 and v >= loss0:
                e = e / growth
                v = f(e)
                budget -= 1
                if abs(e) < 1e-12 * eps_init:
                    break
        if v < best_v:
            best_e, best_v = e, v
    if best_e != 0.0 and refine_steps > 0:
        a, b = best_e / growth, best_e * growth
        gr = (math.sqrt(5.0) - 1.0) / 2.0
        c, d = b - gr * (b - a), a + gr * (b - a)
        fc, fd = f(c), f(d)
        for _ in range(refine_steps):
            if fc < fd:
                b, d, fd = d, c, fc
                c = b - gr * (b - a)
                fc = f(c)
            else:
                a, c, fc = c, d, fd
                d = a + gr * (b - a)
                fd = f(d)
        for e, v in ((c, fc), (d, fd)):
            if v < best_v:
                best_e, best_v = e, v
    return LineSearchResult(best_e, best_v, loss0, evals)
