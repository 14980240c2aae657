"""Float32 over long sequences with decays within rounding of 1, and bf16 rate gradients: how far
each path is from float64, beside a sequential float32 loop (the floor float32 itself sets).

    python experiments/probe_precision.py            # the torch path beside the sequential loop
    python experiments/probe_precision.py --triton   # also the Triton kernels (CUDA)

The float64 oracle, the sequential loop and the torch path run on the CPU (a loop over 65,536
steps is faster there); only the Triton rows run on the GPU.

Case 1 (issue 21): b 1, L 65536, D 4, N 4, A = -(1..4), Δ = τ = 1e-6, rate 1, seed 3, inputs
rounded to float32 first, so that every path sees the same numbers and only the arithmetic
differs. Error = max-norm relative error against float64 arithmetic on those inputs.

Case 2: the rate's gradient with bf16 inputs at L = 16, against float64 on (a) the original
float32 inputs, (b) the same inputs rounded to bf16 and (c) those with the output also rounded to
bf16 before the loss (the path returns bf16, DESIGN §2): what is left against (c) is the path's
own accumulation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eventssm import Asymmetric, selective_scan  # noqa: E402


def rel(a, b):
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def case_long(L: int, backends: list[str], scheme: str) -> list[tuple]:
    g = torch.Generator().manual_seed(3)
    b, D, N = 1, 4, 4
    u = torch.randn(b, L, D, generator=g).float()
    Bm = torch.randn(b, L, N, generator=g).float()
    Cm = torch.randn(b, L, N, generator=g).float()
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(D, 1)
    delta = torch.full((b, L, D), 1e-6)
    tau = torch.full((b, L), 1e-6)
    rate = torch.ones(D)
    disc = Asymmetric(scheme)

    def run(backend, dtype):
        device = "cuda" if backend == "triton" else "cpu"  # the loops are faster on the CPU
        ins = [t.detach().to(device, dtype).clone().requires_grad_() for t in (u, delta, Bm, Cm)]
        y, h = selective_scan(ins[0], ins[1], A.to(device, dtype), ins[2], ins[3],
                              integration_timesteps=tau.to(device, dtype if dtype == torch.float64 else torch.float32),
                              rate=rate.to(device, dtype), discretization=disc, return_last_state=True,
                              backend=backend)
        (y.sum() + h.sum()).backward()
        return y.detach(), h.detach(), [t.grad for t in ins]

    y64, h64, g64 = run("reference", torch.float64)
    rows = []
    for name, backend in [("sequential float32 loop (reference)", "reference"), *[(f"{b} path", b) for b in backends]]:
        y, h, gr = run(backend, torch.float32)
        rows.append((name, rel(y, y64), rel(h, h64), max(rel(a, c) for a, c in zip(gr, g64))))
    return rows


def case_bf16_rate(backend: str) -> tuple[float, float, float]:
    g = torch.Generator().manual_seed(0)
    b, L, D, N = 2, 16, 8, 4
    u, delta = torch.randn(b, L, D, generator=g), torch.randn(b, L, D, generator=g) * 0.5
    Bm, Cm = torch.randn(b, L, N, generator=g), torch.randn(b, L, N, generator=g)
    A = -torch.rand(D, N, generator=g) - 0.5
    tau = torch.rand(b, L, generator=g)
    rate = torch.rand(D, generator=g) + 0.5

    def grad(dtype, inputs, round_output=False):
        device = "cuda" if backend == "triton" and dtype != torch.float64 else "cpu"
        rdt = torch.float64 if dtype == torch.float64 else torch.float32
        r = rate.detach().to(device, rdt).clone().requires_grad_()
        x = [t.to(device, dtype) for t in inputs]
        y = selective_scan(x[0], x[1], A.to(device, r.dtype), x[2], x[3], delta_softplus=True,
                           integration_timesteps=tau.to(device, r.dtype), rate=r,
                           discretization=Asymmetric("zoh"), backend="reference" if dtype == torch.float64 else backend)
        y = y.bfloat16().double() if round_output else y.double()  # the bf16 path returns bf16 y
        y.pow(2).sum().backward()
        return r.grad

    ins = (u, delta, Bm, Cm)
    g_bf16 = grad(torch.bfloat16, ins)
    g_exact = grad(torch.float64, ins)
    g_rounded = grad(torch.float64, [t.bfloat16() for t in ins])
    g_both = grad(torch.float64, [t.bfloat16() for t in ins], round_output=True)
    return rel(g_bf16, g_exact), rel(g_bf16, g_rounded), rel(g_bf16, g_both)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--triton", action="store_true")
    ap.add_argument("--L", type=int, default=65536)
    args = ap.parse_args(argv)
    backends = ["torch"] + (["triton"] if args.triton else [])
    gpu = f", Triton on {torch.cuda.get_device_name()}" if args.triton else ""
    print(f"# float32 vs float64, L {args.L}, Δ = τ = 1e-6 (CPU{gpu}; torch {torch.__version__})")
    print("| scheme | path | output | last state | gradients (max over u, δ, B, C) |")
    print("|---|---|---|---|---|")
    for scheme in ("mamba", "zoh"):
        for name, ey, eh, eg in case_long(args.L, backends, scheme):
            print(f"| {scheme} | {name} | {ey:.2e} | {eh:.2e} | {eg:.2e} |", flush=True)
    print("\n# bf16 inputs, gradient of the rate, L 16 (Asymmetric zoh)")
    print("| path | vs float64 on the float32 inputs | vs float64 on the bf16-rounded inputs | "
          "same, output rounded to bf16 as the path returns it |")
    print("|---|---|---|---|")
    for backend in backends:
        a, b, c = case_bf16_rate(backend)
        print(f"| {backend} | {a:.2e} | {b:.2e} | {c:.2e} |", flush=True)


if __name__ == "__main__":
    main()
