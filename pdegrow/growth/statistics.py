"""The layer statistics every neuron-growth strategy needs, from ONE batched pass.

For a hidden layer ``i`` of a widenable block t (an :class:`~pdegrow.models.blocks.MLPBlock`
``g(x) = L_k σ(… σ(L_1 x))``), call

* ``x`` — the input of the fan-in layer ``L_{i+1}`` (the stream state x_t for i = 0),
  ``x̃ = [x; 1]`` (TINY's b_{l−2}, GradMax's h_{l−1});
* ``h`` — the input of the fan-out layer ``L_{i+2}`` (the hidden activation σ(L_{i+1} x)),
  ``h̃ = [h; 1]`` (TINY's b_{l−1});
* ``z`` — the output of the fan-out layer (the block output v when it is the last
  layer, else the next pre-activation): the new neurons add to it;
* ``g_s = −∂ℓ_s/∂z_s`` — the *desired update* of z for sample s (TINY's v_goal,
  the negative functional gradient), with J = (1/n) Σ_s ℓ_s the training loss.
  For the last layer ∂J/∂z = ∂J/∂x_{t+1}, so g_s = n·λ_{t+1,s}, n times the
  costate of the topological derivative at depth t+1.

The pass accumulates, over the whole training set (in the trainer's fixed
batches, on the device, in float64, one forward + one backward per batch —
no Python loop over samples):

    S_in  = E[x̃ x̃ᵀ],  S_hid = E[h̃ h̃ᵀ],  C = E[x̃ h̃ᵀ],
    N_in  = E[x̃ gᵀ],  N_hid = E[h̃ gᵀ],  E‖g‖²,

for every requested layer at once (forward hooks on the linear layers, one
``torch.autograd.grad`` for all of them), plus, optionally, a uniform random
subsample of ``keep_samples`` rows of x and of the per-sample loss (for the
folding strategy's k-means). GradMax's matrix E[∂ℓ/∂z x̃ᵀ] is −N_inᵀ.

:func:`shared_statistics` caches the result per model and weight version, so
strategies asking in the same training state share one pass.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pdegrow.growth.capture import captured_io, with_grad_inputs

LayerKey = tuple[int, int]  # (block t, hidden layer i)


@dataclass
class LayerStatistics:
    """Second moments of one hidden layer (see the module docstring); all float64."""

    block: int
    layer: int
    n: int
    s_in: Tensor        # (d+1, d+1)  E[x̃ x̃ᵀ]
    s_hid: Tensor       # (h+1, h+1)  E[h̃ h̃ᵀ]
    c_in_hid: Tensor    # (d+1, h+1)  E[x̃ h̃ᵀ]
    n_in: Tensor        # (d+1, m)    E[x̃ gᵀ]
    n_hid: Tensor       # (h+1, m)    E[h̃ gᵀ]
    grad_sq: float      # E‖g‖²
    samples: Tensor | None = None   # (M, d) kept rows of x (the same samples for every layer)

    @property
    def grad_cross(self) -> Tensor:
        """GradMax's E[∂ℓ/∂z x̃ᵀ] = −N_inᵀ, shape (m, d+1)."""
        return -self.n_in.T


@dataclass
class GrowthStatistics:
    """The result of :func:`gather_statistics`: per-layer moments, the loss, kept samples."""

    layers: dict[LayerKey, LayerStatistics]
    n: int
    loss: float                                   # J, the mean training loss
    sample_loss: Tensor | None = None             # (M,) per-sample squared error of the kept samples
    sample_index: Tensor | None = None            # (M,) their positions in the fixed batch order
    info: dict[str, Any] = field(default_factory=dict)


def widenable_layers(model: nn.Module) -> list[LayerKey]:
    """(t, i) of every hidden layer of a block with linear ``layers`` (MLP blocks)."""
    out: list[LayerKey] = []
    for t, block in enumerate(model.blocks):  # type: ignore[union-attr, arg-type]
        layers = getattr(block, "layers", None)
        hidden = getattr(block, "hidden", None)
        if layers is None or hidden is None or not hasattr(block, "widen"):
            continue
        if not all(isinstance(m, nn.Linear) for m in layers):
            continue
        out += [(t, i) for i in range(len(hidden))]
    return out


def _augment(x: Tensor) -> Tensor:
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], 1)


def per_sample_squared_error(pred: Tensor, targets: Tensor) -> Tensor:
    """ℓ_s = mean over outputs of (ŷ_s − y_s)², shape (B,)."""
    b = pred.shape[0]
    return (pred.detach().reshape(b, -1).double() - targets.detach().reshape(b, -1).double()).pow(2).mean(1)


@torch.no_grad()
def _accumulate(acc: dict[str, Tensor], x: Tensor, h: Tensor, g: Tensor) -> None:
    xa, ha = _augment(x.double()), _augment(h.double())
    g = g.double()
    for name, a, b in (("s_in", xa, xa), ("s_hid", ha, ha), ("c_in_hid", xa, ha), ("n_in", xa, g),
                       ("n_hid", ha, g)):
        acc[name] = acc[name] + a.T @ b if name in acc else a.T @ b
    sq = g.pow(2).sum()
    acc["grad_sq"] = acc["grad_sq"] + sq if "grad_sq" in acc else sq


def gather_statistics(
    model: nn.Module,
    batches: Iterable[Any],
    batch_loss: Callable[[Any], Tensor],
    layers: Sequence[LayerKey] | None = None,
    *,
    keep_samples: int = 0,
    generator: torch.Generator | None = None,
    reduce: Callable[[list[Tensor]], None] | None = None,
) -> GrowthStatistics:
    """One forward + backward per batch of ``batches`` → :class:`GrowthStatistics`.

    ``batch_loss(batch)`` must be the batch *mean* of the per-sample loss (the
    trainer's data loss), so that ``B · batch_loss`` is Σ_s ℓ_s and its
    gradient w.r.t. z_s is ∂ℓ_s/∂z_s. ``layers`` defaults to
    :func:`widenable_layers`. With ``keep_samples`` M > 0 a uniform random
    subset of M samples (random keys from ``generator``, merged batch by batch
    with ``topk``) keeps its rows x of every layer and its squared error
    (from the head's output and ``batch.targets``).

    ``reduce`` (several processes, each passing its share of the batches; not with
    ``keep_samples``) sums a list of tensors over the processes in place: every moment is a
    sum over samples, so the sums of the shares are the sums over the whole set.
    """
    if reduce is not None and keep_samples > 0:
        raise ValueError("kept samples are drawn from the whole set: gather them unsharded")
    keys = list(widenable_layers(model) if layers is None else layers)
    blocks = model.blocks  # type: ignore[union-attr]
    modules: dict[int, nn.Module] = {}
    for t, i in keys:
        modules[id(blocks[t].layers[i])] = blocks[t].layers[i]
        modules[id(blocks[t].layers[i + 1])] = blocks[t].layers[i + 1]
    acc: dict[LayerKey, dict[str, Tensor]] = {k: {} for k in keys}
    n, loss_sum = 0, 0.0
    kept_key: Tensor | None = None
    kept_rows: dict[LayerKey, Tensor] = {}
    kept_loss: Tensor | None = None
    kept_index: Tensor | None = None
    head = [model.head] if keep_samples > 0 else []  # type: ignore[list-item]
    for batch in batches:
        with captured_io([*modules.values(), *head]) as seen, torch.enable_grad():
            batch = with_grad_inputs(batch)
            loss = batch_loss(batch)
            b = int(batch.inputs.shape[0])
            outs = [seen[id(blocks[t].layers[i + 1])][1] for t, i in keys]
            grads = torch.autograd.grad(loss * b, outs, allow_unused=True) if outs else ()
        pred = [seen[id(model.head)][1]] if keep_samples > 0 else []
        for (t, i), z, gz in zip(keys, outs, grads, strict=True):
            x = seen[id(blocks[t].layers[i])][0].detach()
            hid = seen[id(blocks[t].layers[i + 1])][0].detach()
            g = -gz.detach() if gz is not None else torch.zeros_like(z).detach()
            _accumulate(acc[(t, i)], x, hid, g)
        if keep_samples > 0:
            r = torch.rand(b, generator=generator).to(batch.inputs.device)
            idx = torch.arange(n, n + b, device=batch.inputs.device)
            sl = per_sample_squared_error(pred[-1], batch.targets)
            rows = {k: seen[id(blocks[k[0]].layers[k[1]])][0].detach().double() for k in keys}
            if kept_key is None:
                kept_key, kept_loss, kept_index, kept_rows = r, sl, idx, rows
            else:
                kept_key = torch.cat([kept_key, r])
                kept_loss = torch.cat([kept_loss, sl])  # type: ignore[list-item]
                kept_index = torch.cat([kept_index, idx])  # type: ignore[list-item]
                kept_rows = {k: torch.cat([kept_rows[k], rows[k]]) for k in keys}
            if kept_key.shape[0] > keep_samples:
                top = torch.topk(kept_key, keep_samples).indices.sort().values
                kept_key, kept_loss, kept_index = kept_key[top], kept_loss[top], kept_index[top]  # type: ignore[index]
                kept_rows = {k: v[top] for k, v in kept_rows.items()}
        n += b
        loss_sum += float(loss.detach()) * b
    if reduce is not None:
        counts = torch.tensor([float(n), loss_sum], dtype=torch.float64)
        reduce([*(a[k] for key in keys for a in [acc[key]] for k in sorted(a)), counts])
        n, loss_sum = int(counts[0]), float(counts[1])
    if n == 0:
        raise ValueError("no training data: the batch iterable was empty")
    stats = {
        (t, i): LayerStatistics(
            t, i, n, a["s_in"] / n, a["s_hid"] / n, a["c_in_hid"] / n, a["n_in"] / n, a["n_hid"] / n,
            float(a["grad_sq"]) / n, kept_rows.get((t, i)))
        for (t, i), a in acc.items()
    }
    return GrowthStatistics(stats, n, loss_sum / n, kept_loss, kept_index)


_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], GrowthStatistics]] = \
    weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module, extra: tuple[Any, ...]) -> tuple[Any, ...]:
    """Changes whenever a parameter is modified in place or replaced, or the architecture changes."""
    return (tuple((id(p), p._version, tuple(p.shape)) for p in model.parameters()), extra)


def shared_statistics(ctx: Any, *, keep_samples: int = 0) -> GrowthStatistics:
    """:func:`gather_statistics` over ``ctx``'s training set, computed once per weight state.

    Every layer of :func:`widenable_layers` is included, so any strategy that
    asks again before the weights change reuses the same pass (a larger
    ``keep_samples`` than cached recomputes it).
    """
    model = ctx.model
    fp = _fingerprint(model, (ctx.state.epoch, ctx.state.phase))
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == fp:
        cached = hit[1]
        have = 0 if cached.sample_loss is None else int(cached.sample_loss.shape[0])
        if keep_samples <= have or have == cached.n:
            return cached
    if keep_samples > 0 or not hasattr(ctx, "share"):
        batches, reduce = ctx.train_batches(), None
    else:  # this process's share, moments summed over processes (serial: all of it, as it is)
        batches, reduce = ctx.share()
    stats = gather_statistics(model, batches, ctx.batch_loss, keep_samples=keep_samples,
                              generator=ctx.generator, reduce=reduce)
    stats.info["fingerprint_epoch"] = ctx.state.epoch
    _CACHE[model] = (fp, stats)
    return stats


__all__ = ["GrowthStatistics", "LayerKey", "LayerStatistics", "gather_statistics", "per_sample_squared_error",
           "shared_statistics", "widenable_layers"]
