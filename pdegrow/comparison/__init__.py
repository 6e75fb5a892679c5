"""``pdegrow compare``: growth strategies × seeds × data sets through the one trainer, over MPI ranks."""

from pdegrow.comparison.config import CompareConfig, RunSpec, load_compare_config, parse_compare_config
from pdegrow.comparison.runner import CompareSummary, run_comparison

__all__ = ["CompareConfig", "CompareSummary", "RunSpec", "load_compare_config", "parse_compare_config",
           "run_comparison"]
