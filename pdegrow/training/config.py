"""Training configs (TOML) → typed sections; every unknown key is an error.

A training config has the sections ``[run]``, ``[data]``, ``[model]``,
``[optim]``, ``[train]``, ``[regularizers]`` and ``[growth]`` (``strategy``
plus that strategy's own options, checked by the strategy). Any section may
be left out (defaults below). ``--set section.key=value`` overrides a key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pdegrow.config import build_dataclass, read_toml
from pdegrow.errors import PdegrowError


@dataclass
class RunConfig:
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    mixed_precision: bool = False          # bfloat16 autocast, CUDA only
    progress: bool = True
    checkpoint_every: int = 0              # epochs between checkpoints (0: by time only)
    checkpoint_seconds: float = 60.0       # a checkpoint when this long has passed since the last
                                           # (0: by epochs only); always at growth events and the end
    threads: int = 0                       # torch CPU threads (0 = leave as is)


@dataclass
class DataConfig:
    problem: str = "heat"                  # the file's problem must match ("" = any)
    input: str = "inputs/observations"
    target: str = "targets/kl_coefficients"
    aux: list[str] = field(default_factory=lambda: ["targets/temperature", "targets/log_conductivity"])
    n_train: int = 50
    n_val: int = 10
    n_test: int = -1                       # -1: all remaining samples
    split_seed: int = 0
    split: Literal["random", "ordered"] = "random"   # ordered: the file's first n_train rows train,
                                           # the next n_val validate, the next n_test test
    noisy_copies: int = 0                  # extra noisy copies of each training input
    simulated_inputs: int = 0              # heat (KL prior), navier_stokes: extra training samples drawn from
                                           # the prior predictive with the file's own forward model
                                           # (1 solve / 1 forward run each; data/simulators.py)
    normalize_with_simulated: bool = False  # fit the normalisers on the simulated samples too (default:
                                           # on the file's training samples only)
    clean_input: str = "inputs/observations_clean"
    input_transform: Literal["none", "log"] = "none"   # applied to raw inputs (and noisy copies)
    normalize_inputs: Literal["feature", "scalar", "none"] = "feature"
    normalize_targets: Literal["feature", "scalar", "none"] = "feature"
    in_memory: Literal["auto", "yes", "no"] = "auto"
    memory_limit_mb: float = 2048.0


@dataclass
class ModelConfig:
    kind: Literal["mlp", "conv", "conv3d", "vit"] = "mlp"  # vit: depth = transformer blocks (attention
                                           # + MLP); conv3d: 3-D convolutions on volumes (models/conv3d.py)
    width: int = 50
    depth: int = 1                         # residual blocks at the start
    block: str = "perceptron"
    hidden: list[int] = field(default_factory=lambda: [64])   # for mlp/conv blocks
    activation: str = "tanh"
    kernel_size: int = 3
    padding_mode: Literal["zeros", "circular", "reflect", "replicate"] = "zeros"
    coordinates: bool = False              # conv: the lift also reads sin/cos 2πx, 2πy channels (CoordConv)
    patch_size: int = 4                    # vit: patch side (divides the image size)
    heads: int = 2                         # vit: attention heads (divide the width)
    position: Literal["learned", "sinusoidal"] = "learned"   # vit: position embedding
    linear_skip: Literal["none", "ridge"] = "none"   # ridge: output = L(y) + network(y), L the ridge map of
                                           # the training pairs (pdegrow/models/linear_skip.py)
    linear_skip_lambda: float = 0.0        # ridge λ (per sample, normalised units); 0: the best of a grid
                                           # on the validation split
    linear_skip_trainable: bool = False    # false: L frozen (residual learning on the linear estimator)


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    scheduler: Literal["none", "step", "cosine"] = "none"
    step_size: int = 100
    gamma: float = 0.5
    reset_on_growth: bool = False          # fresh optimizer state after each growth event


@dataclass
class TrainConfig:
    max_epochs: int = 500                  # whole run
    phase_epochs: int = 200                # at most per growth phase
    first_phase_epochs: int = 0            # at most for the first phase (before any growth; 0: phase_epochs)
    patience: int = 30                     # epochs without validation improvement → plateau
    min_delta: float = 1e-4                # relative improvement that counts
    restore_best: bool = True              # at a phase end, go back to its best validation weights
    loss: Literal["mse", "relative_mse", "cross_entropy"] = "mse"   # cross_entropy: one-hot/soft targets
    supervised_weight: float = 1.0         # weight of the data loss against the labels
    posterior_weight: float = 0.0          # heat, KL target: + w · mean −log π(ŷ | y) / S (label-free)
    after_growth: Literal["stop", "continue"] = "stop"   # once the strategy proposes nothing more: end the
                                           # run (stop) or train the final network up to max_epochs (continue)


@dataclass
class RegularizerConfig:
    physics_weight: float = 0.0            # Φ_p (heat residual with the true temperature)
    model_constrained_weight: float = 0.0  # solve with the prediction, compare at the sensors
    manifold_weight: float = 0.0           # Φ_m on the newest state (initial weight)
    manifold_factor: float = 1.0           # × per added layer (the papers: 0.5 or 1.5)
    manifold_similarity: Literal["clusters", "knn"] = "clusters"
    manifold_k: int = 5
    sparsity_weight: float = 0.0           # Φ_s on the trainable (new) block
    prune_tol: float = 0.0                 # |w| < tol → 0 after a block is trained


@dataclass
class ExperimentConfig:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    regularizers: RegularizerConfig = field(default_factory=RegularizerConfig)
    strategy: str = "fixed"
    growth: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        d["growth"] = {"strategy": self.strategy, **self.growth}
        return d


SECTIONS: dict[str, type] = {"run": RunConfig, "data": DataConfig, "model": ModelConfig,
                             "optim": OptimConfig, "train": TrainConfig, "regularizers": RegularizerConfig}


# value rules beyond the types: (section, key) → (test, what it must be)
_POSITIVE = (lambda v: v > 0, "> 0")
_NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
RULES: dict[tuple[str, str], tuple[Any, str]] = {
    ("run", "checkpoint_every"): _NON_NEGATIVE,
    ("run", "checkpoint_seconds"): _NON_NEGATIVE, ("run", "threads"): _NON_NEGATIVE,
    ("data", "n_train"): _POSITIVE, ("data", "n_val"): _POSITIVE,
    ("data", "n_test"): (lambda v: v >= -1, ">= -1 (-1: all remaining samples)"),
    ("data", "noisy_copies"): _NON_NEGATIVE, ("data", "simulated_inputs"): _NON_NEGATIVE,
    ("data", "memory_limit_mb"): _NON_NEGATIVE,
    ("model", "width"): _POSITIVE, ("model", "depth"): _NON_NEGATIVE,
    ("model", "hidden"): (lambda v: all(h > 0 for h in v), "a list of sizes > 0"),
    ("model", "linear_skip_lambda"): _NON_NEGATIVE,
    ("model", "kernel_size"): _POSITIVE, ("model", "patch_size"): _POSITIVE, ("model", "heads"): _POSITIVE,
    ("optim", "lr"): _POSITIVE, ("optim", "weight_decay"): _NON_NEGATIVE,
    ("optim", "batch_size"): _POSITIVE, ("optim", "step_size"): _POSITIVE, ("optim", "gamma"): _POSITIVE,
    ("train", "max_epochs"): _POSITIVE, ("train", "phase_epochs"): _POSITIVE,
    ("train", "first_phase_epochs"): _NON_NEGATIVE,
    ("train", "patience"): _POSITIVE, ("train", "min_delta"): _NON_NEGATIVE,
    ("train", "supervised_weight"): _NON_NEGATIVE, ("train", "posterior_weight"): _NON_NEGATIVE,
    ("regularizers", "physics_weight"): _NON_NEGATIVE,
    ("regularizers", "model_constrained_weight"): _NON_NEGATIVE,
    ("regularizers", "manifold_weight"): _NON_NEGATIVE, ("regularizers", "manifold_factor"): _POSITIVE,
    ("regularizers", "manifold_k"): _POSITIVE, ("regularizers", "sparsity_weight"): _NON_NEGATIVE,
    ("regularizers", "prune_tol"): _NON_NEGATIVE,
}


def check_section(name: str, section: Any, source: str) -> None:
    """Every float of a built section is finite and every value obeys :data:`RULES` (one line)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise PdegrowError(f"{source}: {f.name} = {value} must be a finite number")
        rule = RULES.get((name, f.name))
        if rule is not None and not rule[0](value):
            raise PdegrowError(f"{source}: {f.name} = {value!r} must be {rule[1]}")


def check_overrides(overrides: dict[str, Any], strategy: str) -> None:
    """Each ``--set section.key=value`` on its own (key, type, range), so that its errors name
    ``--set`` and not the config file; ``strategy`` is the one the config will use."""
    for key, value in overrides.items():
        section, sep, name = key.partition(".")
        source = f"--set {key}={value!r}"
        if not sep:
            raise PdegrowError(f"--set {key}: use section.key=value (e.g. optim.lr=1e-3)")
        if section == "growth":
            from pdegrow.growth.base import build_strategy

            if name == "strategy" and not isinstance(value, str):
                raise PdegrowError(f"{source}: the strategy must be a string")
            try:
                build_strategy(value, {}) if name == "strategy" else build_strategy(strategy, {name: value})
            except PdegrowError as exc:
                raise PdegrowError(f"{source}: {exc}") from None
            continue
        if section not in SECTIONS:
            valid = ", ".join([*SECTIONS, "growth"])
            raise PdegrowError(f"{source}: unknown section {section!r} (valid: {valid})")
        check_section(section, build_dataclass(SECTIONS[section], {name: value}, source), source)


def build_config(values: dict[str, Any], source: str) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from nested dict values (a parsed TOML file)."""
    unknown = sorted(set(values) - set(SECTIONS) - {"growth"})
    if unknown:
        raise PdegrowError(f"{source}: unknown section(s) {', '.join(unknown)} "
                           f"(valid: {', '.join([*SECTIONS, 'growth'])})")
    kwargs: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        section = values.get(name, {})
        if not isinstance(section, dict):
            raise PdegrowError(f"{source}: [{name}] must be a table")
        kwargs[name] = build_dataclass(cls, section, f"{source} [{name}]")
        check_section(name, kwargs[name], f"{source} [{name}]")
    growth = dict(values.get("growth", {}))
    strategy = growth.pop("strategy", "fixed")
    if not isinstance(strategy, str):
        raise PdegrowError(f"{source}: [growth] strategy must be a string")
    cfg = ExperimentConfig(**kwargs, strategy=strategy, growth=growth)
    if cfg.train.supervised_weight == 0 and cfg.train.posterior_weight == 0:
        raise PdegrowError(f"{source}: [train] supervised_weight and posterior_weight are both 0: "
                           f"nothing to train on")
    from pdegrow.growth.base import build_strategy

    try:
        build_strategy(cfg.strategy, cfg.growth)  # validate the strategy options now
        if cfg.model.kind == "vit":
            from pdegrow.models.vit import check_vit_strategy

            check_vit_strategy(cfg.strategy)
        if cfg.model.kind == "conv3d":
            from pdegrow.models.conv3d import check_conv3d_model

            check_conv3d_model(cfg.strategy, cfg.model.coordinates)
    except PdegrowError as exc:
        raise PdegrowError(f"{source}: {exc}") from None
    return cfg


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge ``{"section.key": value}`` overrides into nested config values."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for key, value in overrides.items():
        section, sep, name = key.partition(".")
        if not sep:
            raise PdegrowError(f"--set {key}: use section.key=value (e.g. optim.lr=1e-3)")
        out.setdefault(section, {})[name] = value
    return out


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read a training config file, apply ``--set`` overrides, validate."""
    file_values = read_toml(path)
    growth = file_values.get("growth", {})
    strategy = (overrides or {}).get("growth.strategy", growth.get("strategy", "fixed")
                                     if isinstance(growth, dict) else "fixed")
    check_overrides(overrides or {}, strategy if isinstance(strategy, str) else "fixed")
    return build_config(apply_overrides(file_values, overrides or {}), str(path))
