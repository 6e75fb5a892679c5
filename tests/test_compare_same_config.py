"""A study made with older code can be summarised and extended: finished runs are compared with the
study's config *resolved* (keys added since stand at their defaults), and a genuinely different
config is still refused with one line naming the differing keys."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import tiny_compare_config

from pdegrow.comparison.config import parse_compare_config
from pdegrow.comparison.same_config import config_differences, differences_line, resolved_config
from pdegrow.errors import PdegrowError


def _config(**sections: dict) -> dict:
    """A full training config (as stored in result.json) of the given sections over the defaults."""
    values = {"growth": {"strategy": "topological_insertion"}, "data": {"n_train": 30}}
    for name, section in sections.items():
        values[name] = {**values.get(name, {}), **section}
    from pdegrow.training.config import build_config

    return build_config(values, "test").to_dict()


def test_resolved_config_has_every_key_and_the_strategy_defaults() -> None:
    r = resolved_config(_config())
    assert r["data.n_train"] == 30 and r["optim.lr"] == _config()["optim"]["lr"]
    assert r["growth.strategy"] == "topological_insertion"
    assert "growth.fraction" in r                      # an option the config did not set, at its default
    assert "run.progress" not in r and "run.device" not in r   # no effect on results


def test_a_key_added_since_at_its_default_is_the_same_config() -> None:
    current = _config()
    stored = json.loads(json.dumps(current))
    del stored["data"]["normalize_with_simulated"]    # keys an older version did not have
    del stored["model"]["coordinates"]
    assert stored != current
    assert config_differences(stored, current) == {}
    # with the strategy's option values recorded as they were (result files written since)
    recorded = resolved_config(current)
    del recorded["growth.fraction"]
    assert config_differences(stored, current, recorded) == {}


def test_a_different_value_is_a_difference_naming_the_key() -> None:
    current = _config()
    assert config_differences(_config(optim={"lr": 0.5}), current) == {
        "optim.lr": (0.5, current["optim"]["lr"])}
    # a key added since, set to another value than its default by the study
    stored = _config()
    del stored["data"]["normalize_with_simulated"]
    now = _config(data={"normalize_with_simulated": True})
    assert list(config_differences(stored, now)) == ["data.normalize_with_simulated"]
    # a growth option the study sets now, which the run had at another value
    assert list(config_differences(stored, _config(growth={"fraction": 0.25}))) == ["growth.fraction"]


def test_a_changed_default_recorded_by_the_run_and_a_removed_key_are_differences() -> None:
    current = _config()
    recorded = {**resolved_config(current), "growth.fraction": 0.5}   # the default in force when it ran
    diffs = config_differences(current, current, recorded)
    assert diffs == {"growth.fraction": (0.5, resolved_config(current)["growth.fraction"])}
    assert "growth.fraction: 0.5 in the run" in differences_line(diffs)
    stored = _config()
    stored["optim"]["momentum_of_old"] = 0.9
    diffs = config_differences(stored, current)
    assert list(diffs) == ["optim.momentum_of_old"]
    assert "is not a key of this version" in differences_line(diffs)
    # what does not change results is not compared
    assert config_differences(_config(run={"progress": False, "checkpoint_every": 7}), current) == {}


def _study(tmp_path: Path, data: Path) -> tuple[Path, Path]:
    cfg = tmp_path / "study.toml"
    cfg.write_text(tiny_compare_config(data, strategy="random_insertion"))
    return cfg, tmp_path / "cmp"


def _result_file(out: Path) -> Path:
    (path,) = (out / "runs").glob("*/*/seed-0/result.json")
    return path


def test_compare_accepts_an_older_run_and_refuses_a_different_one(
        heat_paper_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pdegrow.cli import main
    from pdegrow.comparison.runner import SerialComm, run_comparison

    cfg, out = _study(tmp_path, heat_paper_file)
    first = run_comparison(cfg, out, comm=SerialComm(), figures=False)
    assert first.done and not first.failed
    path = _result_file(out)
    result = json.loads(path.read_text())
    assert result["resolved_config"] == resolved_config(result["config"])

    # as written by an older version: no resolved_config, no keys added since
    del result["resolved_config"]
    del result["config"]["data"]["normalize_with_simulated"]
    del result["config"]["model"]["coordinates"]
    path.write_text(json.dumps(result))
    again = run_comparison(cfg, out, comm=SerialComm(), figures=False)
    assert again.skipped == 1 and not again.done      # summarised, not trained again
    assert json.loads(path.read_text()) == result      # and left as it was
    with (out / "table.csv").open() as fh:              # and counted in the table
        assert [row["runs"] for row in csv.DictReader(fh)] == ["1"]

    # a run of a genuinely different config: one line naming the key, exit 2, nothing trained
    result["config"]["optim"]["lr"] = 0.123
    path.write_text(json.dumps(result))
    with pytest.raises(PdegrowError, match=r"another config \(optim\.lr: 0\.123 in the run, "):
        run_comparison(cfg, out, comm=SerialComm(), figures=False)
    capsys.readouterr()
    assert main(["compare", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "optim.lr" in err and "normalize_with_simulated" not in err


def test_study_configs_resolve(heat_paper_file: Path) -> None:
    """Every run of a parsed study resolves (the check needs it of every finished run)."""
    cmp = parse_compare_config({"compare": {"seeds": [0, 1], "strategies": ["fixed", "tiny"]},
                                "dataset": {"heat": {"path": str(heat_paper_file)}}}, "test")
    for spec in cmp.runs:
        assert config_differences(spec.config, spec.config) == {}
