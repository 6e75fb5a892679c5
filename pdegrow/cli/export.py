"""``pdegrow export RUN --format torchscript|onnx``: the model as one self-contained graph."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a trained model to TorchScript or ONNX",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write RUN's network as one graph that maps raw observations to the recovered field, "
        "with the input transform, both normalisers and (heat, KL target) the KL decoder "
        "m = m_bar + Phi (sqrt(lambda) * xi) baked in, so it runs without pdegrow: TorchScript "
        "(torch.jit.load) or ONNX (onnxruntime; needs onnx, onnxscript, onnxruntime). Input "
        "'observations' (n, *input shape); output 'field': (n, N) nodal log-conductivity for heat, (n, R, R) "
        "w0 for Navier-Stokes. The exported graph is run on sample inputs and compared with the model "
        "before the command succeeds.",
        epilog="examples:\n"
        "  pdegrow export runs/lw                                  # runs/lw/model.torchscript.pt\n"
        "  pdegrow export runs/lw --format onnx --out lw.onnx\n"
        "  python -c \"import torch; f = torch.jit.load('runs/lw/model.torchscript.pt'); "
        "print(f(torch.ones(1, 10)).shape)\"")
    p.add_argument("run_dir", metavar="RUN",
                   help="a finished 'pdegrow train' run directory (or its model.pt)")
    p.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript",
                   help="export format (default: %(default)s)")
    p.add_argument("--out", metavar="FILE",
                   help="output file (default: RUN/model.torchscript.pt or RUN/model.onnx)")
    p.add_argument("--dtype", choices=("float32", "float64"),
                   help="cast the graph (default: the model's own dtype; onnxruntime has no float64 "
                   "convolution on the CPU)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pdegrow.export import export_model
    from pdegrow.inference import load_model

    out = export_model(load_model(args.run_dir), args.format, args.out, dtype=args.dtype)
    print(f"{out}: {args.format}, checked against the model")
    return 0
