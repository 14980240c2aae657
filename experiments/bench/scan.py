"""Benchmark of the Triton selective scan against the HBM floor (DESIGN §7, issue 3).

For (B, L, D, N) in the issue's shapes, fp32 and bf16, standard and event mode (Asymmetric
coupling with τ), no z, softplus with bias, D skip: forward ms, forward+backward ms, the HBM
floor (minimal bytes / measured copy bandwidth) and the fraction of it reached, peak memory
beyond the inputs, and the PyTorch path (``backend="torch"``) for scale where it fits. Then a
Mamba block training step (d_model 768, L 2048, batch 8, bf16) in tokens/s, kernels vs the
PyTorch path.

Minimal bytes: forward reads u, δ (B·L·D each), B, C (B·L·N each), τ (B·L, fp32, event mode)
and writes y (B·L·D); the backward reads u, δ, dy, B, C, τ and writes du, dδ, dB, dC (and
dτ is not requested). Parameters (D·N) are negligible. Times are medians of
``triton.testing.do_bench`` (CUDA events) of ``selective_scan(..., check_values=False)``: the
value checks of τ and the rate read a flag back to the host, a sync per call that stalls the
launch queue, so event-mode rows also give the forward with the checks on.

Last, a small model's training step (4 Mamba blocks, d_model 128, L 256, batch 32), where host
time bounds a step, eager and under ``torch.compile`` (default and "reduce-overhead", i.e. CUDA
graphs), standard and event mode.

With ``--deterministic`` it prints only the cost of torch's deterministic mode
(``torch.use_deterministic_algorithms(True)``, what ``Trainer(deterministic=True)`` sets), under
which the backward kernel stores per-program partial sums that torch adds in a fixed order
instead of adding them atomically: per shape, dtype and mode, the backward alone and
forward+backward in ms with the mode off and on (rounds interleaved, the median of each; τ
requires grad in event mode, so ∂τ's partials are included) and the backward's peak memory
beyond its inputs.

Usage: ``python experiments/bench/scan.py [--quick] [--out FILE] [--rep MS] [--no-torch]
[--no-mamba] [--no-small | --only-small] [--deterministic [--rounds N]]`` on a CUDA machine.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import time

import torch
import triton

from eventssm import Asymmetric, Standard, selective_scan

SHAPES = [(8, 4096, 1536, 16), (64, 1024, 256, 16), (16, 8192, 512, 64)]


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus written."""
    x = torch.empty(2**28, dtype=torch.float32, device="cuda")  # 1 GiB
    y = torch.empty_like(x)
    ms = triton.testing.do_bench(lambda: y.copy_(x), warmup=50, rep=300, return_mode="median")
    return 2 * x.numel() * 4 / (ms * 1e-3)


def make_inputs(B, L, D, N, dtype, event, grad):
    g = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)
    kw = dict(u=r(B, L, D).to(dtype), delta=(r(B, L, D) * 0.5 - 2.0).to(dtype),
              A=-(torch.rand(D, N, device="cuda", generator=g) * 4 + 0.5),
              B=r(B, L, N).to(dtype), C=r(B, L, N).to(dtype), D=r(D), delta_bias=r(D) * 0.1)
    if event:
        kw["integration_timesteps"] = torch.rand(B, L, device="cuda", generator=g) * 2
        kw["rate"] = torch.rand(D, device="cuda", generator=g) + 0.2
    if grad:
        for k in ("u", "delta", "A", "B", "C", "D", "delta_bias", "rate"):
            if k in kw:
                kw[k].requires_grad_(True)
    return kw


def floor_bytes(B, L, D, N, dtype, event):
    es = torch.tensor([], dtype=dtype).element_size()
    tau = B * L * 4 if event else 0
    fwd = 3 * B * L * D * es + 2 * B * L * N * es + tau
    bwd = 5 * B * L * D * es + 4 * B * L * N * es + tau
    return fwd, fwd + bwd


def time_scan(kw, disc, backend, grad, rep=200, check_values=False):
    # check_values=False: the value checks of τ and the rate read a flag back to the host (a
    # sync per call); they are timed separately (the "with checks" column).
    def fwd():
        with torch.no_grad():
            return selective_scan(**kw, delta_softplus=True, discretization=disc,
                                  backend=backend, check_values=check_values)

    y = fwd()
    dy = torch.randn_like(y)
    del y

    def fwd_bwd():
        y = selective_scan(**kw, delta_softplus=True, discretization=disc, backend=backend,
                           check_values=check_values)
        y.backward(dy)

    # Five forwards per timed call: do_bench records its start event before the call, so with
    # one call a host (Python + launch) time longer than the GPU's cache flush would be timed as
    # GPU idle; back to back, the launch queue stays ahead as in a training loop.
    t_f = triton.testing.do_bench(lambda: [fwd() for _ in range(5)], warmup=25, rep=rep,
                                  return_mode="median") / 5
    t_fb = None
    peak = None
    if grad:
        fwd_bwd()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fwd_bwd()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        t_fb = triton.testing.do_bench(fwd_bwd, warmup=25, rep=rep, return_mode="median",
                                       grad_to_none=[v for v in kw.values() if v.requires_grad])
    return t_f, t_fb, peak


def wall_time(fn, n, warmup):
    """Seconds per call of ``fn`` by the wall clock over ``n`` calls after ``warmup``, the GPU
    synchronised before and after (host and GPU time together, whichever bounds)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def host_overhead(calls=200):
    """Host µs per ``selective_scan`` call (validation, dispatch, launch), measured where the
    GPU work is negligible: (1, 64, 64, 16), forward and forward+backward, both modes."""
    out = {}
    for event in (False, True):
        disc = Asymmetric("mamba") if event else Standard("mamba")
        kw = make_inputs(1, 64, 64, 16, torch.float32, event, grad=True)
        for grad in (False, True):
            def call(grad=grad, kw=kw, disc=disc):
                with torch.set_grad_enabled(grad):
                    y = selective_scan(**kw, delta_softplus=True, discretization=disc,
                                       check_values=False)
                    if grad:
                        y.sum().backward()
            out[("event" if event else "standard", "fwd+bwd" if grad else "fwd")] = \
                wall_time(call, calls, warmup=10) * 1e6
    return out


def _table(head: str, quick: bool, shapes, row) -> list[str]:
    """Print and return a markdown table: ``head``, its separator, then ``row(shape, dtype,
    event)`` for each shape (the first only with ``quick``, else those at the indices
    ``shapes``, all by default), fp32 and bf16, standard and event mode; the GPU memory is freed
    after each row (``row``'s inputs go with its frame)."""
    sep = "|" + "---|" * (head.count("|") - 1)
    print(head)
    print(sep)
    rows = [head, sep]
    for shape in SHAPES[:1] if quick else [SHAPES[i] for i in (shapes or range(len(SHAPES)))]:
        for dtype in (torch.float32, torch.bfloat16):
            for event in (False, True):
                r = row(shape, dtype, event)
                print(r, flush=True)
                rows.append(r)
                gc.collect()
                torch.cuda.empty_cache()
    return rows


def scan_table(bw, quick, rep=200, with_torch=True, fwd_only=False, shapes=None):
    head = ("| B, L, D, N | dtype | mode | fwd ms | floor ms | fwd % floor | fwd+bwd ms | "
            "floor ms | fwd+bwd % floor | peak extra MiB | fwd ms with value checks | "
            "torch path fwd / fwd+bwd ms |")

    def row(shape, dtype, event):
        B, L, D, N = shape
        disc = Asymmetric("mamba") if event else Standard("mamba")
        kw = make_inputs(B, L, D, N, dtype, event, grad=not fwd_only)
        t_f, t_fb, peak = time_scan(kw, disc, "triton", grad=not fwd_only, rep=rep)
        fb_f, fb_fb = floor_bytes(B, L, D, N, dtype, event)
        fl_f, fl_fb = fb_f / bw * 1e3, fb_fb / bw * 1e3
        torch_col = "-"
        checked = "-"
        if event:
            checked = f"{time_scan(kw, disc, 'triton', grad=False, rep=rep, check_values=True)[0]:.3f}"
        if with_torch and not quick and not fwd_only and dtype == torch.float32 and not event:
            try:
                tt_f, tt_fb, _ = time_scan(kw, disc, "torch", grad=True, rep=3)
                torch_col = f"{tt_f:.2f} / {tt_fb:.2f}"
            except torch.OutOfMemoryError:
                torch_col = "OOM"
            gc.collect()
            torch.cuda.empty_cache()
        return (f"| {B}, {L}, {D}, {N} | {str(dtype)[6:]} | "
                f"{'event' if event else 'standard'} | {t_f:.3f} | {fl_f:.3f} | "
                + (f"{100 * fl_f / t_f:.0f} % | - | {fl_fb:.3f} | - | - | {checked} | - |"
                   if fwd_only else
                   f"{100 * fl_f / t_f:.0f} % | {t_fb:.3f} | {fl_fb:.3f} | "
                   f"{100 * fl_fb / t_fb:.0f} % | {peak / 2**20:.0f} | {checked} | "
                   f"{torch_col} |"))

    return _table(head, quick, shapes, row)


@contextlib.contextmanager
def deterministic_mode(on: bool):
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)


def time_deterministic(kw, disc, rounds, rep):
    """{(part, on): ms} for part "bwd" (the backward node alone: ``autograd.grad`` of one
    retained forward) and "fwd+bwd", with deterministic mode off and on, each the median over
    ``rounds`` interleaved do_bench medians; and {on: peak MiB of the backward beyond its
    inputs}."""
    inputs = [v for v in kw.values() if v.requires_grad]
    y = selective_scan(**kw, delta_softplus=True, discretization=disc, check_values=False)
    dy = torch.randn_like(y)

    def bwd():
        torch.autograd.grad(y, inputs, dy, retain_graph=True)

    def fwd_bwd():
        out = selective_scan(**kw, delta_softplus=True, discretization=disc, check_values=False)
        torch.autograd.grad(out, inputs, dy)

    times = {(part, on): [] for part in ("bwd", "fwd+bwd") for on in (False, True)}
    peak = {}
    for on in (False, True):  # compile and tune both before timing either
        with deterministic_mode(on):
            bwd()
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            bwd()
            torch.cuda.synchronize()
            peak[on] = (torch.cuda.max_memory_allocated() - base) / 2**20
    for _ in range(rounds):
        for on in (False, True):
            with deterministic_mode(on):
                for part, fn in (("bwd", bwd), ("fwd+bwd", fwd_bwd)):
                    times[(part, on)].append(triton.testing.do_bench(
                        fn, warmup=25, rep=rep, return_mode="median"))
    return {k: statistics.median(v) for k, v in times.items()}, peak


def deterministic_table(quick, rep=200, rounds=3, shapes=None):
    """The cost of deterministic mode for the scan's backward (see the module docstring)."""
    head = ("| B, L, D, N | dtype | mode | bwd ms | bwd ms deterministic | ratio | fwd+bwd ms | "
            "fwd+bwd ms deterministic | ratio | bwd peak extra MiB, off / on |")

    def row(shape, dtype, event):
        B, L, D, N = shape
        disc = Asymmetric("mamba") if event else Standard("mamba")
        kw = make_inputs(B, L, D, N, dtype, event, grad=True)
        if event:
            kw["integration_timesteps"].requires_grad_(True)
        t, peak = time_deterministic(kw, disc, rounds, rep)
        return (f"| {B}, {L}, {D}, {N} | {str(dtype)[6:]} | "
                f"{'event' if event else 'standard'} | {t[('bwd', False)]:.3f} | "
                f"{t[('bwd', True)]:.3f} | {t[('bwd', True)] / t[('bwd', False)]:.2f} | "
                f"{t[('fwd+bwd', False)]:.3f} | {t[('fwd+bwd', True)]:.3f} | "
                f"{t[('fwd+bwd', True)] / t[('fwd+bwd', False)]:.2f} | "
                f"{peak[False]:.0f} / {peak[True]:.0f} |")

    return _table(head, quick, shapes, row)


def mamba_step(fast: bool, steps=10):
    from eventssm import Mamba

    torch.manual_seed(0)
    m = Mamba(768, d_state=16, use_fast_path=fast).cuda().to(torch.bfloat16)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    x = torch.randn(8, 2048, 768, device="cuda", dtype=torch.bfloat16)

    def step():
        opt.zero_grad(set_to_none=True)
        m(x).float().square().mean().backward()
        opt.step()

    dt = wall_time(step, steps, warmup=3)
    return 8 * 2048 / dt, dt * 1e3


def small_step(event: bool, compile_mode: str | None, check_values: bool = True, steps=20):
    """ms per training step of a small event model, the size where host time (Python, launches)
    rather than the kernels bounds a step: 4 residual Mamba blocks, d_model 128, L 256, batch 32,
    fp32; eager, or ``torch.compile`` with ``compile_mode`` ("default", "reduce-overhead": CUDA
    graphs). Event mode: Asymmetric discretization with gaps τ, their values checked once a call
    (a host sync, which also splits a compiled graph) unless ``check_values=False``."""
    from eventssm import MambaBackbone

    torch.manual_seed(0)
    disc = Asymmetric("mamba") if event else Standard("mamba")
    m = MambaBackbone(128, n_layers=4, discretization=disc).cuda()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    x = torch.randn(32, 256, 128, device="cuda")
    tau = torch.rand(32, 256, device="cuda") if event else None
    fwd = m if compile_mode is None else torch.compile(m, mode=compile_mode)

    def step():
        opt.zero_grad(set_to_none=True)
        fwd(x, tau, check_values=check_values).square().mean().backward()
        opt.step()

    return wall_time(step, steps, warmup=5) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-mamba", action="store_true")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch path column")
    ap.add_argument("--rep", type=int, default=200, help="do_bench rep (ms) per measurement")
    ap.add_argument("--shapes", type=int, nargs="*", help="indices into SHAPES (default: all)")
    ap.add_argument("--no-host", action="store_true", help="skip the host-overhead line")
    ap.add_argument("--fwd-only", action="store_true", help="time the forward alone (no gradients)")
    ap.add_argument("--no-small", action="store_true", help="skip the small-model step lines")
    ap.add_argument("--only-small", action="store_true", help="only the small-model step lines")
    ap.add_argument("--deterministic", action="store_true",
                    help="only the backward with torch's deterministic mode off vs on")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved off/on rounds per --deterministic row (median)")
    args = ap.parse_args()
    if args.deterministic:
        props = torch.cuda.get_device_properties(0)
        lines = [f"device: {props.name}, torch {torch.__version__}, triton {triton.__version__}",
                 "backward with torch.use_deterministic_algorithms off / on", ""]
        print("\n".join(lines), flush=True)
        lines += deterministic_table(args.quick, args.rep, args.rounds, args.shapes)
        if args.out:
            with open(args.out, "w") as f:
                f.write("\n".join(lines) + "\n")
        return
    if args.only_small:
        args.no_host, args.no_mamba = True, True
    props = torch.cuda.get_device_properties(0)
    bw = copy_bandwidth()
    lines = [f"device: {props.name}, torch {torch.__version__}, triton {triton.__version__}",
             f"copy bandwidth (read + write): {bw / 1e12:.2f} TB/s", ""]
    print("\n".join(lines), flush=True)
    rows = [] if args.only_small else scan_table(bw, args.quick, args.rep, not args.no_torch,
                                                 args.fwd_only, args.shapes)
    lines += rows
    if not args.no_host:
        host = host_overhead()
        res = ["", "Host time per call at (1, 64, 64, 16) (validation, dispatch, launches; GPU work "
               "negligible): " + ", ".join(f"{m} {p} {us:.0f} µs" for (m, p), us in host.items())]
        print(res[-1], flush=True)
        lines += res
    if not args.no_mamba:
        res = []
        for fast in (True, False):
            tps, ms = mamba_step(fast, steps=3 if not fast else 10)
            res.append(f"Mamba block train step (d_model 768, L 2048, batch 8, bf16), "
                       f"{'kernels' if fast else 'torch path'}: {ms:.1f} ms, {tps:,.0f} tokens/s")
            print(res[-1], flush=True)
        lines += [""] + res
    if not args.no_small:
        res = []
        runs = [(False, None, True), (False, "default", True), (False, "reduce-overhead", True),
                (True, None, True), (True, "reduce-overhead", True),
                (True, "reduce-overhead", False)]
        for event, mode, check in runs:
            try:
                ms = f"{small_step(event, mode, check):.2f} ms"
            except Exception as e:  # a compile mode that fails is reported, not fatal
                ms = f"failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
            res.append(f"Small model train step (4 Mamba blocks, d_model 128, L 256, batch 32, "
                       f"fp32, {'event' if event else 'standard'} mode), "
                       f"{'eager' if mode is None else 'torch.compile ' + mode}"
                       f"{'' if check else ', check_values=False'}: {ms}")
            print(res[-1], flush=True)
        lines += [""] + res
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
