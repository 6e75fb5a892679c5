"""The one trainer every growth strategy runs under (``docs/architecture.md``).

Seeded; device ``auto``/``cpu``/``cuda``; optional bfloat16 autocast on CUDA;
phase-wise early stopping (a *phase* is the training between two growth
events); tqdm progress; metrics appended to ``metrics.jsonl`` every epoch (``metrics.csv``
is written from it when the run ends); growth events to ``events.jsonl``; a checkpoint
every ``run.checkpoint_seconds`` (and/or every ``run.checkpoint_every`` epochs), after
every growth event and at the end, holding the architecture, weights,
optimizer, scheduler, strategy state, training state, growth history, the
best-weights snapshot and all RNG states — so a killed run resumed with
``resume=True`` ends with bitwise the same weights (CPU, same thread count).
``checkpoint.pt`` and ``model.pt`` are tensors + JSON (:mod:`pdegrow.training.runfiles`),
never pickle: loading a crafted file cannot run code.

Run directory: ``run.json`` (marker), ``config.json``, ``splits.json``,
``checkpoint.pt``, ``metrics.jsonl``, ``metrics.csv``, ``events.jsonl``,
``architecture.jsonl`` (one line per growth event), ``model.pt`` (final
model + normalisers), ``summary.json`` (final validation and test metrics).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdegrow.data.bundle import prepare_data
from pdegrow.data.loaders import Batch, MemorySplit, Split, epoch_batches, item_groups, iterate
from pdegrow.errors import PdegrowError
from pdegrow.growth.base import (
    GrowthContext,
    GrowthEvent,
    GrowthStrategy,
    TrainingState,
    build_strategy,
)
from pdegrow.models.optim import make_optimizer, sync_optimizer
from pdegrow.regularizers.kit import RegularizerKit
from pdegrow.regularizers.terms import Forward
from pdegrow.training import problems
from pdegrow.training.checkpoint import checkpoint_state, restore_state, save_model
from pdegrow.training.collective import Collective
from pdegrow.training.config import ExperimentConfig
from pdegrow.training.model_setup import (
    build_model,
    data_loss,
    make_scheduler,
    resolve_device,
    seed_everything,
)
from pdegrow.training.rundir import RunDirectory
from pdegrow.training.runfiles import load_run_file, save_run_file
from pdegrow.training.runlog import (
    MetricsLog,
    atomic_write_text,
    write_json,
)

log = logging.getLogger(__name__)


class Trainer:
    """Train ``cfg``'s network on ``data_path`` into ``run_dir`` under ``cfg``'s growth strategy."""

    def __init__(self, cfg: ExperimentConfig, data_path: str | Path, run_dir: str | Path, *,
                 resume: bool = False, overwrite: bool = False, progress: bool | None = None,
                 collective: Collective | None = None):
        self.cfg, self.data_path, self.run_dir = cfg, str(data_path), Path(run_dir)
        self.collective = collective if collective is not None else Collective()
        self.progress = cfg.run.progress if progress is None else progress
        self.rundir = RunDirectory(self.run_dir)
        self.rundir.open(resume, overwrite)  # checks and locks; nothing is written before validation
        try:
            self._setup(resume)
        except BaseException:
            self.rundir.abandon()
            raise

    def _setup(self, resume: bool) -> None:
        cfg = self.cfg
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        self.device = self.rundir.device = resolve_device(cfg.run.device)
        self.dtype = torch.float64 if cfg.run.dtype == "float64" else torch.float32
        self.amp = bool(cfg.run.mixed_precision and self.device.type == "cuda")
        ckpt = load_run_file(self.run_dir / "checkpoint.pt", "checkpoint") if resume else None
        splits = json.loads((self.run_dir / "splits.json").read_text()) if ckpt else None
        seed_everything(cfg.run.seed)
        self.data = prepare_data(self.data_path, cfg.data, cfg.run.seed, self.device, self.dtype, splits)
        self.ops = problems.heat_operators(self.data, self.device, self.dtype)
        self.global_terms = problems.physics_terms(self.data, cfg.regularizers, self.ops)
        self.posterior = problems.posterior_term(self.data, cfg.train, self.ops)
        train_inputs = self.data.train.inputs if isinstance(self.data.train, MemorySplit) else None
        self.kit = RegularizerKit(cfg.regularizers, len(self.data.train), train_inputs)
        self.strategy: GrowthStrategy = build_strategy(cfg.strategy, cfg.growth)
        self.keep_groups = cfg.data.noisy_copies > 0
        self.shuffle = torch.Generator().manual_seed(cfg.run.seed + 1)
        self.strategy_gen = torch.Generator().manual_seed(cfg.run.seed + 2)
        self.state = TrainingState(max_phase_epochs=cfg.train.first_phase_epochs or cfg.train.phase_epochs)
        self.events: list[GrowthEvent] = []
        self.best_snapshot: dict[str, torch.Tensor] | None = None
        self.model = build_model(cfg, self.data).to(self.device, self.dtype)
        self.optimizer = make_optimizer(cfg.optim.name, self.model, cfg.optim.lr, cfg.optim.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, self.cfg)
        self.finished = False
        self._last_checkpoint = time.monotonic()
        self.ctx = GrowthContext(self.model, self.state, self.device, self._fixed_batches, self._batch_loss,
                                 self.train_loss, self.strategy_gen, self.data, self.events, self.kit,
                                 self.collective, self._shard_batches)
        if ckpt:
            try:
                restore_state(self, ckpt)
            except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise PdegrowError(f"{self.run_dir}/checkpoint.pt is damaged ({msg})") from None
            self.rundir.set_status("running")
            self.metrics = MetricsLog(self.run_dir, keep_rows=ckpt["n_metric_rows"])
        else:
            self.strategy.setup(self.ctx)
            sync_optimizer(self.optimizer, self.model)
            # everything is valid: only now does the run directory get its files
            self.rundir.start(self.data_path, self.cfg.to_dict(), self.data.splits,
                              {**self.model.architecture(), "spec": self.model.spec()})
            self.metrics = MetricsLog(self.run_dir, keep_rows=0)
        self.terms = self._active_terms()

    # ------------------------------------------------------------------ run directory

    def close(self) -> None:
        """Release the run directory's lock (done by :meth:`run` at its end, however it ends)."""
        self.rundir.release()

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint(self) -> None:
        save_run_file(self.run_dir / "checkpoint.pt", "checkpoint", checkpoint_state(self))
        self._last_checkpoint = time.monotonic()

    def _checkpoint_due(self, grew: bool) -> bool:
        """At the end, after a growth event, every ``checkpoint_every`` epochs, or when
        ``checkpoint_seconds`` have passed since the last checkpoint (a clock, so the decision
        is agreed on by every process). Checkpoints change no result: resume is bitwise from any."""
        run = self.cfg.run
        if self.finished or grew:
            return True
        if run.checkpoint_every > 0 and self.state.epoch % run.checkpoint_every == 0:
            return True
        waited = time.monotonic() - self._last_checkpoint
        late = run.checkpoint_seconds > 0 and waited >= run.checkpoint_seconds
        return self.collective.decide(late)  # rank 0's clock

    # ------------------------------------------------------------------ losses

    def _fixed_batches(self) -> Iterator[Batch]:
        return iterate(self.data.train, self.cfg.optim.batch_size, None, keep_groups=False)

    def _shard_batches(self) -> Iterator[Batch]:
        """This process's share of :meth:`_fixed_batches` (all of them when serial): statistics
        summed over it and all-reduced (``ctx.collective``) are the full-data sums."""
        c = self.collective
        for idx in epoch_batches(len(self.data.train), self.cfg.optim.batch_size, None):
            mine = c.shard(idx)
            if len(mine):
                yield self.data.train.get(mine)

    def _net(self) -> torch.nn.Module:
        """The module a training step calls (the model; a data-parallel wrapper of it when distributed)."""
        return self.model

    def _objective(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The training objective of a batch: w_s · data loss (+ w_p · the heat posterior term)."""
        t = self.cfg.train
        loss = data_loss(pred, batch.targets, t.loss)
        if t.supervised_weight != 1.0:
            loss = t.supervised_weight * loss
        if self.posterior is not None:
            loss = loss + self.posterior(batch, Forward(self.model, pred, [], self.data.to_physical_target,
                                                        self.data.to_physical_input))
        return loss

    def _batch_loss(self, batch: Batch) -> torch.Tensor:
        return self._objective(self.model(batch.inputs), batch)

    @torch.no_grad()
    def train_loss(self) -> float:
        """Mean data loss over the training split (fixed order, no regularizers)."""
        total, n = 0.0, 0
        for batch in self._fixed_batches():
            total += float(self._batch_loss(batch)) * len(batch)
            n += len(batch)
        return total / max(n, 1)

    def _active_terms(self) -> list[torch.nn.Module]:
        return [*self.global_terms, *self.strategy.loss_terms(self.ctx)]

    @torch.no_grad()
    def split_sums(self, batches: Iterable[Batch]) -> tuple[dict[str, float], int]:
        """Data loss and per-sample metrics (relative errors) summed over ``batches``, and the count."""
        self.model.eval()
        sums: dict[str, float] = {}
        n = 0
        for batch in batches:
            pred = self.model(batch.inputs)
            b = len(batch)
            loss = float(self._objective(pred, batch))
            sums["loss"] = sums.get("loss", 0.0) + loss * b
            metrics = problems.batch_metrics(self.data.to_physical_target(pred),
                                             self.data.to_physical_target(batch.targets), batch, self.data,
                                             self.ops)
            problems.add_metric_sums(sums, metrics)
            n += b
        self.model.train()
        return sums, n

    def evaluate_split(self, split: Split) -> dict[str, float]:
        """Mean data loss and mean per-sample metrics over ``split``, each process evaluating a strided
        share; the sums are added in rank order, so every process gets the same numbers."""
        c = self.collective
        mine = torch.arange(len(split))[c.rank::c.world]
        sums, n = self.split_sums(split.get(idx) for idx in mine.split(max(self.cfg.optim.batch_size, 256)))
        total: dict[str, float] = {}
        count = 0
        for part, m in c.gather((sums, n)):
            count += m
            for k, v in part.items():
                total[k] = total.get(k, 0.0) + v
        return problems.metric_means(total, count)

    # ------------------------------------------------------------------ training

    def _train_epoch(self) -> dict[str, float]:
        """One epoch: every process draws the same shuffled global batches and steps on its share
        (:meth:`Collective.shard`); the sums of the logged losses are all-reduced."""
        self.model.train()
        split = self.data.train
        groups = item_groups(split) if self.keep_groups else None
        logged = [*self.terms, *([self.posterior] if self.posterior is not None else [])]
        keys = ["train_loss", "train_data_loss", *(f"term_{t.name}" for t in logged)]
        sums = [0.0] * len(keys)
        n_local = 0
        for idx in epoch_batches(len(split), self.cfg.optim.batch_size, self.shuffle, groups):
            mine = self.collective.shard(idx, groups)
            n = len(mine)
            batch = split.get(mine if n else idx[:1])  # an empty share steps on one sample, weight 0
            total, loss = self._step(batch, n * self.collective.world / len(idx))
            if n:
                sums[0] += float(total) * n
                sums[1] += float(loss) * n
                for k, term in enumerate(logged, start=2):
                    sums[k] += term.last_value * n
                n_local += n
        values = self.collective.all_reduce([*sums, float(n_local)])
        if self.scheduler is not None:
            self.scheduler.step()
        n_total = max(values[-1], 1.0)
        return {k: v / n_total for k, v in zip(keys, values[:-1], strict=True)}

    def _step(self, batch: Batch, weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step: the objective and regularizers of ``batch``, the gradient of
        ``weight`` × that (a process's share n_r of a global batch B weighs n_r·W/B, so averaging the
        gradients over the W processes gives the gradient of the global batch's mean; weight 0: a
        process with no share, which still joins the gradient reduction). A non-finite loss on any
        process stops every one. Returns the total and the data loss (detached)."""
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            pred, states = self._net()(batch.inputs, return_states=True)
            if weight == 0.0:
                total = loss = pred.sum() * 0.0
            else:
                fwd = Forward(self.model, pred, states, self.data.to_physical_target,
                              self.data.to_physical_input)
                loss = self._objective(pred, batch)
                total = loss
                for term in self.terms:
                    total = total + term(batch, fwd)
        finite = bool(torch.isfinite(total))
        if not self.collective.all_true(finite):
            value = float(total.detach()) if not finite else "non-finite on another rank"
            raise PdegrowError(f"the training loss became {value} at epoch {self.state.epoch + 1} "
                               "(lower optim.lr or the regularizer weights)")
        (total if weight == 1.0 else total * weight).backward()
        self.optimizer.step()
        return total.detach(), loss.detach()

    def _snapshot(self) -> None:
        if self.cfg.train.restore_best:
            self.best_snapshot = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _after_epoch(self, row: dict[str, float]) -> None:
        s, t = self.state, self.cfg.train
        s.epoch += 1
        s.phase_epoch += 1
        s.train_loss, s.val_loss = row["train_loss"], row["val_loss"]
        first = not np.isfinite(s.phase_best_val)
        if first or s.val_loss < s.phase_best_val - t.min_delta * abs(s.phase_best_val):
            s.phase_best_val = s.val_loss
            s.epochs_since_improvement = 0
            self._snapshot()
        else:
            s.epochs_since_improvement += 1
        s.plateau = s.epochs_since_improvement >= t.patience

    def _end_phase(self) -> None:
        if self.cfg.train.restore_best and self.best_snapshot is not None:
            self.model.load_state_dict(self.best_snapshot)
        self.state.phase_best_vals.append(self.state.phase_best_val)

    def _log(self, name: str, row: dict[str, Any]) -> None:
        with (self.run_dir / name).open("a") as fh:
            fh.write(json.dumps(row, default=str) + "\n")

    def _prepare(self) -> None:
        """Carry out the strategy's change before its proposal (e.g. pruning), logged as its own event."""
        change = self.strategy.prepare(self.ctx)
        if change is None:
            return
        before, n = self.train_loss(), self.model.n_parameters()
        self.strategy.apply(self.ctx, change)
        self.collective.broadcast_([*self.model.parameters(), *self.model.buffers()])
        event = GrowthEvent(self.state.epoch, self.state.phase, self.strategy.name, change.where(),
                            change.predicted_change, before, self.train_loss(), n, n, self.model.depth,
                            dict(change.info), kind=change.action)
        self._log("events.jsonl", event.to_dict())

    def _grow(self) -> bool:
        """Ask the strategy for a proposal and carry it out; False when training should stop."""
        self._prepare()
        proposal = self.strategy.propose(self.ctx)
        where = None if proposal is None else json.dumps(proposal.where(), sort_keys=True, default=str)
        wheres = self.collective.gather(where)
        if any(w != wheres[0] for w in wheres):
            raise PdegrowError(f"ranks disagree on the growth proposal: rank 0 {wheres[0]}, "
                               f"others {sorted({str(w) for w in wheres[1:]})}")
        if proposal is None:
            return False
        before = self.train_loss()
        n_before = self.model.n_parameters()
        self.strategy.apply(self.ctx, proposal)
        self.collective.broadcast_([*self.model.parameters(), *self.model.buffers()])  # rank 0's new values
        if self.cfg.optim.reset_on_growth:
            self.optimizer.state.clear()
        sync_optimizer(self.optimizer, self.model)
        after = self.train_loss()
        event = GrowthEvent(self.state.epoch, self.state.phase + 1, self.strategy.name, proposal.where(),
                            proposal.predicted_change, before, after, n_before, self.model.n_parameters(),
                            self.model.depth, dict(proposal.info))
        self.events.append(event)
        self._log("events.jsonl", event.to_dict())
        self._log("architecture.jsonl", {"epoch": self.state.epoch, "event": len(self.events),
                                         **self.model.architecture(), "spec": self.model.spec()})
        self.strategy.after_growth(self.ctx, event)
        s = self.state
        s.phase += 1
        s.max_phase_epochs = self.cfg.train.phase_epochs   # after the first phase (train.first_phase_epochs)
        self._restart_phase()
        self.terms = self._active_terms()
        log.info("growth event %d at epoch %d: %s", len(self.events), s.epoch, event.where)
        return True

    def _end_growth(self) -> None:
        """``[train] after_growth = "continue"``: the strategy proposed nothing more, so the final
        network trains on up to ``max_epochs`` in one last phase, asking for no further proposal
        (``state.growth_ended``, checkpointed). It starts from the weights the run would have ended
        with under ``"stop"`` (the best of the phase just ended) and is logged as a ``growth_end``
        event with the strategy's reason (:meth:`GrowthStrategy.end_reason`)."""
        s = self.state
        s.growth_ended = True
        reason = self.strategy.end_reason(self.ctx)
        self._log("events.jsonl", {"kind": "growth_end", "epoch": s.epoch, "phase": s.phase,
                                   "strategy": self.strategy.name, "reason": reason,
                                   "depth_after": self.model.depth,
                                   "n_params_after": self.model.n_parameters(),
                                   "epochs_left": self.cfg.train.max_epochs - s.epoch})
        log.info("growth ended at epoch %d (%s): training the final network to epoch %d", s.epoch, reason,
                 self.cfg.train.max_epochs)
        self._restart_phase()

    def _restart_phase(self) -> None:
        """Start counting a new phase from the current weights: no epochs, no plateau, its best
        validation loss (and snapshot) those of the weights it starts from."""
        s = self.state
        s.phase_epoch = 0
        s.epochs_since_improvement = 0
        s.plateau = False
        s.phase_best_val = self.evaluate_split(self.data.val)["loss"]
        self._snapshot()

    def run(self) -> dict[str, Any]:
        """Train to the end (or continue a resumed run); returns the summary written to ``summary.json``."""
        cfg = self.cfg
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.train.max_epochs, initial=self.state.epoch, unit="epoch",
                       desc=f"train[{cfg.strategy}]", dynamic_ncols=True)
        t0, c0 = time.perf_counter(), time.process_time()  # this segment's clocks (a resume restarts both)
        try:
            while not self.finished:
                row: dict[str, Any] = {"epoch": self.state.epoch + 1, "phase": self.state.phase}
                row.update(self._train_epoch())
                val = self.evaluate_split(self.data.val)
                row["val_loss"] = val.pop("loss")
                row.update({f"val_{k}": v for k, v in val.items()})
                row.update({"lr": self.optimizer.param_groups[0]["lr"], "depth": self.model.depth,
                            "n_params": self.model.n_parameters(),
                            "n_trainable": self.model.n_parameters(trainable_only=True),
                            "n_correctors": len(self.model.correctors),
                            "wall_s": round(time.perf_counter() - t0, 4),
                            "cpu_s": round(time.process_time() - c0, 4)})
                self._after_epoch(row)
                self.metrics.append(row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(train=f"{row['train_loss']:.3g}", val=f"{row['val_loss']:.3g}",
                                    depth=self.model.depth, refresh=False)
                grew = ended = False
                if self.state.epoch >= cfg.train.max_epochs:
                    self._end_phase()
                    self.finished = True
                elif (not self.state.growth_ended
                      and self.collective.decide(self.strategy.when(self.ctx))):  # all ask, rank 0 decides
                    self._end_phase()
                    grew = self._grow()
                    ended = not grew and cfg.train.after_growth == "continue"
                    if ended:
                        self._end_growth()
                    self.finished = not (grew or ended)
                if self._checkpoint_due(grew or ended):
                    self._checkpoint()
            return self._finish()
        except PdegrowError as exc:  # bad data or settings: recorded, so later commands know
            self.metrics.write_csv()
            self.rundir.fail(str(exc))
            raise
        finally:
            if bar is not None:
                bar.close()
            self.close()  # an interrupted run stays "running" and resumable

    def _finish(self) -> dict[str, Any]:
        summary = {
            "strategy": self.cfg.strategy,
            "epochs": self.state.epoch,
            "growth_events": len(self.events),
            "architecture": self.model.architecture(),
            "val": self.evaluate_split(self.data.val),
            "test": self.evaluate_split(self.data.test) if len(self.data.test) else {},
            "phase_best_vals": self.state.phase_best_vals,
        }
        save_model(self.run_dir / "model.pt", self.model, self.data, self.cfg)
        self.metrics.write_csv()
        write_json(self.run_dir / "summary.json", summary)
        self.rundir.finish()
        return summary


def train(cfg: ExperimentConfig, data_path: str | Path, run_dir: str | Path, *, resume: bool = False,
          overwrite: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """Train (or resume) a run; returns its summary."""
    return Trainer(cfg, data_path, run_dir, resume=resume, overwrite=overwrite, progress=progress).run()


__all__ = ["Trainer", "atomic_write_text", "build_model", "data_loss", "save_model",
           "train"]
