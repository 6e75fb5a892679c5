"""``[data] simulated_inputs`` for Navier–Stokes: prior-predictive draws follow the file's own model
(the generator's prior draw, the DOLFINx time stepping, the file's noise model), do not depend on how
many are drawn, join the training split, and refuse what they cannot simulate (real files from the
real generator)."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import generate_with_sets

from pdegrow.data.bundle import prepare_data
from pdegrow.data.simulated_ns import simulate_ns_samples
from pdegrow.data.simulators import SimulationRequest, simulate
from pdegrow.errors import PdegrowError
from pdegrow.training.config import DataConfig

R = 12
GEN = ("generate", "navier-stokes", "--resolution", str(R), "--final-time", "0.05", "--set", "dt=0.005",
       "--n-samples", "12", "--seed", "2", "--no-progress")


def _generate(path: Path, *sets: str) -> Path:
    return generate_with_sets(GEN, path, *sets)


@pytest.fixture(scope="module")
def ns_full(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("sim") / "full.h5", "noise_level=0.02")


@pytest.fixture(scope="module")
def ns_sensors(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("sim") / "sensors.h5", "noise_level=0.02", "observation=sensors",
                     "n_sensors=9")


def test_draws_are_the_generators_prior_its_dolfinx_dynamics_and_its_noise(ns_full):
    """w₀ of draw j is the generator's own prior draw from rng([seed, 104729, j]); the DOLFINx solver run
    from that w₀ gives the simulated clean w(T); the noise is σ = η·RMS(w(T)) times the next normals."""
    from solvers.navier_stokes import TorusVorticitySolver, forcing_function, sample_vorticity

    sim = simulate_ns_samples(ns_full, 3, seed=5)
    with h5py.File(ns_full) as f:
        dt, steps, nu, level = (float(f.attrs["dt"]), int(f.attrs["n_steps"]), float(f.attrs["nu"]),
                                float(f.attrs["noise_level"]))
    solver = TorusVorticitySolver(R, 1, nu, dt, forcing_function, "petsc", "cn_ab2")
    for j in range(3):
        rng = np.random.default_rng([5, 104729, j])
        w0 = sample_vorticity(rng, R)
        np.testing.assert_allclose(sim["targets/vorticity_0"][j], w0, atol=1e-14)
        wT = solver.to_grid(solver.run(solver.from_grid(w0), steps)[0])
        clean = sim["targets/vorticity_T"][j]
        assert np.linalg.norm(clean - wT) / np.linalg.norm(wT) < 1e-12
        eps = rng.standard_normal(R * R).reshape(R, R)
        sigma = level * np.sqrt(np.mean(clean**2))
        np.testing.assert_allclose(sim["inputs/vorticity_T"][j], clean + sigma * eps, rtol=0, atol=1e-14)


def test_draws_do_not_depend_on_how_many_and_sensors_observe_the_grid(ns_full, ns_sensors):
    many = simulate_ns_samples(ns_full, 5, seed=1, chunk=2)
    few = simulate_ns_samples(ns_full, 2, seed=1)
    for k in few:
        np.testing.assert_allclose(few[k], many[k][:2], rtol=0, atol=1e-14)
    assert not np.allclose(simulate_ns_samples(ns_full, 1, seed=2)["targets/vorticity_0"],
                           few["targets/vorticity_0"][:1])
    sens = simulate_ns_samples(ns_sensors, 2, seed=1)
    with h5py.File(ns_sensors) as f:
        index = f["operators/sensor_index"][()]
        level = float(f.attrs["noise_level"])
    assert sens["inputs/observations"].shape == (2, len(index))
    # the same draws as the full-field file (same prior, same dynamics): sensors read its grid values
    np.testing.assert_allclose(sens["targets/vorticity_0"], few["targets/vorticity_0"], atol=1e-14)
    np.testing.assert_allclose(sens["inputs/observations_clean"],
                               few["targets/vorticity_T"].reshape(2, -1)[:, index], atol=1e-14)
    rms = np.sqrt((few["targets/vorticity_T"].reshape(2, -1) ** 2).mean(1))
    noise = (sens["inputs/observations"] - sens["inputs/observations_clean"]) / (level * rms[:, None])
    assert np.abs(noise).max() < 6 and np.abs(noise).max() > 0.1


def _data_cfg(**kw) -> DataConfig:
    return DataConfig(problem="navier_stokes", input="inputs/vorticity_T", target="targets/vorticity_0",
                      aux=[], n_train=6, n_val=3, n_test=3, normalize_inputs="feature",
                      normalize_targets="scalar", **kw)


def test_the_training_split_gets_the_draws_normalised_like_the_file(ns_full):
    plain = prepare_data(str(ns_full), _data_cfg(), 0, torch.device("cpu"), torch.float64)
    data = prepare_data(str(ns_full), _data_cfg(simulated_inputs=4), 0, torch.device("cpu"), torch.float64)
    assert data.train.inputs.shape == (10, 1, R, R) and data.train.targets.shape == (10, 1, R, R)
    assert data.train.groups[-4:].tolist() == [12, 13, 14, 15]
    torch.testing.assert_close(data.train.inputs[:6], plain.train.inputs)
    sim = simulate_ns_samples(ns_full, 4, seed=0)
    torch.testing.assert_close(data.to_physical_target(data.train.targets[6:])[:, 0],
                               torch.as_tensor(sim["targets/vorticity_0"]))
    torch.testing.assert_close(data.to_physical_input(data.train.inputs[6:])[:, 0],
                               torch.as_tensor(sim["inputs/vorticity_T"]))
    # the normalisers are the file's training samples' unless asked to include the simulated ones
    torch.testing.assert_close(data.input_norm.mean, plain.input_norm.mean)
    both = prepare_data(str(ns_full), _data_cfg(simulated_inputs=4, normalize_with_simulated=True), 0,
                        torch.device("cpu"), torch.float64)
    x_all = torch.cat([plain.to_physical_input(plain.train.inputs),
                       torch.as_tensor(sim["inputs/vorticity_T"])[:, None]])
    torch.testing.assert_close(both.input_norm.mean, x_all.mean(0))
    torch.testing.assert_close(both.input_norm.inverse(both.train.inputs), x_all)
    w_all = torch.cat([plain.to_physical_target(plain.train.targets),
                       torch.as_tensor(sim["targets/vorticity_0"])[:, None]])
    torch.testing.assert_close(both.to_physical_target(both.train.targets), w_all)
    assert abs(float(both.target_norm.std) / float(w_all.std(unbiased=False)) - 1) < 1e-9


def test_refusals_are_one_line(ns_full, tmp_path):
    req = SimulationRequest(str(ns_full), {}, {}, (0.02, "additive"), 2, 0)
    with pytest.raises(PdegrowError, match="vorticity_snapshots cannot be simulated"):
        simulate("navier_stokes", req, ["inputs/vorticity_T", "targets/vorticity_snapshots"])
    with pytest.raises(PdegrowError, match="no prior-predictive simulator for the 'regression' problem"):
        simulate("regression", req, ["inputs/vorticity_T"])
    bad = tmp_path / "other-nu.h5"
    shutil.copy(ns_full, bad)
    with h5py.File(bad, "r+") as f:
        f.attrs["nu"] = 0.05                       # the stored fields no longer follow the attributes
    with pytest.raises(PdegrowError, match="miss the stored w\\(T\\)"):
        simulate_ns_samples(bad, 2, seed=0)
    with pytest.raises(PdegrowError, match="at least 1"):
        simulate_ns_samples(ns_full, 0, seed=0)
