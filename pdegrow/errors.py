"""Errors that are the user's to fix.

The command line prints a :class:`PdegrowError` as one line and exits non-zero,
without a traceback; any other exception is a bug and keeps its traceback.
"""


class PdegrowError(Exception):
    """A problem with the user's input: a config, a file, a size, a path."""


class DataContractError(PdegrowError):
    """A file that is not a (complete, intact) pdegrow data set."""
