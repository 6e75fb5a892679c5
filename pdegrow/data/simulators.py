"""``[data] simulated_inputs``: prior-predictive training samples, one simulator per problem.

Each entry of :data:`SIMULATORS` is a :class:`Simulator`: ``names(req)`` says which arrays it can
simulate for that file (or raises :class:`~pdegrow.errors.PdegrowError` with one line saying why the
file cannot be simulated), ``draw(req)`` returns them keyed like the file's own (``inputs/…``,
``targets/…``, first axis = draw), drawn with the file's own forward model and noise model.
:func:`simulate` dispatches on the problem and checks, before any draw, that every array the
training config reads (input, target, aux) can be simulated.

* ``heat`` (KL prior, relative noise): :func:`pdegrow.data.simulated.simulate_heat_samples`,
  one dense forward solve per draw;
* ``navier_stokes`` (P1, full field or sensors, additive noise σ = η·RMS w(T)):
  :func:`pdegrow.data.simulated_ns.simulate_ns_samples`, one forward run of the time stepping per draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pdegrow.errors import PdegrowError


@dataclass(frozen=True)
class SimulationRequest:
    """What a simulator gets: the file, its operators/geometry, its noise (level, model), n, seed."""

    path: str
    operators: dict[str, np.ndarray]
    geometry: dict[str, np.ndarray]
    noise: tuple[float, str]
    n: int
    seed: int


@dataclass(frozen=True)
class Simulator:
    """``names(req)``: the arrays a draw provides for this file; ``draw(req)``: the draws."""

    names: Callable[[SimulationRequest], tuple[str, ...]]
    draw: Callable[[SimulationRequest], dict[str, np.ndarray]]


HEAT_NAMES = ("inputs/observations", "targets/kl_coefficients", "targets/log_conductivity",
              "targets/temperature")


def _heat_names(req: SimulationRequest) -> tuple[str, ...]:
    if "kl_basis" not in req.operators or "cell_stiffness" not in req.operators or req.noise[1] != "relative":
        raise PdegrowError(f"simulated_inputs: {req.path}: the file has no KL prior / heat operators "
                           f"(heat data with a KL prior and relative noise)")
    return HEAT_NAMES


def _heat_draw(req: SimulationRequest) -> dict[str, np.ndarray]:
    from pdegrow.data.simulated import simulate_heat_samples
    from pdegrow.regularizers.heat_physics import HeatOperators

    ops = HeatOperators.from_arrays(req.operators, req.geometry, dtype=torch.float64)
    return simulate_heat_samples(ops, req.n, req.noise[0], req.seed)


def _ns_names(req: SimulationRequest) -> tuple[str, ...]:
    from pdegrow.data.simulated_ns import ns_names

    return ns_names(req.path)


def _ns_draw(req: SimulationRequest) -> dict[str, np.ndarray]:
    from pdegrow.data.simulated_ns import simulate_ns_samples

    return simulate_ns_samples(req.path, req.n, req.seed)


#: problem → simulator
SIMULATORS: dict[str, Simulator] = {
    "heat": Simulator(_heat_names, _heat_draw),
    "navier_stokes": Simulator(_ns_names, _ns_draw),
}


def simulate(problem: str, req: SimulationRequest, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The simulated arrays ``names`` (every one the training reads) for ``problem``'s file."""
    sim = SIMULATORS.get(problem)
    if sim is None:
        raise PdegrowError(f"simulated_inputs: no prior-predictive simulator for the {problem!r} problem "
                           f"(there is one for {', '.join(sorted(SIMULATORS))})")
    have = sim.names(req)
    bad = [k for k in dict.fromkeys(names) if k not in have]
    if bad:
        raise PdegrowError(f"simulated_inputs: {req.path}: arrays {', '.join(bad)} cannot be simulated "
                           f"(input/target/aux must be among {', '.join(have)})")
    return sim.draw(req)
