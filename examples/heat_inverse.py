# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Heat conductivity from ten noisy temperatures, with a grown network
#
# The setting of Krishnanunni & Bui-Thanh (arXiv 2211.06860): −∇·(e^m ∇T) = 1 on the unit square,
# a 9×9 P1 mesh, m from 12 Karhunen–Loève modes, T measured at 10 sensors with 5 % noise. We
#
# 1. generate a data set with the FEniCSx solver,
# 2. train a network that grows layer by layer (Approach I),
# 3. apply it to *new* observations — as you would to your own measurements,
# 4. compare it with the best estimate the data allow (the Bayesian MAP / posterior mean).
#
# Open it as a notebook with `jupytext --to notebook examples/heat_inverse.py`, or run it as a script.
# `PDEGROW_EXAMPLE_SIZE=tiny` makes everything small (the test suite runs it so); outputs go to
# `PDEGROW_EXAMPLE_OUT` (default `runs/examples/heat`).

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import numpy as np

import pdegrow

tiny = os.environ.get("PDEGROW_EXAMPLE_SIZE", "full") == "tiny"
out = Path(os.environ.get("PDEGROW_EXAMPLE_OUT", "runs/examples/heat"))
out.mkdir(parents=True, exist_ok=True)
n_samples, epochs = (80, 12) if tiny else (560, 1500)

# %% [markdown]
# ## 1. Data: FEniCSx forward solves into one HDF5 file

# %%
data = pdegrow.generate("heat", preset="paper", n_samples=n_samples, seed=0, out=out / "heat-paper.h5",
                        overwrite=True)
train_set = pdegrow.load_dataset(data, "train")     # a torch Dataset: (observations, KL coefficients)
print(train_set, "| splits:", {k: len(v) for k, v in train_set.splits.items()})

# %% [markdown]
# ## 2. Train and grow: layerwise training (Approach I)
# Start from one block; on each plateau freeze the trained blocks and append a new identity block.
# Every key is documented in `docs/configuration.md`.

# %%
config = {
    "run": {"seed": 0, "progress": False, "threads": 1},
    "data": {"n_train": 50, "n_val": 10, "input_transform": "log"},
    "model": {"kind": "mlp", "width": 20, "depth": 1, "activation": "tanh"},
    "optim": {"lr": 3e-3, "batch_size": 50},
    "train": {"max_epochs": epochs, "phase_epochs": epochs // 3, "patience": 100},
    "growth": {"strategy": "layerwise", "max_layers": 2, "saturation_tol": -1.0},
}
run = pdegrow.train(config, data=data, out=out / "run", overwrite=True)
print(run.summary["architecture"], run.summary["test"])

# %% [markdown]
# ## 3. New observations
# Ten temperatures per sample, observed in the same setting (same sensors, same noise): here a fresh
# data set with another seed stands in for your measurements. A `.npy`/`.csv` file or a plain array
# `(n, 10)` works the same; a data set of another setting (other sensors, mesh, noise) is refused.

# %%
new = pdegrow.generate("heat", preset="paper", n_samples=20, seed=1, out=out / "new-observations.h5",
                       overwrite=True)
observations = pdegrow.load_dataset(new).arrays()[0]
print("observations", observations.shape)
pred = run.predict(observations)                       # from an array: no truth, no reference
print({k: v.shape for k, v in pred.fields.items()})    # nodal m and e^m, not KL coefficients

# %% [markdown]
# ## 4. Against the truth and the Bayes reference
# The MAP estimate of every new sample (`pdegrow reference`), written beside the data, where
# `run.predict` finds it; on a data set the prediction also carries the true fields.

# %%
pdegrow.compute_reference(new, "map", "all", overwrite=True, starts=2 if tiny else 4)
pred = run.predict(new)
errors = pred.errors()
for key, value in errors.items():
    print(f"{key:<40} {value:.3f}")
gap = errors["rel_error_log_conductivity"] / errors["reference_map_m_rel_error"] - 1
print(f"network error / MAP error - 1 = {gap:+.1%}")
same = run.predict(observations[:3]).fields["log_conductivity"]       # the array gives the same fields
assert np.allclose(pred.fields["log_conductivity"][:3], same, atol=1e-5)

# %%
fig = pred.plot(0)                       # recovered | true | error, with the sensors
fig.savefig(out / "sample0.png", dpi=120)
pred.save(out / "predictions.h5", overwrite=True)   # fields + geometry + truth + reference, plain HDF5
print("wrote", out / "sample0.png", "and", out / "predictions.h5")
