"""Mamba block benchmark against mamba-ssm's fast path (issue 12, Targets), one table.

Sections (each row has its time, what it is compared with, and the ratio):

* ``block``: a Mamba block's training step (forward + backward) at d_model 768, expand 2, N 16,
  d_conv 4, L 2048, batch 8, fp32 and bf16 parameters, one block and a 4-layer stack (``x ← x +
  block(x)``), for every scheme × coupling (Standard without timesteps; Asymmetric, Scaled and Additive with
  timesteps), against mamba-ssm 2.3.2.post1's ``Mamba(use_fast_path=True)`` (causal-conv1d
  1.7.0 + the fused ``mamba_inner_fn``) when it imports, else against our Standard(mamba) row.
  mamba-ssm's fast path is verified in ``torch.profiler`` (its ``selective_scan_fwd`` and
  ``causal_conv1d`` kernels must appear), else its row is marked ``NOT fast path``.
* ``launches``: CUDA kernels launched by one block step (forward + backward), counted in
  ``torch.profiler``, ours in standard and event mode beside mamba-ssm's.
* ``conv``: the causal depthwise conv (+bias, SiLU) alone at (8, 2048, 1536), K 4, forward and
  forward + backward: ours (x a slice of a (B, L, 2D) tensor, as in the block) against
  causal-conv1d's kernel (x (B, D, L), as mamba-ssm feeds it) and ``nn.Conv1d``.
* ``steps`` (not in the default ``--sections``; issue 24's protocol): at four shapes (batch, L,
  d_model) = (16, 4096, 1024), (8, 2048, 768), (32, 1024, 256), (64, 256, 128), 30 block steps
  (forward + ``backward(dy)``, the input requiring grad) issued back to back as a training loop
  issues them (the host may run ahead of the device), timed with CUDA events: the median ms per
  step over ``--rounds`` interleaved rounds (min-max), and the host's ms to issue one step (a
  step timed on the host clock after a synchronisation, median of 10). Rows: mamba-ssm's fast
  path, ours in standard mode and ``Asymmetric(mamba)``/``Asymmetric(zoh)``/``Additive(zoh)``
  with τ (``check_values=False``), ``Asymmetric(zoh)`` with the default ``check_values=True``,
  and ours as separate autograd nodes (``fused=False``) beside the one-node block.
* ``scan``: the selective scan alone at the block's shape (8, 2048, 1536, 16) with z, D skip,
  Δ bias and softplus, every scheme in every mode against the mamba scheme in the same mode
  (the issue's 1.15× target), and our mamba scheme against mamba-ssm's ``selective_scan_fn``.

GPU: ``python experiments/bench/block.py --out experiments/results/block_h200.md`` with the
anchors built per ../shared/ANCHORS.md (``--anchors .anchors --builds /tmp/anchors``; without
them the anchor rows are skipped). ``EVENTSSM_AUTOTUNE=0`` keeps compilation short (one config
per kernel; ~24 scan specialisations are compiled: split a run with ``--dtypes``/``--sections``).
CPU smoke test: ``python experiments/bench/block.py --device cpu --small`` (tiny shapes, the
torch paths, no anchors; numbers meaningless). Times are medians (``triton.testing.do_bench`` on
a GPU, wall clock on the CPU); Mamba is called with ``check_values=False`` where it has that flag
(a value check is a host sync; a training loop validates once per batch).
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
SCHEMES = ("mamba", "zoh", "bilinear", "dirac")
COUPLINGS = ("Standard", "Asymmetric", "Scaled", "Additive")
FULL = dict(B=8, L=2048, d_model=768, expand=2, N=16, K=4)
SMALL = dict(B=2, L=32, d_model=16, expand=2, N=4, K=4)
STEP_SHAPES = ((16, 4096, 1024), (8, 2048, 768), (32, 1024, 256), (64, 256, 128))
# (label, coupling, scheme, with τ, check_values, fused) of the ``steps`` section's own rows
STEP_ROWS = (
    ("Standard(mamba)", "Standard", "mamba", False, False, True),
    ("Standard(mamba), separate nodes", "Standard", "mamba", False, False, False),
    ("Asymmetric(mamba) + τ", "Asymmetric", "mamba", True, False, True),
    ("Asymmetric(zoh) + τ", "Asymmetric", "zoh", True, False, True),
    ("Asymmetric(zoh) + τ, check_values=True", "Asymmetric", "zoh", True, True, True),
    ("Asymmetric(zoh) + τ, separate nodes", "Asymmetric", "zoh", True, False, False),
    ("Additive(zoh) + τ", "Additive", "zoh", True, False, True),
)


def bootstrap_eventssm():
    """Import eventssm from this checkout, installed or not (a bare copy of the repository on the
    GPU machine)."""
    sys.path.insert(0, str(ROOT))
    import eventssm

    try:
        import eventssm.kernels  # noqa: F401
    except ImportError:  # no Triton (a CPU machine without it): the torch paths still run
        pass
    return eventssm


# ------------------------------------------------------------------------------ anchors

def load_anchors(anchors: str, builds: str, device: str) -> dict:
    """mamba-ssm / causal-conv1d from ``anchors/py`` with the extensions built into
    ``builds/{mamba,causal}`` (ANCHORS.md); missing pieces are reported, not fatal."""
    got = {"notes": []}
    if device != "cuda":
        got["notes"].append("anchors: skipped (not on CUDA)")
        return got
    for sub in ("mamba", "causal"):
        d = os.path.join(builds, sub)
        if os.path.isdir(d):
            sys.path.insert(0, d)
    py = os.path.join(anchors, "py")
    if os.path.isdir(py):
        sys.path.insert(0, py)
    try:
        import mamba_scan_cuda

        sys.modules["selective_scan_cuda"] = mamba_scan_cuda
    except ImportError as e:
        got["notes"].append(f"mamba-ssm extension not importable ({e})")
    try:
        from causal_conv1d import causal_conv1d_fn

        got["causal_conv1d_fn"] = causal_conv1d_fn
    except ImportError as e:
        got["notes"].append(f"causal-conv1d not importable ({e})")
    try:
        from mamba_ssm.modules.mamba_simple import Mamba as MambaSSM
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        got["Mamba"] = MambaSSM
        got["selective_scan_fn"] = selective_scan_fn
    except ImportError as e:
        got["notes"].append(f"mamba-ssm not importable ({e})")
    return got


# ------------------------------------------------------------------------------ timing

def make_timer(device: str, rep: int):
    if device == "cuda":
        import triton

        def timed(fn, grad_to_none=None):
            fn()
            fn()  # compile, autotune and warm up outside the measurement
            torch.cuda.synchronize()
            return triton.testing.do_bench(fn, warmup=25, rep=rep, grad_to_none=grad_to_none,
                                           return_mode="median")
    else:
        def timed(fn, grad_to_none=None):
            fn()
            runs = []
            for _ in range(max(3, rep // 20)):
                for t in grad_to_none or ():
                    t.grad = None
                t0 = time.perf_counter()
                fn()
                runs.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(runs)
    return timed


def kernel_launches(step, device: str) -> tuple[int, int, list[str]]:
    """(kernels, memcpy/memset operations, kernel names) of one call of ``step`` on the GPU."""
    if device != "cuda":
        return -1, -1, []
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    copies = [n for n in names if n.startswith(("Memcpy", "Memset"))]
    kernels = [n for n in names if not n.startswith(("Memcpy", "Memset"))]
    return len(kernels), len(copies), kernels


class Stack(nn.Module):
    """``n`` blocks with residual adds (the same wrapper around ours and mamba-ssm's)."""

    def __init__(self, make, n):
        super().__init__()
        self.blocks = nn.ModuleList(make() for _ in range(n))

    def forward(self, x, **kw):
        for blk in self.blocks:
            x = x + blk(x, **kw)
        return x


# ------------------------------------------------------------------------------ sections

class Table:
    def __init__(self):
        self.rows = []

    def add(self, section, case, dtype, ms, vs_name, vs_ms, note=""):
        ratio = f"{ms / vs_ms:.2f}" if vs_ms else "-"
        row = (section, case, dtype, "-" if ms is None else f"{ms:.3f}", vs_name, ratio, note)
        self.rows.append(row)
        print("| " + " | ".join(row) + " |", flush=True)

    def markdown(self) -> str:
        head = "| section | case | dtype | ms | compared with | ratio | note |\n|---|---|---|---|---|---|---|\n"
        return head + "\n".join("| " + " | ".join(r) + " |" for r in self.rows)


def _dtype_name(dt):
    return str(dt).replace("torch.", "")


def block_section(es, anchors, table, shape, dtypes, depths, schemes, couplings, device, timed,
                  launch_info):
    for dtype in dtypes:
        for depth in depths:
            _block_rows(es, anchors, table, shape, dtype, dtype == dtypes[0], depth, schemes,
                        couplings, device, timed, launch_info)


def _block_rows(es, anchors, table, shape, dtype, first_dtype, depth, schemes, couplings, device,
                timed, launch_info):
    B, L, dm = shape["B"], shape["L"], shape["d_model"]
    dev = torch.device(device)
    fwd_kw = {"check_values": False} if "check_values" in inspect.signature(
        es.Mamba.forward).parameters else {}
    torch.manual_seed(0)
    x = torch.randn(B, L, dm, device=dev, dtype=dtype, requires_grad=True)
    dy = torch.randn(B, L, dm, device=dev, dtype=dtype)
    tau = torch.rand(B, L, device=dev) * 2
    label = "1 block" if depth == 1 else f"{depth}-layer stack"
    ref_name, ref_ms = None, None

    def run(model, kw):
        def step():
            model(x, **kw).backward(dy)

        return step

    if "Mamba" in anchors:
        MambaSSM = anchors["Mamba"]
        model = Stack(lambda: MambaSSM(dm, d_state=shape["N"], d_conv=shape["K"],
                                       expand=shape["expand"], use_fast_path=True, device=dev,
                                       dtype=dtype), depth)
        step = run(model, {})
        ms = timed(step, [x, *model.parameters()])
        note = ""
        if depth == 1:
            n_k, n_c, names = kernel_launches(step, device)
            fast = any("selective_scan_fwd" in n for n in names) and \
                any("causal_conv1d" in n for n in names)
            note = "fast path verified" if fast else "NOT fast path"
            launch_info.append((f"mamba-ssm fast path, {_dtype_name(dtype)}", n_k, n_c))
        ref_name, ref_ms = "mamba-ssm fast path", ms
        table.add("block", f"{label}: mamba-ssm 2.3.2.post1 fast path", _dtype_name(dtype), ms,
                  ref_name, ref_ms, note)
        del model
    for coupling in couplings:
        for scheme in schemes:
            disc = getattr(es, coupling)(scheme=scheme)
            kw = dict(fwd_kw)
            if coupling != "Standard":
                kw["integration_timesteps"] = tau
            model = Stack(lambda disc=disc: es.Mamba(
                dm, d_state=shape["N"], d_conv=shape["K"], expand=shape["expand"],
                discretization=disc, device=dev, dtype=dtype), depth)
            step = run(model, kw)
            ms = timed(step, [x, *model.parameters()])
            mode = "timesteps" if coupling != "Standard" else "no timesteps"
            if ref_ms is None:  # no anchor: the first of ours is the yardstick
                ref_name, ref_ms = f"eventssm {coupling}({scheme})", ms
            table.add("block", f"{label}: eventssm {coupling}({scheme}), {mode}",
                      _dtype_name(dtype), ms, ref_name, ref_ms)
            if depth == 1 and scheme == "mamba" and first_dtype:
                n_k, n_c, _ = kernel_launches(step, device)
                launch_info.append((f"eventssm {coupling}(mamba) {mode}, {_dtype_name(dtype)}",
                                    n_k, n_c))
            del model


def launch_section(table, launch_info):
    ref = next((k for name, k, _ in launch_info if name.startswith("mamba-ssm")), None)
    for name, n_k, n_c in launch_info:
        if n_k < 0:
            table.add("launches", f"{name}: kernels per block step", "-", None, "-", None,
                      "not counted on the CPU")
            continue
        ratio_ref = ref if ref else launch_info[0][1]
        table.rows.append(("launches", f"{name}: kernels per block step (fwd+bwd)", "-",
                           str(n_k), "mamba-ssm" if ref else launch_info[0][0],
                           f"{n_k / ratio_ref:.2f}", f"+{n_c} memcpy/memset"))
        print("| " + " | ".join(table.rows[-1]) + " |", flush=True)


def _back_to_back(step, n: int, device: str) -> float:
    """ms per step of ``n`` steps issued back to back (CUDA events around them on a GPU)."""
    if device != "cuda":
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        return (time.perf_counter() - t0) * 1e3 / n
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(n):
        step()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n


def _host_issue_ms(step, device: str, n: int = 10) -> float:
    """Median host ms to issue one step with the device idle (nothing queued to wait behind)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    runs = []
    for _ in range(n):
        sync()
        t0 = time.perf_counter()
        step()
        runs.append((time.perf_counter() - t0) * 1e3)
    sync()
    return statistics.median(runs)


def steps_section(es, anchors, table, shapes, dtypes, depths, device, rounds, n_steps=30):
    for dtype in dtypes:
        for depth in depths:
            for B, L, dm in shapes:
                _steps_rows(es, anchors, table, dict(FULL, B=B, L=L, d_model=dm), dtype, depth,
                            device, rounds, n_steps)


def _steps_rows(es, anchors, table, shape, dtype, depth, device, rounds, n_steps):
    B, L, dm = shape["B"], shape["L"], shape["d_model"]
    dev = torch.device(device)
    torch.manual_seed(0)
    x = torch.randn(B, L, dm, device=dev, dtype=dtype, requires_grad=True)
    dy = torch.randn(B, L, dm, device=dev, dtype=dtype)
    tau = torch.rand(B, L, device=dev) * 2
    size = dict(d_state=shape["N"], d_conv=shape["K"], expand=shape["expand"], device=dev,
                dtype=dtype)
    steps = {}  # label -> step function; one model per row, kept for the interleaved rounds
    if "Mamba" in anchors:
        m = Stack(lambda: anchors["Mamba"](dm, use_fast_path=True, **size), depth)
        # without causal-conv1d mamba-ssm silently takes its slow path (nn.Conv1d and separate
        # nodes around its scan): say so in the row's name
        name = "mamba-ssm 2.3.2.post1 " + ("fast path" if "causal_conv1d_fn" in anchors else
                                           "without causal-conv1d (NOT its fast path)")
        steps[name] = lambda m=m: m(x).backward(dy)
    for label, coupling, scheme, with_tau, check, fused in STEP_ROWS:
        disc = getattr(es, coupling)(scheme=scheme)
        m = Stack(lambda disc=disc, fused=fused: es.Mamba(dm, discretization=disc, fused=fused,
                                                          **size), depth)
        kw = {"check_values": check, **({"integration_timesteps": tau} if with_tau else {})}
        steps[f"eventssm {label}"] = lambda m=m, kw=kw: m(x, **kw).backward(dy)
    walls = {k: [] for k in steps}
    host = {}
    for k, step in steps.items():  # warm-up: compile, autotune, allocate
        for _ in range(3):
            step()
        host[k] = _host_issue_ms(step, device)
    for _ in range(rounds):
        for k, step in steps.items():
            x.grad = None
            walls[k].append(_back_to_back(step, n_steps, device))
    ref = next(iter(steps))
    ref_ms = statistics.median(walls[ref])
    where = f"({B}, {L}, {dm})" + ("" if depth == 1 else f", {depth} layers")
    for k in steps:
        ms = statistics.median(walls[k])
        note = (f"{min(walls[k]):.3f}-{max(walls[k]):.3f} over {rounds} rounds; host ms to issue "
                f"a step {host[k]:.2f} (vs {host[ref]:.2f}: {host[k] / host[ref]:.2f})")
        table.add("steps", f"{where}: {k}", _dtype_name(dtype), ms, ref, ref_ms, note)


def conv_section(es, anchors, table, shape, dtypes, device, timed):
    for dtype in dtypes:
        _conv_rows(anchors, table, shape, dtype, device, timed)


def _conv_rows(anchors, table, shape, dtype, device, timed):
    B, L = shape["B"], shape["L"]
    D, K = shape["expand"] * shape["d_model"], shape["K"]
    dev = torch.device(device)
    if device == "cuda":
        from eventssm.kernels import causal_conv1d as ours
    else:
        from eventssm.kernels.causal_conv1d import causal_conv1d_ref as ours
    torch.manual_seed(0)
    w = torch.randn(D, K, device=dev, dtype=dtype, requires_grad=True)
    b = torch.randn(D, device=dev, dtype=dtype, requires_grad=True)
    xz = torch.randn(B, L, 2 * D, device=dev, dtype=dtype)
    # a leaf that is a strided view of (B, L, 2D), as x of in_proj's output in the block
    x_cl = xz[..., :D].detach().requires_grad_(True)
    x_cf = torch.randn(B, D, L, device=dev, dtype=dtype, requires_grad=True)
    dy_cl = torch.randn(B, L, D, device=dev, dtype=dtype)
    dy_cf = torch.randn(B, D, L, device=dev, dtype=dtype)
    cands = [("eventssm causal_conv1d" + (" (Triton)" if device == "cuda" else " (torch ref)"),
              lambda: ours(x_cl, w, b, "silu"), dy_cl, [x_cl, w, b])]
    if "causal_conv1d_fn" in anchors:
        fn = anchors["causal_conv1d_fn"]
        cands.append(("causal-conv1d 1.7.0", lambda: fn(x_cf, w, b, activation="silu"), dy_cf,
                      [x_cf, w, b]))
    cands.append(("nn.Conv1d (cuDNN/ATen depthwise)" if device == "cuda" else "nn.Conv1d",
                  lambda: F.silu(F.conv1d(x_cf, w[:, None], b, padding=K - 1, groups=D)[..., :L]),
                  dy_cf, [x_cf, w, b]))
    runs = {}
    for name, f, dy, params in cands:
        with torch.no_grad():
            t_f = timed(f)
        t_fb = timed(lambda f=f, dy=dy: f().backward(dy), params)
        runs[name] = (t_f, t_fb)
    ref = "causal-conv1d 1.7.0" if "causal-conv1d 1.7.0" in runs else cands[-1][0]
    for name, (t_f, t_fb) in runs.items():
        table.add("conv", f"{name}, forward", _dtype_name(dtype), t_f, ref, runs[ref][0])
        table.add("conv", f"{name}, forward+backward", _dtype_name(dtype), t_fb, ref, runs[ref][1])


def scan_section(es, anchors, table, shape, dtypes, schemes, couplings, device, timed):
    for dtype in dtypes:
        _scan_rows(es, anchors, table, shape, dtype, schemes, couplings, device, timed)


def _scan_rows(es, anchors, table, shape, dtype, schemes, couplings, device, timed):
    B, L = shape["B"], shape["L"]
    D, N = shape["expand"] * shape["d_model"], shape["N"]
    dev = torch.device(device)
    backend = "triton" if device == "cuda" else "torch"
    extra = {"check_values": False} if "check_values" in inspect.signature(
        es.selective_scan).parameters else {}
    g = torch.Generator(device=dev).manual_seed(0)

    def r(*s):
        return torch.randn(*s, device=dev, generator=g)

    kw = dict(u=r(B, L, D).to(dtype), delta=(r(B, L, D) * 0.5 - 2.0).to(dtype),
              A=-(torch.rand(D, N, device=dev, generator=g) * 15 + 1), B=r(B, L, N).to(dtype),
              C=r(B, L, N).to(dtype), D=r(D), z=r(B, L, D).to(dtype), delta_bias=r(D) * 0.1)
    tau = torch.rand(B, L, device=dev, generator=g) * 2
    rate = torch.rand(D, device=dev, generator=g) + 0.2
    for v in kw.values():
        v.requires_grad_(True)
    dy = torch.randn(B, L, D, device=dev, dtype=dtype)

    def scan(disc, ev):
        return lambda: es.selective_scan(**kw, **ev, delta_softplus=True, discretization=disc,
                                         backend=backend, **extra)

    mamba_std = None
    for coupling in couplings:
        ref = None
        for scheme in schemes:
            disc = getattr(es, coupling)(scheme=scheme)
            fwd = scan(disc, {} if coupling == "Standard" else
                       dict(integration_timesteps=tau, rate=rate))
            with torch.no_grad():
                t_f = timed(fwd)
            t_fb = timed(lambda fwd=fwd: fwd().backward(dy), list(kw.values()))
            mode = "event" if coupling != "Standard" else "standard"
            if scheme == "mamba" or ref is None:
                ref = (f"{coupling}({scheme}) {mode}", t_f, t_fb)
            if coupling == "Standard" and scheme == "mamba":
                mamba_std = (t_f, t_fb)
            case = f"{coupling}({scheme}) {mode}"
            table.add("scan", f"{case}, forward", _dtype_name(dtype), t_f, ref[0], ref[1])
            table.add("scan", f"{case}, forward+backward", _dtype_name(dtype), t_fb, ref[0], ref[2])
    if "selective_scan_fn" in anchors and mamba_std is not None:
        fn = anchors["selective_scan_fn"]
        cf = {k: v.detach().transpose(1, 2).contiguous().requires_grad_(True)
              for k, v in kw.items() if k in ("u", "delta", "B", "C", "z")}
        prm = {k: kw[k].detach().clone().requires_grad_(True) for k in ("A", "D", "delta_bias")}

        def theirs():
            return fn(cf["u"], cf["delta"], prm["A"], cf["B"], cf["C"], prm["D"], cf["z"],
                      prm["delta_bias"], delta_softplus=True)

        dy_cf = dy.transpose(1, 2).contiguous()
        with torch.no_grad():
            t_f = timed(theirs)
        t_fb = timed(lambda: theirs().backward(dy_cf), [*cf.values(), *prm.values()])
        dt = _dtype_name(dtype)
        table.add("scan", "mamba-ssm selective_scan_fn, forward", dt, t_f, "mamba-ssm", t_f)
        table.add("scan", "mamba-ssm selective_scan_fn, forward+backward", dt, t_fb, "mamba-ssm",
                  t_fb)
        table.add("scan", "eventssm Standard(mamba) vs mamba-ssm, forward", dt, mamba_std[0],
                  "mamba-ssm selective_scan_fn", t_f)
        table.add("scan", "eventssm Standard(mamba) vs mamba-ssm, forward+backward", dt,
                  mamba_std[1], "mamba-ssm selective_scan_fn", t_fb)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--small", action="store_true", help="tiny shapes (a smoke test)")
    ap.add_argument("--dtypes", nargs="+", default=None, choices=["float32", "bfloat16"])
    ap.add_argument("--depths", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=SCHEMES)
    ap.add_argument("--couplings", nargs="+", default=list(COUPLINGS), choices=COUPLINGS)
    ap.add_argument("--sections", nargs="+", default=["block", "conv", "scan"],
                    choices=["block", "conv", "scan", "steps"])
    ap.add_argument("--shapes", nargs="+", default=None, metavar="B,L,D",
                    help="the steps section's (batch, L, d_model) shapes (default: issue 24's four)")
    ap.add_argument("--rounds", type=int, default=5, help="the steps section's interleaved rounds")
    ap.add_argument("--anchors", default=str(ROOT / ".anchors"), help="prepared anchors (py/)")
    ap.add_argument("--builds", default="/tmp/anchors", help="built extensions (mamba/, causal/)")
    ap.add_argument("--rep", type=int, default=200, help="do_bench rep (ms) per measurement")
    ap.add_argument("--out", help="also write the table (markdown) here")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device: pass --device cpu --small")
    es = bootstrap_eventssm()
    shape = SMALL if args.small else FULL
    dtypes = [getattr(torch, d) for d in (args.dtypes or (["float32"] if args.device == "cpu"
                                                          else ["bfloat16", "float32"]))]
    anchors = load_anchors(args.anchors, args.builds, args.device)
    timed = make_timer(args.device, args.rep if args.device == "cuda" else 60)
    env = (f"{torch.cuda.get_device_name()} " if args.device == "cuda" else "CPU ") + \
        f"torch {torch.__version__}"
    try:
        import triton

        env += f", triton {triton.__version__}"
    except ImportError:
        pass
    header = ["# Mamba block vs mamba-ssm (experiments/bench/block.py, issue 12)", "",
              f"{env}; shape {shape}; EVENTSSM_AUTOTUNE={os.environ.get('EVENTSSM_AUTOTUNE', '1')}",
              *[f"- {n}" for n in anchors["notes"]], ""]
    print("\n".join(header), flush=True)
    table = Table()
    print("| section | case | dtype | ms | compared with | ratio | note |\n|---|---|---|---|---|---|---|")
    launch_info = []
    if "block" in args.sections:
        block_section(es, anchors, table, shape, dtypes, args.depths, args.schemes,
                      args.couplings, args.device, timed, launch_info)
        launch_section(table, launch_info)
    if "steps" in args.sections:
        shapes = [tuple(int(v) for v in sh.split(",")) for sh in args.shapes] if args.shapes \
            else [(SMALL["B"], SMALL["L"], SMALL["d_model"])] if args.small else STEP_SHAPES
        steps_section(es, anchors, table, shapes, dtypes, args.depths, args.device, args.rounds)
    if "conv" in args.sections:
        conv_section(es, anchors, table, shape, dtypes, args.device, timed)
    if "scan" in args.sections:
        scan_section(es, anchors, table, shape, dtypes, args.schemes, args.couplings,
                     args.device, timed)
    if args.out:
        Path(args.out).write_text("\n".join(header) + "\n" + table.markdown() + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
