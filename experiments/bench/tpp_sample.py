"""Sampling a point process's future: the recurrent-step sampler against the re-encoding one.

    python experiments/bench/tpp_sample.py                      # CPU: 100 events after 1,000
    python experiments/bench/tpp_sample.py --device cuda --repeats 5

An untrained ``EventTPP`` (the task's default encoder: d_model 64, 2 layers, d_state 16) of 3
event types, one history of ``--history`` events (Poisson times, random types), and
``EventTPP.sample_futures`` drawing ``--events`` events past it (no horizon) with
``method="reencode"`` (the whole history encoded again at every sampled event) and
``method="step"`` (encoded once, then one recurrent step per event), for each head. Each row: the
median over ``--repeats`` timed runs (after an untimed warm-up run of 2 events each), with the minimum
and maximum beside it, and the ratio of the medians. Times are wall clock (``perf_counter``,
after a device synchronisation on CUDA); on a shared machine they move with the other jobs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from eventssm.tasks import EncoderConfig, EventTPP  # noqa: E402


def _history(n: int, K: int, device: str) -> dict:
    g = torch.Generator().manual_seed(0)
    ts = torch.cumsum(torch.empty(1, n, dtype=torch.float64).exponential_(generator=g), 1)
    return {"timestamps": ts.to(device), "lengths": torch.tensor([n], device=device),
            "marks": torch.randint(0, K, (1, n), generator=g).to(device)}


def _time(model, batch, args, method: str, events: int | None = None) -> tuple[float, int]:
    g = torch.Generator(device=args.device).manual_seed(1)
    if args.device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.sample_futures(batch, horizon=float("inf"), n_samples=1,
                               max_events=events or args.events,
                               generator=g, method=method)
    if args.device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, int(out["mask"].sum())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--history", type=int, default=1000, help="events in the history")
    p.add_argument("--events", type=int, default=100, help="events to sample")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--heads", nargs="+", default=["mixture", "intensity"])
    args = p.parse_args(argv)
    K = 3
    batch = _history(args.history, K, args.device)
    name = torch.cuda.get_device_name() if args.device == "cuda" else (
        f"CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(f"# {args.events} sampled events after a {args.history}-event history, batch 1, "
          f"{args.repeats} repeats; {name}; torch {torch.__version__}\n")
    print("| head | sampler | median s | min s | max s | events | re-encode / step |")
    print("|---|---|---|---|---|---|---|")
    for head in args.heads:
        torch.manual_seed(0)
        model = EventTPP(num_marks=K, head=head, log_gap_stats=(0.0, 1.0),
                         backbone=EncoderConfig()).to(args.device).eval()
        rows = {}
        for method in ("reencode", "step"):
            _time(model, batch, args, method, events=2)  # warm-up: every code path once
            runs = [_time(model, batch, args, method) for _ in range(args.repeats)]
            rows[method] = ([t for t, _ in runs], runs[0][1])
        ratio = statistics.median(rows["reencode"][0]) / statistics.median(rows["step"][0])
        for method, (ts, n) in rows.items():
            print(f"| {head} | {method} | {statistics.median(ts):.4f} | {min(ts):.4f} | "
                  f"{max(ts):.4f} | {n} | {f'{ratio:.1f}x' if method == 'step' else ''} |")


if __name__ == "__main__":
    main()
