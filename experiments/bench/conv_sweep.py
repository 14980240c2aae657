"""The causal conv's backward tiling at the block's shape (issue 12: the conv is 0.23 ms of a bf16
block step against causal-conv1d's 0.11, most of it the backward kernel).

For each (rows a backward tile, tiles a program) of the kernel config (``conv_bwd_rows``,
``conv_bwd_tiles``; ``EVENTSSM_CONV_BWD_ROWS`` / ``_TILES``): the device time of the backward's
kernels (``_conv_bwd_kernel`` and the ∂w reduction ``_conv_reduce_kernel``, from
``torch.profiler``), the do_bench median of forward + backward, and the relative max error of
∂x, ∂w, ∂bias against float64 (``F.conv1d`` on the same rounded inputs), beside causal-conv1d
1.7.0's backward kernel when it imports. x is a ``(B, L, D)`` slice of a ``(B, L, 2D)`` tensor,
as in the block.

    python experiments/bench/conv_sweep.py [--dtype bfloat16] [--rows 4 8 16] [--tiles 4 8 16]
    python experiments/bench/conv_sweep.py --warm ROWS TILES   # compile one config, untimed
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from block import FULL, ROOT, bootstrap_eventssm, load_anchors  # noqa: E402
from block_profile import cuda_kernel_events  # noqa: E402


def kernel_ms(fn, keys, steps=10) -> float:
    """Device ms per call of the CUDA kernels whose names contain one of ``keys``."""
    return sum(e.device_time_total for e in cuda_kernel_events(fn, steps)
               if any(k in e.name for k in keys)) / 1e3 / steps


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--rows", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--tiles", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--warm", type=int, nargs=2, metavar=("ROWS", "TILES"))
    ap.add_argument("--anchors", default=str(ROOT / ".anchors"))
    ap.add_argument("--builds", default="/tmp/anchors")
    args = ap.parse_args(argv)
    import triton

    bootstrap_eventssm()
    from eventssm.kernels import causal_conv1d
    from eventssm.kernels.config import override

    dtype = getattr(torch, args.dtype)
    s, dev = FULL, torch.device("cuda")
    B, L, D, K = s["B"], s["L"], s["expand"] * s["d_model"], s["K"]
    torch.manual_seed(0)
    xz = torch.randn(B, L, 2 * D, device=dev, dtype=dtype)
    x = xz[..., :D].detach().requires_grad_(True)
    w = (torch.randn(D, K, device=dev) / K ** 0.5).to(dtype).requires_grad_(True)
    b = torch.randn(D, device=dev).to(dtype).requires_grad_(True)
    dy = torch.randn(B, L, D, device=dev, dtype=dtype)
    params = [x, w, b]

    def step():
        for p in params:
            p.grad = None
        causal_conv1d(x, w, b, "silu").backward(dy)

    if args.warm:
        with override(conv_bwd_rows=args.warm[0], conv_bwd_tiles=args.warm[1]):
            step()
            torch.cuda.synchronize()
        return
    # float64 reference on the same rounded numbers
    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    pre = F.conv1d(x64.transpose(1, 2), w64[:, None], b64, padding=K - 1, groups=D)[..., :L]
    F.silu(pre).transpose(1, 2).backward(dy.double())
    ref = {"dx": x64.grad, "dw": w64.grad, "db": b64.grad}
    del pre, x64
    rel = lambda a, r: float((a.double() - r).abs().max() / r.abs().max())

    print(f"# Causal conv backward tiling, {args.dtype}, (B, L, D) = ({B}, {L}, {D}), K {K}, "
          f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}\n")
    anchors = load_anchors(args.anchors, args.builds, "cuda")
    theirs = None
    if "causal_conv1d_fn" in anchors:
        xc = torch.randn(B, D, L, device=dev, dtype=dtype, requires_grad=True)
        dyc = torch.randn(B, D, L, device=dev, dtype=dtype)

        def their_step():
            for p in (xc, w, b):
                p.grad = None
            anchors["causal_conv1d_fn"](xc, w, b, activation="silu").backward(dyc)

        theirs = (kernel_ms(their_step, ["causal_conv1d_bwd"]),
                  triton.testing.do_bench(their_step, warmup=10, rep=100, return_mode="median"))
    print("| rows a tile | tiles a program | backward kernels ms (bwd + reduce) | vs causal-conv1d bwd | "
          "fwd+bwd ms | vs causal-conv1d | rel err dx / dw / db |")
    print("|---|---|---|---|---|---|---|")
    if theirs:
        print(f"| causal-conv1d 1.7.0 | - | {theirs[0]:.4f} | 1.00 | {theirs[1]:.4f} | 1.00 | - |")
    for rows in args.rows:
        for tiles in args.tiles:
            with override(conv_bwd_rows=rows, conv_bwd_tiles=tiles):
                step()
                errs = " / ".join(f"{rel(t.grad, ref[k]):.1e}" for k, t in
                                  (("dx", x), ("dw", w), ("db", b)))
                k_ms = kernel_ms(step, ["_conv_bwd_kernel", "_conv_reduce_kernel"])
                t_ms = triton.testing.do_bench(step, warmup=10, rep=100, return_mode="median")
            vs = (lambda a, i: f"{a / theirs[i]:.2f}") if theirs else (lambda a, i: "-")
            print(f"| {rows} | {tiles} | {k_ms:.4f} | {vs(k_ms, 0)} | {t_ms:.4f} | {vs(t_ms, 1)} | "
                  f"{errs} |", flush=True)


if __name__ == "__main__":
    main()
