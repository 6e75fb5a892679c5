"""Run files as tensors + JSON, never pickle: the safetensors layout, read and written without it.

``model.pt`` and ``checkpoint.pt`` hold a nested structure of plain data (dicts, lists,
tuples, str, int, float incl. ±inf/NaN, bool, None) and tensors. :func:`save` splits it into
named tensors and a JSON tree and writes them in the safetensors layout
(https://huggingface.co/docs/safetensors): an 8-byte little-endian header length n, n bytes of
JSON header ``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}``, then the
raw little-endian tensor bytes. The JSON tree is ``__metadata__["pdegrow"]``; in it a tensor is
``{"$tensor": name}`` (names are the tree paths, e.g. ``state/blocks.0.layers.0.weight``).
Other tools read the tensors with ``safetensors.torch.load_file`` and the rest with ``json``.

:func:`load` parses only JSON and raw numbers: a crafted file can at most be refused
(:class:`~pdegrow.errors.PdegrowError`, one line), never run code. Every offset, shape and dtype
is checked against the file before a byte is interpreted. Loading is bit-exact: a saved
tensor comes back with the same dtype, shape and bytes.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdegrow.errors import PdegrowError

FORMAT = "pdegrow-tensors"
VERSION = 1
MAX_HEADER = 100 * 1024 * 1024   # bytes of JSON header we are willing to parse

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}


# ------------------------------------------------------------------ the JSON tree


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"$float": repr(obj)}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), path, tensors)
    if isinstance(obj, torch.Tensor):
        name = path or "tensor"
        if name in tensors:
            raise ValueError(f"two tensors at {name!r}")
        tensors[name] = obj
        return {"$tensor": name}
    if isinstance(obj, tuple):
        return {"$tuple": [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        sub = lambda k: f"{path}/{k}" if path else str(k)  # noqa: E731
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: _encode(v, sub(k), tensors) for k, v in obj.items()}
        return {"$items": [[_encode(k, "", {}), _encode(v, sub(k), tensors)] for k, v in obj.items()]}
    raise TypeError(f"cannot store a {type(obj).__name__} at {path!r} in a run file")


def _decode(node: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if node is None or isinstance(node, (bool, str, int, float)):
        return node
    if isinstance(node, list):
        return [_decode(v, tensors, where) for v in node]
    if isinstance(node, dict):
        if len(node) == 1:
            (key, val), = node.items()
            if key == "$tensor":
                if not isinstance(val, str) or val not in tensors:
                    raise PdegrowError(f"{where}: damaged run file (missing tensor {val!r})")
                return tensors[val]
            if key == "$float":
                if val not in ("nan", "inf", "-inf"):
                    raise PdegrowError(f"{where}: damaged run file (bad float {val!r})")
                return float(val)
            if key == "$tuple":
                return tuple(_decode(v, tensors, where) for v in _as_list(val, where))
            if key == "$items":
                pairs = [_as_list(p, where) for p in _as_list(val, where)]
                if any(len(p) != 2 for p in pairs):
                    raise PdegrowError(f"{where}: damaged run file (bad $items)")
                return {_hashable(_decode(k, tensors, where), where): _decode(v, tensors, where)
                        for k, v in pairs}
        return {k: _decode(v, tensors, where) for k, v in node.items()}
    raise PdegrowError(f"{where}: damaged run file")  # pragma: no cover - json gives no other types


def _as_list(x: Any, where: str) -> list[Any]:
    if not isinstance(x, list):
        raise PdegrowError(f"{where}: damaged run file (expected a list)")
    return x


def _hashable(x: Any, where: str) -> Any:
    if isinstance(x, (list, dict, torch.Tensor)):
        raise PdegrowError(f"{where}: damaged run file (bad dict key)")
    return x


# ------------------------------------------------------------------ the file


def to_bytes(tree: Any, metadata: dict[str, str] | None = None) -> bytes:
    """The file's bytes for ``tree`` (see the module docstring)."""
    tensors: dict[str, torch.Tensor] = {}
    meta = {"format": FORMAT, "version": str(VERSION), **(metadata or {})}
    meta["pdegrow"] = json.dumps(_encode(tree, "", tensors), allow_nan=False, separators=(",", ":"))
    header: dict[str, Any] = {"__metadata__": meta}
    chunks: list[bytes] = []
    offset = 0
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        if t.dtype not in _NAMES:
            raise TypeError(f"cannot store a {t.dtype} tensor ({name!r}) in a run file")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        if sys.byteorder != "little" and t.element_size() > 1:  # pragma: no cover
            raw = np.frombuffer(raw, dtype=f">u{t.element_size()}").astype(f"<u{t.element_size()}").tobytes()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save(path: str | Path, tree: Any, metadata: dict[str, str] | None = None) -> None:
    """Write ``tree`` to ``path`` atomically: a ``.tmp`` sibling renamed over it, so a killed process
    leaves the old file or the new one, never a part. (No fsync: a checkpoint is written every
    epoch, and syncing each would cost more than the epoch of a small network.)"""
    path = Path(path)
    data = to_bytes(tree, metadata)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def from_bytes(data: bytes, where: str = "run file") -> tuple[Any, dict[str, str]]:
    """(tree, metadata) from a file's bytes; a :class:`PdegrowError` for anything else."""
    bad = f"{where} is not a pdegrow run file"
    header_start = data[8:9] == b"{"   # a header length whose low byte is 0x80 or "PK" is fine
    if not header_start and (data[:2] == b"PK" or data[:1] == b"\x80"):
        raise PdegrowError(f"{bad} (a pickle/zip file, e.g. from torch.save: pdegrow never unpickles run "
                           f"files, which could run code; retrain the run with this version)")
    if len(data) < 8:
        raise PdegrowError(f"{bad} (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(MAX_HEADER, len(data) - 8):
        raise PdegrowError(f"{bad} (bad header length)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise PdegrowError(f"{bad} (damaged header)") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise PdegrowError(f"{bad} (no metadata)")
    meta = header.pop("__metadata__")
    if meta.get("format") != FORMAT:
        raise PdegrowError(f"{bad} (format {meta.get('format')!r})")
    if meta.get("version") != str(VERSION):
        raise PdegrowError(f"{where}: run file version {meta.get('version')!r} is not supported "
                           f"(this pdegrow reads version {VERSION})")
    buf = memoryview(data)[8 + n:]
    tensors: dict[str, torch.Tensor] = {}
    for name, spec in header.items():
        tensors[name] = _tensor(spec, buf, f"{where}: tensor {name!r}")
    try:
        tree = json.loads(meta.get("pdegrow", ""))
    except (TypeError, json.JSONDecodeError, RecursionError):
        raise PdegrowError(f"{bad} (damaged metadata)") from None
    try:
        return _decode(tree, tensors, where), {k: v for k, v in meta.items() if k != "pdegrow"}
    except RecursionError:
        raise PdegrowError(f"{bad} (nested too deeply)") from None


def _tensor(spec: Any, buf: memoryview, where: str) -> torch.Tensor:
    try:
        dtype = _DTYPES[spec["dtype"]]
        shape, (start, end) = spec["shape"], spec["data_offsets"]
        if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)
                and type(start) is int and type(end) is int):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise PdegrowError(f"{where} is damaged (dtype/shape/offsets)") from None
    size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if not (0 <= start <= end <= len(buf)) or end - start != size:
        raise PdegrowError(f"{where} is damaged (its bytes do not fit the file)")
    if size == 0:
        return torch.empty(shape, dtype=dtype)
    raw = bytearray(buf[start:end])
    if sys.byteorder != "little" and dtype.itemsize > 1:  # pragma: no cover
        w = dtype.itemsize
        raw = bytearray(np.frombuffer(raw, dtype=f"<u{w}").astype(f">u{w}").tobytes())
    return torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(shape)


def load(path: str | Path) -> tuple[Any, dict[str, str]]:
    """(tree, metadata) of a run file; a missing, foreign or damaged file is a :class:`PdegrowError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PdegrowError(f"{path} cannot be read ({exc.strerror})") from None
    return from_bytes(data, str(path))


__all__ = ["FORMAT", "VERSION", "from_bytes", "load", "save", "to_bytes"]
