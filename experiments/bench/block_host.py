"""Host (CPU) time of a Mamba block's training step beside its device time (issue 12: why the
wall clock of a bf16 block step exceeds the sum of its kernels).

For each model at the block bench's shape (d_model 768, expand 2, N 16, d_conv 4, L 2048,
batch 8; bf16 parameters by default), one forward + backward:

* **device ms**: the CUDA kernels' device time, summed in ``torch.profiler``;
* **host ms**: the Python + launch time of one step while the GPU is kept busy by a long
  ``torch.cuda._sleep`` queued first, so the host never waits for the device: the time the host
  needs to issue the step. A step that synchronises would wait for the sleep; the sleep is
  sized to outlast the steps, and ``syncs`` counts what ``torch.cuda.set_sync_debug_mode``
  reports;
  Few steps (four blocks' worth): CUDA's launch queue holds about a thousand launches, and a full queue blocks
  the host as a sync would;
* **wall ms**: ``triton.testing.do_bench`` median of the step (what ``block.py`` reports), in
  ``--rounds`` interleaved rounds (every model once per round, so a slow spell of the machine
  hits all of them), as median and range over the rounds.

* **graph ms**: the whole step captured once in a CUDA graph (``torch.cuda.graph``) and
  replayed (do_bench median): no host work between kernels, so this is the device-bound time a
  captured training step gets (``torch.compile(mode="reduce-overhead")`` or a manual capture),
  for both libraries alike; "not capturable" with the reason where capture fails.

Host and wall are measured twice: with autograd's default engine, where a CUDA backward runs
on the engine's device thread (the caller waits for it), and with
``torch.autograd.set_multithreading_enabled(False)``, where it runs on the calling thread.
When host ms > device ms the step is host-bound: the GPU idles between kernels.

Then, per model, the top functions of ``cProfile`` by own time, single-threaded (so the
backward's Python shows too).

    python experiments/bench/block_host.py [--dtype bfloat16] [--rounds 5] [--depths 1 4]
        [--no-graphs]
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(__file__))
from block import FULL, ROOT  # noqa: E402
from block_profile import block_args, block_makers, block_setup, profile  # noqa: E402


def host_ms(step, steps: int = 5) -> tuple[float, int]:
    """Host ms per step with the device kept busy, and the syncs torch reported meanwhile."""
    torch.cuda.synchronize()
    torch.cuda._sleep(int(4e8))  # ~0.2 s at ~2 GHz: longer than the steps below take to issue
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        dt = (time.perf_counter() - t0) * 1e3 / steps
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    return dt, syncs


def graph_ms(step, timer) -> tuple[float | None, str]:
    """do_bench median of replaying ``step`` captured in a CUDA graph, or (None, why not)."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        torch.cuda.synchronize()
    except Exception as e:  # a sync or a host read inside the step
        torch.cuda.synchronize()
        return None, f"not capturable: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return timer(graph.replay), ""


def top_functions(step, steps: int, top: int) -> str:
    prof = cProfile.Profile()
    torch.cuda.synchronize()
    prof.enable()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    prof.disable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    return "\n".join(lines[start:start + top + 1]).replace(str(ROOT) + "/", "")


def parse_args(argv=None):
    """The block-step options plus this script's rounds, depths, schemes and profile sizes."""
    ap = block_args(__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--schemes", nargs="+", default=["mamba", "zoh", "bilinear", "dirac"])
    ap.add_argument("--profile-steps", type=int, default=20)
    ap.add_argument("--no-graphs", dest="graphs", action="store_false",
                    help="skip the CUDA-graph replay column")
    ap.add_argument("--top", type=int, default=18)
    return ap.parse_args(argv)


def make_steps(makers, depth: int, x, dy) -> dict:
    """{name: one training step (forward + backward of ``x``, cotangent ``dy``) of a ``depth``-block
    stack}."""
    from block import Stack

    steps = {}
    for name, make, kw in makers:
        model = Stack(make, depth)
        params = [x, *model.parameters()]

        def step(model=model, kw=kw, params=params):
            for p in params:
                p.grad = None
            model(x, **kw).backward(dy)

        steps[name] = step
    return steps


def measure(steps: dict, modes: dict, rounds: int, host_steps: int, bench) -> dict:
    """{name: device ms, launches, host (ms, syncs) and wall ms per round, per engine mode}."""
    info = {}
    for name, step in steps.items():
        dev_table, _ = profile(step, 5)
        device = sum(v[0] for v in dev_table.values())
        launches = sum(v[1] for v in dev_table.values())
        host = {}
        for mode, flag in modes.items():
            with torch.autograd.set_multithreading_enabled(flag):
                host[mode] = host_ms(step, host_steps)
        info[name] = dict(device=device, launches=launches, host=host,
                          wall={m: [] for m in modes}, graph=[], why="")
    for _ in range(rounds):
        for name, step in steps.items():
            for mode, flag in modes.items():
                with torch.autograd.set_multithreading_enabled(flag):
                    info[name]["wall"][mode].append(bench(step))
    return info


def add_graphs(steps: dict, info: dict, bench) -> None:
    """Fill ``info[name]["graph"]`` and ``["why"]`` with each step's CUDA-graph replay."""
    # ours first: a failed capture (a sync inside a step) can leave the context unusable for
    # what follows
    for name in list(steps)[::-1]:
        g, why = graph_ms(steps[name], bench)
        info[name]["graph"], info[name]["why"] = ([] if g is None else [g]), why


def print_table(info: dict, modes: dict, label: str, rounds: int) -> None:
    """The markdown table of one depth: a row per model, ratios to the first (captured) row."""
    ref = {m: statistics.median(next(iter(info.values()))["wall"][m]) for m in modes}
    print(f"\n## {label}: ms per training step (forward + backward); wall = median (range) of "
          f"{rounds} interleaved rounds; ratio to the first row (graphs: to the first captured row)\n")
    g_ref = next((d["graph"][0] for d in info.values() if d["graph"]), None)
    print("| model | device ms | launches | host ms, threaded / single-thread | syncs | "
          "wall ms, threaded engine | ratio | wall ms, single-thread | ratio | "
          "CUDA-graph replay ms | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, d in info.items():
        cells = []
        for m in modes:
            w = d["wall"][m]
            med = statistics.median(w)
            cells += [f"{med:.3f} ({min(w):.2f}-{max(w):.2f})", f"{med / ref[m]:.2f}"]
        if d["graph"]:
            g = d["graph"][0]
            cells += [f"{g:.3f}", f"{g / g_ref:.2f}" if g_ref else "-"]
        else:
            cells += [d["why"] or "-", "-"]
        h = d["host"]
        print(f"| {name} | {d['device']:.3f} | {d['launches']} | {h['threaded'][0]:.3f} / "
              f"{h['single-thread'][0]:.3f} | {h['threaded'][1]} / {h['single-thread'][1]} | "
              + " | ".join(cells) + " |", flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    import triton

    es, anchors, x, dy, tau, dims = block_setup(args)
    discs = [(es.Standard("mamba"), {})] + [
        (es.Asymmetric(sc), {"integration_timesteps": tau}) for sc in args.schemes]
    makers = block_makers(es, anchors, discs, dims)
    print(f"# Block step: host time beside device time, {args.dtype}, shape {FULL}, "
          f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}\n")
    for note in anchors.get("notes", []):
        print("-", note)
    modes = {"threaded": True, "single-thread": False}
    bench = lambda f: triton.testing.do_bench(f, warmup=10, rep=60, return_mode="median")
    for depth in args.depths:
        steps = make_steps(makers, depth, x, dy)
        info = measure(steps, modes, args.rounds, max(1, 4 // depth), bench)
        texts = {}
        if depth == args.depths[0]:
            with torch.autograd.set_multithreading_enabled(False):
                texts = {name: top_functions(step, args.profile_steps, args.top)
                         for name, step in steps.items()}
        if args.graphs:  # CUDA graphs last: a failed capture can spoil what follows
            add_graphs(steps, info, bench)
        label = "1 block" if depth == 1 else f"{depth}-layer stack"
        print_table(info, modes, label, args.rounds)
        for name, text in texts.items():
            print(f"\n### cProfile, {name}, {label}: {args.profile_steps} steps "
                  f"single-threaded, top {args.top} by own time\n")
            print("```\n" + text + "\n```")
        del steps, info


if __name__ == "__main__":
    main()
