"""The reference results file: round trip, atomic writes, validation, gaps, sample specs."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from pdegrow.errors import PdegrowError
from pdegrow.reference.dispatch import resolve_samples
from pdegrow.reference.results import (
    ReferenceResult,
    default_reference_path,
    find_reference,
    gap_summary,
    read_reference,
    summary_path,
    write_reference,
)


def _result(n: int = 5) -> ReferenceResult:
    rng = np.random.default_rng(0)
    return ReferenceResult("heat", "map", np.arange(10, 10 + n),
                           {"rel_error_field": rng.uniform(0.3, 0.6, n)},
                           {"map_m": rng.standard_normal((n, 7))}, {"note": "x", "rhat": [1.0, 1.01]})


def test_round_trip_and_summary(tmp_path):
    r = _result()
    path = tmp_path / "d.reference-map.h5"
    write_reference(path, r)
    back = read_reference(path)
    assert back.problem == "heat" and back.method == "map" and back.info == r.info
    np.testing.assert_array_equal(back.sample_indices, r.sample_indices)
    np.testing.assert_array_equal(back.errors["rel_error_field"], r.errors["rel_error_field"])
    np.testing.assert_array_equal(back.estimates["map_m"], r.estimates["map_m"])
    summary = json.loads(summary_path(path).read_text())
    assert summary["n_samples"] == 5
    assert summary["errors"]["rel_error_field"]["mean"] == pytest.approx(r.errors["rel_error_field"].mean())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_paths(tmp_path):
    data = tmp_path / "heat-paper.h5"
    assert default_reference_path(data, "mcmc") == tmp_path / "heat-paper.reference-mcmc.h5"
    assert find_reference(data) is None
    write_reference(default_reference_path(data, "map"), _result())
    write_reference(default_reference_path(data, "mcmc"), _result())
    assert find_reference(data) == tmp_path / "heat-paper.reference-mcmc.h5"


def test_refuses_bad_files(tmp_path):
    with pytest.raises(PdegrowError, match="no such"):
        read_reference(tmp_path / "none.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(PdegrowError, match="not an HDF5"):
        read_reference(tmp_path / "text.h5")
    path = tmp_path / "r.h5"
    write_reference(path, _result())
    with h5py.File(path, "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(PdegrowError, match="incomplete"):
        read_reference(path)
    write_reference(path, _result())
    with h5py.File(path, "a") as f:
        del f["errors/rel_error_field"]
        f["errors/rel_error_field"] = np.zeros(3)
    with pytest.raises(PdegrowError, match="first axis"):
        read_reference(path)
    with pytest.raises(PdegrowError, match="distinct"):
        ReferenceResult("heat", "map", [1, 1], {"e": np.zeros(2)})
    with pytest.raises(PdegrowError, match="method"):
        ReferenceResult("heat", "exact", [1], {"e": np.zeros(1)})


def test_gap_on_common_samples():
    ref = ReferenceResult("heat", "mcmc", [1, 3, 5, 7], {"rel_error_field": np.array([0.2, 0.4, 0.4, 0.8])})
    # the network was evaluated on 3, 4, 5, 7: common samples 3, 5, 7
    net = {"rel_error_field": np.array([0.6, 9.0, 0.6, 1.2]), "other": np.ones(4)}
    g = gap_summary(ref, net, [3, 4, 5, 7])
    m = g["metrics"]["rel_error_field"]
    assert g["n_common"] == 3 and set(g["metrics"]) == {"rel_error_field"}
    assert m["reference"] == pytest.approx(1.6 / 3) and m["network"] == pytest.approx(2.4 / 3)
    assert m["gap"] == pytest.approx(0.5)
    assert m["gap_stderr"] == pytest.approx(0.0)   # the network is exactly 1.5 × the reference
    assert gap_summary(ref, net, [0, 2, 4, 6])["n_common"] == 0


def test_resolve_samples():
    test = resolve_samples("test", 560)
    assert len(test) == 500 and np.all(np.diff(test) > 0)
    np.testing.assert_array_equal(resolve_samples("2:6", 10), [2, 3, 4, 5])
    np.testing.assert_array_equal(resolve_samples("0:10:5", 10), [0, 5])
    np.testing.assert_array_equal(resolve_samples("7,1", 10), [1, 7])
    assert len(resolve_samples("all", 10)) == 10
    for bad, msg in (("0:11", "outside"), ("12", "outside"), ("x", "expected"), ("3:3", "no samples"),
                     ("1,1", "repeated")):
        with pytest.raises(PdegrowError, match=msg):
            resolve_samples(bad, 10)
