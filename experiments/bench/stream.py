"""Streaming decode: per-event latency of ``MambaBackbone`` stepping one event at a time, with
gaps (event mode) and without, eager and replayed from a CUDA graph.

    python experiments/bench/stream.py                 # CUDA: 4 layers, d_model 256, batch 1 and 64
    python experiments/bench/stream.py --device cpu --layers 2 --d-model 64 --batch 1

Each row: the median over ``--rounds`` rounds of the mean time of ``--steps`` steps issued back
to back (CUDA events around the round on the GPU, ``perf_counter`` on the CPU), with the
minimum and maximum of the rounds beside it. The CUDA-graph rows capture one step with
``check_values=False`` and replay it (copying the next input and gap into the captured buffers
first, as a decoder does).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from eventssm import MambaBackbone  # noqa: E402


def _timer(device: str):
    if device == "cuda":
        def run(fn, n):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / n
    else:
        def run(fn, n):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            return (time.perf_counter() - t0) * 1e3 / n
    return run


def capture(step) -> torch.cuda.CUDAGraph:
    """``step()`` warmed up on a side stream (compiles the kernels, as capture needs), then
    captured once in a CUDA graph; the returned graph replays it (tests/test_step_capture.py
    uses this too)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    return g


def bench(args, batch: int, event: bool, graph: bool) -> tuple[float, float, float]:
    dev = args.device
    torch.manual_seed(0)
    m = MambaBackbone(args.d_model, n_layers=args.layers, d_state=16,
                      discretization="zoh" if event else "mamba").to(dev).eval()
    cache = m.allocate_inference_cache(batch)
    x = torch.randn(batch, 1, args.d_model, device=dev)
    tau = torch.rand(batch, device=dev) if event else None

    def step():
        h = x
        for layer, c in zip(m.layers, cache):
            h = layer.step(h, c, tau, check_values=not graph)
        return m.norm_f(h)

    with torch.no_grad():
        for _ in range(3):
            step()
        fn = step
        if graph:
            g = capture(step)
            new_x, new_tau = torch.randn_like(x), None if tau is None else torch.rand_like(tau)

            def fn():
                x.copy_(new_x)
                if tau is not None:
                    tau.copy_(new_tau)
                g.replay()
        run = _timer(dev)
        run(fn, args.steps)
        rounds = [run(fn, args.steps) for _ in range(args.rounds)]
    return statistics.median(rounds), min(rounds), max(rounds)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"# streaming step, {args.layers} layers, d_model {args.d_model}, {name}, torch {torch.__version__}")
    print("| batch | mode | eager ms/event (min-max) | CUDA graph ms/event (min-max) |")
    print("|---|---|---|---|")
    for batch in args.batch:
        for event in (False, True):
            eager = bench(args, batch, event, graph=False)
            cells = [f"{eager[0]:.3f} ({eager[1]:.3f}-{eager[2]:.3f})"]
            if args.device == "cuda":
                g = bench(args, batch, event, graph=True)
                cells.append(f"{g[0]:.4f} ({g[1]:.4f}-{g[2]:.4f})")
            else:
                cells.append("-")
            mode = "event (zoh, gaps)" if event else "standard"
            print(f"| {batch} | {mode} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
