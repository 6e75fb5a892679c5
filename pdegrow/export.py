"""Export a trained surrogate to TorchScript or ONNX with its normalisers and field decoder baked in.

The exported graph maps raw observations straight to the recovered field, with no pdegrow needed to
run it::

    field = decode(target_norm⁻¹(net(input_norm(transform(y)))))

``transform`` is the config's ``[data] input_transform`` (``log``: log |y|), the normalisers are the
training split's standardisations, and ``decode`` the affine KL map m = m̄ + Φ(√λ ⊙ ξ) for a heat run
trained on KL coefficients (the identity otherwise). Input ``observations`` (n, *input_shape), output
the field (n, N) nodal log-conductivity for heat, (n, R, R) w₀ for Navier–Stokes, or the target.
Both formats are checked against :meth:`pdegrow.inference.PortableModel.predict` after export.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pdegrow.data.model_input import model_inputs
from pdegrow.data.normalize import Standardizer
from pdegrow.errors import PdegrowError
from pdegrow.inference import PortableModel

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}


class BakedModel(nn.Module):
    """observations → field in one module (see the module docstring)."""

    def __init__(self, pm: PortableModel):
        super().__init__()
        self.net = copy.deepcopy(pm.model).requires_grad_(False)   # an inference graph: no gradients
        dtype = next(pm.model.parameters()).dtype
        self.transform = pm.transform
        target_shape = pm.fields_info.get("target_shape") or list(pm.target_norm.mean.shape)
        self.target_shape = [int(s) for s in target_shape]
        self.register_buffer("in_mean", pm.input_norm.mean.to(dtype).clone())
        self.register_buffer("in_std", pm.input_norm.std.to(dtype).clone())
        self.register_buffer("out_mean", pm.target_norm.mean.to(dtype).clone())
        self.register_buffer("out_std", pm.target_norm.std.to(dtype).clone())
        dec = pm.decoder_matrix()
        self.decode = dec is not None
        offset, matrix = dec if dec is not None else (np.zeros(1), np.zeros((1, 1)))
        self.register_buffer("offset", torch.as_tensor(offset, dtype=dtype))
        self.register_buffer("matrix", torch.as_tensor(matrix, dtype=dtype))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        # the pipeline of training, evaluate and predict (pdegrow.data.model_input), on tensors
        norm = Standardizer(self.in_mean, self.in_std)
        z = self.net(model_inputs(observations, self.transform, norm, self.in_mean.dtype))
        y = z * self.out_std + self.out_mean
        if self.decode:
            return self.offset + y.reshape(y.shape[0], -1) @ self.matrix
        return y.reshape([y.shape[0]] + self.target_shape)


def reference_output(pm: PortableModel, obs: np.ndarray) -> np.ndarray:
    """What the exported graph must give: the decoded field (or target) of :meth:`PortableModel.predict`."""
    pred = pm.predict(obs)
    fields = pm.fields(pred)
    name = next(iter(fields))
    return fields[name]


def export_model(pm: PortableModel, format: str = "torchscript", out: str | os.PathLike | None = None,
                 check_samples: int = 4, dtype: str | None = None) -> Path:
    """Write ``pm`` as TorchScript (``torch.jit.load``-able) or ONNX (``onnxruntime``-runnable) to ``out``
    (default ``RUN/model.torchscript.pt`` / ``RUN/model.onnx``), then check the exported graph against
    the model on ``check_samples`` random inputs of the right shape (max relative difference 1e-5 in
    float32, 1e-10 in float64); returns the path. ``dtype`` (``"float32"``/``"float64"``) casts the
    graph (default: the model's own; onnxruntime's CPU kernels have no float64 convolution)."""
    if format not in FORMATS:
        raise PdegrowError(f"unknown export format {format!r} (one of {', '.join(FORMATS)})")
    if pm.input_shape is None:
        raise PdegrowError("the model file holds no input shape; retrain the run with this version")
    out = Path(out) if out is not None else (pm.path or Path("model.pt")).with_name(f"model{SUFFIX[format]}")
    if dtype not in (None, "float32", "float64"):
        raise PdegrowError(f"unknown export dtype {dtype!r} (float32 or float64)")
    baked = BakedModel(pm).eval()
    if dtype is not None:
        baked = baked.to(torch.float32 if dtype == "float32" else torch.float64)
    dtype_t = baked.in_mean.dtype
    rng = np.random.default_rng(0)
    # inputs around the training distribution: mean ± std of the (transformed) training inputs
    z = rng.standard_normal((check_samples, *pm.input_shape))
    x = _like_input(pm.input_norm.mean, pm.input_shape) + z * _like_input(pm.input_norm.std, pm.input_shape)
    if pm.transform == "log":
        x = np.exp(x)
    example = torch.as_tensor(x, dtype=dtype_t)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_bytes(b"")   # the exporters' own errors for an unwritable path are not OSErrors
        with warnings.catch_warnings():   # torch.jit's deprecation notices, torchvision's absence
            warnings.simplefilter("ignore")
            if format == "torchscript":
                with torch.no_grad():
                    traced = torch.jit.trace(baked, (example,), check_trace=False)
                traced.save(str(tmp))
                got = torch.jit.load(str(tmp))(example).detach().double().numpy()
            else:
                got = _export_onnx(baked, example, tmp)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PdegrowError(f"cannot write {out} ({exc.strerror or exc})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    want = reference_output(pm, x)
    tol = 1e-10 if dtype_t == torch.float64 else 1e-5
    err = float(np.abs(got.reshape(want.shape) - want).max() / max(np.abs(want).max(), 1e-30))
    if not err <= tol:
        out.unlink(missing_ok=True)
        raise PdegrowError(f"the exported {format} model differs from the model by {err:.2e} (relative); "
                           f"nothing written")
    return out


def _like_input(a: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """A normaliser's statistic (per entry, possibly with a channel axis, or one number) in ``shape``."""
    v = a.double().cpu().numpy()
    return v.reshape(shape) if v.size == int(np.prod(shape)) else np.full(shape, float(v.reshape(-1)[0]))


def _export_onnx(baked: BakedModel, example: torch.Tensor, path: Path) -> np.ndarray:
    """Export through ``torch.onnx.export`` (the dynamo exporter; needs ``onnx`` and ``onnxscript``)
    with a dynamic sample axis, then run it with ``onnxruntime`` on ``example``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise PdegrowError("ONNX export needs the packages onnx, onnxscript and onnxruntime "
                           "(pip install 'pdegrow[onnx]')") from None
    batch = torch.export.Dim("n", min=1)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with torch.no_grad():
            torch.onnx.export(baked, (example,), str(path), input_names=["observations"],
                              output_names=["field"], dynamic_shapes={"observations": {0: batch}},
                              dynamo=True, external_data=False, verbose=False)
    finally:
        quiet.setLevel(level)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {"observations": example.numpy()})[0], dtype=np.float64)
    except Exception as exc:  # onnxruntime's own error types: a graph it cannot run
        hint = " (export with --dtype float32)" if example.dtype == torch.float64 else ""
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PdegrowError(f"onnxruntime cannot run the exported graph{hint}: {msg}") from None


__all__ = ["FORMATS", "BakedModel", "export_model"]
