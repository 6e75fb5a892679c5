"""File-system failures (unwritable path, disk full, quota) as one line for the user.

h5py reports a failed write as an ``OSError`` *or* a ``RuntimeError`` whose text is
several lines of HDF5 error stack with the C ``errno`` buried inside
(``… errno = 28, error message = 'No space left on device' …``). These helpers turn
any of them into the cause alone (``No space left on device``), so the command line
can say "cannot write PATH: CAUSE" and exit 2 instead of printing a traceback.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pdegrow.errors import PdegrowError

IO_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError)
"""What HDF5/h5py and the OS raise when a write fails (catch these around writes only)."""

_ERRNO = re.compile(r"errno\s*=\s*(\d+)")


def io_cause(exc: BaseException) -> str:
    """The cause of a failed I/O call in a few words: the strerror of its errno when it has one."""
    if isinstance(exc, OSError) and exc.errno and exc.strerror:
        return exc.strerror
    found = _ERRNO.search(str(exc))
    if found and int(found.group(1)) in errno.errorcode:
        return os.strerror(int(found.group(1)))
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "…"


def write_error(path: str | os.PathLike, exc: BaseException, what: str = "write") -> PdegrowError:
    """``cannot <what> <path>: <cause>`` as a :class:`PdegrowError` (raise it ``from None``)."""
    return PdegrowError(f"cannot {what} {Path(path)}: {io_cause(exc)}")


def remove_quietly(path: str | os.PathLike) -> None:
    """Remove a file if it is there; a failure to remove it is ignored (used on error paths)."""
    try:
        os.unlink(path)
    except OSError:
        pass


@contextmanager
def replace_on_success(
    tmp: str | os.PathLike, out: str | os.PathLike, message: Callable[[str], str] | None = None,
) -> Iterator[None]:
    """Write ``tmp`` in the block, then move it onto ``out``; on any failure remove ``tmp``.

    A :class:`PdegrowError` passes through; an I/O error becomes one, ``message(cause)``
    (default ``cannot write OUT: CAUSE``); anything else is raised as it is.
    """
    try:
        yield
        os.replace(tmp, out)
    except PdegrowError:
        remove_quietly(tmp)
        raise
    except IO_ERRORS as exc:
        remove_quietly(tmp)
        text = f"cannot write {out}: {io_cause(exc)}" if message is None else message(io_cause(exc))
        raise PdegrowError(text) from None
    except BaseException:
        remove_quietly(tmp)
        raise
