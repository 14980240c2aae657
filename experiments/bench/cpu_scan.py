"""CPU benchmark: the chunked ``backend="torch"`` scan against the reference loop.

Prints (and with ``--out`` writes) a markdown table of forward and forward+backward wall time,
median of ``--repeats`` runs after one warm-up, for both paths at the two shapes of issue 2,
in standard mode (``Standard`` coupling, no timesteps) and event mode (``Asymmetric`` coupling
with integration timesteps τ and a per-channel rate). Beside each time: the speedup of the
chunked path and its max relative error (max-norm) against the reference on the same fp32
inputs: of ``y`` for the forward, of every input gradient (the worst one) for forward+backward.

Inputs are what a Mamba layer feeds the scan: ``delta_bias`` + softplus with Mamba's step
initialisation, S4D-real ``A``, a ``D`` skip and a ``z`` gate.

    python experiments/bench/cpu_scan.py                       # both shapes, standard + event
    python experiments/bench/cpu_scan.py --out experiments/results/cpu_scan.md
    python experiments/bench/cpu_scan.py --schemes mamba zoh bilinear dirac --repeats 3
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from eventssm import Asymmetric, Standard
from eventssm.chunked import default_chunk_size, selective_scan_chunked
from eventssm.reference import selective_scan_ref

SHAPES = ((16, 1024, 128, 16), (4, 4096, 128, 16))  # (B, L, D, N)


def make_inputs(b: int, L: int, D: int, N: int, event: bool, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    # Mamba's dt init: softplus(delta_bias) ~ logU(1e-3, 1e-1), raw delta small around it
    dt = torch.exp(torch.rand(D, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    inputs = dict(
        u=torch.randn(b, L, D, generator=g),
        delta=0.5 * torch.randn(b, L, D, generator=g),
        A=-torch.arange(1, N + 1, dtype=torch.float32).repeat(D, 1),  # S4D-real
        B=torch.randn(b, L, N, generator=g),
        C=torch.randn(b, L, N, generator=g),
        D=torch.ones(D),
        z=torch.randn(b, L, D, generator=g),
        delta_bias=dt + torch.log(-torch.expm1(-dt)),  # inverse softplus
    )
    if event:
        inputs["integration_timesteps"] = -torch.log(torch.rand(b, L, generator=g)) * 0.05  # Exp gaps
        inputs["rate"] = F.softplus(torch.randn(D, generator=g))
    return inputs


def run(fn, inputs: dict, disc, backward: bool):
    leaves = {k: v.detach().requires_grad_(backward) for k, v in inputs.items()}
    y = fn(**leaves, delta_softplus=True, discretization=disc)
    if not backward:
        return y.detach(), None
    y.backward(torch.ones_like(y) / y.numel() ** 0.5)
    return y.detach(), {k: v.grad for k, v in leaves.items()}


def timed(inputs, disc, backward: bool, repeats: int):
    """Median wall time and the last result of the reference and the chunked path.

    The two paths alternate within each repeat, so that a busy machine slows both alike.
    """
    fns = (selective_scan_ref, selective_scan_chunked)
    times, out = ([], []), [None, None]
    for fn in fns:
        run(fn, inputs, disc, backward)  # warm-up
    for _ in range(repeats):
        for j, fn in enumerate(fns):
            t0 = time.perf_counter()
            out[j] = run(fn, inputs, disc, backward)
            times[j].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times], out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median)")
    p.add_argument("--schemes", nargs="+", default=["mamba"], help="discretization schemes")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    head = (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f} at start, "
        f"{platform.processor() or platform.machine()}, python {platform.python_version()}; "
        f"median of {args.repeats} after a warm-up"
    )
    lines = [
        "# CPU selective scan: chunked `backend=\"torch\"` vs the reference loop",
        "",
        head,
        "",
        "| B, L, D, N | mode | scheme | T | fwd ref | fwd chunked | speedup | rel err y "
        "| fwd+bwd ref | fwd+bwd chunked | speedup | rel err grads |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for shape in SHAPES:
        for mode in ("standard", "event"):
            for scheme in args.schemes:
                disc = Standard(scheme=scheme) if mode == "standard" else Asymmetric(scheme=scheme)
                inputs = make_inputs(*shape, event=mode == "event")
                (f_ref, f_ch), ((y_ref, _), (y_ch, _)) = timed(inputs, disc, False, args.repeats)
                (b_ref, b_ch), ((_, g_ref), (_, g_ch)) = timed(inputs, disc, True, args.repeats)
                err_g = max(rel_err(g_ch[k], g_ref[k]) for k in g_ref)
                row = (
                    f"| {', '.join(map(str, shape))} | {mode} | {scheme} | "
                    f"{default_chunk_size(shape[1], shape[0], shape[2], shape[3])} | "
                    f"{f_ref * 1e3:.0f} ms | {f_ch * 1e3:.0f} ms | {f_ref / f_ch:.1f}x | "
                    f"{rel_err(y_ch, y_ref):.1e} | {b_ref * 1e3:.0f} ms | {b_ch * 1e3:.0f} ms | "
                    f"{b_ref / b_ch:.1f}x | {err_g:.1e} |"
                )
                lines.append(row)
                print(row, flush=True)
    lines += ["", f"load average {os.getloadavg()[0]:.1f} at the end (the machine may be shared)."]
    print(lines[-1])
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n\n")
            f.write("Command: `python experiments/bench/cpu_scan.py " + " ".join(
                a for a in (
                    f"--repeats {args.repeats}",
                    "--schemes " + " ".join(args.schemes),
                    f"--threads {args.threads}" if args.threads else "",
                    f"--out {args.out}",
                ) if a
            ) + "`\n")


if __name__ == "__main__":
    main()
