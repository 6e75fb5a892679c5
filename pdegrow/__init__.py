"""pdegrow: grow neural surrogates for PDE inverse problems.

Importing the package is cheap and imports neither torch nor dolfinx, so the
FEniCSx side (``solvers/``) can use the data contract without torch.
"""

__version__ = "0.1.0"
