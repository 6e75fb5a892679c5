"""The parts directory ``OUT.parts/`` of a generation run: manifest, part files, what is done.

``OUT.parts/manifest.json`` records the recipe (problem, config, size, seed) the parts
belong to; every ``part-<run>-r<rank>-<k>.h5`` holds some finished samples and their
indices. Part files and the manifest are written under a temporary name and renamed,
so each exists whole or not at all. Which samples remain is computed from the part
files alone, and handed out lazily (memory independent of the number of samples).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pdegrow.errors import DataContractError, PdegrowError
from pdegrow.io_errors import remove_quietly, write_error

MANIFEST = "manifest.json"
PART_GLOB = "part-*.h5"


def parts_dir(out: Path) -> Path:
    """``OUT.parts`` beside ``OUT``."""
    return out.with_name(out.name + ".parts")


def make_manifest(problem: str, config: dict[str, Any], n_samples: int, seed: int) -> dict[str, Any]:
    """What a run's parts belong to; a resume must present the same (JSON-normalised)."""
    return json.loads(json.dumps(
        {"problem": problem, "config": config, "n_samples": n_samples, "base_seed": seed}))


def read_manifest(parts: Path) -> dict[str, Any] | None:
    """The manifest of ``parts`` (None when there is none); a damaged one is a :class:`PdegrowError`."""
    path = parts / MANIFEST
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise write_error(path, exc, "read") from None
    try:
        manifest = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PdegrowError(f"{path} is corrupt ({exc}); pass --overwrite to restart the run") from None
    keys = {"problem", "config", "n_samples", "base_seed"}
    if not isinstance(manifest, dict) or set(manifest) != keys:
        raise PdegrowError(f"{path} is corrupt (not a generation manifest); "
                           "pass --overwrite to restart the run")
    return manifest


def write_manifest(parts: Path, manifest: dict[str, Any]) -> None:
    """Write ``parts/manifest.json`` atomically (temporary name, then rename)."""
    path = parts / MANIFEST
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        remove_quietly(tmp)
        raise write_error(path, exc) from None


def stack_samples(samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """{name: rows} with rows[k] = samples[k][name]."""
    return {name: np.stack([s[name] for s in samples]) for name in samples[0]}


def write_part(path: Path, indices: list[int] | np.ndarray,
               samples: list[dict[str, np.ndarray]] | dict[str, np.ndarray]) -> None:
    """Write samples (a list of samples, or their :func:`stack_samples` rows) to a part file
    atomically (temporary name, then rename).

    The HDF5 file is built in memory and written to disk with plain file I/O: a failed
    write (disk full, quota) is then an ordinary ``OSError`` — HDF5 itself does not survive
    a failed write (it crashes when the file is closed). The temporary file is removed and a
    :class:`PdegrowError` names the part file and the cause.
    """
    tmp = path.with_name(path.name + ".tmp")
    stacked = samples if isinstance(samples, dict) else stack_samples(samples)
    with h5py.File(f"{path.name}.image", "w", driver="core", backing_store=False) as f:
        f.create_dataset("indices", data=np.asarray(indices, dtype=np.int64))
        for name, rows in stacked.items():  # uncompressed: compressed once, when merged
            f.create_dataset(name, data=rows)
        f.attrs["complete"] = True
        f.flush()
        image = f.id.get_file_image()
    try:
        write_bytes(tmp, image)
        os.replace(tmp, path)
    except OSError as exc:
        remove_quietly(tmp)
        raise write_error(path, exc) from None


def write_bytes(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data`` (every byte written, or ``OSError``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def read_part_indices(path: Path) -> np.ndarray:
    """The sample indices held by a part file; :class:`DataContractError` if it is damaged."""
    try:
        with h5py.File(path, "r") as f:
            if not f.attrs.get("complete", False) or "indices" not in f:
                raise DataContractError(f"part file {path} is incomplete")
            return np.asarray(f["indices"][...], dtype=np.int64)
    except OSError as exc:
        raise DataContractError(
            f"part file {path} is corrupt ({exc}); delete it to regenerate its samples") from None


def part_files(parts: Path) -> list[Path]:
    """The finished part files of ``parts``, in name order."""
    return sorted(parts.glob(PART_GLOB))


def done_indices(parts: Path, n_samples: int) -> np.ndarray:
    """Sorted, distinct indices of the samples held by the part files of ``parts``."""
    found = []
    for part in part_files(parts):
        indices = read_part_indices(part)
        if indices.size and (indices.min() < 0 or indices.max() >= n_samples):
            raise DataContractError(f"part file {part} holds samples outside 0…{n_samples - 1}")
        found.append(indices)
    return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)


def pending_indices(n_samples: int, done: np.ndarray, rank: int = 0, size: int = 1,
                    block: int = 1 << 20) -> Iterator[int]:
    """The samples not in ``done`` (sorted), dealt round robin: ``rank`` gets every
    ``size``-th of them starting at its own rank — ``[i for i in range(n) if i not in done][rank::size]``
    without building that list (a block of ``block`` indices at a time)."""
    seen = 0  # pending indices before the current block
    for lo in range(0, n_samples, block):
        hi = min(lo + block, n_samples)
        idx = np.arange(lo, hi, dtype=np.int64)
        a, b = np.searchsorted(done, [lo, hi])
        if b > a:
            keep = np.ones(hi - lo, dtype=bool)
            keep[done[a:b] - lo] = False
            idx = idx[keep]
        first = (rank - seen) % size
        yield from idx[first::size].tolist()
        seen += len(idx)
