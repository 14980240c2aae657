"""Host cost of the one-node Mamba block's Python, on the CPU, with the Triton kernels replaced
by stand-ins that only allocate their outputs: what is left is our wrappers (the block's door,
``mamba_inner_triton``), the torch ops around the kernels and the autograd engine. Issue 24: the
GPU host time of a small block step is this plus the kernel launches themselves.

    python experiments/bench/block_host_python.py            # ms per forward+backward, then a cProfile

Numbers depend on the CPU; compare rows of one run only.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time

os.environ.setdefault("TRITON_INTERPRET", "1")  # the Triton path on CPU tensors (kernels stubbed)

import torch  # noqa: E402

import eventssm.kernels.mamba_inner as inner  # noqa: E402
from eventssm import Asymmetric, Mamba, Standard  # noqa: E402


def _conv_fwd(x, w, b, h0, cu, seq_idx, lengths, silu, want_final):
    return torch.empty(x.shape, dtype=x.dtype), x.new_empty(0)


def _scan_fwd(u, delta, A, B, C, D, z, db, tau, rate, h0, cu, softplus, scheme, coupling, save):
    return torch.empty_like(u), u.new_empty(0), u.new_empty(0), u.new_empty(0).int()


def _scan_bwd(u, delta, A, B, C, D, z, db, tau, rate, ckpt, offsets, cu, dy, dlast, softplus,
              scheme, coupling, store_dh0, tau_grad, dz_out=None):
    f32 = lambda t: None if t is None else torch.empty(t.shape, dtype=torch.float32)
    return [torch.empty_like(u), torch.empty_like(delta), f32(A), f32(B), f32(C), f32(D), dz_out,
            f32(db), f32(tau) if tau_grad else None, f32(rate), None]


def _conv_bwd(x, w, b, h0, cu, seq_idx, lengths, dy, dfinal, silu, need_dx, need_dw, need_dh0,
              dx=None):
    return dx, torch.empty_like(w), None if b is None else torch.empty_like(b), None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--top", type=int, default=12, help="cProfile rows per model")
    args = ap.parse_args(argv)
    inner._conv_fwd, inner._scan_fwd = _conv_fwd, _scan_fwd
    inner._scan_bwd, inner._conv_bwd = _scan_bwd, _conv_bwd
    torch.set_num_threads(1)
    print("| block (d_model 16, batch 2, L 8; kernels stubbed) | ms per forward+backward, median (min-max) |")
    print("|---|---|")
    profiles = []
    for disc, with_tau in ((Standard("mamba"), False), (Asymmetric("zoh"), True)):
        m = Mamba(16, d_state=4, discretization=disc, backend="triton")
        x = torch.randn(2, 8, 16, requires_grad=True)
        dy = torch.randn(2, 8, 16)
        tau = torch.rand(2, 8) if with_tau else None

        def step(m=m, x=x, tau=tau, dy=dy):
            m(x, tau, check_values=False).backward(dy)

        for _ in range(50):
            step()
        runs = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            runs.append((time.perf_counter() - t0) / args.steps * 1e3)
        print(f"| {disc!r}{' + τ' if with_tau else ''} | {statistics.median(runs):.3f} "
              f"({min(runs):.3f}-{max(runs):.3f}) |")
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(100):
            step()
        prof.disable()
        profiles.append((disc, prof))
    for disc, prof in profiles:
        print(f"\n### cProfile, {disc!r}, 100 steps, top {args.top} by own time\n```")
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)
        print("```")


if __name__ == "__main__":
    main()
