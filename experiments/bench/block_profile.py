"""Where a Mamba block's training step spends its GPU time: one table per model, kernel by kernel
(issue 12: the profiler table behind the block bench's ratios).

Each model runs one forward + backward at the block bench's shape (d_model 768, expand 2, N 16,
d_conv 4, L 2048, batch 8, bf16 parameters by default) under ``torch.profiler``; the CUDA
kernels' device times are summed by kind (the scan's forward and backward, the conv, the GEMMs,
elementwise and copy kernels, ...) and listed with their launch counts. Device times do not
depend on the host's load, so this runs fine beside compilation; the wall-clock ratios come
from ``block.py``.

    python experiments/bench/block_profile.py [--dtype bfloat16] [--steps 5]

Models: mamba-ssm 2.3.2.post1's fast path (when its extensions import, ANCHORS.md), ours in
standard mode (``Standard("mamba")``), and ours in event mode with ``Asymmetric("zoh")`` and
``Additive("zoh")`` (timesteps given).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

import torch

sys.path.insert(0, os.path.dirname(__file__))
from block import FULL, ROOT, bootstrap_eventssm, load_anchors  # noqa: E402

KINDS = (  # (kind, substrings of the kernel name), first match wins
    ("scan forward", ("selective_scan_fwd", "_scan_fwd")),
    ("scan backward", ("selective_scan_bwd", "_scan_bwd")),
    ("conv (causal, depthwise)", ("causal_conv1d", "_conv_fwd", "_conv_bwd", "_conv_reduce",
                                  "_final_state")),
    ("GEMM (in/x/dt/out proj)", ("gemm", "sm90_xmma", "cutlass", "ampere", "sgemm", "nvjet",
                                 "Kernel2")),
    ("reductions (weight grads, sums)", ("reduce", "Reduce")),
    ("copies and casts", ("copy", "Copy", "cast", "Memcpy", "Memset", "fill", "Fill")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "Elementwise")),
)


def kind_of(name: str) -> str:
    for kind, keys in KINDS:
        if any(k in name for k in keys):
            return kind
    return "other"


def cuda_kernel_events(fn, steps: int):
    """The CUDA kernel events of ``steps`` calls of ``fn`` (after 3 untimed calls)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with tprofile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    return [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def profile(step, steps: int):
    """({kind: (ms per step, launches per step)}, the 12 costliest kernels) of ``step``."""
    per, names = defaultdict(lambda: [0.0, 0]), defaultdict(float)
    for e in cuda_kernel_events(step, steps):
        k = kind_of(e.name)
        per[k][0] += e.device_time_total / 1e3 / steps  # ms per step
        per[k][1] += 1
        names[e.name] += e.device_time_total / 1e3 / steps
    top = sorted(names.items(), key=lambda kv: -kv[1])[:12]
    return {k: (ms, n // steps) for k, (ms, n) in per.items()}, top


def block_inputs(dtype):
    """The block bench's input x (B, L, d_model) (requires grad), its cotangent, gaps τ (B, L)
    and the constructor arguments shared by ours and mamba-ssm's ``Mamba``."""
    s, dev = FULL, torch.device("cuda")
    torch.manual_seed(0)
    x = torch.randn(s["B"], s["L"], s["d_model"], device=dev, dtype=dtype, requires_grad=True)
    dy = torch.randn_like(x)
    tau = torch.rand(s["B"], s["L"], device=dev) * 2
    dims = dict(d_state=s["N"], d_conv=s["K"], expand=s["expand"], device=dev, dtype=dtype)
    return x, dy, tau, dims


def block_makers(es, anchors, discs, dims):
    """[(name, zero-argument constructor, forward kwargs)]: mamba-ssm's fast path when it
    imports, then ours for each ``(discretization, kwargs)`` (validation off: a training loop
    validates once per batch, not in every block)."""
    d_model = FULL["d_model"]
    makers = []
    if "Mamba" in anchors:
        makers.append(("mamba-ssm fast path",
                       lambda: anchors["Mamba"](d_model, use_fast_path=True, **dims), {}))
    for disc, kw in discs:
        makers.append((f"eventssm {disc!r}" + (" + timesteps" if kw else ""),
                       lambda disc=disc: es.Mamba(d_model, discretization=disc, **dims),
                       dict(kw, check_values=False)))
    return makers


def block_args(doc: str) -> argparse.ArgumentParser:
    """The options every block-step script takes: ``--dtype`` and where the anchors are."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--anchors", default=str(ROOT / ".anchors"))
    ap.add_argument("--builds", default="/tmp/anchors")
    return ap


def block_setup(args):
    """(eventssm, anchors, x, dy, τ, constructor arguments) for the parsed ``block_args``."""
    es = bootstrap_eventssm()
    anchors = load_anchors(args.anchors, args.builds, "cuda")
    return (es, anchors, *block_inputs(getattr(torch, args.dtype)))


def main(argv=None) -> None:
    ap = block_args(__doc__)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv)
    es, anchors, x, dy, tau, dims = block_setup(args)
    ts = {"integration_timesteps": tau}
    models = [(name, make(), kw) for name, make, kw in block_makers(
        es, anchors, [(es.Standard("mamba"), {}), (es.Asymmetric("zoh"), ts),
                      (es.Additive("zoh"), ts)], dims)]
    print(f"# Block step (forward + backward) by kernel kind, {args.dtype}, shape {FULL}, "
          f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    for note in anchors.get("notes", []):
        print("-", note)
    tables, tops = {}, {}
    for name, model, kw in models:
        def step(model=model, kw=kw):
            x.grad = None
            for p in model.parameters():
                p.grad = None
            model(x, **kw).backward(dy)

        tables[name], tops[name] = profile(step, args.steps)
    kinds = [k for k, _ in KINDS] + ["other"]
    names = list(tables)
    print("| kernel kind | " + " | ".join(f"{n}: ms (launches)" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for k in kinds:
        if not any(k in t for t in tables.values()):
            continue
        cells = [f"{tables[n][k][0]:.3f} ({tables[n][k][1]})" if k in tables[n] else "-" for n in names]
        print(f"| {k} | " + " | ".join(cells) + " |")
    tot = [f"**{sum(v[0] for v in tables[n].values()):.3f}** ({sum(v[1] for v in tables[n].values())})"
           for n in names]
    print("| **total device time** | " + " | ".join(tot) + " |")
    for n in names:  # what each kind holds (and what "other" is)
        print(f"\nTop kernels, {n} (ms per step):")
        for kname, ms in tops[n]:
            print(f"- {ms:.3f}  [{kind_of(kname)}]  {kname[:110]}")


if __name__ == "__main__":
    main()
