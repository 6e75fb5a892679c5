"""Write docs/api.md from the docstrings of the public API (``import pdegrow``).

    python docs/make_api.py > docs/api.md

``tests/test_api_docs.py`` checks that docs/api.md is what this prints, so the page follows the code.
"""

from __future__ import annotations

import inspect
import sys

import pdegrow

HEADER = """# Python API

`import pdegrow` is cheap (no torch, h5py, numpy or dolfinx until a name below is first used). Every
error that is the user's to fix raises `pdegrow.PdegrowError` with the same one-line message the
command line prints; nothing in the library exits the process. Configuration keys:
[configuration.md](configuration.md); the design: [architecture.md](architecture.md).

From `pip install` to a prediction on your own observations:

```python
import numpy as np
import pdegrow

run = pdegrow.load_run("runs/lw")                    # a finished `pdegrow train` run
pred = run.predict(np.load("my_observations.npy"))   # (n, 10) temperatures at the run's sensors
m = pred.fields["log_conductivity"]                  # (n, 100) nodal log-conductivity
pred.plot(0)                                         # the field on the mesh, sensors, colourbar
pred.save("recovered.h5")                            # fields + geometry, plain HDF5
```

The whole loop — data, growth, prediction, comparison with the Bayes reference — is in
`examples/heat_inverse.py` and `examples/navier_stokes_conv.py` (jupytext notebooks).

*This page is generated from the docstrings by `docs/make_api.py`.*
"""

#: (title, object, members to document)
ENTRIES: list[tuple[str, str, list[str]]] = [
    ("Data sets", "load_dataset", []),
    ("", "PdegrowDataset", ["arrays", "split"]),
    ("Generation and references", "generate", []),
    ("", "compute_reference", []),
    ("Training", "train", []),
    ("Trained runs", "load_run", []),
    ("", "Run", ["config", "data", "summary", "metrics", "events", "model", "predict", "evaluate", "report",
                 "export"]),
    ("Predictions", "Prediction", ["errors", "save", "plot"]),
    ("The model file alone", "load_model", []),
    ("", "PortableModel", ["load", "predict", "fields", "check_inputs", "decoder_matrix"]),
    ("Errors", "PdegrowError", []),
]


def _signature(obj: object) -> str:
    """``(a: T = default, *, b: U, **kw) -> R`` with the annotations as written (no quotes), no ``self``."""
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    parts: list[str] = []
    star = False
    for p in sig.parameters.values():
        if p.name == "self":
            continue
        text = p.name
        if p.kind is p.VAR_POSITIONAL:
            text, star = "*" + text, True
        elif p.kind is p.VAR_KEYWORD:
            text = "**" + text
        elif p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if p.annotation is not p.empty:
            ann = p.annotation
            text += f": {ann if isinstance(ann, str) else inspect.formatannotation(ann)}"
        if p.default is not p.empty:
            text += f" = {p.default!r}"
        parts.append(text)
    ret = sig.return_annotation
    ret = "" if ret is sig.empty else f" -> {ret if isinstance(ret, str) else inspect.formatannotation(ret)}"
    return f"({', '.join(parts)}){ret}"


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(no docstring)")


def render() -> str:
    out = [HEADER]
    for title, name, members in ENTRIES:
        if title:
            out.append(f"## {title}\n")
        obj = getattr(pdegrow, name)
        if inspect.isclass(obj):
            out.append(f"### class `pdegrow.{name}`\n\n{_doc(obj)}\n")
        else:
            out.append(f"### `pdegrow.{name}{_signature(obj)}`\n\n{_doc(obj)}\n")
        for member in members:
            attr = inspect.getattr_static(obj, member)
            if isinstance(attr, property):
                out.append(f"#### `{name}.{member}` (property)\n\n{_doc(attr)}\n")
            else:
                fn = getattr(obj, member)
                out.append(f"#### `{name}.{member}{_signature(fn)}`\n\n{_doc(fn)}\n")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
