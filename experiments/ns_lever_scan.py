"""The lever scan behind experiments/ns-best-T*.toml: the study's conv network re-written in plain torch
(one seed, no growth, fast to vary) on a Navier–Stokes study file plus N simulated pairs.

    python experiments/ns_lever_scan.py 0.2 base 4000 20        # per-pixel statistics of all pairs
    python experiments/ns_lever_scan.py 0.2 coord 4000 20       # + periodic coordinate channels
    python experiments/ns_lever_scan.py 0.2 coord-f400 3000 8   # statistics of the 400 file samples only
    python experiments/ns_lever_scan.py 0.2 coord-scal 3000 8   # one scalar mean / std for the inputs

Arguments: T (datasets/ns32-T<T>-full.h5), the variant (tokens joined by '-': ``coord`` coordinate
channels, ``f400`` per-pixel input statistics from the 400 file samples, ``scal`` scalar input statistics,
``wN`` width, ``dN`` conv blocks, ``tanh`` instead of GELU; default width 8, 2 blocks of hidden width 8,
GELU; the study configs use tanh), the number of
simulated pairs (pdegrow.data.simulated_ns, seed 0; cached under runs/ns-lever-scan/) and the epochs
(Adam 3e-3, batch 50, cosine schedule). Prints the validation error every few epochs and the test error
(split 400 / 50 / 150, split seed 0, as the studies).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from pdegrow.data.simulated_ns import simulate_ns_samples
from pdegrow.data.splits import make_splits


def main() -> None:
    torch.set_num_threads(1)
    t_obs, variant, nsim, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    tokens = variant.split("-")
    path = f"datasets/ns32-T{t_obs}-full.h5"
    with h5py.File(path) as f:
        y, w0 = f["inputs/vorticity_T"][()], f["targets/vorticity_0"][()]
    sp = make_splits(len(y), 400, 50, 150, 0)
    tr, va, te = (np.array(sp[k]) for k in ("train", "val", "test"))
    cache = Path("runs/ns-lever-scan") / f"sim-T{t_obs}-{nsim}.npz"
    if cache.is_file():
        d = np.load(cache)
        sy, sw = d["y"], d["w"]
    else:
        s = simulate_ns_samples(path, nsim, 0)
        sy, sw = s["inputs/vorticity_T"], s["targets/vorticity_0"]
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, y=sy, w=sw)
    ys, ws_ = np.concatenate([y[tr], sy]), np.concatenate([w0[tr], sw])
    if "scal" in tokens:
        mu, sd = ys.mean(), ys.std()
    elif "f400" in tokens:
        mu, sd = y[tr].mean(0), y[tr].std(0)
    else:
        mu, sd = ys.mean(0), ys.std(0)
    wscale = ws_.std()

    def inputs(a: np.ndarray) -> torch.Tensor:
        return torch.tensor((a - mu) / sd, dtype=torch.float32)[:, None]

    x_tr, z_tr = inputs(ys), torch.tensor(ws_ / wscale, dtype=torch.float32)[:, None]
    r = y.shape[-1]
    g = torch.arange(r) / r * 2 * math.pi
    gy, gx = torch.meshgrid(g, g, indexing="ij")
    coords = torch.stack([gx.sin(), gx.cos(), gy.sin(), gy.cos()])[None]
    width = next((int(t[1:]) for t in tokens if t[:1] == "w" and t[1:].isdigit()), 8)
    depth = next((int(t[1:]) for t in tokens if t[:1] == "d" and t[1:].isdigit()), 2)
    use_coord = "coord" in tokens
    act = torch.nn.Tanh() if "tanh" in tokens else torch.nn.GELU()

    def conv(a: int, b: int, k: int = 3) -> torch.nn.Conv2d:
        return torch.nn.Conv2d(a, b, k, padding=k // 2, padding_mode="circular")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lift = conv(1 + 4 * use_coord, width)
            self.blocks = torch.nn.ModuleList(torch.nn.Sequential(conv(width, width), act, conv(width, width))
                                              for _ in range(depth))
            self.head = conv(width, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if use_coord:
                x = torch.cat([x, coords.expand(len(x), -1, -1, -1)], 1)
            h = act(self.lift(x))
            for b in self.blocks:
                h = h + b(h)
            return self.head(h)

    torch.manual_seed(0)
    net = Net()
    print("params", sum(q.numel() for q in net.parameters()))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)

    def rel_error(idx: np.ndarray) -> float:
        with torch.no_grad():
            pred = net(inputs(y[idx]))[:, 0].numpy() * wscale
        n = len(idx)
        return float(np.mean(np.linalg.norm((pred - w0[idx]).reshape(n, -1), axis=1)
                             / np.linalg.norm(w0[idx].reshape(n, -1), axis=1)))

    t0 = time.process_time()
    for ep in range(epochs):
        perm = torch.randperm(len(x_tr))
        for i in range(0, len(perm), 50):
            b = perm[i:i + 50]
            loss = (net(x_tr[b]) - z_tr[b]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if ep % max(1, epochs // 6) == 0 or ep == epochs - 1:
            print(ep, "val", round(rel_error(va), 4), "cpu", round(time.process_time() - t0), flush=True)
    print("RESULT", t_obs, variant, nsim, epochs, "test", round(rel_error(te), 4),
          "cpu", round(time.process_time() - t0))


if __name__ == "__main__":
    main()
