"""Bad input and I/O faults of ``pdegrow generate`` / ``pdegrow info``: one line, exit 2, nothing
half-written, what was finished stays resumable (issue 15, the generation side)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import BIN, PDEGROW, ROOT, assert_same_samples, run_cli

from pdegrow.cli import main
from pdegrow.errors import PdegrowError

SMALL = ["--preset", "default", "--set", "nx=12", "--set", "ny=12", "--set", "n_sensors=9",
         "--no-progress"]
NS_TINY = ["--resolution", "8", "--final-time", "0.04", "--set", "dt=0.01", "--no-progress"]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("pdegrow generate: error: ") or lines[0].startswith("pdegrow info: error: ")
    assert "Traceback" not in err
    return lines[0]


def _nothing_left(tmp_path) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a failed run left files behind"


# ---------------------------------------------------------------- 4. validation before anything is written

@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", 'sensor_layout="given"', "--set", "sensors=[[0.5, 1.5]]"], "lies outside the domain"),
        (["--set", 'sensor_layout="given"', "--set", "sensors=[[nan, 0.5]]"], "sensors[0][0] = nan"),
        (["--set", "prior_mean=nan"], "prior_mean = nan is not a finite number"),
        (["--set", "variance=nan"], "variance = nan is not a finite number"),
        (["--n-samples", "1000000000000"], "1000000000000 samples need about 5.13 PiB on disk"),
    ],
)
def test_a_recipe_that_fails_validation_leaves_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "d.h5"
    assert main(["generate", "heat", *SMALL, "--n-samples", "3", *args, "--out", str(out)]) == 2
    assert message in _one_error_line(capsys.readouterr().err)
    _nothing_left(tmp_path)
    # and the next, correct run is not told that an interrupted run is in the way
    assert main(["generate", "heat", *SMALL, "--n-samples", "3", "--out", str(out)]) == 0
    assert out.is_file() and not (tmp_path / "d.h5.parts").exists()


def test_a_run_that_fails_before_finishing_a_sample_leaves_nothing(tmp_path, capsys):
    # every sample blows up: nothing is finished, so nothing is kept (no parts directory to --resume)
    out = tmp_path / "ns.h5"
    code = main(["generate", "navier-stokes", "--resolution", "8", "--final-time", "2.0", "--set", "dt=0.1",
                 "--set", "prior_scale=1e7", "--n-samples", "3", "--no-progress", "--out", str(out)])
    assert code == 2
    assert "sample 0 failed: navier_stokes: the vorticity blew up" in _one_error_line(capsys.readouterr().err)
    _nothing_left(tmp_path)


# ---------------------------------------------------------------- 5. a corrupt manifest

@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00garbage", b"[1, 2, 3]"])
def test_a_corrupt_manifest_is_one_clear_line(tmp_path, capsys, content):
    out = tmp_path / "d.h5"
    parts = tmp_path / "d.h5.parts"
    parts.mkdir()
    (parts / "manifest.json").write_bytes(content)
    assert main(["generate", "heat", *SMALL, "--n-samples", "3", "--out", str(out), "--resume"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{parts / 'manifest.json'} is corrupt" in line and "--overwrite" in line
    assert (parts / "manifest.json").read_bytes() == content  # left for the user to look at
    assert main(["generate", "heat", *SMALL, "--n-samples", "3", "--out", str(out), "--overwrite"]) == 0
    assert out.is_file() and not parts.exists()


# ---------------------------------------------------------------- 6. every float finite and in range

@pytest.mark.parametrize(
    "problem, args, message",
    [
        ("heat", ["--set", "noise_level=nan"], "noise_level = nan is not a finite number"),
        ("heat", ["--set", "source=inf"], "source = inf is not a finite number"),
        ("heat", ["--set", "variance=nan"], "variance = nan is not a finite number"),
        ("heat", ["--set", "correlation_length=-inf"], "correlation_length = -inf is not a finite"),
        ("heat", ["--set", "source=0"], "source must be non-zero"),
        ("heat", ["--set", "prior_mean=750"], "e^m would overflow"),
        ("navier-stokes", ["--set", "noise_level=nan"], "noise_level = nan is not a finite number"),
        ("navier-stokes", ["--set", "prior_scale=nan"], "prior_scale = nan is not a finite number"),
        ("navier-stokes", ["--set", "prior_alpha=inf"], "prior_alpha = inf is not a finite number"),
        ("navier-stokes", ["--set", "nu=nan"], "nu = nan is not a finite number"),
        ("navier-stokes", ["--set", "snapshot_times=[nan]"], "snapshot_times[0] = nan"),
    ],
)
def test_nan_and_inf_in_a_recipe_are_refused(tmp_path, capsys, problem, args, message):
    base = SMALL if problem == "heat" else NS_TINY
    out = tmp_path / "d.h5"
    assert main(["generate", problem, *base, "--n-samples", "2", *args, "--out", str(out)]) == 2
    assert message in _one_error_line(capsys.readouterr().err)
    _nothing_left(tmp_path)


class _NaNAt:
    """A toy forward problem (the driver's protocol, no PDE): sample i is (i, i²), NaN at ``bad``."""

    name = "toy"

    def __init__(self, bad: int) -> None:
        self.bad = bad

    def solve(self, index, rng):
        value = np.array([index, index**2], dtype=float)
        return {"targets/y": value * np.nan if index == self.bad else value}

    def sample_specs(self):
        return {"targets/y": ((2,), np.dtype(np.float64))}

    def static_arrays(self):
        return {"geometry/x": np.zeros(1)}

    def file_attrs(self):
        return {}


def test_a_sample_with_non_finite_values_is_never_written(tmp_path):
    from mpi4py import MPI

    from pdegrow.generation import generate, non_finite_rows, read_part_indices

    out = tmp_path / "toy.h5"
    # parts of 4: samples 0-3 are written, then 4-6 without 7; the run stops there
    expected = (r"^sample 7 failed: targets/y holds non-finite values \(NaN or Inf\); "
                r"the 7 samples finished are kept in .*toy\.h5\.parts")
    with pytest.raises(PdegrowError, match=expected):
        generate(lambda: _NaNAt(7), problem="toy", config={}, n_samples=10, seed=0, out=out,
                 flush_every=4, progress=False, comm=MPI.COMM_SELF)
    assert not out.exists()
    kept = sorted(int(i) for p in (tmp_path / "toy.h5.parts").glob("part-*.h5") for i in read_part_indices(p))
    assert kept == [0, 1, 2, 3, 4, 5, 6]
    rows = {"a": np.ones((3, 2)), "b": np.array([[1.0, 2.0], [np.inf, 0.0], [np.nan, 1.0]])}
    bad, where = non_finite_rows(rows)
    assert bad.tolist() == [False, True, True] and where == "b"
    assert non_finite_rows({"a": np.ones((2, 2, 2))})[1] is None


# ---------------------------------------------------------------- 7. sizes

def test_an_impossible_size_is_refused_before_allocating(tmp_path, capsys):
    out = tmp_path / "d.h5"
    assert main(["generate", "heat", *SMALL, "--n-samples", "1e12", "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    # 1e12 samples of (169 + 169 + 9 + 9) float64 = 2848 B, twice, + 1e12/256 parts × 5 × 4096 B
    assert "1000000000000 samples need about 5.13 PiB on disk (2.78 KiB each, uncompressed" in line
    assert "is free in" in line
    _nothing_left(tmp_path)


def test_a_forward_model_too_big_for_memory_is_refused_before_it_is_built(tmp_path, capsys):
    from solvers.heat import load_recipe

    # KL prior on a 2000×2000 mesh: 4 dense (2001²)² float64 matrices = 4·8·2001⁴ bytes ≈ 467 TiB
    recipe = load_recipe("default", None, {"prior": "kl", "nx": 2000, "ny": 2000})
    assert recipe.memory_bytes() == 8 * (64 * 2001**2 + 4 * 2001**4)
    out = tmp_path / "d.h5"
    assert main(["generate", "heat", *SMALL, "--set", 'prior="kl"', "--set", "nx=2000", "--set", "ny=2000",
                 "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "not enough memory: 1 rank on this node needs about 467 TiB for the forward model's dense " \
           "arrays but only" in line
    _nothing_left(tmp_path)


def test_the_remaining_samples_are_dealt_without_a_list_of_all_samples():
    from pdegrow.generation_parts import pending_indices

    rng = np.random.default_rng(0)
    for n, size in [(1, 1), (10, 3), (1000, 4), (257, 7)]:
        done = np.unique(rng.integers(0, n, size=n // 3)) if n > 1 else np.zeros(0, np.int64)
        remaining = [i for i in range(n) if i not in set(done.tolist())]
        for rank in range(size):
            got = list(pending_indices(n, done, rank, size, block=16))
            assert got == remaining[rank::size]
    # lazily: the first of 10¹⁵ samples comes at once
    assert next(pending_indices(10**15, np.array([0, 1], dtype=np.int64), 1, 2)) == 3


def test_the_size_check_names_the_size_and_the_free_disk_and_memory():
    from pdegrow.generation_output import PART_OVERHEAD, resource_problem

    gib = 2**30
    # 10 samples of 1000 B in 3 part files of 4 arrays: 2·10⁴ + 3·5·4096 = 81 440 bytes
    assert 2 * 10_000 + 3 * 5 * PART_OVERHEAD == 81_440
    assert resource_problem(10, 1000, 4, 4, 1, free_disk=81_440, free_memory=12_000) is None
    assert resource_problem(10, 1000, 4, 4, 1, free_disk=81_439, free_memory=12_000) is not None
    assert resource_problem(10, 1000, 4, 4, 1, free_disk=41_440, free_memory=None, written=40_000) is None
    # 10⁷ samples of 1000 KiB: 2·1.024e13 + 2.5e6·5·4096 = 2.05312e13 bytes = 18.7 TiB
    assert resource_problem(10**7, 1024000, 4, 4, 1, free_disk=5 * gib, free_memory=None) == (
        "cannot write {out}: 10000000 samples need about 18.7 TiB on disk (1000 KiB each, uncompressed, "
        "in the part files and again in the merged file) but only 5 GiB is free in {where}")
    # 4 ranks × 3 × 256 samples × 1 GiB of buffers with 64 GiB of memory
    assert resource_problem(1, gib, 4, 256, 4, free_disk=2**40, free_memory=64 * gib) == (
        "not enough memory: 4 ranks on this node each need about 768 GiB to buffer 256 samples of "
        "1 GiB but only 64 GiB is available; lower --flush-every or the ranks per node")
    assert resource_problem(1, gib, 4, 1, 4, free_disk=2**40, free_memory=12 * gib) is None


# ---------------------------------------------------------------- 12. unwritable outputs, a full disk

@pytest.mark.parametrize("path, cause", [("/proc/x.h5", "cannot create files in /proc"),
                                         ("/sys/x.h5", "cannot create files in /sys")])
def test_an_unwritable_output_is_one_line(capsys, path, cause):
    assert main(["generate", "heat", *SMALL, "--n-samples", "2", "--out", path]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"cannot write {path}: {cause} (" in line
    assert not os.path.exists(path + ".parts")


_CAPPED = """
import resource, sys
from mpi4py import MPI  # MPI's own shared-memory files are made before the cap
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from pdegrow.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _generate_with_file_size_limit(limit: int, *args: str) -> subprocess.CompletedProcess:
    """``pdegrow generate ARGS`` with every file it writes capped at ``limit`` bytes (RLIMIT_FSIZE):
    a write past it fails with EFBIG, as a full disk or a quota fails with ENOSPC/EDQUOT."""
    return subprocess.run([sys.executable, "-c", _CAPPED, str(limit), "generate", *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_a_full_disk_during_the_merge_keeps_the_parts_and_resumes(tmp_path):
    args = ["heat", *SMALL, "--n-samples", "40", "--flush-every", "5"]
    full = tmp_path / "full.h5"
    run_cli("generate", *args, "--out", str(full))
    out = tmp_path / "d.h5"
    proc = _generate_with_file_size_limit(64 * 1024, *args, "--out", str(out))  # parts fit, OUT does not
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert f"cannot write {out}: File too large (while merging" in line and "--resume" in line
    assert not out.exists() and not (tmp_path / "d.h5.tmp").exists()
    assert len(list((tmp_path / "d.h5.parts").glob("part-*.h5"))) == 8
    assert not list((tmp_path / "d.h5.parts").glob("*.tmp"))
    (tmp_path / "d.h5.tmp").write_bytes(b"what a run killed mid-merge leaves")
    resumed = run_cli("generate", *args, "--out", str(out), "--resume")
    assert "(0 generated in this run, the rest resumed)" in resumed.stdout
    assert_same_samples(full, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5", "full.h5"]


def test_a_part_file_that_cannot_be_written_is_one_line(tmp_path):
    out = tmp_path / "d.h5"
    proc = _generate_with_file_size_limit(4096, "heat", *SMALL, "--n-samples", "10", "--out", str(out))
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert f"cannot write {tmp_path / 'd.h5.parts'}/part-" in line and ": File too large" in line
    _nothing_left(tmp_path)  # no sample was finished: nothing to keep


def _mount_tmpfs(where, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_a_really_full_disk_keeps_what_was_written_and_resumes(tmp_path):
    """A real full disk: a 16 MiB tmpfs that another writer fills up while the run is going."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "16m"):
        pytest.skip("needs root to mount a small tmpfs")
    proc = None
    try:
        args = ["heat", *SMALL, "--n-samples", "2000", "--flush-every", "50"]
        out, parts = disk / "d.h5", disk / "d.h5.parts"
        proc = subprocess.Popen([*PDEGROW, "generate", *args, "--out", str(out)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(list(parts.glob("part-*.h5"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            with open(disk / "filler", "wb", buffering=0) as filler:  # the disk fills up under the run
                with pytest.raises(OSError, match="No space left"):
                    while True:
                        filler.write(b"x" * 4096)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2
        line = _one_error_line(err)
        assert f"cannot write {parts}/part-" in line and ": No space left on device" in line
        assert not out.exists() and not (disk / "d.h5.tmp").exists()
        assert not list(parts.glob("*.tmp"))
        kept = list(parts.glob("part-*.h5"))
        assert len(kept) >= 2 and "samples finished are kept" in line
        (disk / "filler").unlink()  # room again: the same command with --resume finishes the file
        run_cli("generate", *args, "--out", str(out), "--resume")
        full = tmp_path / "full.h5"
        run_cli("generate", *args, "--out", str(full))
        assert_same_samples(full, out)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", "-l", str(disk)], check=False)


# ---------------------------------------------------------------- 13. a failure on one MPI rank

@pytest.mark.mpi
def test_a_sample_failing_on_one_rank_ends_every_rank(tmp_path):
    # with this seed and prior, sample 1 (rank 1's first) blows up and samples 0, 2, …, 10 do not
    args = ["navier-stokes", "--resolution", "8", "--final-time", "2.0", "--set", "dt=0.1",
            "--set", "prior_scale=1e5", "--seed", "23", "--n-samples", "12", "--flush-every", "1",
            "--no-progress"]
    out = tmp_path / "ns.h5"
    cmd = [str(BIN / "mpiexec"), "-n", "2", *PDEGROW, "generate", *args, "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)  # a hang fails here
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert "sample 1 failed on rank 1: navier_stokes: the vorticity blew up" in line
    parts = tmp_path / "ns.h5.parts"
    from pdegrow.generation import read_part_indices

    kept = sorted(int(i) for p in parts.glob("part-*.h5") for i in read_part_indices(p))
    assert kept and all(i % 2 == 0 for i in kept), kept  # rank 0's finished samples, each whole
    assert f"the {len(kept)} samples finished are kept in {parts}" in line
    assert not out.exists()
    # the same command with --resume keeps them (and stops at the same sample, now dealt to rank 0)
    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert again.returncode == 2 and "sample 1 failed on rank 0" in _one_error_line(again.stderr)
    after = {int(i) for p in parts.glob("part-*.h5") for i in read_part_indices(p)}
    assert set(kept) <= after, (kept, sorted(after))  # which other samples finish first depends on timing


# ---------------------------------------------------------------- 14. info into a closed pipe

def test_info_into_a_closed_pipe_ends_quietly(heat_paper_file):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: every write fails (EPIPE)
    try:
        proc = subprocess.run([*PDEGROW, "info", str(heat_paper_file)], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT)
    finally:
        os.close(write_end)
    assert proc.returncode == 0
    assert proc.stderr == ""


# ---------------------------------------------------------------- 15. --resume on a complete output

def test_resume_of_a_complete_output_is_a_no_op(tmp_path, capsys):
    out = tmp_path / "d.h5"
    args = ["generate", "heat", *SMALL, "--n-samples", "4", "--seed", "5", "--out", str(out)]
    assert main(args) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    said = capsys.readouterr().out
    assert f"{out} is already complete (same recipe, seed and 4 samples); nothing to do" in said
    assert out.read_bytes() == before and not (tmp_path / "d.h5.parts").exists()
    for changed, what in [(["--seed", "6"], "base_seed"), (["--n-samples", "5"], "n_samples"),
                          (["--set", "noise_level=0.02"], "config")]:
        assert main([*args, *changed, "--resume"]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"{out} exists with a different " in line and what in line and "pass --overwrite" in line
        assert out.read_bytes() == before


# ---------------------------------------------------------------- 16. size independent of interruptions

def test_an_interrupted_run_gives_a_file_of_the_same_size(tmp_path):
    from mpi4py import MPI  # noqa: F401  (before dolfinx)

    from pdegrow.generation import make_manifest, sample_rng, write_part
    from solvers.heat import load_recipe, make_problem

    n = 300
    args = ["generate", "heat", *SMALL, "--n-samples", str(n), "--flush-every", "16"]
    full = tmp_path / "full.h5"
    run_cli(*args, "--out", str(full))
    # an interrupted run: its one part (named so that it sorts last) holds samples 150…229
    out = tmp_path / "d.h5"
    parts = tmp_path / "d.h5.parts"
    parts.mkdir()
    recipe = load_recipe("default", None, {"nx": 12, "ny": 12, "n_sensors": 9, "n_samples": n})
    (parts / "manifest.json").write_text(json.dumps(make_manifest("heat", recipe.to_dict(), n, 0)))
    problem = make_problem(recipe)
    indices = list(range(150, 230))
    write_part(parts / "part-zzzzzzzz-r00000-000000.h5", indices,
               [problem.solve(i, sample_rng(0, i)) for i in indices])
    resumed = run_cli(*args, "--out", str(out), "--resume")
    assert f"({n - len(indices)} generated in this run, the rest resumed)" in resumed.stdout
    assert_same_samples(full, out)
    assert out.stat().st_size == full.stat().st_size
    with h5py.File(full) as a, h5py.File(out) as b:  # even the chunks lie at the same offsets
        for name in ("inputs/observations", "targets/temperature"):
            da, db = a[name].id, b[name].id
            rows = a[name].chunks[0]  # many small samples a chunk: 64 KiB of them, at most n
            assert rows == b[name].chunks[0] == min(n, 64 * 1024 // (a[name].shape[1] * 8)) > 1
            assert da.get_num_chunks() == db.get_num_chunks() == -(-n // rows)
            assert [da.get_chunk_info(i).byte_offset for i in range(da.get_num_chunks())] == \
                   [db.get_chunk_info(i).byte_offset for i in range(db.get_num_chunks())]


def test_two_ranks_give_a_file_of_the_same_size(tmp_path):
    args = ["generate", "heat", *SMALL, "--n-samples", "64", "--flush-every", "3"]
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    run_cli(*args, "--out", str(one))
    run_cli(*args, "--out", str(two), mpi_ranks=2)
    assert_same_samples(one, two)
    assert one.stat().st_size == two.stat().st_size


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
