"""The study configs in experiments/ stay valid: every run they expand to passes config validation,
every study has ≥ 5 seeds (issue 7), and the one-command driver names every study config."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdegrow.comparison.config import load_compare_config

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
STUDIES = sorted(EXPERIMENTS.glob("study-*.toml"))


def test_there_are_studies() -> None:
    assert len(STUDIES) >= 7


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_config_expands(path: Path) -> None:
    cfg = load_compare_config(path)
    assert len(cfg.seeds) >= 5
    assert cfg.metric
    assert len(cfg.runs) == len(cfg.seeds) * len(cfg.strategies) * len(cfg.datasets)
    for run in cfg.runs:
        assert run.data_path.startswith("datasets/")


def test_driver_runs_every_study() -> None:
    driver = (EXPERIMENTS / "run_studies.sh").read_text()
    for path in STUDIES:
        assert f"compare {path.stem}" in driver, path.stem
