"""The SLURM templates in experiments/slurm/ stay runnable: valid bash, #SBATCH directives where
sbatch reads them, and every `pdegrow SUBCOMMAND --flag` they call (or show in a comment) exists."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from pdegrow.cli import build_parser

SLURM = ROOT / "experiments" / "slurm"
TEMPLATES = sorted(SLURM.glob("*.sbatch"))
CALL = re.compile(r"\bpdegrow\s+([a-z][\w-]*)(.*)")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined."""
    return text.replace("\\\n", " ").splitlines()


def _calls(path: Path) -> list[tuple[str, list[str]]]:
    """(subcommand, --flags) of every pdegrow call in code lines and in `backticked` comment examples."""
    calls = []
    for line in _logical_lines(path.read_text()):
        stripped = line.strip()
        pieces = re.findall(r"`([^`]*)`", stripped) if stripped.startswith("#") else [stripped]
        for piece in pieces:
            for m in CALL.finditer(piece):
                calls.append((m.group(1), re.findall(r"(?<![\w-])(--[a-z][\w-]*)", m.group(2))))
    return calls


def test_templates_exist():
    assert {p.name for p in TEMPLATES} >= {"generate.sbatch", "compare.sbatch", "train-ddp.sbatch"}
    assert (SLURM / "env.sh").is_file()


@pytest.mark.parametrize("path", [*TEMPLATES, SLURM / "env.sh"], ids=lambda p: p.name)
def test_valid_bash(path):
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_sbatch_directives_and_environment(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    first_code = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    directives = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    assert directives and max(directives) < first_code, "sbatch ignores #SBATCH after the first command"
    text = path.read_text()
    assert "#SBATCH --requeue" in text                    # pre-empted jobs come back and resume
    assert "source experiments/slurm/env.sh" in text
    assert "OMP_NUM_THREADS=" in text


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_pdegrow_calls_exist(path):
    subs = _subparsers()
    calls = _calls(path)
    assert calls, f"{path.name} calls no pdegrow command"
    for sub, flags in calls:
        assert sub in subs, f"{path.name}: 'pdegrow {sub}' is not a subcommand ({', '.join(subs)})"
        known = set(subs[sub]._option_string_actions)
        unknown = [f for f in flags if f not in known]
        assert not unknown, f"{path.name}: pdegrow {sub} has no option {', '.join(unknown)}"


def test_resume_logic_is_wired():
    gen = (SLURM / "generate.sbatch").read_text()
    assert "--resume" in [f for sub, fl in _calls(SLURM / "generate.sbatch") if sub == "generate" for f in fl]
    assert "OMP_NUM_THREADS=1" in gen
    ddp = (SLURM / "train-ddp.sbatch").read_text()
    assert "checkpoint.pt" in ddp and "--resume" in ddp and "--rdzv-endpoint" in ddp
    assert any(sub == "train" and "--distributed" in fl for sub, fl in _calls(SLURM / "train-ddp.sbatch"))


def test_checker_catches_rot(tmp_path):
    bad = tmp_path / "bad.sbatch"
    bad.write_text("#!/bin/bash\n# `pdegrow generate heat --resum`\nmpiexec -n 2 pdegrow trian --out x\n")
    calls = _calls(bad)
    assert calls == [("generate", ["--resum"]), ("trian", ["--out"])]
    subs = _subparsers()
    assert "trian" not in subs and "--resum" not in subs["generate"]._option_string_actions


@pytest.mark.mpi
def test_generate_template_checks_an_existing_file(tmp_path):
    """The template runs for real (one rank, tiny mesh); run again it ends at once when the file
    is complete with the same recipe, and stops with exit 2 when the recipe differs."""
    out = tmp_path / "tiny.h5"
    env = {**os.environ, "SLURM_SUBMIT_DIR": str(ROOT), "SLURM_NTASKS": "1", "N_SAMPLES": "3",
           "OUT": str(out), "GEN_ARGS": "--set nx=8 --set ny=8 --set n_sensors=4", "FLUSH_EVERY": "2",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def submit(**extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SLURM / "generate.sbatch")], capture_output=True, text=True,
                              env={**env, **extra}, cwd=tmp_path, timeout=600)

    first = submit()
    assert first.returncode == 0, first.stderr
    made = out.stat().st_mtime_ns
    again = submit()
    assert again.returncode == 0, again.stderr
    assert out.stat().st_mtime_ns == made
    other = submit(SEED="1")
    assert other.returncode == 2
    assert "seed" in other.stderr and str(out) in other.stderr
    assert out.stat().st_mtime_ns == made
