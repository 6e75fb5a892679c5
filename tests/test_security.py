"""Run files never execute code; names from compare configs never leave --out."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from conftest import one_line_error, tiny_compare_config, train_tiny_run

from pdegrow.cli import main
from pdegrow.errors import PdegrowError

torch.set_num_threads(1)

class _Payload:
    """Unpickling this creates the marker file: what an attacker's model.pt would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def finished_run(tmp_path, heat_paper_file):
    return train_tiny_run(tmp_path, heat_paper_file, max_epochs=3)[1]


def _craft(path, marker) -> None:
    torch.save({"spec": _Payload(str(marker)), "epoch": _Payload(str(marker))}, path)


def test_crafted_model_and_checkpoint_never_run_code(finished_run, heat_paper_file, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    # the payload works: plain unpickling creates the marker (so the checks below mean something)
    probe = tmp_path / "probe.pt"
    _craft(probe, tmp_path / "probe-marker")
    torch.load(probe, weights_only=False)
    assert (tmp_path / "probe-marker").exists()

    _craft(finished_run / "model.pt", marker)
    capsys.readouterr()
    assert main(["evaluate", str(finished_run), "--data", str(heat_paper_file), "--json"]) == 2
    assert "model.pt is not a pdegrow run file" in one_line_error(capsys)
    assert main(["report", str(finished_run)]) == 2
    assert "model.pt is not a pdegrow run file" in one_line_error(capsys)
    _craft(finished_run / "checkpoint.pt", marker)
    assert main(["train", "--out", str(finished_run), "--resume", "--no-progress"]) == 2
    assert "checkpoint.pt is not a pdegrow run file" in one_line_error(capsys)
    assert not marker.exists()


def test_run_files_are_tensors_and_json(finished_run):
    from pdegrow.training.runfiles import load_run_file

    model = load_run_file(finished_run / "model.pt", "model")
    assert set(model) >= {"spec", "state", "input_norm", "target_norm", "config", "dtype"}
    assert all(isinstance(v, torch.Tensor) for v in model["state"].values())
    # the safetensors layout: header length, JSON header with the tree in __metadata__
    raw = (finished_run / "model.pt").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert header["__metadata__"]["kind"] == "model"
    assert json.loads(header["__metadata__"]["pdegrow"])["spec"] == model["spec"]
    assert "state/head.weight" in header or any(k.startswith("state/") for k in header)
    ckpt = load_run_file(finished_run / "checkpoint.pt", "checkpoint")
    assert ckpt["epoch"] == 3 and ckpt["finished"] is True
    with pytest.raises(PdegrowError, match="is a pdegrow 'checkpoint' file, not a model file"):
        load_run_file(finished_run / "checkpoint.pt", "model")


def test_tensorfile_round_trip_is_exact_and_refuses_damage(tmp_path):
    import random

    from pdegrow import tensorfile

    tree = {"w": torch.randn(3, 4, dtype=torch.float64), "h": torch.randn(2, dtype=torch.bfloat16),
            "b": torch.tensor([True, False]), "empty": torch.zeros(0, 5), "scalar": torch.tensor(7),
            "rng": random.getstate(), "ints": {0: {"step": torch.tensor(3.0)}, 1: {}},
            "floats": [float("nan"), float("inf"), -float("inf"), 0.1], "none": None, "$odd": "x",
            "pair": (0.9, 0.999)}
    path = tmp_path / "t.pt"
    tensorfile.save(path, tree)
    back, _ = tensorfile.load(path)
    for k in ("w", "h", "b", "empty", "scalar"):
        assert back[k].dtype == tree[k].dtype and torch.equal(back[k], tree[k])
    assert back["rng"] == tree["rng"] and back["pair"] == (0.9, 0.999) and back["$odd"] == "x"
    assert torch.equal(back["ints"][0]["step"], torch.tensor(3.0)) and back["ints"][1] == {}
    assert str(back["floats"]) == str(tree["floats"]) and back["none"] is None
    raw = path.read_bytes()
    with pytest.raises(PdegrowError, match="too short"):
        tensorfile.from_bytes(raw[:5], "f")
    with pytest.raises(PdegrowError, match="bad header length"):
        tensorfile.from_bytes(struct.pack("<Q", 1 << 40) + raw[8:], "f")
    with pytest.raises(PdegrowError, match="bytes do not fit"):
        tensorfile.from_bytes(raw[:-4], "f")
    (n,) = struct.unpack("<Q", raw[:8])
    with pytest.raises(PdegrowError, match="damaged header"):
        tensorfile.from_bytes(raw[:8] + b"{" * n + raw[8 + n:], "f")


@pytest.mark.parametrize("field", ["dataset", "strategy_table", "strategy_list"])
def test_compare_names_never_leave_out(tmp_path, heat_paper_file, capsys, field):
    evil = "../../../escaped"
    dataset = evil if field == "dataset" else "heat"
    strategy = {"dataset": "fixed", "strategy_table": evil, "strategy_list": evil}[field]
    table = f'[strategy."{strategy}"]\nstrategy = "fixed"\n' if field == "strategy_table" else ""
    cfg = tmp_path / "a" / "b" / "c" / "cmp.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(tiny_compare_config(heat_paper_file, dataset, strategy, table))
    out = tmp_path / "a" / "b" / "c" / "out"
    assert main(["compare", "--config", str(cfg), "--out", str(out), "--quiet", "--no-figures"]) == 2
    err = one_line_error(capsys)
    assert f"name {evil!r} cannot be a directory name" in err
    assert not out.exists()
    assert not list(tmp_path.rglob("escaped")) and not list(tmp_path.rglob("seed-0"))


def test_run_spec_refuses_a_path_name(tmp_path):
    from pdegrow.comparison.config import RunSpec

    with pytest.raises(PdegrowError, match="cannot be a directory name"):
        RunSpec("..", "fixed", 0, "x.h5", {}).run_dir(tmp_path)
    with pytest.raises(PdegrowError, match="cannot be a directory name"):
        RunSpec("heat", "a/b", 0, "x.h5", {}).run_dir(tmp_path)
    assert RunSpec("heat-paper", "fixed-same-budget", 3, "x.h5", {}).run_dir(tmp_path) == \
        tmp_path / "runs" / "heat-paper" / "fixed-same-budget" / "seed-3"


def test_tensorfile_header_length_with_pickle_like_first_byte(tmp_path):
    """A valid file whose header length starts with 0x80 (a pickle's first byte) or spells "PK" is read."""
    import struct

    import torch

    from pdegrow import tensorfile

    for low in (0x80, 0x50):
        for pad in range(600):
            raw = tensorfile.to_bytes({"w": torch.ones(3), "note": "x" * pad})
            (n,) = struct.unpack("<Q", raw[:8])
            if n & 0xFF == low and (low != 0x50 or (n >> 8) & 0xFF == 0x4B):
                break
        else:
            continue
        tree, _ = tensorfile.from_bytes(raw, "f")
        assert torch.equal(tree["w"], torch.ones(3)) and tree["note"] == "x" * pad
