"""Kernel experiments on one shape of ``scan.py``: profile, or time tuning variants.

Default: one forward+backward of the Triton scan between cudaProfilerStart/Stop, for Nsight
Compute (``ncu --profile-from-start off``), to see where the kernels stall::

    ncu --clock-control none --profile-from-start off --section SpeedOfLight \
        --section WarpStateStats --section SchedulerStats --section Occupancy \
        python experiments/bench/profile_scan.py --shape 0 --dtype float32 [--event]

``--vary VAR v1 v2 ...``: forward and forward+backward ms (do_bench medians) with the
environment variable VAR (e.g. ``EVENTSSM_PREFETCH``, ``EVENTSSM_BWD_LANES``) set to each value
in turn (``eventssm.kernels.config``: each value becomes the current KernelConfig).
"""

from __future__ import annotations

import argparse
import os

import torch
from scan import SHAPES, make_inputs, time_scan  # the sibling script in this folder

from eventssm import Asymmetric, Standard, selective_scan


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, default=0, help="index into scan.SHAPES")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--event", action="store_true", help="Asymmetric coupling with τ")
    ap.add_argument("--vary", nargs="+", metavar="VAR V", help="VAR then the values to time")
    ap.add_argument("--rep", type=int, default=100, help="do_bench rep (ms) per measurement")
    ap.add_argument("--host", action="store_true",
                    help="cProfile of 200 forward+backward calls at (1, 64, 64, 16): host time")
    args = ap.parse_args()
    if args.host:
        return host_profile(args.event)
    B, L, D, N = SHAPES[args.shape]
    kw = make_inputs(B, L, D, N, getattr(torch, args.dtype), args.event, grad=True)
    disc = Asymmetric() if args.event else Standard()
    if args.vary:
        var, values = args.vary[0], args.vary[1:]
        print(f"{SHAPES[args.shape]} {args.dtype} {'event' if args.event else 'standard'}")
        print(f"| {var} | fwd ms | fwd+bwd ms |")
        print("|---|---|---|")
        from eventssm.kernels.config import KernelConfig, set_config

        for v in values:
            os.environ[var] = v
            set_config(KernelConfig.from_env())  # the kernels read their knobs from the config
            fwd, both, _ = time_scan(kw, disc, "triton", grad=True, rep=args.rep)
            print(f"| {v} | {fwd:.3f} | {both:.3f} |", flush=True)
        from eventssm.kernels import selective_scan_bwd as bwd_mod
        from eventssm.kernels import selective_scan_fwd as fwd_mod

        for k in (fwd_mod.selective_scan_fwd_kernel, bwd_mod.selective_scan_bwd_kernel):
            print("autotuned config:", getattr(k, "best_config", None))
        return

    def fwd_bwd():
        y = selective_scan(**kw, delta_softplus=True, discretization=disc, backend="triton",
                           check_values=False)
        y.backward(dy)

    dy = torch.randn(B, L, D, device="cuda", dtype=kw["u"].dtype)
    for _ in range(3):  # compile and warm up outside the profiled range
        fwd_bwd()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    fwd_bwd()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()
    print(f"profiled one fwd+bwd at {SHAPES[args.shape]} {args.dtype} "
          f"{'event' if args.event else 'standard'}")


def host_profile(event: bool, calls: int = 200):
    import cProfile
    import pstats

    kw = make_inputs(1, 64, 64, 16, torch.float32, event, grad=True)
    disc = Asymmetric() if event else Standard()
    dy = torch.randn(1, 64, 64, device="cuda")

    def call():
        y = selective_scan(**kw, delta_softplus=True, discretization=disc, check_values=False)
        y.backward(dy)

    for _ in range(10):
        call()
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        call()
    torch.cuda.synchronize()
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
