"""Bad input on the training side: one line and exit 2, nothing half-written left looking valid."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from conftest import one_line_error, tiny_compare_config, tiny_train_config, write_tiny_config

from pdegrow.cli import main
from pdegrow.data.splits import make_splits

torch.set_num_threads(1)

TINY = tiny_train_config(n_test=20)


@pytest.fixture
def cfg(tmp_path):
    return write_tiny_config(tmp_path, n_test=20)


def _train(cfg, data, out, *extra) -> int:
    return main(["train", "--config", str(cfg), "--data", str(data), "--out", str(out), "--no-progress",
                 *extra])


def _strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"JSON holds {name}")
    return json.loads(text, parse_constant=refuse)


def _split_rows(n_samples: int) -> dict[str, list[int]]:
    return make_splits(n_samples, 30, 10, 20, 0)


# ------------------------------------------------------------------ 8: training settings


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-1e-3", "lr = -0.001 must be > 0"),
    ("optim.lr=nan", "lr = nan must be a finite number"),
    ("optim.lr=0.0", "lr = 0.0 must be > 0"),
    ("optim.batch_size=0", "batch_size = 0 must be > 0"),
    ("optim.batch_size=-4", "batch_size = -4 must be > 0"),
    ("model.width=0", "width = 0 must be > 0"),
    ("train.max_epochs=0", "max_epochs = 0 must be > 0"),
])
def test_training_settings_are_checked(tmp_path, cfg, heat_paper_file, capsys, override, message):
    out = tmp_path / "run"
    assert _train(cfg, heat_paper_file, out, "--set", override) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"pdegrow train: error: --set {override.split('=')[0]}=") and message in err
    assert not out.exists()
    # the same value in the file is the file's error
    key, value = override.split("=")
    section, name = key.split(".")
    cfg.write_text(f"[{section}]\n{name} = {value}\n")
    assert _train(cfg, heat_paper_file, out) == 2
    err = one_line_error(capsys)
    assert f"{cfg} [{section}]: {message}" in err and not out.exists()


# ------------------------------------------------------------------ 10: strategy options


@pytest.mark.parametrize("growth, message", [
    ('strategy = "topological_insertion"\ntrigger = "sometimes"', "trigger must be one of plateau"),
    ('strategy = "layerwise"\nmax_layers = "ten"', "max_layers = 'ten' has the wrong type (expected int)"),
    ('strategy = "layerwise"\nsaturation_tol = nan', "saturation_tol = nan must be a finite number"),
    ('strategy = "nope"', "unknown growth strategy 'nope' (known: fixed, folding, forward_thinking, gradmax, "
                          "layerwise, net2deeper, net2wider, random_insertion, random_neurons, tiny, "
                          "topological_insertion)"),
])
def test_strategy_options_are_checked(tmp_path, cfg, heat_paper_file, capsys, growth, message):
    cfg.write_text(TINY.replace('strategy = "fixed"', growth))
    out = tmp_path / "run"
    assert _train(cfg, heat_paper_file, out) == 2
    err = one_line_error(capsys)
    if "(known: " in message:  # every built-in strategy listed (tests may have registered more)
        head, known = message.split("(known: ")
        listed = err.split("(known: ")[1].rstrip(")").split(", ")
        assert head in err and set(known.rstrip(")").split(", ")) <= set(listed)
    else:
        assert message in err
    assert str(cfg) in err and not out.exists()


def test_strategy_options_dataclass_per_strategy():
    import dataclasses

    from pdegrow.growth.base import STRATEGIES, load_builtin_strategies, strategy_options

    load_builtin_strategies()
    for name, cls in STRATEGIES.items():
        opts = strategy_options(cls)
        assert dataclasses.is_dataclass(opts), name
        fields = {f.name: f for f in dataclasses.fields(opts)}
        if name == "layerwise":
            assert fields["max_layers"].default == 10 and fields["max_layers"].type is int


# ------------------------------------------------------------------ 11: config files and --set


def test_config_file_problems_are_one_line(tmp_path, cfg, heat_paper_file, capsys):
    out = tmp_path / "run"
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(TINY.encode() + "# température\n".encode("latin-1"))
    assert _train(bad, heat_paper_file, out) == 2
    assert "is not UTF-8 text" in one_line_error(capsys)
    assert _train(tmp_path, heat_paper_file, out) == 2
    assert f"config file {tmp_path} is a directory" in one_line_error(capsys)
    assert _train(cfg, heat_paper_file, out, "--set", "optim.lrr=1") == 2
    assert one_line_error(capsys).startswith("pdegrow train: error: --set optim.lrr=1: unknown key lrr")
    assert _train(cfg, heat_paper_file, out, "--set", "growth.max_layers=3") == 2
    err = one_line_error(capsys)
    assert "--set growth.max_layers=3: [growth] unknown option(s) max_layers for strategy 'fixed'" in err
    cfg.write_text(TINY.replace("[model]\n", "[model]\nwidht = 3\n"))
    assert _train(cfg, heat_paper_file, out, "--set", "optim.lr=1e-3") == 2
    assert f"{cfg} [model]: unknown key widht" in one_line_error(capsys)
    assert not out.exists()


# ------------------------------------------------------------------ 12: unwritable outputs


def test_unwritable_outputs(tmp_path, cfg, heat_paper_file, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert _train(cfg, heat_paper_file, a_file) == 2
    assert f"{a_file} is a file, not a run directory" in one_line_error(capsys)
    assert _train(cfg, heat_paper_file, "/proc/pdegrow-run") == 2
    err = one_line_error(capsys)
    assert "cannot use the run directory /proc/pdegrow-run (" in err
    cmp = tmp_path / "cmp.toml"
    cmp.write_text(tiny_compare_config(heat_paper_file))
    assert main(["compare", "--config", str(cmp), "--out", "/proc/cmp", "--quiet"]) == 2
    err = one_line_error(capsys)
    assert "cannot create the output directory /proc/cmp (" in err
    assert main(["compare", "--config", str(cmp), "--out", str(a_file), "--quiet"]) == 2
    assert f"--out {a_file} is a file" in one_line_error(capsys)
    assert a_file.read_text() == "x"


# ------------------------------------------------------------------ 9: NaN rows, undefined metrics


def _copy_with(tmp_path, src, name, edit):
    dst = tmp_path / name
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


@pytest.mark.parametrize("split", ["val", "test"])
def test_nonfinite_rows_of_every_split_are_named(tmp_path, cfg, heat_paper_file, capsys, split):
    with h5py.File(heat_paper_file) as f:
        n = int(f.attrs["n_samples"])
    rows = _split_rows(n)[split]
    bad_rows = sorted(rows[:2])

    def edit(f):
        for r in bad_rows:
            f["inputs/observations"][r, 3] = np.nan if split == "val" else np.inf

    data = _copy_with(tmp_path, heat_paper_file, "nan.h5", edit)
    out = tmp_path / "run"
    assert _train(cfg, data, out) == 2
    err = one_line_error(capsys)
    assert (f"inputs/observations holds NaN/inf in 2 sample(s) of the {split} split "
            f"(rows {bad_rows[0]}, {bad_rows[1]})") in err
    assert not out.exists()
    # a run trained on clean data refuses to score the damaged file too
    assert _train(cfg, heat_paper_file, out) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(data), "--json"]) == 2
    assert "holds NaN/inf" in one_line_error(capsys)


def test_all_zero_targets_give_undefined_not_huge(tmp_path, cfg, heat_paper_file, capsys):
    with h5py.File(heat_paper_file) as f:
        n = int(f.attrs["n_samples"])
    test_rows = sorted(_split_rows(n)["test"])

    def edit(f):
        for r in test_rows:
            f["targets/kl_coefficients"][r] = 0.0

    data = _copy_with(tmp_path, heat_paper_file, "zero.h5", edit)
    out = tmp_path / "run"
    assert _train(cfg, data, out, "--json") == 0
    summary = _strict_json(capsys.readouterr().out)
    assert summary["test"]["rel_error_target"] is None
    assert 0 < summary["test"]["rel_error_field"] < 10 and 0 < summary["val"]["rel_error_target"] < 10
    assert _strict_json((out / "summary.json").read_text())["test"]["rel_error_target"] is None
    for line in (out / "metrics.jsonl").read_text().splitlines():
        _strict_json(line)
    assert main(["evaluate", str(out), "--data", str(data), "--json"]) == 0
    ev = _strict_json(capsys.readouterr().out)
    assert ev["rel_error_target"] is None and ev["rel_error_target_std"] is None
    assert ev["rel_error_field"] == pytest.approx(summary["test"]["rel_error_field"], rel=1e-5)
    assert main(["evaluate", str(out), "--data", str(data)]) == 0
    assert "undefined" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0


def test_relative_error_and_means_closed_form():
    from pdegrow.training.problems import add_metric_sums, metric_means, relative_error

    diff = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    ref = torch.tensor([10.0, 0.0, 4.0])
    rel = relative_error(diff, ref)
    assert rel[0] == 0.5 and torch.isnan(rel[1]) and rel[2] == 0.5
    sums: dict[str, float] = {"loss": 6.0}
    add_metric_sums(sums, {"rel": rel})
    assert sums["rel"] == 1.0 and sums["rel/n"] == 2.0
    means = metric_means(sums, 3)
    assert means == {"loss": 2.0, "rel": 0.5}
    assert np.isnan(metric_means({"rel": 0.0, "rel/n": 0.0}, 3)["rel"])


# ------------------------------------------------------------------ 4: failures leave nothing / "failed"


def test_failed_runs_leave_nothing_or_are_marked_and_replaced(tmp_path, cfg, heat_paper_file, capsys):
    with h5py.File(heat_paper_file) as f:
        n = int(f.attrs["n_samples"])
    row = _split_rows(n)["train"][0]
    data = _copy_with(tmp_path, heat_paper_file, "bad.h5",
                      lambda f: f["targets/kl_coefficients"].__setitem__((row, 0), np.nan))
    out = tmp_path / "runs" / "a"
    # bad data: refused before anything is written (not even the directory)
    assert _train(cfg, data, out) == 2
    assert "sample(s) of the train split" in one_line_error(capsys)
    assert not out.exists() and (tmp_path / "runs").is_dir()
    assert main(["report", str(out)]) == 2 and "no such run directory" in one_line_error(capsys)
    # a run that fails while training is marked failed; report/evaluate refuse; a retry replaces it
    assert _train(cfg, heat_paper_file, out, "--set", "optim.lr=1e30", "--set", "train.max_epochs=50") == 2
    err = one_line_error(capsys)
    assert "the training loss became" in err
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "failed" and "the training loss became" in info["error"]
    assert main(["report", str(out)]) == 2 and "the run failed" in one_line_error(capsys)
    assert main(["evaluate", str(out), "--data", str(heat_paper_file)]) == 2
    assert "the run failed" in one_line_error(capsys)
    assert _train(cfg, heat_paper_file, out) == 0  # no --overwrite needed
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    # a run killed before its first checkpoint (nothing to resume) is replaced as well
    (out / "checkpoint.pt").unlink()
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "status": "running"}))
    assert _train(cfg, heat_paper_file, out) == 0
    # but a finished or resumable run is not
    assert _train(cfg, heat_paper_file, out) == 2 and "exists and is not empty" in one_line_error(capsys)
