"""HDF5 data sets as training batches: splits, normalisation, noisy copies, in memory or lazy."""

from pdegrow.data.bundle import DataBundle, prepare_data
from pdegrow.data.loaders import Batch, LazySplit, MemorySplit, epoch_batches, iterate
from pdegrow.data.noise import noisy_copy
from pdegrow.data.normalize import Standardizer
from pdegrow.data.splits import make_splits

__all__ = ["Batch", "DataBundle", "LazySplit", "MemorySplit", "Standardizer", "epoch_batches", "iterate",
           "make_splits", "noisy_copy", "prepare_data"]
