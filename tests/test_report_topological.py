"""`pdegrow report` draws the topological-derivative figure for runs of the topological_insertion strategy."""

import json

import torch
from conftest import RUN_HEAD

from pdegrow.cli import main

torch.set_num_threads(1)

CONFIG = RUN_HEAD + """[data]
n_train = 20
n_val = 6
n_test = 6
noisy_copies = 1
input_transform = "log"
[model]
kind = "mlp"
width = 8
depth = 1
block = "perceptron"
activation = "tanh"
[optim]
lr = 3e-3
batch_size = 20
[train]
max_epochs = 12
phase_epochs = 4
patience = 50
[growth]
strategy = "{strategy}"
max_layers = 2
"""


def _run(tmp_path, heat_paper_file, strategy: str, extra: str = ""):
    cfg = tmp_path / f"{strategy}.toml"
    cfg.write_text(CONFIG.format(strategy=strategy) + extra)
    out = tmp_path / strategy
    assert main(["train", "--config", str(cfg), "--data", str(heat_paper_file), "--out", str(out),
                 "--no-progress"]) == 0
    assert main(["report", str(out)]) == 0
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return out / "report", events


def test_topological_run_report_has_the_derivative_figure(tmp_path, heat_paper_file):
    report, events = _run(tmp_path, heat_paper_file, "topological_insertion",
                          'trigger = "threshold"\nthreshold = 0.0\ncheck_every = 4\n')
    assert events and all(e["strategy"] == "topological_insertion" for e in events)
    assert all("derivative" in e["info"] for e in events)
    fig = report / "topological_derivative.png"
    assert fig.is_file() and fig.stat().st_size > 1000
    md = (report / "report.md").read_text()
    assert "![topological_derivative](topological_derivative.png)" in md
    assert "## Topological derivative" in md
    section = md.split("## Topological derivative")[1].split("## Figures")[0]
    assert section.count("\n| ") - 1 == len(events)  # one table row per insertion (header excluded)


def test_other_strategies_get_no_derivative_figure(tmp_path, heat_paper_file):
    report, events = _run(tmp_path, heat_paper_file, "net2deeper")
    assert events and all(e["strategy"] != "topological_insertion" for e in events)
    assert not (report / "topological_derivative.png").exists()
    assert "topological_derivative" not in (report / "report.md").read_text()
