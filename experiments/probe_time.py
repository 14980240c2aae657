"""Probe: which time coupling pays on tasks that need time, and does the time unit matter?

A fast plain-torch training loop (no Lightning) over two synthetic tasks whose labels depend on
the times, for several discretizations and time units. Prints one table (mean ± std over seeds).

    python experiments/probe_time.py --seeds 0 1 2 --epochs 30

This is the investigation behind experiments/results/which_discretization.md; the results suite
(experiments/run_suite.py) runs the full grid through the Lightning tasks.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from eventssm import Asymmetric, EventEncoder, Scaled, Standard
from eventssm.discretization import Discretization


class _Additive(Discretization):
    """dtA = Δ + r·τ (probe only)."""

    coupling = "additive"
    uses_rate = True

    def step_sizes(self, delta, tau, rate):
        if tau is None:
            return delta, delta
        return delta + tau[..., None] * rate, delta


class _ScaledBoth(Discretization):
    """dtA = dtB = Δ·τ (probe only)."""

    coupling = "scaledboth"

    def step_sizes(self, delta, tau, rate):
        if tau is None:
            return delta, delta
        d = delta * tau[..., None]
        return d, d


def frequency_task(n, rng, unit):
    """Class = frequency bin; each sequence has its own mean sampling gap (a decade of spread),
    so the value order alone does not tell the frequency."""
    k = 4
    freqs = np.array([0.5, 1.0, 2.0, 4.0])  # cycles per unit time (before `unit`)
    y = rng.integers(0, k, n)
    out = []
    for i in range(n):
        L = int(rng.integers(32, 64))
        g = np.exp(rng.uniform(np.log(0.02), np.log(0.2)))
        t = np.cumsum(rng.exponential(g, L))
        t -= t[0]
        f = freqs[y[i]] * rng.uniform(0.9, 1.1)
        v = np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) + 0.1 * rng.standard_normal(L)
        out.append((t * unit, v[:, None].astype(np.float32)))
    return out, y


def decay_task(n, rng, unit):
    """Impulses of random sign/size at Poisson times (rate varies per sequence); label = sign of
    the leaky integral at the end (time constant 1): needs the elapsed times."""
    y = []
    out = []
    for _ in range(n):
        L = int(rng.integers(16, 48))
        rate = np.exp(rng.uniform(np.log(2.0), np.log(20.0)))
        t = np.cumsum(rng.exponential(1 / rate, L))
        t -= t[0]
        v = rng.standard_normal(L)
        s = np.sum(v * np.exp(-(t[-1] - t) / 1.0))
        y.append(int(s > 0))
        out.append((t * unit, v[:, None].astype(np.float32)))
    return out, np.array(y)


def collate(seqs, idx):
    L = max(len(seqs[i][0]) for i in idx)
    B = len(idx)
    v = torch.zeros(B, L, 1)
    t = torch.zeros(B, L, dtype=torch.float64)
    n = torch.zeros(B, dtype=torch.long)
    for j, i in enumerate(idx):
        ti, vi = seqs[i]
        m = len(ti)
        v[j, :m] = torch.from_numpy(vi)
        t[j, :m] = torch.from_numpy(ti)
        t[j, m:] = ti[-1]
        n[j] = m
    return v, t, n


def run(task, disc, unit, seed, epochs, auto_unit, n_train=800, n_test=400, d_model=32, d_state=16):
    rng = np.random.default_rng(1000 + seed)
    make = {"frequency": frequency_task, "decay": decay_task}[task]
    tr, ytr = make(n_train, rng, unit)
    te, yte = make(n_test, rng, unit)
    scale = 1.0
    if auto_unit:
        gaps = np.concatenate([np.diff(s[0]) for s in tr])
        scale = 1.0 / float(np.median(gaps[gaps > 0]))
    torch.manual_seed(seed)
    enc = EventEncoder(d_model=d_model, n_layers=2, d_input=1, discretization=disc, time_scale=scale,
                       d_state=d_state, use_fast_path=False)
    head = nn.Linear(d_model, int(max(ytr.max(), yte.max())) + 1)
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01)
    ytr_t, yte_t = torch.from_numpy(ytr), torch.from_numpy(yte)
    steps = epochs * ((n_train + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for _ in range(epochs):
        perm = np.random.default_rng(seed).permutation(n_train)
        for b in range(0, n_train, 64):
            idx = perm[b:b + 64]
            v, t, n = collate(tr, idx)
            loss = F.cross_entropy(head(enc(v, timestamps=t, lengths=n)), ytr_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        v, t, n = collate(te, np.arange(n_test))
        acc = (head(enc(v, timestamps=t, lengths=n)).argmax(-1) == yte_t).float().mean().item()
    return acc


DISCS = {
    "Standard(mamba)": lambda: Standard("mamba"),
    "Standard(zoh)": lambda: Standard("zoh"),
    "Asymmetric(zoh)": lambda: Asymmetric("zoh"),
    "Scaled(zoh)": lambda: Scaled("zoh"),
    "Additive(zoh)": lambda: _Additive("zoh"),
    "ScaledBoth(zoh)": lambda: _ScaledBoth("zoh"),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", nargs="+", default=["frequency", "decay"])
    p.add_argument("--discs", nargs="+", default=list(DISCS))
    p.add_argument("--units", nargs="+", type=float, default=[1.0])
    p.add_argument("--auto", nargs="+", type=int, default=[0, 1])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--d-model", type=int, default=16)
    p.add_argument("--d-state", type=int, default=8)
    a = p.parse_args()
    grid = [(task, unit, bool(auto), name, s) for task in a.tasks for unit in a.units
            for auto in a.auto for name in a.discs for s in a.seeds]
    with mp.get_context("spawn").Pool(a.workers) as pool:
        acc = {}
        for g, r in pool.imap_unordered(_job, [g + (a.epochs, a.d_model, a.d_state) for g in grid]):
            acc[g] = r
            print("done", g, f"acc {r[0]:.3f} in {r[1]:.0f} s", flush=True)
    print(f"epochs {a.epochs}, d_model {a.d_model}, d_state {a.d_state}, {a.workers} worker processes of 1 thread")
    print("| task | unit | auto unit | discretization | test acc (mean ± std) | seeds | s/run |")
    print("|---|---|---|---|---|---|---|")
    for task in a.tasks:
        for unit in a.units:
            for auto in a.auto:
                for name in a.discs:
                    rs = [acc[(task, unit, bool(auto), name, s)] for s in a.seeds]
                    accs = [r[0] for r in rs]
                    dt = np.mean([r[1] for r in rs])
                    print(f"| {task} | {unit:g} | {bool(auto)} | {name} | {100 * np.mean(accs):.1f} ± "
                          f"{100 * np.std(accs):.1f} | {len(a.seeds)} | {dt:.0f} |", flush=True)


def _job(args):
    task, unit, auto, name, seed, epochs, d_model, d_state = args
    torch.set_num_threads(1)
    t0 = time.time()
    acc = run(task, DISCS[name](), unit, seed, epochs, auto, d_model=d_model, d_state=d_state)
    return args[:5], (acc, time.time() - t0)


if __name__ == "__main__":
    main()
