"""The ``pdegrow compare`` config: strategies × seeds × data sets from one TOML file.

::

    [compare]
    seeds = [0, 1, 2]
    strategies = ["fixed", "tiny", "gradmax"]    # [strategy.NAME] tables, or registered strategy names
    datasets = ["heat-paper"]                    # [dataset.NAME] tables (default: all, in file order)
    metric = "rel_error_field"                   # the test metric of the table ("" = first rel_error_*)
    threads = 1                                  # torch CPU threads per run (same numbers on any rank count)
    device = "auto"                              # "auto": one GPU per local MPI rank where present, else CPU

    [base.model]                                 # a training config (sections of `pdegrow train`)
    width = 30                                   # shared by every run
    ...

    [dataset.heat-paper]
    path = "datasets/heat-paper.h5"              # relative to the working directory
    [dataset.heat-paper.data]                    # section overrides for this data set
    n_train = 50

    [strategy.tiny]
    strategy = "tiny"                            # the registered strategy (default: the table's name)
    growth = { neurons = 4 }                     # its options
    [strategy.tiny.train]                        # section overrides for this strategy
    phase_epochs = 100

The run config of (data set d, strategy s, seed k) is base ← d's sections ←
s's sections, with ``run.seed = k``, ``run.threads``, ``run.progress = false``;
each is validated by :func:`pdegrow.training.config.build_config` up front, so
an unknown strategy, option or key fails before any training.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdegrow.config import read_toml
from pdegrow.errors import PdegrowError
from pdegrow.training.config import SECTIONS, ExperimentConfig, build_config

COMPARE_KEYS = ("seeds", "strategies", "datasets", "metric", "threads", "device")
TOP_KEYS = ("compare", "base", "dataset", "strategy")


@dataclass
class RunSpec:
    """One training run of the study."""

    dataset: str
    strategy: str          # the label (a [strategy.*] name)
    seed: int
    data_path: str
    config: dict[str, Any]  # the full training config (as ExperimentConfig.to_dict())

    @property
    def run_id(self) -> str:
        return f"{self.dataset}/{self.strategy}/seed-{self.seed}"

    def run_dir(self, out: Path) -> Path:
        """``out/runs/DATASET/STRATEGY/seed-K``; the names were checked by :func:`check_name`."""
        for kind, name in (("data set", self.dataset), ("strategy", self.strategy)):
            check_name(name, kind)
        return out / "runs" / self.dataset / self.strategy / f"seed-{int(self.seed)}"


NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}")


def check_name(name: object, kind: str, source: str = "") -> str:
    """A data set or strategy label that becomes a directory name: letters, digits, ``_ . + -``,
    not starting with ``.`` or ``-``, at most 100 characters — so no path ever leaves ``--out``."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        where = f"{source}: " if source else ""
        raise PdegrowError(f"{where}{kind} name {name!r} cannot be a directory name (use letters, digits, "
                           f"'_', '.', '+', '-'; not starting with '.' or '-')")
    return name


@dataclass
class CompareConfig:
    seeds: list[int]
    strategies: list[str]
    datasets: list[str]
    metric: str
    threads: int
    device: str
    runs: list[RunSpec] = field(default_factory=list)
    source: str = ""


def _merge(dst: dict[str, Any], src: dict[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(dst)
    for name, section in src.items():
        if name not in SECTIONS and name != "growth":
            valid = ", ".join([*SECTIONS, "growth"])
            raise PdegrowError(f"{where}: unknown section {name!r} (valid: {valid})")
        if not isinstance(section, dict):
            raise PdegrowError(f"{where}: [{name}] must be a table")
        out.setdefault(name, {}).update(copy.deepcopy(section))
    return out


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise PdegrowError(msg)


def parse_compare_config(values: dict[str, Any], source: str,
                         data_overrides: dict[str, str] | None = None) -> CompareConfig:
    """Validate ``values`` (a parsed TOML file) and expand it into the list of runs."""
    unknown = sorted(set(values) - set(TOP_KEYS))
    _check(not unknown, f"{source}: unknown table(s) {', '.join(unknown)} (valid: {', '.join(TOP_KEYS)})")
    comp = values.get("compare", {})
    _check(isinstance(comp, dict), f"{source}: [compare] must be a table")
    bad = sorted(set(comp) - set(COMPARE_KEYS))
    _check(not bad, f"{source} [compare]: unknown key(s) {', '.join(bad)} (valid: {', '.join(COMPARE_KEYS)})")
    seeds = comp.get("seeds", [0])
    _check(isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool)
                                                     for s in seeds),
           f"{source} [compare]: seeds must be a non-empty list of integers")
    _check(len(set(seeds)) == len(seeds), f"{source} [compare]: seeds repeat")
    threads = comp.get("threads", 1)
    _check(isinstance(threads, int) and threads >= 1, f"{source} [compare]: threads must be an integer >= 1")
    device = comp.get("device", "auto")
    _check(device in ("auto", "cpu", "cuda"), f"{source} [compare]: device must be 'auto', 'cpu' or 'cuda'")
    metric = comp.get("metric", "")
    _check(isinstance(metric, str), f"{source} [compare]: metric must be a string")

    base = values.get("base", {})
    _check(isinstance(base, dict), f"{source}: [base] must be a table")
    base = _merge({}, base, f"{source} [base]")

    dsets = values.get("dataset", {})
    _check(isinstance(dsets, dict) and dsets, f"{source}: no data set ([dataset.NAME] with path = ...)")
    names = comp.get("datasets", list(dsets))
    _check(isinstance(names, list) and names, f"{source} [compare]: datasets must be a non-empty list")
    for d in names:
        check_name(d, "data set", f"{source} [compare]")
        _check(d in dsets, f"{source} [compare]: data set {d!r} has no [dataset.{d}] table "
                           f"(defined: {', '.join(dsets)})")
    strat_tables = values.get("strategy", {})
    _check(isinstance(strat_tables, dict), f"{source}: [strategy] must be tables [strategy.NAME]")
    strategies = comp.get("strategies", list(strat_tables))
    _check(isinstance(strategies, list) and strategies and all(isinstance(s, str) for s in strategies),
           f"{source} [compare]: strategies must be a non-empty list of names")
    _check(len(set(strategies)) == len(strategies), f"{source} [compare]: strategies repeat")
    for s in strat_tables:
        check_name(s, "strategy", source)
    for s in strategies:
        check_name(s, "strategy", source)
    for d in dsets:
        check_name(d, "data set", source)

    overrides = dict(data_overrides or {})
    bad_o = sorted(set(overrides) - set(names))
    _check(not bad_o, f"--data: unknown data set(s) {', '.join(bad_o)} (in the config: {', '.join(names)})")
    runs: list[RunSpec] = []
    for d in names:
        table = dsets[d]
        _check(isinstance(table, dict), f"{source}: [dataset.{d}] must be a table")
        path = overrides.get(d, table.get("path"))
        _check(isinstance(path, str) and path, f"{source} [dataset.{d}]: path = \"FILE.h5\" is required")
        dcfg = _merge(base, {k: v for k, v in table.items() if k != "path"}, f"{source} [dataset.{d}]")
        for label in strategies:
            stable = strat_tables.get(label, {})
            _check(isinstance(stable, dict), f"{source}: [strategy.{label}] must be a table")
            name = stable.get("strategy", label)
            growth = stable.get("growth", {})
            _check(isinstance(name, str), f"{source} [strategy.{label}]: strategy must be a string")
            _check(isinstance(growth, dict), f"{source} [strategy.{label}]: growth must be a table")
            sections = {k: v for k, v in stable.items() if k not in ("strategy", "growth")}
            scfg = _merge(dcfg, sections, f"{source} [strategy.{label}]")
            scfg["growth"] = {**scfg.get("growth", {}), **growth, "strategy": name}
            for seed in seeds:
                cfg = copy.deepcopy(scfg)
                cfg.setdefault("run", {}).update(seed=seed, threads=threads, progress=False)
                if device != "auto":
                    cfg["run"]["device"] = device
                built: ExperimentConfig = build_config(cfg, f"{source} (data set {d!r}, strategy {label!r})")
                runs.append(RunSpec(d, label, seed, path, built.to_dict()))
    return CompareConfig(list(seeds), list(strategies), list(names), metric, threads, device, runs, source)


def load_compare_config(path: str | Path, data_overrides: dict[str, str] | None = None) -> CompareConfig:
    """Read, validate and expand a comparison config file."""
    return parse_compare_config(read_toml(path), str(path), data_overrides)


def check_data_files(cfg: CompareConfig) -> None:
    """Every data file exists (a PdegrowError naming the first one missing)."""
    seen: set[str] = set()
    for r in cfg.runs:
        if r.data_path in seen:
            continue
        seen.add(r.data_path)
        if not Path(r.data_path).is_file():
            raise PdegrowError(f"data set {r.dataset!r}: file {r.data_path} does not exist "
                               f"(generate it with 'pdegrow generate', or use --data {r.dataset}=FILE)")
