"""Packed (``cu_seqlens``) vs right-padded batches: one training step of an event encoder.

For several length distributions (equal, mildly and very uneven), a batch of ``--batch``
sequences is collated padded (:func:`eventssm.datasets.collate_events`) and packed
(:func:`eventssm.datasets.pack_batch`), and an :class:`eventssm.EventEncoder` (``--d-model``,
2 blocks, ``Asymmetric(zoh)``, event mode) runs forward + backward on each, with the same
weights. The table gives the
share of padding in the padded batch, the median time of each form and padded / packed (> 1:
packing is faster). This is what ``pack="auto"`` of the DataModules is decided from.

CPU: ``python experiments/bench/packed.py`` (the torch path: chunked scan, torch conv). The
machine may be shared: the numbers are a rough guide, rerun on a quiet machine to publish.
GPU: ``python experiments/bench/packed.py --device cuda --d-model 256 --batch 32`` (Triton
kernels, which take ``cu_seqlens`` natively).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from eventssm import Asymmetric, EventEncoder
from eventssm.datasets import collate_events, pack_batch


def lengths_of(kind: str, B: int, L: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "equal":
        return np.full(B, L)
    if kind == "near-equal":  # U[0.8 L, L]: about 10 % padding
        return rng.integers(int(0.8 * L), L + 1, B)
    if kind == "uniform":  # mildly uneven: U[L/2, L]
        return rng.integers(L // 2, L + 1, B)
    if kind == "log-uniform":  # very uneven: log-uniform in [8, L], as event counts often are
        return np.exp(rng.uniform(np.log(8), np.log(L), B)).astype(int)
    if kind == "one-long":  # one long sequence among short ones
        out = rng.integers(8, max(9, L // 16), B)
        out[0] = L
        return out
    raise ValueError(kind)


def batch_of(lengths, C: int, rng) -> dict:
    samples = []
    for n in lengths:
        t = np.cumsum(rng.exponential(size=int(n)))
        samples.append({"timestamps": t - t[0],
                        "values": rng.normal(size=(int(n), C)).astype(np.float32),
                        "target": np.int64(0)})
    return collate_events(samples)


def to(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _kwargs(batch: dict) -> dict:
    kw = dict(values=batch["values"], integration_timesteps=batch["integration_timesteps"])
    if "cu_seqlens" in batch:
        kw["cu_seqlens"] = batch["cu_seqlens"]
    else:
        kw["lengths"] = batch["lengths"]
    return kw


def step_times(enc, batches: list[dict], reps: int, device) -> list[float]:
    """Median forward+backward time of each batch; the batches take turns within every
    repetition, so that a load that comes and goes on a shared machine hits them alike."""
    times = [[] for _ in batches]
    for i in range(reps + 1):
        for j, b in enumerate(batches):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            enc(**_kwargs(b)).square().sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:  # the first round warms up (and compiles kernels on a GPU)
                times[j].append(time.perf_counter() - t0)
            enc.zero_grad(set_to_none=True)
    return [statistics.median(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--kinds", default="equal,near-equal,uniform,log-uniform,one-long")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    enc = EventEncoder(args.d_model, 2, d_input=args.channels,
                       discretization=Asymmetric("zoh")).to(device)
    print(f"EventEncoder(d_model={args.d_model}, n_layers=2, Asymmetric(zoh)) forward+backward, "
          f"batch {args.batch}, longest {args.max_len}, device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.reps}\n")
    print("| lengths | Σ lengths | padded B×L | padding | padded ms | packed ms | padded/packed |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for kind in args.kinds.split(","):
        lengths = lengths_of(kind, args.batch, args.max_len, rng)
        padded = batch_of(lengths, args.channels, rng)
        packed = pack_batch(padded)
        B, L = padded["mask"].shape
        total = int(padded["lengths"].sum())
        tp, tk = step_times(enc, [to(padded, device), to(packed, device)], args.reps, device)
        print(f"| {kind} | {total} | {B}×{L} | {1 - total / (B * L):.0%} | {1e3 * tp:.1f} | "
              f"{1e3 * tk:.1f} | {tp / tk:.2f} |")


if __name__ == "__main__":
    main()
