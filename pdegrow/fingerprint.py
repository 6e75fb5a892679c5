"""The forward setting of a data set, as a fingerprint: what a trained surrogate is valid for.

A network trained on observations of one forward model (mesh, sensor positions, noise model,
prior, equation, resolution) means nothing on observations of another: evaluated on data from
other sensor positions it returns fields with errors near 2, not an error message. Every run
stores the fingerprint of the data it was trained on (in ``model.pt``, see
:mod:`pdegrow.inference`); ``pdegrow predict`` and ``pdegrow evaluate`` compare it with the data
they are given and refuse a different setting, naming what differs.

The fingerprint is a dict ``{"version", "hash", "parts"}``; ``parts`` maps a part name to
``{"values": {readable recipe values}, "arrays": {array name: digest}}``:

========= ================================================ ==================================
part      readable values (recipe keys, file attributes)   arrays digested (SHA-256)
========= ================================================ ==================================
problem   ``problem``                                      —
mesh      ``nx``, ``ny``, ``degree``, ``resolution``       nodes, cells, grid_x/y, masses
sensors   ``n_sensors``, ``sensor_layout``, ``sensor_seed``…  sensors, sensor_index, B
noise     ``noise_model``, ``noise_level`` (attributes)    —
prior     ``prior``, ``prior_mean``, ``variance``, …       prior mean, KL/SPDE/eigenvalues
equation  ``source``, ``dirichlet_sides``, ``nu``, ``dt``  stiffness, load, Dirichlet, forcing
other     any other recipe key (a new problem's)           —
========= ================================================ ==================================

Keys that do not change the setting (``n_samples``, ``seed``, ``lu_solver``, ``snapshot_times``,
``derived_from``) and arrays not listed (added dimension scales, permutations) are left out, so
two files of one recipe with other sizes or seeds share a fingerprint. Arrays are digested one by
one, exactly (as little-endian float64/int64 bytes): the generator makes them deterministically,
the same for any number of MPI ranks. Two settings are compared on the keys and arrays both files
hold, so a file of an older generator that lacks an array (e.g. the consistent mass matrix) or a
newer recipe key still matches.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from pdegrow.errors import PdegrowError

VERSION = 1

#: recipe keys / attributes → part (anything else, except IGNORED, goes to "other")
KEY_PARTS: dict[str, str] = {
    "problem": "problem",
    "nx": "mesh", "ny": "mesh", "degree": "mesh", "resolution": "mesh",
    "n_sensors": "sensors", "sensor_layout": "sensors", "sensor_seed": "sensors", "sensors": "sensors",
    "observation": "sensors",
    "noise_level": "noise", "noise_model": "noise",
    "prior": "prior", "prior_mean": "prior", "variance": "prior", "correlation_length": "prior",
    "n_modes": "prior", "prior_scale": "prior", "prior_tau": "prior", "prior_alpha": "prior",
    "source": "equation", "dirichlet_sides": "equation", "nu": "equation", "dt": "equation",
    "final_time": "equation", "forcing": "equation", "time_scheme": "equation",
}
IGNORED = frozenset({"n_samples", "seed", "lu_solver", "snapshot_times", "derived_from"})

#: static arrays → part (other arrays are not part of the fingerprint)
ARRAY_PARTS: dict[str, str] = {
    "geometry/nodes": "mesh", "geometry/cells": "mesh", "geometry/grid_x": "mesh", "geometry/grid_y": "mesh",
    "operators/lumped_mass": "mesh", "operators/mass_matrix_data": "mesh",
    "operators/mass_matrix_indices": "mesh", "operators/mass_matrix_indptr": "mesh",
    "geometry/sensors": "sensors", "operators/sensor_index": "sensors",
    "operators/observation_matrix": "sensors",
    "operators/prior_mean": "prior", "operators/kl_basis": "prior", "operators/kl_eigenvalues": "prior",
    "operators/spde_coefficients": "prior", "operators/spde_scale": "prior",
    "operators/prior_eigenvalues": "prior",
    "operators/cell_stiffness": "equation", "operators/load_vector": "equation",
    "operators/dirichlet_nodes": "equation", "operators/forcing": "equation",
}
PARTS = ("problem", "mesh", "sensors", "noise", "prior", "equation", "other")

#: how a part is named in messages
PART_WORDS = {"problem": "the problem", "mesh": "the mesh/grid", "sensors": "the sensors",
              "noise": "the noise model", "prior": "the prior", "equation": "the equation",
              "other": "the recipe"}


def _plain(value: Any) -> Any:
    """A JSON-comparable form of a recipe value or HDF5 attribute."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def array_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 (16 hex digits) of named arrays: names, shapes and values (floats as float64, integers
    as int64, little-endian), in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        kind = "<f8" if a.dtype.kind in "fc" else "<i8" if a.dtype.kind in "iub" else None
        if kind is None:
            raise PdegrowError(f"cannot fingerprint array {name!r} of dtype {a.dtype}")
        h.update(f"{name}:{a.shape}:{kind};".encode())
        h.update(np.ascontiguousarray(a.real if a.dtype.kind == "c" else a, dtype=kind).tobytes())
    return h.hexdigest()[:16]


def fingerprint_parts(problem: str, config: dict[str, Any], attrs: dict[str, Any],
                      arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """The parts of a setting from a file's ``problem``, recipe ``config``, root ``attrs`` (noise
    attributes win over the recipe's) and static ``arrays`` (``"geometry/…"``, ``"operators/…"``)."""
    values: dict[str, dict[str, Any]] = {p: {} for p in PARTS}
    merged = {**{k: v for k, v in config.items() if k not in IGNORED}, "problem": problem}
    for key in ("noise_level", "noise_model"):
        if key in attrs:
            merged[key] = attrs[key]
    for key, value in merged.items():
        values[KEY_PARTS.get(key, "other")][key] = _plain(value)
    grouped: dict[str, dict[str, np.ndarray]] = {p: {} for p in PARTS}
    for name, a in arrays.items():
        if name in ARRAY_PARTS:
            grouped[ARRAY_PARTS[name]][name] = a
    return {p: {"values": values[p],
                "arrays": {k: array_digest({k: a}) for k, a in sorted(grouped[p].items())}}
            for p in PARTS if values[p] or grouped[p]}


def make_fingerprint(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"version", "hash", "parts"}`` with the hash of the canonical JSON of ``parts``."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return {"version": VERSION, "hash": hashlib.sha256(text.encode()).hexdigest()[:16], "parts": parts}


def fingerprint_of_file(f: Any) -> dict[str, Any]:
    """The fingerprint of an open pdegrow data set (an ``h5py.File``)."""
    try:
        config = json.loads(f.attrs.get("config", "{}"))
    except (TypeError, ValueError):
        config = {}
    arrays = {f"{g}/{k}": f[g][k][()] for g in ("geometry", "operators") if g in f for k in f[g]
              if f"{g}/{k}" in ARRAY_PARTS}
    attrs = {k: f.attrs[k] for k in ("noise_level", "noise_model") if k in f.attrs}
    return make_fingerprint(fingerprint_parts(str(_plain(f.attrs.get("problem", ""))),
                                              config if isinstance(config, dict) else {}, attrs, arrays))


def fingerprint_of_path(path: str) -> dict[str, Any]:
    """The fingerprint of the data set at ``path`` (opened and checked as a pdegrow data set)."""
    from pdegrow.contract import open_dataset

    with open_dataset(path) as f:
        return fingerprint_of_file(f)


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, str]:
    """Part name → what differs, in words (empty when the two settings agree)."""
    if expected.get("hash") == actual.get("hash"):
        return {}
    out: dict[str, str] = {}
    exp_parts, act_parts = expected.get("parts", {}), actual.get("parts", {})
    for part in dict.fromkeys([*exp_parts, *act_parts]):
        a, b = exp_parts.get(part, {}), act_parts.get(part, {})
        va, vb = a.get("values", {}), b.get("values", {})
        words = [f"{k} {vb[k]!r}, the run's {va[k]!r}" for k in sorted(set(va) & set(vb)) if va[k] != vb[k]]
        da, db = a.get("arrays") or {}, b.get("arrays") or {}
        changed = [k.split("/")[-1] for k in sorted(set(da) & set(db)) if da[k] != db[k]]
        if changed:
            words.append(f"{'its ' if not words else ''}arrays differ: {', '.join(changed)}")
        if words:
            out[part] = "; ".join(words)
    return out


def check_same_setting(expected: dict[str, Any] | None, actual: dict[str, Any], what: str,
                       allow: tuple[str, ...] | list[str] = ()) -> None:
    """Refuse (:class:`PdegrowError`, one line) data of ``actual`` setting for a run trained on
    ``expected`` (None: the run predates fingerprints; nothing to check); parts in ``allow`` may
    differ."""
    if expected is None:
        return
    unknown = sorted(set(allow) - set(PARTS))
    if unknown:
        raise PdegrowError(f"unknown setting part(s) {', '.join(unknown)} (one of {', '.join(PARTS)})")
    diff = {k: v for k, v in differences(expected, actual).items() if k not in allow}
    if diff:
        said = "; ".join(f"{PART_WORDS.get(k, k)} ({v})" for k, v in diff.items())
        flags = " ".join(f"--allow-different {k}" for k in diff)
        raise PdegrowError(f"{what} comes from another forward setting than the run was trained on: {said} "
                           f"(the network's output would be meaningless; {flags} to use it anyway)")


__all__ = ["ARRAY_PARTS", "KEY_PARTS", "PARTS", "array_digest", "check_same_setting", "differences",
           "fingerprint_of_file", "fingerprint_of_path", "fingerprint_parts", "make_fingerprint"]
