"""The heat growth studies of issue 16 (goals 1 and 5) compare like with like: each grown row is paired
with a fixed row of its final size, with the same data, epochs, width and objective."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

from pdegrow.comparison.config import load_compare_config

# (study, grown row, the fixed row of the same final size)
PAIRS = [
    ("study-heat-paper-ordering.toml", "random_insertion", "fixed-same-size"),
    ("study-heat-paper-ordering.toml", "topological_insertion", "fixed-same-size"),
    ("study-heat-paper-ordering.toml", "topological-early", "fixed-same-size"),
    ("study-heat-paper-ordering.toml", "topological-strict", "fixed-same-size"),
    ("study-heat-paper-ordering.toml", "topological-eps", "fixed-same-size"),
    ("study-heat-paper-ordering.toml", "random-early", "fixed-same-size"),
    ("study-heat-paper-ordering.toml", "topological-x3", "fixed-depth4"),
    ("study-heat-paper-ordering.toml", "random-x3", "fixed-depth4"),
    ("study-heat-sensors50-regimes.toml", "topological_insertion", "fixed-same-size"),
    ("study-heat-sensors50-depth5.toml", "topological-x4", "fixed-depth5"),
    ("study-heat-sensors50-depth5.toml", "random-x4", "fixed-depth5"),
]


@pytest.mark.parametrize(("study", "grown", "fixed"), PAIRS)
def test_grown_row_ends_at_its_fixed_row(study: str, grown: str, fixed: str) -> None:
    cfg = load_compare_config(ROOT / "experiments" / study)
    for dataset in cfg.datasets:
        runs = {r.strategy: r.config for r in cfg.runs if r.seed == 0 and r.dataset == dataset}
        g, f = runs[grown], runs[fixed]
        assert f["growth"]["strategy"] == "fixed"
        assert g["growth"]["strategy"] in ("topological_insertion", "random_insertion")
        assert g["model"]["depth"] + g["growth"]["max_layers"] == f["model"]["depth"]
        assert g["model"]["width"] == f["model"]["width"] == 64
        assert json.dumps(g["data"], sort_keys=True) == json.dumps(f["data"], sort_keys=True)
        assert g["train"]["max_epochs"] == f["train"]["max_epochs"]
        for key in ("supervised_weight", "posterior_weight"):
            assert g["train"][key] == f["train"][key]
        assert g["growth"].get("fraction", 0.0) == 0.0   # every unit of an inserted block alive
        # the phases place every insertion before the end of training
        assert g["train"]["phase_epochs"] * g["growth"]["max_layers"] < g["train"]["max_epochs"]


@pytest.mark.parametrize(("study", "grown"), [("study-heat-sensors50-regimes.toml", "topological_insertion"),
                                              ("study-heat-sensors50-depth5.toml", "topological-x4"),
                                              ("study-heat-sensors50-depth5.toml", "random-x4")])
def test_sensors50_grown_rows_train_every_epoch(study: str, grown: str) -> None:
    """Goal 5's grown rows train as many epochs as their fixed rows: a run that stops one phase after its
    last insertion ends at phase_epochs · (max_layers + 1), so either that is max_epochs or the row trains
    on to max_epochs (`after_growth = "continue"`)."""
    cfg = load_compare_config(ROOT / "experiments" / study)
    for run in (r.config for r in cfg.runs if r.strategy == grown):
        train, layers = run["train"], run["growth"]["max_layers"]
        assert (train["after_growth"] == "continue"
                or train["phase_epochs"] * (layers + 1) == train["max_epochs"]), (study, train)


def test_regime_map_varies_only_the_simulated_inputs() -> None:
    cfg = load_compare_config(ROOT / "experiments" / "study-heat-sensors50-regimes.toml")
    data = {}
    for r in cfg.runs:
        if r.strategy == "fixed-same-size" and r.seed == 0:
            data[r.dataset] = dict(r.config["data"])
    assert {d["simulated_inputs"] for d in data.values()} == {10000, 20000}
    assert len({json.dumps({**d, "simulated_inputs": 0}, sort_keys=True) for d in data.values()}) == 1
    assert all(d["noisy_copies"] == 0 and d["n_train"] == 500 for d in data.values())


def test_regime_map_fixed_row_at_20000_is_the_best_config() -> None:
    """The map's fixed depth-3 row at 20 000 simulated inputs is `heat-sensors50-best.toml`'s run."""
    import tomllib

    best = tomllib.loads((ROOT / "experiments" / "heat-sensors50-best.toml").read_text())
    cfg = load_compare_config(ROOT / "experiments" / "study-heat-sensors50-regimes.toml")
    run = next(r.config for r in cfg.runs if r.dataset == "sim20000" and r.strategy == "fixed-same-size")
    for section in ("data", "model", "optim", "train"):
        for key, value in best[section].items():
            assert run[section][key] == value, (section, key)
