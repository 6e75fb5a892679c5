"""The one growth-strategy interface every method goes through (``docs/architecture.md``).

A strategy answers

* **when** — :meth:`GrowthStrategy.when`, a criterion on the training state
  (default: the trainer's plateau test for the current phase);
* **where** and **how** — :meth:`GrowthStrategy.propose` returns a
  :class:`GrowthProposal` (insert a block at depth t, widen a hidden layer,
  add an SRL corrector, or a custom action) with the new parameters' initial
  values, or ``None`` to end training;
* the **predicted change** of the training loss, carried by the proposal; the
  trainer measures the realised change (full training loss just before and
  just after the change) and logs both in a :class:`GrowthEvent`.

The trainer (:mod:`pdegrow.training.trainer`) calls, in order::

    strategy.setup(ctx)                         # once, on a fresh run (not on resume)
    every epoch: train with model loss + strategy.loss_terms(ctx); validate
    if strategy.when(ctx):
        proposal = strategy.propose(ctx)        # None → stop ([train] after_growth = "continue":
                                                #   train on to max_epochs, strategy.end_reason(ctx) logged)
        strategy.apply(ctx, proposal)           # default: apply_proposal(ctx.model, proposal)
        (optimizer synced, realised change measured, GrowthEvent logged)
    (before propose: ``change = strategy.prepare(ctx)``, e.g. pruning, applied and logged as its own event)
        strategy.after_growth(ctx, event)       # e.g. freeze, reschedule regularizer weights

``ctx`` is a :class:`GrowthContext`. A strategy keeps its own progress in
plain attributes and returns them from :meth:`state_dict` so a resumed run
continues exactly. Strategies are looked up by name in :data:`STRATEGIES`
(:func:`register_strategy`); the shipped ones are listed in :data:`BUILTIN_STRATEGIES` and
imported on first use (:func:`strategy_class`), then built from a config dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from pdegrow.errors import PdegrowError

if TYPE_CHECKING:
    from pdegrow.models.resnet import GrowableResNet

Action = Literal["insert", "widen", "corrector", "prune", "custom"]


@dataclass
class TrainingState:
    """The training state a strategy's *when* criterion looks at (filled by the trainer)."""

    epoch: int = 0                      # epochs completed in the whole run
    phase: int = 0                      # growth events so far (phase k trains after event k)
    phase_epoch: int = 0                # epochs completed in the current phase
    train_loss: float = float("nan")    # last epoch's mean training objective
    val_loss: float = float("nan")      # last epoch's validation data loss
    phase_best_val: float = float("inf")
    epochs_since_improvement: int = 0   # within the phase, with the trainer's min_delta
    plateau: bool = False               # patience exhausted in this phase
    phase_best_vals: list[float] = field(default_factory=list)  # best val of each finished phase
    max_phase_epochs: int = 100
    growth_ended: bool = False          # no more proposals ([train] after_growth = "continue")


@dataclass
class GrowthProposal:
    """Where and how to grow, and the predicted change of the training loss.

    ``insert``: ``block`` goes between x_``depth`` and x_``depth+1``.
    ``widen``: hidden layer ``layer`` of block ``depth`` gains ``k`` units with
    ``fan_in`` (k, …), ``bias`` (k,), ``fan_out`` (…, k, …) (None → defaults of
    :func:`pdegrow.models.blocks.widen_pair`).
    ``corrector``: ``block`` is appended as an SRL corrector.
    ``prune``: the strategy's :meth:`GrowthStrategy.apply` prunes block ``depth`` (a change of
    :meth:`GrowthStrategy.prepare`, logged as an event of its own, ``kind = "prune"``).
    ``custom``: the strategy's own :meth:`GrowthStrategy.apply` does it, from ``payload``
    (everything it needs: a proposal carries its change, the strategy keeps no hidden hand-off).
    """

    action: Action
    depth: int | None = None
    block: nn.Module | None = None
    layer: int | None = None
    k: int | None = None
    fan_in: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    fan_out: torch.Tensor | None = None
    predicted_change: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    payload: Any = None

    def where(self) -> dict[str, Any]:
        """JSON description of the location (for logs)."""
        out: dict[str, Any] = {"action": self.action}
        for key in ("depth", "layer", "k"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.block is not None and hasattr(self.block, "spec"):
            out["block"] = self.block.spec()
        return out


@dataclass
class GrowthEvent:
    """One growth step as logged (``events.jsonl``) and plotted."""

    epoch: int
    phase: int
    strategy: str
    where: dict[str, Any]
    predicted_change: float | None
    loss_before: float
    loss_after: float
    n_params_before: int
    n_params_after: int
    depth_after: int
    info: dict[str, Any] = field(default_factory=dict)
    kind: str = "growth"     # "prune": a change made before a proposal (not a growth step)

    @property
    def realised_change(self) -> float:
        return self.loss_after - self.loss_before

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["realised_change"] = self.realised_change
        return d


@dataclass
class GrowthContext:
    """What a strategy may use: the model, the training state and the trainer's tools.

    ``train_batches()`` iterates over the training set once (device tensors,
    fixed order, no shuffling); ``batch_loss(batch)`` is the data loss of the
    current model on a batch (differentiable); ``train_loss()`` the mean data
    loss over the training set (no grad); ``generator`` a torch.Generator the
    strategy may draw from (checkpointed with the run); ``data`` the trainer's
    data bundle (normalisers, operators, input/target shapes); ``regularizers``
    a kit that makes manifold/sparsity terms with the configured weights.

    With several processes, ``shard_batches()`` iterates over this process's share of the
    same batches and ``collective`` (:class:`pdegrow.training.collective.Collective`) sums
    over processes: a statistic that is a sum over samples (moments, A_r) is summed over the
    share and all-reduced. Serial: the whole set, and sums are left as they are.
    """

    model: GrowableResNet
    state: TrainingState
    device: torch.device
    train_batches: Callable[[], Iterator[Any]]
    batch_loss: Callable[[Any], torch.Tensor]
    train_loss: Callable[[], float]
    generator: torch.Generator
    data: Any = None
    events: list[GrowthEvent] = field(default_factory=list)
    regularizers: Any = None    # a pdegrow.regularizers.kit.RegularizerKit
    collective: Any = None      # a pdegrow.training.collective.Collective (None: serial)
    shard_batches: Callable[[], Iterator[Any]] | None = None   # None: train_batches

    def share(self) -> tuple[Iterator[Any], Callable[[list[torch.Tensor]], None]]:
        """This process's batches and the in-place sum over processes of a list of tensors
        (serial: every batch, and a sum that leaves the tensors as they are)."""
        if self.collective is None or self.collective.world == 1 or self.shard_batches is None:
            return self.train_batches(), lambda tensors: None
        return self.shard_batches(), self.collective.all_reduce_tensors


def apply_proposal(model: GrowableResNet, proposal: GrowthProposal) -> None:
    """Carry out an ``insert``/``widen``/``corrector`` proposal on ``model``."""
    if proposal.action == "insert":
        if proposal.block is None or proposal.depth is None:
            raise ValueError("an insert proposal needs depth and block")
        model.insert_block(proposal.depth, proposal.block)
    elif proposal.action == "widen":
        if proposal.depth is None or proposal.layer is None or proposal.k is None:
            raise ValueError("a widen proposal needs depth, layer and k")
        model.widen(proposal.depth, proposal.layer, proposal.k, proposal.fan_in, proposal.bias,
                    proposal.fan_out)
    elif proposal.action == "corrector":
        if proposal.block is None:
            raise ValueError("a corrector proposal needs block")
        model.add_corrector(proposal.block)
    else:
        raise ValueError(f"action {proposal.action!r} must be applied by its strategy")


class GrowthStrategy:
    """Base class: never grows (the fixed-architecture baseline behaves like this)."""

    name: ClassVar[str] = "base"

    def setup(self, ctx: GrowthContext) -> None:
        """Called once at the start of a fresh run (not on resume)."""

    def when(self, ctx: GrowthContext) -> bool:
        """Default criterion: the current phase plateaued or ran its maximum epochs."""
        s = ctx.state
        return s.plateau or s.phase_epoch >= s.max_phase_epochs

    def prepare(self, ctx: GrowthContext) -> GrowthProposal | None:
        """A change to make before proposing (e.g. pruning the block just trained), or None; like a
        proposal it changes nothing itself: the trainer applies it (:meth:`apply`) and logs it as
        its own event, with the loss before and after."""
        return None

    def propose(self, ctx: GrowthContext) -> GrowthProposal | None:
        """Where/how to grow, or None to stop training."""
        return None

    def end_reason(self, ctx: GrowthContext) -> str:
        """Why :meth:`propose` just returned None, in words (logged with the ``growth_end`` event)."""
        return "the strategy proposed no further change"

    def apply(self, ctx: GrowthContext, proposal: GrowthProposal) -> None:
        """Change the model (default: :func:`apply_proposal`)."""
        apply_proposal(ctx.model, proposal)

    def after_growth(self, ctx: GrowthContext, event: GrowthEvent) -> None:
        """Called after the optimizer was synced and the event logged."""

    def loss_terms(self, ctx: GrowthContext) -> list[nn.Module]:
        """Extra loss terms (see :mod:`pdegrow.regularizers`) active in the current phase."""
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


STRATEGIES: dict[str, type[GrowthStrategy]] = {}


def register_strategy[S: type[GrowthStrategy]](cls: S) -> S:
    """Class decorator: make a strategy available by ``cls.name`` in configs."""
    STRATEGIES[cls.name] = cls
    return cls


BUILTIN_STRATEGIES: dict[str, str] = {
    "fixed": "pdegrow.growth.fixed",
    "layerwise": "pdegrow.growth.layerwise",
    "forward_thinking": "pdegrow.growth.forward_thinking",
    "net2deeper": "pdegrow.growth.net2deeper",
    "random_insertion": "pdegrow.growth.random_insertion",
    "topological_insertion": "pdegrow.growth.topological_insertion",
    "net2wider": "pdegrow.growth.net2wider",
    "random_neurons": "pdegrow.growth.random_neurons",
    "tiny": "pdegrow.growth.tiny",
    "gradmax": "pdegrow.growth.gradmax",
    "folding": "pdegrow.growth.folding",
}
"""The strategies pdegrow ships: name → the module that defines (and registers) it, imported on
first use. Strategies of one's own register with :func:`register_strategy` before use."""


def strategy_class(name: str) -> type[GrowthStrategy]:
    """The strategy class registered (or shipped, :data:`BUILTIN_STRATEGIES`) as ``name``."""
    if name not in STRATEGIES and name in BUILTIN_STRATEGIES:
        import importlib

        importlib.import_module(BUILTIN_STRATEGIES[name])
    if name not in STRATEGIES:
        known = sorted(set(STRATEGIES) | set(BUILTIN_STRATEGIES))
        raise PdegrowError(f"unknown growth strategy {name!r} (known: {', '.join(known)})")
    return STRATEGIES[name]


def load_builtin_strategies() -> dict[str, type[GrowthStrategy]]:
    """Import every shipped strategy; returns the registry (name → class)."""
    for name in BUILTIN_STRATEGIES:
        strategy_class(name)
    return dict(STRATEGIES)


def strategy_options(cls: type[GrowthStrategy]) -> type:
    """The options dataclass of a strategy: one field per keyword of ``cls.__init__``, with its type
    hint and default — the ``[growth]`` table is checked against it by the same checker as every
    other config section (:func:`pdegrow.config.build_dataclass`), then ``cls(**options)`` checks
    the ranges (a ``ValueError`` there is the user's, reported in one line)."""
    cached = cls.__dict__.get("_options_class")
    if cached is not None:
        return cached
    import copy
    import dataclasses
    import inspect
    import typing

    hints = typing.get_type_hints(cls.__init__)
    fields: list[Any] = []
    for pname, param in inspect.signature(cls.__init__).parameters.items():
        if pname == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        hint = hints.get(pname, Any)
        if param.default is param.empty:
            fields.append((pname, hint))
        elif isinstance(param.default, (list, dict, set)):
            fields.append((pname, hint, dataclasses.field(
                default_factory=lambda d=param.default: copy.deepcopy(d))))
        else:
            fields.append((pname, hint, dataclasses.field(default=param.default)))
    options = dataclasses.make_dataclass(f"{cls.__name__}Options", fields)
    options.__doc__ = f"Options of the {cls.name!r} growth strategy ([growth] keys)."
    cls._options_class = options  # type: ignore[attr-defined]
    return options


def build_strategy(name: str, options: dict[str, Any]) -> GrowthStrategy:
    """Instantiate a registered strategy from config options, checked against its options dataclass
    (:func:`strategy_options`): unknown options, wrong types, non-finite numbers and out-of-range
    values are :class:`PdegrowError` s of one line."""
    import math

    from pdegrow.config import build_dataclass

    cls = strategy_class(name)
    option_cls = strategy_options(cls)
    valid = [f.name for f in dataclasses_fields(option_cls)]
    unknown = sorted(k for k in options if k not in valid)
    if unknown:
        raise PdegrowError(f"[growth] unknown option(s) {', '.join(unknown)} for strategy {name!r} "
                           f"(valid: {', '.join(sorted(valid))})")
    checked = build_dataclass(option_cls, options, f"[growth] strategy {name!r}")
    values = {k: getattr(checked, k) for k in valid}
    for k, v in values.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise PdegrowError(f"[growth] strategy {name!r}: {k} = {v} must be a finite number")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise PdegrowError(f"[growth] bad options for strategy {name!r}: {exc}") from None


def dataclasses_fields(cls: type) -> tuple[Any, ...]:
    import dataclasses

    return dataclasses.fields(cls)
