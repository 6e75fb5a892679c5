"""Trainer, Approach I + SRL, baseline, exact resume after a kill, data layer, CLI and bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import (
    ROOT,
    StoppedAtCheckpoint,
    checkpoint_recorder,
    conv_fields_config,
    run_cli,
    write_shifted_vorticity,
)

from pdegrow.cli import main
from pdegrow.contract import create_dataset_file, mark_complete
from pdegrow.data import iterate, prepare_data
from pdegrow.training.config import DataConfig, build_config
from pdegrow.training.runfiles import load_run_file

torch.set_num_threads(1)

TINY = """
[run]
seed = 1
progress = false
threads = 1
[data]
n_train = 40
n_val = 10
n_test = 20
noisy_copies = 3
input_transform = "log"
[model]
width = 12
depth = 1
[optim]
lr = 3e-3
batch_size = 40
[train]
max_epochs = {max_epochs}
phase_epochs = {phase_epochs}
patience = 8
[regularizers]
manifold_weight = 0.5
manifold_factor = 0.5
sparsity_weight = 1e-4
prune_tol = 1e-4
physics_weight = 1e-3
[growth]
strategy = "layerwise"
max_layers = 3
saturation_tol = -1.0
srl_steps = 1
srl_hidden = [8]
"""


def _config(tmp_path: Path, max_epochs=40, phase_epochs=8, extra="") -> Path:
    p = tmp_path / "cfg.toml"
    p.write_text(TINY.format(max_epochs=max_epochs, phase_epochs=phase_epochs) + extra)
    return p


def test_layerwise_run_grows_logs_and_evaluates(tmp_path, heat_paper_file, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(_config(tmp_path)), "--data", str(heat_paper_file),
                 "--out", str(out), "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    lines = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    events = [e for e in lines if e["kind"] == "growth"]
    actions = [e["where"]["action"] for e in events]
    assert actions == ["insert", "insert", "insert", "corrector"]
    for e in events:  # identity blocks / zero correctors: the loss does not move at insertion
        assert e["realised_change"] == 0.0 and e["predicted_change"] == 0.0
    # pruning (prune_tol) of each trained block is its own event, logged before the next proposal,
    # with the loss before and after it; the growth events' changes do not include it
    prunes = [e for e in lines if e["kind"] == "prune"]
    assert [e["where"] for e in prunes] == [{"action": "prune", "depth": d} for d in (1, 2, 3)]
    assert [e["epoch"] for e in prunes] == [e["epoch"] for e in events[1:]]
    for e in prunes:
        assert e["n_params_before"] == e["n_params_after"] and e["info"]["weights_pruned"] >= 0
        assert e["realised_change"] == e["loss_after"] - e["loss_before"]
    assert summary["architecture"]["depth"] == 4 and summary["architecture"]["n_correctors"] == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == summary["epochs"] and "term_manifold" in rows[0] and "term_physics" in rows[0]
    assert (out / "metrics.csv").read_text().count("\n") == len(rows) + 1
    splits = json.loads((out / "splits.json").read_text())
    assert len(splits["train"]) == 40 and not set(splits["train"]) & set(splits["test"])
    assert main(["evaluate", str(out), "--data", str(heat_paper_file), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n_samples"] == 20
    assert ev["rel_error_field"] == pytest.approx(summary["test"]["rel_error_field"], rel=1e-5)
    assert main(["report", str(out)]) == 0
    for name in ("loss_curves.png", "architecture.png", "fields.png", "layer_evolution.png", "report.md"):
        assert (out / "report" / name).is_file()


def test_frozen_blocks_unchanged_during_layerwise(tmp_path, heat_paper_file):
    from pdegrow.training.config import load_config
    from pdegrow.training.trainer import Trainer

    cfg = load_config(_config(tmp_path, max_epochs=16, phase_epochs=8, extra=""))
    cfg.growth.update(max_layers=1, srl_steps=0)
    tr = Trainer(cfg, heat_paper_file, tmp_path / "r")
    snap = {}
    orig_grow = tr._grow

    def grow():
        ok = orig_grow()
        state = tr.model.state_dict()
        snap.update({k: v.clone() for k, v in state.items() if k.startswith(("lift", "blocks.0"))})
        return ok

    tr._grow = grow
    tr.run()
    assert snap and tr.model.depth == 2
    for k, v in snap.items():
        assert torch.equal(tr.model.state_dict()[k], v), k


def test_fixed_baseline_same_trainer(tmp_path, heat_paper_file, capsys):
    cfg = _config(tmp_path, max_epochs=15)
    out = tmp_path / "base"
    assert main(["train", "--config", str(cfg), "--data", str(heat_paper_file), "--out", str(out),
                 "--no-progress", "--set", 'growth.strategy="fixed"', "--set", "growth.max_layers=0"]) == 2
    assert "unknown option" in capsys.readouterr().err
    text = cfg.read_text().split("[growth]")[0] + '[growth]\nstrategy = "fixed"\n'
    cfg.write_text(text)
    assert main(["train", "--config", str(cfg), "--data", str(heat_paper_file), "--out", str(out),
                 "--no-progress", "--set", "model.depth=2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["growth_events"] == 0 and summary["architecture"]["depth"] == 2


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_run_file(run / "model.pt", "model")["state"]


def test_kill_and_resume_gives_bitwise_same_weights(tmp_path, heat_paper_file):
    cfg = _config(tmp_path, max_epochs=60, phase_epochs=12, extra="")
    text = cfg.read_text().replace("noisy_copies = 3", "noisy_copies = 12").replace("batch_size = 40",
                                                                                     "batch_size = 20")
    text = text.replace("threads = 1", "threads = 1\ncheckpoint_every = 1")  # a checkpoint every epoch
    cfg.write_text(text)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    run_cli("train", "--config", str(cfg), "--data", str(heat_paper_file), "--out", str(ref), "--no-progress")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "pdegrow", "train", "--config", str(cfg), "--data",
                             str(heat_paper_file), "--out", str(killed), "--no-progress"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoint.pt"
    deadline = time.time() + 60
    epoch = 0
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file():
            try:
                epoch = load_run_file(ckpt, "checkpoint")["epoch"]
            except Exception:  # being replaced right now
                epoch = 0
            if epoch >= 15:  # past the first growth event, mid-run
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.pt").exists()
    assert json.loads((killed / "run.json").read_text())["status"] == "running"
    run_cli("train", "--out", str(killed), "--resume", "--no-progress")
    a, b = _weights(ref), _weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows_ref = (ref / "metrics.jsonl").read_text().splitlines()
    rows_res = (killed / "metrics.jsonl").read_text().splitlines()
    assert len(rows_ref) == len(rows_res)
    strip = lambda r: {k: v for k, v in json.loads(r).items() if k not in ("wall_s", "cpu_s")}  # noqa: E731
    assert [strip(r) for r in rows_ref] == [strip(r) for r in rows_res]


_Stopped = StoppedAtCheckpoint


def test_checkpoints_at_growth_and_end_resume_bitwise(tmp_path, heat_paper_file):
    """With the clock out of reach, checkpoints fall exactly at the growth events and the end;
    a run stopped right after one resumes to bitwise the same weights and metrics, and
    ``metrics.csv`` (written once, at the end) holds every row of ``metrics.jsonl``."""
    from pdegrow.training.config import load_config
    from pdegrow.training.trainer import Trainer

    cfg = load_config(_config(tmp_path, max_epochs=30, phase_epochs=8))
    cfg.run.checkpoint_every, cfg.run.checkpoint_seconds = 0, 1e9
    saved: list[int] = []
    Recording = checkpoint_recorder(saved)
    ref = Recording(cfg, heat_paper_file, tmp_path / "ref")
    ref.run()
    growth_epochs = [e.epoch for e in ref.events]
    assert len(growth_epochs) >= 2 and saved == [*growth_epochs, ref.state.epoch]
    assert not (tmp_path / "ref" / "metrics.csv.tmp").exists()
    csv_rows = (tmp_path / "ref" / "metrics.csv").read_text().splitlines()
    rows = [json.loads(r) for r in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert len(csv_rows) == len(rows) + 1 == ref.state.epoch + 1
    assert csv_rows[1].split(",")[0] == "1" and csv_rows[-1].split(",")[0] == str(ref.state.epoch)

    killed = Recording(cfg, heat_paper_file, tmp_path / "killed")
    killed.stop_at = growth_epochs[1]
    with pytest.raises(_Stopped):
        killed.run()
    assert not (tmp_path / "killed" / "metrics.csv").exists()
    Trainer(cfg, heat_paper_file, tmp_path / "killed", resume=True).run()
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "killed")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda r: {k: v for k, v in json.loads(r).items() if k not in ("wall_s", "cpu_s")}  # noqa: E731
    assert ([strip(r) for r in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
            == [strip(r) for r in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()])


def test_checkpoint_clock(tmp_path, heat_paper_file):
    """checkpoint_seconds = 0 and checkpoint_every = 0: only growth events and the end;
    checkpoint_every = 5: every fifth epoch too; a clock of 0 s: late at every epoch."""
    from pdegrow.training.config import load_config
    from pdegrow.training.trainer import Trainer

    cfg = load_config(_config(tmp_path, max_epochs=12, phase_epochs=8))
    tr = Trainer(cfg, heat_paper_file, tmp_path / "r")
    tr.state.epoch = 10
    cfg.run.checkpoint_every, cfg.run.checkpoint_seconds = 0, 0.0
    assert not tr._checkpoint_due(False) and tr._checkpoint_due(True)
    cfg.run.checkpoint_every = 5
    assert tr._checkpoint_due(False)
    tr.state.epoch = 11
    assert not tr._checkpoint_due(False)
    cfg.run.checkpoint_seconds = 1e-9
    assert tr._checkpoint_due(False)
    tr.finished = True
    cfg.run.checkpoint_every, cfg.run.checkpoint_seconds = 0, 0.0
    assert tr._checkpoint_due(False)
    tr.close()


def test_data_layer_groups_norms_and_lazy(heat_paper_file):
    cfg = DataConfig(n_train=20, n_val=5, n_test=10, noisy_copies=2, input_transform="log")
    mem = prepare_data(str(heat_paper_file), cfg, 0, torch.device("cpu"))
    cfg.in_memory = "no"
    lazy = prepare_data(str(heat_paper_file), cfg, 0, torch.device("cpu"))
    assert len(mem.train) == 60 and not lazy.in_memory
    # statistics from the training split only (copies included): the normalised training inputs are standard
    assert torch.allclose(mem.train.inputs.mean(0), torch.zeros(10), atol=1e-5)
    assert not torch.allclose(mem.val.inputs.mean(0), torch.zeros(10), atol=1e-3)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for bm, bl in zip(iterate(mem.train, 9, g1, True), iterate(lazy.train, 9, g2, True), strict=True):
        assert torch.allclose(bm.inputs, bl.inputs, atol=1e-6) and torch.equal(bm.group, bl.group)
        counts = torch.unique(bm.group, return_counts=True)[1]
        assert (counts == 3).all()  # every sample with its two noisy copies
    # copies follow the file's noise model: y = T_s (1 + 0.05 ξ)
    with h5py.File(heat_paper_file) as f:
        clean = f["inputs/observations_clean"][mem.splits["train"]]
    copies = np.exp(mem.input_norm.inverse(mem.train.inputs[20:]).numpy())
    rel = copies / np.tile(clean, (2, 1)) - 1
    assert 0.03 < rel.std() < 0.07


def test_bad_inputs(tmp_path, heat_paper_file, capsys):
    cfg = _config(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace("[model]", "[model]\nwidht = 3"))
    args = ["--data", str(heat_paper_file), "--out", str(tmp_path / "a")]
    assert main(["train", "--config", str(bad), *args]) == 2
    err = capsys.readouterr().err
    assert "unknown key widht" in err and len(err.strip().splitlines()) == 1
    bad.write_text(cfg.read_text() + "\n[trian]\nx = 1\n")
    assert main(["train", "--config", str(bad), *args]) == 2
    assert "unknown section" in capsys.readouterr().err
    ns = tmp_path / "ns.h5"
    f = create_dataset_file(ns, problem="navier_stokes", config={}, n_samples=2, base_seed=0,
                            static={"geometry/grid": np.zeros(4)},
                            sample_specs={"inputs/observations": ((10,), np.float64),
                                          "targets/kl_coefficients": ((12,), np.float64)})
    mark_complete(f)
    f.close()
    assert main(["train", "--config", str(cfg), "--data", str(ns), "--out", str(tmp_path / "b")]) == 2
    assert "expected 'heat'" in capsys.readouterr().err
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "x.txt").write_text("hi")
    assert main(["evaluate", str(tmp_path / "notarun"), "--data", str(heat_paper_file)]) == 2
    assert "not a pdegrow run directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert main(["train", "--config", str(cfg), "--data", str(heat_paper_file),
                 "--out", str(tmp_path / "notarun")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "notarun"), "--resume"]) == 2
    with pytest.raises(Exception, match="unknown growth strategy"):
        build_config({"growth": {"strategy": "nope"}}, "x")


def test_conv_layerwise_on_fields(tmp_path, capsys):
    """The data layer is generic: a field-to-field data set trains a conv network with Approach I + SRL."""
    path = tmp_path / "fields.h5"
    write_shifted_vorticity(path, 8, 24, dtype=np.float32, static={"geometry/x": np.linspace(0, 1, 8)})
    cfg = tmp_path / "conv.toml"
    cfg.write_text(conv_fields_config(
        data='normalize_inputs = "scalar"\nnormalize_targets = "scalar"\n', model='activation = "gelu"\n',
        rest="""[train]
max_epochs = 12
phase_epochs = 4
[growth]
strategy = "layerwise"
max_layers = 1
saturation_tol = -1.0
srl_steps = 1
srl_hidden = [3]
"""))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--data", str(path), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["architecture"]["depth"] == 2 and summary["architecture"]["n_correctors"] == 1
    assert summary["architecture"]["block_kinds"] == ["conv_perceptron", "conv_perceptron"]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(path), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n_samples"] == 4
    assert ev["rel_error_target"] == pytest.approx(summary["test"]["rel_error_target"], rel=1e-4)
