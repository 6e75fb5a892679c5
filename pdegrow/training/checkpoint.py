"""What a checkpoint holds, and putting it back: the run's whole state, so a resume is exact.

A checkpoint holds the architecture (spec) and weights, optimizer, scheduler, strategy state,
training state, growth history, the best-weights snapshot and every random state (torch,
Python, CUDA, the trainer's shuffle and strategy generators): a run killed at any moment and
resumed from its last checkpoint ends with bitwise the same weights (CPU, same thread count).
``model.pt`` (:func:`save_model`) is the trained model alone, with what is needed to use it.
Both are written with :mod:`pdegrow.training.runfiles` (tensors + JSON, never pickle).
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import torch

from pdegrow.growth.base import GrowthEvent
from pdegrow.models.optim import make_optimizer
from pdegrow.models.resnet import GrowableResNet
from pdegrow.training.model_setup import make_scheduler
from pdegrow.training.runfiles import save_run_file


def checkpoint_state(tr: Any) -> dict[str, Any]:
    """The checkpoint of the trainer ``tr`` (a :class:`pdegrow.training.trainer.Trainer`)."""
    return {
        "epoch": tr.state.epoch,
        "model_spec": tr.model.spec(),
        "model_state": tr.model.state_dict(),
        "optimizer": tr.optimizer.state_dict(),
        "scheduler": tr.scheduler.state_dict() if tr.scheduler else None,
        "strategy": tr.strategy.state_dict(),
        "state": dataclasses.asdict(tr.state),
        "events": [json.loads(json.dumps(e.to_dict(), default=str)) for e in tr.events],
        "best_snapshot": tr.best_snapshot,
        "finished": tr.finished,
        "n_metric_rows": len(tr.metrics.rows),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "shuffle": tr.shuffle.get_state(), "strategy": tr.strategy_gen.get_state()},
    }


def restore_state(tr: Any, ckpt: dict[str, Any]) -> None:
    """Put :func:`checkpoint_state`'s ``ckpt`` back into the trainer ``tr`` (built from the same config)."""
    model = GrowableResNet.from_spec(ckpt["model_spec"]).to(tr.device, tr.dtype)
    model.load_state_dict(ckpt["model_state"])
    tr.model = tr.ctx.model = model
    o = tr.cfg.optim
    tr.optimizer = make_optimizer(o.name, model, o.lr, o.weight_decay)
    tr.optimizer.load_state_dict(ckpt["optimizer"])
    tr.scheduler = make_scheduler(tr.optimizer, tr.cfg)
    if tr.scheduler is not None and ckpt["scheduler"] is not None:
        tr.scheduler.load_state_dict(ckpt["scheduler"])
    tr.strategy.load_state_dict(ckpt["strategy"])
    for k, v in ckpt["state"].items():
        setattr(tr.state, k, v)
    tr.events[:] = [GrowthEvent(**{k: v for k, v in e.items() if k != "realised_change"})
                    for e in ckpt["events"]]
    tr.best_snapshot = ckpt["best_snapshot"]
    tr.finished = ckpt["finished"]
    rng = ckpt["rng"]
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    tr.shuffle.set_state(rng["shuffle"])
    tr.strategy_gen.set_state(rng["strategy"])


def save_model(path: Path, model: GrowableResNet, data: Any, cfg: Any) -> None:
    """The trained model with what is needed to use it: spec, weights, normalisers, data names, and the
    forward setting, field decoder and geometry of the data (:func:`pdegrow.inference.model_extras`)."""
    from pdegrow.inference import model_extras

    save_run_file(path, "model", {"spec": model.spec(), "state": dict(model.state_dict()),
                                  "input_norm": data.input_norm.state_dict(),
                                  "target_norm": data.target_norm.state_dict(),
                                  "config": cfg.to_dict(), "dtype": str(next(model.parameters()).dtype),
                                  **model_extras(data.path, cfg.data)})
