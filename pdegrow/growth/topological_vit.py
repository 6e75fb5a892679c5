"""Topological derivative for the sub-layers of a vision transformer (token states (S, N, D)).

Krishnanunni, Bui-Thanh, Dawson, arXiv 2502.06885; ``docs/growth.md``, "Vision transformers".

**Token-wise sub-layer.**  Inserting between x_t and x_{t+1} of a ViT the residual sub-layer
g(x)_i = σ(ε(W x_i + b)), applied to every token i alike (σ = 2·SiLU − tanh, σ(0) = σ′(0) = 0,
σ″(0) = 1), changes every token by (ε²/2) σ″(0) z_i² + O(ε³), z_i = W̃ x̃_i.  With the costate
λ_{s,i} = −∂J/∂x_{t,s,i} (J the training loss with its 1/S average),

    J(Ω_ε) − J(Ω₀) = −(ε²/2) Σ_r w̃_rᵀ A_r w̃_r + O(ε³),
    A_r = σ″(0) Σ_s Σ_i λ_{s,i,r} x̃_{s,i} x̃_{s,i}ᵀ,

the dense formula with the sum over samples **and tokens**: the S·N token rows are the P rows
of the dense case.  :class:`TokenFeatureOperator` applies it matrix-free,
A_r v = σ″(0) X̃ᵀ(λ_r ⊙ X̃ v) for all r at once, in row chunks: with P = S·N rows (10⁶ and more)
and width n (≥ 256) memory is the states and costates, O(P·n), plus a (chunk × k) temporary —
no d × d block and no per-row outer product is formed; the batched Lanczos of
:mod:`pdegrow.growth.eigensolvers` needs only this product.

**Attention sub-layer.**  g(x) = σ(ε · (A(x) X̃) W̃ᵀ) with the attention pattern
A(x) = softmax(X W_Q (X W_K)ᵀ/√d_k) (rows sum to 1) held fixed (W_Q, W_K not scaled by ε):
z_i = W̃ ȳ_i with ȳ = A(x) x̃ = [A(x) x; 1], so the second-order term is the token-wise formula
with the tokens replaced by their attention averages ȳ_{s,i}:
A_r^att = σ″(0) Σ_{s,i} λ_{s,i,r} ȳ_{s,i} ȳ_{s,i}ᵀ (:func:`attention_mixed_tokens`).  It is an
eigenproblem in the value/output rows W̃ for each pattern, but not in (W_Q, W_K), which enter
through the softmax: the pattern is chosen outside the eigenproblem (e.g. the uniform pattern of
W_Q = W_K = 0, ȳ_i = token mean) and compared by its top eigenvalue.  Scaling only the output
by ε without σ (g = ε·Attn(x)) would not be admissible at second order: its first-order term
−ε Σ λ·Attn(x) is non-zero, a gradient, not a topological derivative.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdegrow.growth.topological_operators import (
    SIGMA_SECOND_DERIVATIVE,
    DepthOperator,
    accumulate_operators,
    augment,
    choose_method,
    form_blocks,
)
from pdegrow.models.activations import silu_tanh

#: Entries of the (rows × k) temporary of one chunk of the matrix-free product.
CHUNK_ELEMENTS = 1 << 24


def token_rows(x: Tensor) -> Tensor:
    """Token states (S, N, n) as rows (S·N, n), sample-major (a view when ``x`` is contiguous)."""
    if x.ndim != 3:
        raise ValueError(f"token states must be (S, N, n), got {tuple(x.shape)}")
    return x.reshape(-1, x.shape[-1])


class TokenFeatureOperator(DepthOperator):
    """Matrix-free A_r v = σ″(0) X̃ᵀ(λ_r ⊙ X̃ v) over every token of every sample.

    States x and costates λ (S, N, n) (λ carrying J's 1/S).  For k blocks at once, per chunk
    of rows: Y = X Vᵀ_W + v_b (rows × k), Z = Λ[:, idx] ⊙ Y, AV += [Zᵀ X, Σ Z] — two GEMMs,
    4·P·k·d flops per product, no augmented copy of X and no d × d matrix.
    ``features`` keeps the (S, N, n) tensors (for the ε search from stored states).
    """

    def __init__(self, x: Tensor, lam: Tensor, *, sigma2: float = SIGMA_SECOND_DERIVATIVE,
                 chunk_elements: int = CHUNK_ELEMENTS) -> None:
        if x.ndim != 3 or lam.ndim != 3 or x.shape[:2] != lam.shape[:2]:
            raise ValueError(f"states {tuple(x.shape)} and costates {tuple(lam.shape)} must be (S, N, n)")
        self.features = (x, lam)
        self.rows = self.reference = token_rows(x)
        self.lam = token_rows(lam)
        self.sigma2 = float(sigma2)
        self.chunk_elements = int(chunk_elements)
        self.n_blocks = lam.shape[-1]
        self.dim = x.shape[-1] + 1

    def matvec(self, v: Tensor, idx: Tensor) -> Tensor:
        k = v.shape[0]
        lam = self.lam if idx.numel() == self.n_blocks else self.lam[:, idx]
        out = torch.zeros(k, self.dim, dtype=v.dtype, device=v.device)
        step = max(1, self.chunk_elements // max(k, self.dim))
        vw, vb = v[:, :-1], v[:, -1]
        for s in range(0, self.rows.shape[0], step):
            xs = self.rows[s : s + step]
            z = torch.addmm(vb, xs, vw.T).mul_(lam[s : s + step])
            out[:, :-1].addmm_(z.T, xs)
            out[:, -1] += z.sum(0)
        return out.mul_(self.sigma2)

    def blocks(self) -> Tensor:
        """The dense blocks (n, d, d) (for small widths and tests), accumulated over row chunks."""
        a = torch.zeros(self.n_blocks, self.dim, self.dim, dtype=self.dtype, device=self.device)
        step = max(1, self.chunk_elements // max(1, self.n_blocks * self.dim))
        for s in range(0, self.rows.shape[0], step):
            a += form_blocks(augment(self.rows[s : s + step]), self.lam[s : s + step], sigma2=self.sigma2)
        return a


def accumulate_token_operators(
    passes: Iterable[tuple[Sequence[Tensor], Tensor, int]],
    *,
    mode: str = "auto",
    depths: Sequence[int] | None = None,
    sigma2: float = SIGMA_SECOND_DERIVATIVE,
    keep_features: bool = False,
    reduce: Callable[[list[Tensor]], None] | None = None,
) -> tuple[list[DepthOperator], float]:
    """{A_r} per depth of a token network from per-batch (states (B, N, n), batch-mean loss, B).

    λ_t = −∂J/∂x_t, J = (1/S) Σ_batches B·loss_batch, one backward per batch.  ``mode``
    "blocks" accumulates A_t (n, n+1, n+1) over the S·N token rows (GEMMs); "features" keeps
    the states and costates for :class:`TokenFeatureOperator`; "auto" picks by
    :func:`~pdegrow.growth.topological_operators.choose_method`.  Stored blocks keep their (S, N, n)
    states and costates in ``op.features`` when ``keep_features``.  ``reduce``: this process's
    share of the samples, summed over processes.  Returns (operators, J).
    """
    if mode not in ("auto", "blocks", "features"):
        raise ValueError(f"unknown mode {mode!r}: expected 'auto', 'blocks' or 'features'")
    def pick_mode(x: Tensor) -> str:
        if x.ndim != 3:
            raise ValueError(f"token states must be (B, N, n), got {tuple(x.shape)}")
        n = x.shape[-1]
        dense = choose_method(n, n + 1, itemsize=x.element_size()) == "dense"
        return mode if mode != "auto" else ("blocks" if dense else "features")

    return accumulate_operators(
        passes, pick_mode=pick_mode, rows=token_rows,
        feature_operator=lambda x, lam: TokenFeatureOperator(x, lam, sigma2=sigma2),
        depths=depths, sigma2=sigma2, keep_features=keep_features, reduce=reduce,
    )


# --------------------------------------------------------------------------- attention sub-layer


def attention_pattern(x: Tensor, wq: Tensor, wk: Tensor) -> Tensor:
    """A(x) = softmax(X W_Qᵀ (X W_Kᵀ)ᵀ / √d_k): (S, N, n) → (S, N, N), rows summing to 1."""
    q, k = x @ wq.T, x @ wk.T
    return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(max(q.shape[-1], 1)), dim=-1)


def attention_mixed_tokens(x: Tensor, wq: Tensor, wk: Tensor) -> Tensor:
    """ȳ = A(x) x (S, N, n): the tokens an ε-inserted attention sub-layer's value rows see.

    Since every row of A sums to 1, A(x) x̃ = [A(x) x; 1], so the attention sub-layer's
    operator is :class:`TokenFeatureOperator` (ȳ, λ).
    """
    return attention_pattern(x, wq, wk) @ x


class InsertedAttentionBlock(nn.Module):
    """g(x) = σ(ε((A(x) x) Wᵀ + b)), A(x) = softmax(X W_Qᵀ (X W_Kᵀ)ᵀ/√d_k) single-head, W_Q, W_K fixed.

    ε = 0 gives g ≡ 0 (the exact identity residual); W, b (n × n, n) are the value/output rows
    whose second-order term is the token-wise formula on the mixed tokens ȳ = A(x) x.
    """

    def __init__(self, weight: Tensor, bias: Tensor, wq: Tensor, wk: Tensor, eps: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone())
        self.register_buffer("wq", wq.detach().clone())
        self.register_buffer("wk", wk.detach().clone())
        self.register_buffer("eps", torch.tensor(float(eps), dtype=weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        y = attention_mixed_tokens(x, self.wq, self.wk)
        return silu_tanh(self.eps * F.linear(y, self.weight, self.bias))


__all__ = ["CHUNK_ELEMENTS", "InsertedAttentionBlock", "TokenFeatureOperator", "accumulate_token_operators",
           "attention_mixed_tokens", "attention_pattern", "token_rows"]
