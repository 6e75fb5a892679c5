# Sourced by every template in experiments/slurm/ (from the repository root): the environment of
# every rank. Choose it with PDEGROW_ENV when submitting, e.g. `PDEGROW_ENV=conda sbatch …`.
#
#   venv  (default) the .venv made by `make env` — build it on a login node of the same OS and CPU
#         architecture as the compute nodes. Its mpiexec is the PyPI mpich wheel's (Hydra; inside
#         a SLURM allocation it starts the ranks through SLURM). PyTorch is the PyPI CUDA build:
#         the node needs only the NVIDIA driver.
#   conda the conda-forge environment of environment.yml:
#           conda env create -f environment.yml      (once; name "pdegrow", or set CONDA_ENV_NAME)
#         its mpich/mpiexec come from conda-forge; pdegrow is installed there with --no-deps.
#
# Site specifics (module load …, proxy, scratch paths) go at the end of this file.

PDEGROW_ENV=${PDEGROW_ENV:-venv}
case "$PDEGROW_ENV" in
  venv)
    # shellcheck disable=SC1091
    source .venv/bin/activate ;;
  conda)
    eval "$(conda shell.bash hook)"
    conda activate "${CONDA_ENV_NAME:-pdegrow}" ;;
  *)
    echo "PDEGROW_ENV must be venv or conda, not '$PDEGROW_ENV'" >&2
    exit 1 ;;
esac
command -v pdegrow >/dev/null || { echo "pdegrow is not on PATH after activating $PDEGROW_ENV" >&2; exit 1; }
export PYTHONUNBUFFERED=1
# The FFCx JIT cache (generation): on a shared file system every node reuses rank 0's compiled
# forms; `pdegrow generate` compiles on rank 0 before the other ranks start.
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$HOME/.cache}
