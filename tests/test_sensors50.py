"""The ``sensors50`` heat preset's configurations (issue 16, goal 5) run on a tiny file of the preset:
the best configuration and every run of the three studies, with only the sizes shrunk."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

from pdegrow.cli import main
from pdegrow.comparison.config import load_compare_config

STUDIES = ["study-heat-sensors50.toml", "study-heat-sensors50-labelled.toml",
           "study-heat-sensors50-sim5000.toml"]


@pytest.fixture(scope="module")
def sensors50_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("s50") / "s50.h5"
    assert main(["generate", "heat", "--preset", "sensors50", "--n-samples", "24", "--seed", "1",
                 "--out", str(path), "--no-progress"]) == 0
    return path


def test_best_config_trains_on_a_tiny_sensors50_file(tmp_path, sensors50_file):
    """Simulated labelled inputs join the 50-sensor training split; the run evaluates on the test split."""
    run = tmp_path / "best"
    sets = ["data.n_train=12", "data.n_val=6", "data.n_test=6", "data.simulated_inputs=20",
            "train.max_epochs=2", "train.phase_epochs=2", "train.patience=2"]
    args = ["train", "--config", str(ROOT / "experiments" / "heat-sensors50-best.toml"), "--data",
            str(sensors50_file), "--out", str(run), "--no-progress"]
    assert main([*args, *[a for s in sets for a in ("--set", s)]]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["architecture"]["depth"] == 3
    assert 0 < summary["test"]["rel_error_field"] < 10
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["simulated_inputs"] == 20 and config["train"]["supervised_weight"] == 1.0


@pytest.mark.parametrize("name", STUDIES)
def test_sensors50_studies_compare_like_with_like(name):
    """Every strategy of a study ends at the same size (depth 3, width 64) with the same epochs and data;
    the topological row that the text calls 'every unit alive' has fraction 0."""
    cfg = load_compare_config(ROOT / "experiments" / name)
    runs = {r.strategy: r.config for r in cfg.runs if r.seed == 0}
    assert {"fixed-same-size", "topological_insertion", "random_insertion"} <= set(runs)
    assert runs["topological_insertion"]["growth"]["fraction"] == 0.0
    data = {json.dumps(c["data"], sort_keys=True) for c in runs.values()}
    epochs = {c["train"]["max_epochs"] for c in runs.values()}
    assert len(data) == 1 and len(epochs) == 1
    for label, c in runs.items():
        grown = c["growth"].get("max_layers", 0)
        assert c["model"]["depth"] + grown == 3 and c["model"]["width"] == 64, label
