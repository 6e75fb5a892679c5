"""Splits of an HDF5 data set as batch sources: in memory when it fits, lazy otherwise.

A split hands out :class:`Batch` objects for index tensors; :func:`iterate`
turns a split into an epoch of batches (shuffled with a ``torch.Generator``
the trainer checkpoints; whole groups kept together when noisy copies are
present, which is what the cluster manifold penalty needs). No torch
DataLoader: in-memory splits are indexed on the device directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import h5py
import numpy as np
import torch

from pdegrow.data.model_input import model_inputs
from pdegrow.data.noise import noisy_copy
from pdegrow.data.normalize import Standardizer


@dataclass
class Batch:
    """A mini-batch: normalised ``inputs``/``targets``, the dataset ``item`` positions,
    the ``group`` (file sample index: noisy copies of one sample share it) and
    auxiliary arrays in physical units (e.g. ``targets/temperature``)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    item: torch.Tensor
    group: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def _with_channel(x: np.ndarray, field_dims: bool) -> np.ndarray:
    return x[:, None] if field_dims else x


class MemorySplit:
    """A split held as tensors (on the training device). Items 0..n−1; with ``n_copies`` noisy copies,
    item = copy · n_orig + i (copy 0 is the file's own input)."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor,
                 aux: dict[str, torch.Tensor]):
        self.inputs, self.targets, self.groups, self.aux = inputs, targets, groups, aux

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def get(self, idx: torch.Tensor) -> Batch:
        idx = idx.to(self.inputs.device)
        return Batch(self.inputs[idx], self.targets[idx], idx, self.groups[idx],
                     {k: v[idx] for k, v in self.aux.items()})

    def to(self, device: torch.device) -> MemorySplit:
        return MemorySplit(self.inputs.to(device), self.targets.to(device), self.groups.to(device),
                           {k: v.to(device) for k, v in self.aux.items()})


class LazySplit:
    """A split read from the HDF5 file batch by batch (for data sets that do not fit in memory)."""

    def __init__(self, path: str, input_name: str, target_name: str, aux_names: list[str],
                 file_indices: np.ndarray, n_copies: int, clean_name: str | None, noise: tuple[float, str],
                 seed: int, input_norm: Standardizer, target_norm: Standardizer, field_out: bool,
                 dtype: torch.dtype, device: torch.device, transform: str = "none"):
        self.path, self.input_name, self.target_name = path, input_name, target_name
        self.aux_names = aux_names
        self.file_indices = np.asarray(file_indices)
        self.n_copies, self.clean_name, self.noise, self.seed = n_copies, clean_name, noise, seed
        self.input_norm, self.target_norm = input_norm, target_norm
        self.field_out, self.dtype, self.device = field_out, dtype, device
        self.transform = transform
        self._file: h5py.File | None = None

    def __len__(self) -> int:
        return len(self.file_indices) * (1 + self.n_copies)

    def _read(self, name: str, rows: np.ndarray) -> np.ndarray:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        order = np.argsort(rows)
        uniq, inv = np.unique(rows[order], return_inverse=True)
        data = self._file[name][uniq][inv]
        out = np.empty_like(data)
        out[order] = data
        return out

    def get(self, idx: torch.Tensor) -> Batch:
        items = idx.cpu().numpy()
        n = len(self.file_indices)
        copies, local = items // n, items % n
        rows = self.file_indices[local]
        x = self._read(self.input_name, rows)
        if self.n_copies and (copies > 0).any():
            clean = self._read(self.clean_name, rows)
            for j in np.flatnonzero(copies > 0):
                x[j] = noisy_copy(clean[j], *self.noise, self.seed, rows[j], copies[j])
        t = lambda a: torch.as_tensor(a, dtype=self.dtype, device=self.device)  # noqa: E731
        inputs = model_inputs(x, self.transform, self.input_norm, self.dtype, self.device)
        targets = self.target_norm.transform(t(_with_channel(self._read(self.target_name, rows),
                                                             self.field_out)))
        aux = {k: t(self._read(k, rows)) for k in self.aux_names}
        return Batch(inputs, targets, idx.to(self.device), torch.as_tensor(rows, device=self.device), aux)

    def to(self, device: torch.device) -> LazySplit:
        self.device = device
        return self


Split = MemorySplit | LazySplit


def epoch_batches(n: int, batch_size: int, generator: torch.Generator | None,
                  groups: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Index batches for one epoch: a permutation (``generator``; None = in order) cut into batches.

    With ``groups`` (items of one group are contiguous copies ``c·n_orig + i``), whole
    groups are kept in one batch: the group order is permuted and ⌈batch_size / group size⌉
    groups form a batch.
    """
    if groups is None:
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        return list(order.split(batch_size))
    groups = groups.cpu()
    uniq, inv = torch.unique(groups, return_inverse=True)
    sort = torch.argsort(inv, stable=True)
    counts = torch.bincount(inv, minlength=len(uniq)).tolist()
    members = list(sort.split(counts))
    n_groups = len(uniq)
    gorder = (torch.randperm(n_groups, generator=generator) if generator is not None
              else torch.arange(n_groups))
    per = max(1, batch_size // max(1, max(counts)))
    return [torch.cat([members[g] for g in chunk.tolist()]) for chunk in gorder.split(per)]


def item_groups(split: Split) -> torch.Tensor | None:
    """The group (the file sample its noisy copies come from) of every item of ``split``, on the CPU."""
    if isinstance(split, LazySplit):
        return torch.arange(len(split)) % len(split.file_indices)
    return None if split.groups is None else split.groups.cpu()


def iterate(split: Split, batch_size: int, generator: torch.Generator | None = None,
            keep_groups: bool = False) -> Iterator[Batch]:
    """One epoch of batches of ``split`` (shuffled by ``generator`` when given; with ``keep_groups``
    the noisy copies of a sample stay in one batch)."""
    groups = item_groups(split) if keep_groups else None
    for idx in epoch_batches(len(split), batch_size, generator, groups):
        yield split.get(idx)
