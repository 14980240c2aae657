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
* **wall ms**: ``triton.testing.do_bench`` median of the step (what ``block.py`` reports). When
  host ms > device ms the step is host-bound: the GPU idles between kernels and the wall
  clock follows the host.

Then, per model, the top functions of ``cProfile`` by own time (the backward runs on the
calling thread here, ``torch.autograd.set_multithreading_enabled(False)``, so its Python
shows too).

    python experiments/bench/block_host.py [--dtype bfloat16] [--steps 20] [--top 18]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(__file__))
from block import FULL, ROOT, bootstrap_eventssm, load_anchors  # noqa: E402
from block_profile import profile  # noqa: E402


def host_ms(step, steps: int) -> tuple[float, int]:
    """Host ms per step with the device kept busy, and the syncs torch reported meanwhile."""
    torch.cuda.synchronize()
    torch.cuda._sleep(int(3e9))  # ~1.5 s at ~2 GHz: longer than the steps below take to issue
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--top", type=int, default=18)
    ap.add_argument("--anchors", default=str(ROOT / ".anchors"))
    ap.add_argument("--builds", default="/tmp/anchors")
    args = ap.parse_args(argv)
    import triton

    es = bootstrap_eventssm()
    anchors = load_anchors(args.anchors, args.builds, "cuda")
    torch.autograd.set_multithreading_enabled(False)
    dtype = getattr(torch, args.dtype)
    s, dev = FULL, torch.device("cuda")
    torch.manual_seed(0)
    x = torch.randn(s["B"], s["L"], s["d_model"], device=dev, dtype=dtype, requires_grad=True)
    dy = torch.randn_like(x)
    tau = torch.rand(s["B"], s["L"], device=dev) * 2
    dims = dict(d_state=s["N"], d_conv=s["K"], expand=s["expand"], device=dev, dtype=dtype)
    models = []
    if "Mamba" in anchors:
        models.append(("mamba-ssm fast path",
                       anchors["Mamba"](s["d_model"], use_fast_path=True, **dims), {}))
    for disc, kw in ((es.Standard("mamba"), {}), (es.Asymmetric("zoh"), {"integration_timesteps": tau})):
        models.append((f"eventssm {disc!r}" + (" + timesteps" if kw else ""),
                       es.Mamba(s["d_model"], discretization=disc, **dims),
                       dict(kw, check_values=False)))
    print(f"# Block step: host time beside device time, {args.dtype}, shape {s}, "
          f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}\n")
    for note in anchors.get("notes", []):
        print("-", note)
    rows, profiles = [], {}
    for name, model, kw in models:
        params = [x, *model.parameters()]

        def step(model=model, kw=kw, params=params):
            for p in params:
                p.grad = None
            model(x, **kw).backward(dy)

        dev_table, _ = profile(step, 5)
        device = sum(v[0] for v in dev_table.values())
        launches = sum(v[1] for v in dev_table.values())
        host, syncs = host_ms(step, args.steps)
        wall = triton.testing.do_bench(step, warmup=25, rep=100, return_mode="median")
        rows.append((name, device, launches, host, syncs, wall))
        profiles[name] = top_functions(step, args.steps, args.top)
        print(f"{name}: device {device:.3f} ms, host {host:.3f} ms, wall {wall:.3f} ms", flush=True)
    print("\n| model | device ms (kernels) | launches | host ms (issue one step) | syncs | "
          "wall ms (do_bench) | bound by |")
    print("|---|---|---|---|---|---|---|")
    for name, device, launches, host, syncs, wall in rows:
        print(f"| {name} | {device:.3f} | {launches} | {host:.3f} | {syncs} | {wall:.3f} | "
              f"{'host' if host > device else 'device'} |")
    for name, text in profiles.items():
        print(f"\n## cProfile, {name}: {args.steps} steps, top {args.top} by own time\n")
        print("```\n" + text + "\n```")


if __name__ == "__main__":
    main()
