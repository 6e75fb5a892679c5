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
# # Navier–Stokes: w₀ from w(T) with a conv net grown by the topological derivative
#
# ∂ₜw + u·∇w = νΔw + f on the periodic unit torus (the FNO benchmark setting, ν = 1e-3), w₀ drawn from
# N(0, 7^{3/2}(−Δ + 49 I)^{−5/2}). From a noisy w(·, T) on the grid we recover w₀ with a convolutional
# residual network (circular padding: the torus) that starts with one block and inserts new blocks where
# the topological derivative of the loss is largest (Approach II, Krishnanunni, Bui-Thanh & Dawson,
# arXiv 2502.06885) — derivative-guided growth. Then we apply it to new fields and compare with the
# 4D-Var MAP estimate.
#
# `PDEGROW_EXAMPLE_SIZE=tiny` makes everything small (16² grid, T = 0.2; the test suite runs it so);
# the full size is the setting of `experiments/ns-conv.toml` (32², T = 1). Outputs go to
# `PDEGROW_EXAMPLE_OUT` (default `runs/examples/navier-stokes`).

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import numpy as np

import pdegrow

tiny = os.environ.get("PDEGROW_EXAMPLE_SIZE", "full") == "tiny"
out = Path(os.environ.get("PDEGROW_EXAMPLE_OUT", "runs/examples/navier-stokes"))
out.mkdir(parents=True, exist_ok=True)
setting = ({"resolution": 16, "final_time": 0.2, "dt": 5e-3} if tiny
           else {"resolution": 32, "final_time": 1.0, "dt": 2.5e-3})
n_samples, epochs = (64, 8) if tiny else (600, 60)

# %% [markdown]
# ## 1. Data: w(T) with 1 % noise → w₀, on an R × R grid

# %%
data = pdegrow.generate("navier-stokes", n_samples=n_samples, seed=0, out=out / "ns.h5", overwrite=True,
                        noise_level=0.01, **setting)
ds = pdegrow.load_dataset(data)
print(ds, "| w(T) image", tuple(ds[0][0].shape))

# %% [markdown]
# ## 2. Train a conv net that grows by the topological derivative
# The same as `pdegrow train --config experiments/ns-conv.toml`, here with the sizes set in Python.

# %%
n_train, n_val = (40, 12) if tiny else (400, 50)
run = pdegrow.train(
    "experiments/ns-conv.toml", data=data, out=out / "run", overwrite=True,
    run={"progress": False},
    overrides={"data": {"n_train": n_train, "n_val": n_val, "n_test": n_samples - n_train - n_val}},
    train={"max_epochs": epochs, "phase_epochs": max(2, epochs // 3), "patience": 10},
    growth={"strategy": "topological_insertion", "max_layers": 2, "min_significance": 0.0},
)
for event in run.events():      # where each block went, predicted vs realised change of the loss
    print(f"epoch {event['epoch']}: insert at depth {event['where'].get('depth')}, "
          f"predicted {event['predicted_change']:.3g}, realised {event['realised_change']:.3g}")
print(run.summary["architecture"]["depth"], "blocks;", "test", run.summary["test"])

# %% [markdown]
# ## 3. New fields and the 4D-Var reference

# %%
new = pdegrow.generate("navier-stokes", n_samples=6, seed=1, out=out / "new.h5", overwrite=True,
                       noise_level=0.01, **setting)
pdegrow.compute_reference(new, "map", "all", overwrite=True, **({"max_iter": 60} if tiny else {}))
pred = run.predict(new)
print({k: v.shape for k, v in pred.fields.items()})   # w₀ images (n, R, R)
for key, value in pred.errors().items():
    print(f"{key:<40} {value:.3f}")

# an array of w(T) images works the same (your own fields):
w_T = pdegrow.load_dataset(new).arrays()[0]
assert np.allclose(run.predict(w_T).fields["vorticity_0"], pred.fields["vorticity_0"], atol=1e-5)

# %%
fig = pred.plot(0)                       # recovered | true | error
fig.savefig(out / "sample0.png", dpi=120)
pred.save(out / "predictions.h5", overwrite=True)
print("wrote", out / "sample0.png", "and", out / "predictions.h5")
