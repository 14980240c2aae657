"""Triton scan and decoding-step kernels vs the float64 reference (DESIGN §6), on two devices
(the ``device`` parameter, tests/helpers.py):

- ``interpret``: the CPU under ``TRITON_INTERPRET=1``, run in its own pytest process with the
  variable set from outside, ``TRITON_INTERPRET=1 pytest -m interpret`` (``make test`` does).
  Shapes are tiny (L <= 128) and the backward's chunks are short under the interpreter (16 steps,
  sub-chunks of 4) so that chunk and sub-chunk boundaries, partial chunks and packed sequences
  are all crossed. Output buffers come NaN-filled (tests/conftest.py). No bf16: the interpreter
  computes it wrongly.
- ``gpu``: CUDA at real sizes, bf16 included, and what only a GPU has (MUFU.EX2/RCP accuracy,
  torch.compile, CUDA graphs): ``EVENTSSM_AUTOTUNE=0 pytest -m gpu tests/test_kernels.py -s``
  (one kernel configuration per specialization keeps compilation short; the benchmark
  autotunes).

Each is skipped where it cannot run (tests/conftest.py). A check with the same probe on both
devices is one test; where the sizes or the bounds differ per device, the table beside it says
so.
"""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch

from eventssm import Additive, Asymmetric, Scaled, Standard, selective_scan
from eventssm.reference import selective_scan_ref, selective_state_update_ref
from tests.helpers import (
    ALL_DISCRETIZATIONS,
    DEVICES,
    DISC_IDS,
    GPU,
    device_cases,
    load_kernels,
    rel_err,
    scan_inputs,
    softplus_error_ratio,
)

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

K = load_kernels()
config = importlib.import_module("eventssm.kernels.config")
utils = importlib.import_module("eventssm.kernels.utils")

TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}
GRAD_KEYS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "integration_timesteps", "rate",
             "initial_state")


def _pack(kw, lengths, D, N, gen):
    """Reshape batch inputs to one packed row with cu_seqlens splitting it at ``lengths``."""
    for k in ("u", "delta", "z", "B", "C", "integration_timesteps"):
        if kw[k] is not None:
            kw[k] = kw[k].reshape(1, -1, *kw[k].shape[2:])
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    if kw["initial_state"] is not None:
        kw["initial_state"] = torch.randn(len(lengths), D, N, dtype=torch.float64, generator=gen)
    return kw, cu


def _strided_leaf(v, extra_before, extra_after):
    """A leaf with v's values that is a slice of wider rows (as z of in_proj's (b, L, 2D) output
    or B/C of x_proj's): v's last two dimensions flattened into columns of a wider tensor."""
    b, L = v.shape[:2]
    flat = v.detach().reshape(b, L, -1)
    wide = torch.full((b, L, extra_before + flat.shape[-1] + extra_after), 7.0, dtype=v.dtype,
                      device=v.device)
    wide[..., extra_before:extra_before + flat.shape[-1]] = flat
    out = wide[..., extra_before:extra_before + flat.shape[-1]].unflatten(-1, v.shape[2:])
    assert not out.is_contiguous() or L == 1
    return out.detach().requires_grad_(True)


def check_scan(disc, device, *, b=2, L=37, D=6, N=4, G=None, z=True, h0=True, dtype=torch.float32,
               tau_max=5.0, delta_shift=0.0, lengths=None, tau_grad=True, seed=0, strided=False):
    """Forward, last state and every gradient of the Triton scan on ``device`` vs the float64
    reference on the same (rounded) numbers. ``delta_shift`` moves δ (Δ moderate, so that long
    sequences neither explode nor vanish); ``strided``: z, B and C are slices of wider rows
    (read in place by the kernels). Returns the kernel's outputs and gradients by name."""
    gen = torch.Generator().manual_seed(seed)
    kw = scan_inputs(b=b, L=L, D=D, N=N, G=G, z=z, h0=h0, dtype=torch.float64, tau_max=tau_max,
                     generator=gen)
    kw["delta"] = kw["delta"] + delta_shift
    cu = None
    if lengths is not None:
        assert sum(lengths) == b * L
        kw, cu = _pack(kw, lengths, D, N, gen)
        cu = cu.to(device)
    # The reference sees the same (rounded) numbers as the kernel, in float64.
    kw = {k: None if v is None else v.to(dtype).double().to(device) for k, v in kw.items()}
    leaf = lambda v, dt: None if v is None else v.to(dt).clone().requires_grad_(True)
    ref_in = {k: leaf(v, torch.float64) for k, v in kw.items()}
    tri_in = {k: leaf(v, dtype) for k, v in kw.items()}
    if strided:
        if tri_in["z"] is not None:
            tri_in["z"] = _strided_leaf(tri_in["z"], 3, 5)
        # B and C: neighbouring columns of one (b, L, 3 + 2·G·N) tensor, as x_proj's output
        BC = torch.cat([tri_in["B"].detach().flatten(2), tri_in["C"].detach().flatten(2)], -1)
        BC = _strided_leaf(BC, 3, 0)
        n = BC.shape[-1] // 2
        tri_in["B"] = BC[..., :n].unflatten(-1, tri_in["B"].shape[2:]).detach().requires_grad_(True)
        tri_in["C"] = BC[..., n:].unflatten(-1, tri_in["C"].shape[2:]).detach().requires_grad_(True)
        assert tri_in["B"].stride() == tri_in["C"].stride()
    if not tau_grad:
        ref_in["integration_timesteps"].requires_grad_(False)
        tri_in["integration_timesteps"].requires_grad_(False)
    common = dict(delta_softplus=True, discretization=disc, return_last_state=True,
                  cu_seqlens=cu)
    y_ref, h_ref = selective_scan_ref(**ref_in, **common)
    y, h = selective_scan(**tri_in, **common, backend="triton")
    assert y.dtype == dtype and h.dtype == torch.float32
    dy = torch.randn(y_ref.shape, dtype=torch.float64, generator=gen).to(device)
    dh = torch.randn(h_ref.shape, dtype=torch.float64, generator=gen).to(device)
    ((y_ref * dy).sum() + (h_ref * dh).sum()).backward()
    ((y.double() * dy).sum() + (h.double() * dh).sum()).backward()

    errs = {"y": rel_err(y, y_ref), "last_state": rel_err(h, h_ref)}
    for k in GRAD_KEYS:
        if kw[k] is None or not ref_in[k].requires_grad:
            continue
        g_ref, g = ref_in[k].grad, tri_in[k].grad
        if g_ref is None and g is None:  # the input does not enter (e.g. τ with Standard)
            continue
        # an input that enters without effect (δ under Asymmetric-dirac) has a zero gradient
        g_ref = torch.zeros_like(ref_in[k]) if g_ref is None else g_ref
        assert g is not None, f"no gradient for {k}"
        assert g.dtype == tri_in[k].dtype and g.shape == tri_in[k].shape, k
        errs[f"d{k}"] = rel_err(g, g_ref)
    if not tau_grad:
        assert tri_in["integration_timesteps"].grad is None
    print(f"\n{disc!r} {dtype} B{b}-T{L}-D{D}-N{N} on {device}, max errors:",
          {k: f"{v:.1e}" for k, v in errs.items()})
    for k, v in errs.items():
        assert v <= TOL[dtype], f"{k}: relative max error {v:.2e} > {TOL[dtype]:.0e}"
    return {"y": y, "last_state": h, **{f"d{k}": tri_in[k].grad for k in GRAD_KEYS
                                        if tri_in[k] is not None and tri_in[k].grad is not None}}


# ------------------------------------------------------------------ the scan


EVERY_DISCRETIZATION = {  # per device: the sizes of test_scan_every_discretization
    "cpu": dict(b=2, L=37, D=6, N=4),
    "cuda": dict(b=2, L=1000, D=48, N=16, tau_max=3.0, delta_shift=-2.0),
}


# `make test` keeps a diagonal (each coupling and each scheme once; 10-17 s a case under the
# interpreter); the other cases are marked slow (`make test-slow`, CI)
DIAGONAL = {"Standard-mamba", "Asymmetric-zoh", "Scaled-bilinear", "Additive-dirac"}


@pytest.mark.parametrize("disc", [pytest.param(d, id=i, marks=[] if i in DIAGONAL else [pytest.mark.slow])
                                  for d, i in zip(ALL_DISCRETIZATIONS, DISC_IDS)])
@pytest.mark.parametrize("device", DEVICES)
def test_scan_every_discretization(device, disc):
    check_scan(disc, device, **EVERY_DISCRETIZATION[device])


CASES = {
    # id: (discretization, kwargs), on both devices
    "B2-T37-D12-N3-G3-split-groups": (Asymmetric("zoh"), dict(D=12, N=3, G=3)),
    "B1-T70-D16-N4-G2": (Scaled("bilinear"), dict(b=1, L=70, D=16, G=2)),
    "B2-T40-D5-N5-noz-noh0": (Scaled("bilinear"), dict(L=40, D=5, N=5, z=False, h0=False)),
    "B3-T9-packed-empty-seq": (Asymmetric("mamba"), dict(b=3, L=9, lengths=[5, 0, 12, 10])),
    "B2-T64-packed-chunks": (Scaled("zoh"), dict(L=64, lengths=[17, 1, 48, 62])),
    "B2-T33-fp16": (Standard("zoh"), dict(L=33, dtype=torch.float16)),
    "B2-T33-fp16-event": (Asymmetric("bilinear"), dict(L=33, dtype=torch.float16)),
    "B2-T33-tau0": (Asymmetric("zoh"), dict(L=33, tau_max=0.0)),
    "B2-T33-tau-large": (Scaled("mamba"), dict(L=33, tau_max=1e4)),
    "B2-T33-tau-large-asym": (Asymmetric("dirac"), dict(L=33, tau_max=1e3)),
    "B1-T128-no-tau-grad": (Asymmetric("mamba"), dict(b=1, L=128, tau_grad=False)),
    "B2-T1": (Standard("bilinear"), dict(L=1)),
    # D a multiple of the block (32): the forward's path without channel masks, and L = 41 so
    # that full chunks (no step masks) and a partial last chunk both run
    "B2-T41-D32-even": (Standard("mamba"), dict(L=41, D=32, N=4)),
    "B2-T41-D32-even-event": (Asymmetric("mamba"), dict(L=41, D=32, N=4)),
    # z, B and C slices of wider rows, read in place (no copies)
    "B2-T37-strided-zBC": (Asymmetric("zoh"), dict(strided=True)),
    "B2-T41-D32-strided-G2": (Scaled("bilinear"), dict(L=41, D=32, N=4, G=2, strided=True)),
    "B2-T40-packed-strided": (Standard("mamba"), dict(L=40, lengths=[17, 1, 62], strided=True)),
}
_GPU = dict(tau_max=3.0, delta_shift=-2.0)
REAL_SIZES = {  # on the GPU only
    "B2-T8192-D64-N16-fp32-event": (Asymmetric("mamba"), dict(b=2, L=8192, D=64, N=16, **_GPU)),
    "B2-T8192-D64-N16-bf16-event": (Asymmetric("zoh"),
                                    dict(b=2, L=8192, D=64, N=16, dtype=torch.bfloat16, **_GPU)),
    "B2-T4096-D128-N64-fp32": (Standard("mamba"), dict(b=2, L=4096, D=128, N=64, **_GPU)),
    "B2-T4096-D128-N64-bf16-scaled": (Scaled("mamba"),
                                      dict(b=2, L=4096, D=128, N=64, dtype=torch.bfloat16, **_GPU)),
    "B2-T2048-D96-N16-G3-bf16": (Standard("mamba"),
                                 dict(b=2, L=2048, D=96, N=16, G=3, dtype=torch.bfloat16, **_GPU)),
    "B1-T3000-D64-N16-packed": (Scaled("zoh"), dict(b=3, L=1000, D=64, N=16,
                                                    lengths=[1, 999, 1700, 300], **_GPU)),
}


# the interpreter cases over 15 s (on 2 cores), for `make test-slow`: the wider rows (D = 32) and
# the longer sequences; every feature they cross has a smaller case in `make test`
SLOW_CASES = frozenset({"B2-T41-D32-even", "B2-T41-D32-even-event", "B2-T41-D32-strided-G2",
                        "B2-T64-packed-chunks", "B1-T70-D16-N4-G2", "B1-T128-no-tau-grad"})


@pytest.mark.parametrize("device, case", device_cases(interpret=CASES, gpu={**CASES, **REAL_SIZES},
                                                      slow=SLOW_CASES))
def test_scan_cases(device, case):
    disc, kw = case
    check_scan(disc, device, **kw)


def _x_range_inputs(seed, tau_max, b, L, D, N):
    """Scan inputs whose x = Δ·A spans the zoh/bilinear formulas' regimes: Δ = softplus(δ + b)
    from ~1e-6 to ~8 (δ uniform in [-14, 8]) and A log-uniform in [-30, -1e-3], so that x runs
    from ~-1e-9 through both series thresholds (|x| = 1/4, 1/2) to ~-200."""
    gen = torch.Generator().manual_seed(seed)
    kw = scan_inputs(b=b, L=L, D=D, N=N, dtype=torch.float64, tau_max=tau_max, generator=gen)
    kw["delta"] = torch.rand(kw["delta"].shape, dtype=torch.float64, generator=gen) * 22 - 14
    kw["delta_bias"] = torch.zeros_like(kw["delta_bias"])
    kw["A"] = -torch.exp(torch.rand(kw["A"].shape, dtype=torch.float64, generator=gen)
                         * (torch.log(torch.tensor(30.0)) - torch.log(torch.tensor(1e-3)))
                         + torch.log(torch.tensor(1e-3)))
    return kw


# Per device: seed, sizes (b, L, D, N), and whether the bound grows with the float32 error of the
# reference formulas themselves (see the test's docstring).
X_RANGE = {"cpu": dict(seed=11, size=(2, 33, 8, 4), f32_slack=False),
           "cuda": dict(seed=21, size=(2, 512, 64, 16), f32_slack=True)}


@pytest.mark.parametrize("device, disc", device_cases(
    interpret={"Standard-zoh": Standard("zoh"), "Asymmetric-zoh": Asymmetric("zoh"),
               "Scaled-zoh": Scaled("zoh"), "Standard-bilinear": Standard("bilinear"),
               "Asymmetric-bilinear": Asymmetric("bilinear")},
    gpu={"Standard-zoh": Standard("zoh"), "Asymmetric-zoh": Asymmetric("zoh"),
         "Standard-bilinear": Standard("bilinear"), "Scaled-bilinear": Scaled("bilinear")}))
def test_scan_x_from_tiny_to_large(device, disc):
    """x = Δ·A (·τ in event mode, τ up to 1e3) from ~1e-9 (Δ → 0 or A → 0: k → dtB) through the
    zoh series thresholds to large |x| (k → -1/A): every output and gradient against the float64
    reference, within 1e-4 (on the GPU with MUFU.EX2/RCP).

    On the GPU, with ``Scaled``, x = Δ·τ·A reaches ~-2e5, where bilinear's Ā = (1 + x/2)/(1 - x/2)
    sits within 1e-5 of -1: a state that flips sign and barely decays, whose last state and its
    gradients are ill-conditioned in float32 whatever computes them. So there the bound is 1e-4
    or 4× the error of the same reference formulas evaluated in float32, whichever is larger."""
    setting = X_RANGE[device]
    kw = _x_range_inputs(setting["seed"], 1e3, *setting["size"])
    # the reference sees the float32-rounded numbers
    kw = {k: None if v is None else v.float().double().to(device) for k, v in kw.items()}
    ref_in = {k: None if v is None else v.clone().requires_grad_(True) for k, v in kw.items()}
    tri_in = {k: None if v is None else v.float().requires_grad_(True) for k, v in kw.items()}
    common = dict(delta_softplus=True, discretization=disc, return_last_state=True)
    y_ref, h_ref = selective_scan_ref(**ref_in, **common)
    y, h = selective_scan(**tri_in, **common, backend="triton")
    gen = torch.Generator().manual_seed(setting["seed"] + 1)
    dy = torch.randn(y_ref.shape, dtype=torch.float64, generator=gen).to(device)
    dh = torch.randn(h_ref.shape, dtype=torch.float64, generator=gen).to(device)
    ((y_ref * dy).sum() + (h_ref * dh).sum()).backward()
    ((y.double() * dy).sum() + (h.double() * dh).sum()).backward()
    errs = {"y": rel_err(y, y_ref), "last": rel_err(h, h_ref)}
    for k in GRAD_KEYS:
        if tri_in[k] is not None and ref_in[k].grad is not None:
            errs[f"d{k}"] = rel_err(tri_in[k].grad, ref_in[k].grad)
    print(f"\n{disc!r} x range on {device}, triton:", {k: f"{v:.1e}" for k, v in errs.items()})
    bound = dict.fromkeys(errs, 1e-4)
    if setting["f32_slack"]:
        # the same formulas in float32 (torch): how far float32 itself gets from float64 here
        f32_in = {k: None if v is None else v.float().requires_grad_(True) for k, v in kw.items()}
        y32, h32 = selective_scan_ref(**f32_in, **common)
        ((y32.double() * dy).sum() + (h32.double() * dh).sum()).backward()
        f32_errs = {"y": rel_err(y32, y_ref), "last": rel_err(h32, h_ref)}
        for k in GRAD_KEYS:
            if f32_in[k] is not None and ref_in[k].grad is not None:
                f32_errs[f"d{k}"] = rel_err(f32_in[k].grad, ref_in[k].grad)
        print(f"{disc!r} x range, float32 reference:", {k: f"{v:.1e}" for k, v in f32_errs.items()})
        bound = {k: max(1e-4, 4 * f32_errs[k]) for k in errs}
    bad = {k: (v, bound[k]) for k, v in errs.items() if v > bound[k]}
    assert not bad, f"errors beyond their bound (error, bound): {bad}"


@contextlib.contextmanager
def deterministic_algorithms(on: bool = True):
    """``torch.use_deterministic_algorithms(on)`` for a block, the previous mode restored."""
    prev, warn = torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=warn)


def spy_backward_launches(monkeypatch) -> list[bool]:
    """Record the ``DETERMINISTIC`` flag of every backward-kernel launch for the rest of the test."""
    bwd = importlib.import_module("eventssm.kernels.selective_scan_bwd")
    real = bwd.selective_scan_bwd_kernel
    flags = []

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                flags.append(kwargs["DETERMINISTIC"])
                return real[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(bwd, "selective_scan_bwd_kernel", Spy())
    return flags


DETERMINISTIC_CASES = {
    # several channel blocks (of 8 channels at N = 4) add to each step's ∂τ, ∂B, ∂C, and several
    # sequences to ∂A, ∂D, ∂delta_bias, ∂rate; D = 20: a partial last block; L = 20 crosses a
    # chunk of the backward (16 steps here)
    "B2-T20-D20-Asymmetric-zoh": (Asymmetric("zoh"), dict(L=20, D=20)),
    # two blocks a group of G = 2
    "B1-T20-D32-G2-Scaled-bilinear": (Scaled("bilinear"), dict(b=1, L=20, D=32, G=2)),
    # one block straddling 3 groups (N = 3: 32 channels a block)
    "B2-T20-D12-N3-G3-split-groups-Additive-zoh": (Additive("zoh"), dict(L=20, D=12, N=3, G=3)),
    "B3-T9-D20-packed-empty-seq-Asymmetric-mamba": (Asymmetric("mamba"),
                                                     dict(b=3, L=9, D=20, lengths=[5, 0, 12, 10])),
}


@pytest.mark.parametrize("device, case", device_cases(
    interpret=DETERMINISTIC_CASES, slow=frozenset(DETERMINISTIC_CASES) - {"B1-T20-D32-G2-Scaled-bilinear"}))
def test_scan_backward_deterministic_mode(monkeypatch, device, case):
    """Under torch's deterministic mode the backward sums per-program partials in a fixed order
    instead of adding atomically: every gradient within the usual bound of float64, and a
    second run bit-identical (on the interpreter the atomics are sequential too, so what this
    adds there is the partial-sum path's correctness; the GPU test below checks the bits)."""
    disc, kw = case
    flags = spy_backward_launches(monkeypatch)
    with deterministic_algorithms():
        first = check_scan(disc, device, **kw)
        second = check_scan(disc, device, **kw)
    assert flags == [True, True]
    differ = [k for k in first if not torch.equal(first[k], second[k])]
    assert not differ, f"not bit-identical across two deterministic runs: {differ}"
    # outside the mode the atomic path runs again (the mode is read at each backward)
    kw = scan_inputs(b=1, L=3, D=4, N=4, dtype=torch.float32, requires_grad=True)
    selective_scan(**{k: v.to(device) for k, v in kw.items()}, discretization=disc,
                   backend="triton").sum().backward()
    assert flags == [True, True, False]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("device", [GPU])
def test_scan_backward_bit_identical_gpu(monkeypatch, device, packed, dtype):
    """At (4, 4096, 256, 16) 32 channel blocks add to each step's ∂τ, ∂B, ∂C and 4 sequences to
    ∂A, ∂D, ∂delta_bias, ∂rate (with atomics, in whatever order the programs arrive): under
    deterministic mode two backward passes give bit-identical gradients, and the default
    (atomic) path stays within the usual bound of them."""
    b, L, D, N = 4, 4096, 256, 16
    disc = Asymmetric("zoh")
    gen = torch.Generator().manual_seed(0)
    kw = scan_inputs(b=b, L=L, D=D, N=N, dtype=torch.float64, tau_max=3.0, generator=gen)
    kw["delta"] = kw["delta"] - 2.0
    cu = None
    if packed:
        kw, cu = _pack(kw, [1, 4095, 6000, 2000, 4288], D, N, gen)
        cu = cu.to(device)
    kw = {k: v.to(device, dtype) for k, v in kw.items() if v is not None}
    out_shapes = selective_scan(**kw, delta_softplus=True, discretization=disc,
                                return_last_state=True, cu_seqlens=cu, backend="triton")
    cot = [torch.randn(o.shape, generator=gen).to(device, o.dtype) for o in out_shapes]
    flags = spy_backward_launches(monkeypatch)

    def grads(on):
        leaves = {k: v.clone().requires_grad_(True) for k, v in kw.items()}
        with deterministic_algorithms(on):
            outs = selective_scan(**leaves, delta_softplus=True, discretization=disc,
                                  return_last_state=True, cu_seqlens=cu, backend="triton")
            torch.autograd.backward(outs, cot)
        return {k: v.grad for k, v in leaves.items()}

    first, second, default = grads(True), grads(True), grads(False)
    assert flags == [True, True, False]
    errs = {k: rel_err(default[k], first[k]) for k in first}
    differ = [k for k in first if not torch.equal(first[k], second[k])]
    print(f"\n{'packed' if packed else 'padded'} {dtype}: default vs deterministic max errors",
          {k: f"{v:.1e}" for k, v in errs.items()}, "; not bit-identical:", differ)
    assert not differ
    assert max(errs.values()) <= TOL[dtype]


@pytest.mark.parametrize("device", [GPU])
def test_mamba_block_backward_bit_identical_gpu(monkeypatch, device):
    """A Mamba block in event mode (projections, causal conv, scan), bf16 weights, under
    deterministic mode: parameter and input gradients bit-identical across two passes. The
    conv's backward has no atomics (fixed-order partial sums); cuBLAS needs its workspace
    setting for determinism, which Lightning's ``Trainer(deterministic=True)`` also sets."""
    from eventssm import Mamba

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(0)
    block = Mamba(256, d_state=16, discretization=Asymmetric("zoh")).to(device, torch.bfloat16)
    x = torch.randn(4, 2048, 256, device=device, dtype=torch.bfloat16)
    tau = torch.rand(4, 2048, device=device) * 2
    dy = torch.randn_like(x)

    def grads():
        block.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        with deterministic_algorithms():
            block(xi, integration_timesteps=tau).backward(dy)
        return {"x": xi.grad, **{n: p.grad.clone() for n, p in block.named_parameters()}}

    first, second = grads(), grads()
    differ = [k for k in first if not torch.equal(first[k], second[k])]
    print("\nMamba block gradients not bit-identical:", differ)
    assert not differ


@pytest.mark.parametrize("distance", [0, pytest.param(64, marks=pytest.mark.slow)])
@pytest.mark.parametrize("device", DEVICES)
def test_scan_prefetch_distance(device, distance):
    """Both kernels without L2 prefetch (PF_DIST = 0 compiles the prefetches out) and with a
    distance past the sequence's end (every prefetch masked off): same results."""
    with config.override(prefetch=distance):
        check_scan(Asymmetric("mamba"), device, L=41, D=32, N=4)


@pytest.mark.parametrize("device", DEVICES)
def test_strided_inputs_are_read_in_place(monkeypatch, device):
    """z = xz[..., D:] and B, C as columns of one wider tensor reach the kernel launch as the same
    memory (no .contiguous() copy); u and δ still arrive contiguous."""
    sel = importlib.import_module("eventssm.kernels.selective_scan")
    seen = {}
    real = sel.selective_scan_fwd

    def spy(u, delta, A, B, C, Dskip, z, *rest, **kw):
        seen.update(u=u, delta=delta, B=B, C=C, z=z)
        return real(u, delta, A, B, C, Dskip, z, *rest, **kw)

    monkeypatch.setattr(sel, "selective_scan_fwd", spy)
    b, L, D, N = 2, 9, 6, 4
    xz = torch.randn(b, L, 2 * D).to(device)
    x_dbl = torch.randn(b, L, 3 + 2 * N).to(device)
    z, Bm, Cm = xz[..., D:], x_dbl[..., 3:3 + N], x_dbl[..., 3 + N:]
    u, delta = torch.randn(b, L, D).to(device), torch.randn(b, L, D).to(device)
    A = (-torch.rand(D, N) - 0.5).to(device)
    y = selective_scan(u, delta, A, Bm, Cm, z=z, delta_softplus=True, backend="triton")
    assert seen["z"].data_ptr() == z.data_ptr() and seen["z"].stride() == z.stride()
    assert seen["B"].data_ptr() == Bm.data_ptr() and seen["C"].data_ptr() == Cm.data_ptr()
    ref = selective_scan_ref(u.double(), delta.double(), A.double(), Bm.double(), Cm.double(),
                             z=z.double(), delta_softplus=True)
    assert rel_err(y, ref) <= 1e-5
    # a layout the kernels cannot read in place (B and C with different strides) is copied
    B2 = torch.randn(b, L, 2 * N).to(device)[..., :N]
    selective_scan(u, delta, A, B2, Cm, z=z, delta_softplus=True, backend="triton")
    assert seen["B"].is_contiguous() and seen["C"].is_contiguous()


@pytest.mark.parametrize("device", DEVICES)
def test_dz_and_dx_written_into_one_buffer(device):
    """The gate's ∂z (scan, ``dz_out``) and the conv input's ∂x (conv, ``dx_out``) land in the two
    halves of one (b, L, 2D) buffer, the gradient of in_proj's output xz, with no concatenation:
    equal to the gradients autograd assembles from the default path."""
    from eventssm.kernels import causal_conv1d
    from eventssm.kernels.constants import COUPLING_STANDARD as STANDARD
    from eventssm.kernels.constants import SCHEME_ZOH as ZOH

    b, L, D, N = 2, 19, 6, 4
    gen = torch.Generator().manual_seed(9)
    r = lambda *s: torch.randn(*s, generator=gen)
    xz0 = r(b, L, 2 * D).to(device)
    w, cb = (r(D, 4) * 0.5).to(device), r(D).to(device)
    A = (-torch.rand(D, N, generator=gen) - 0.5).to(device)
    Bm, Cm = r(b, L, N).to(device), r(b, L, N).to(device)
    delta = r(b, L, D).to(device)
    dy = r(b, L, D).to(device)

    def run(buffered):
        xz = xz0.clone().requires_grad_(True)
        buf = torch.full((b, L, 2 * D), 5.0, device=device)
        x = xz[..., :D].detach().requires_grad_(True) if buffered else xz[..., :D]
        z = xz[..., D:].detach().requires_grad_(True) if buffered else xz[..., D:]
        u = causal_conv1d(x, w, cb, "silu", dx_out=buf[..., :D] if buffered else None)
        y = K.selective_scan_triton(u, delta, A, Bm, Cm, z=z, delta_softplus=True,
                                    scheme=ZOH, coupling=STANDARD,
                                    dz_out=(lambda: buf[..., D:]) if buffered else None)
        if buffered:  # the gradients handed back are the buffer's halves themselves
            gx, gz = torch.autograd.grad(y, (x, z), dy)
            assert gx.data_ptr() == buf.data_ptr() and gz.data_ptr() == buf[..., D:].data_ptr()
            return buf
        y.backward(dy)
        return xz.grad

    want, got = run(False), run(True)
    err = rel_err(got, want)
    print("one-buffer gradient vs autograd's", err)
    assert err <= 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_scan_without_grad_saves_nothing_and_matches(device):
    gen = torch.Generator().manual_seed(3)
    kw = scan_inputs(b=2, L=19, D=6, N=4, dtype=torch.float32, generator=gen)
    kw = {k: None if v is None else v.to(device) for k, v in kw.items()}
    ref = selective_scan_ref(**{k: None if v is None else v.double() for k, v in kw.items()},
                             delta_softplus=True, discretization=Scaled("zoh"))
    with torch.no_grad():
        y = selective_scan(**kw, delta_softplus=True, discretization=Scaled("zoh"),
                           backend="triton")
    err = rel_err(y, ref)
    print("no-grad forward max error", err)
    assert err <= 1e-4


@pytest.mark.parametrize("device", DEVICES)
def test_scan_last_state_only_gradient(device):
    """A loss of the last state alone: the cotangent enters at the end of each sequence."""
    gen = torch.Generator().manual_seed(4)
    kw = scan_inputs(b=2, L=23, D=6, N=4, dtype=torch.float64, generator=gen)
    kw = {k: None if v is None else v.to(device) for k, v in kw.items()}
    kw32 = {k: None if v is None else v.float().requires_grad_(True) for k, v in kw.items()}
    kw64 = {k: None if v is None else v.clone().requires_grad_(True) for k, v in kw.items()}
    _, h = selective_scan(**kw32, discretization=Asymmetric("zoh"), return_last_state=True,
                          backend="triton")
    _, h_ref = selective_scan_ref(**kw64, discretization=Asymmetric("zoh"),
                                  return_last_state=True)
    h.sum().backward()
    h_ref.sum().backward()
    errs = {k: rel_err(kw32[k].grad, kw64[k].grad) for k in ("u", "delta", "A", "B",
                                                            "initial_state", "rate")}
    print("last-state-only gradient errors", errs)
    assert kw32["C"].grad.abs().max() == 0 and kw32["z"].grad.abs().max() == 0
    assert max(errs.values()) <= 1e-4


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_custom_op(device):
    """Schema, fake (meta) kernel and autograd registration of the custom op are consistent."""
    gen = torch.Generator().manual_seed(5)
    kw = scan_inputs(b=2, L=11, D=4, N=4, dtype=torch.float32, generator=gen)
    kw = {k: None if v is None else v.to(device).requires_grad_(True) for k, v in kw.items()}
    args = (kw["u"], kw["delta"], kw["A"], kw["B"][:, :, None], kw["C"][:, :, None], kw["D"],
            kw["z"], kw["delta_bias"], kw["integration_timesteps"], kw["rate"],
            kw["initial_state"], None, True, 1, 1, True)
    torch.library.opcheck(torch.ops.eventssm.selective_scan_fwd.default, args,
                          test_utils=("test_schema", "test_faketensor",
                                      "test_autograd_registration"))


@pytest.mark.parametrize("device", [GPU])
def test_torch_compile(device):
    """torch.compile of a function around the kernel op: one node, no graph break."""
    kw = scan_inputs(b=2, L=256, D=32, N=16, dtype=torch.float32, requires_grad=False)
    kw = {k: None if v is None else v.to(device).requires_grad_(True) for k, v in kw.items()}

    def f(**a):
        disc = Asymmetric("mamba")
        return K.selective_scan_triton(**a, delta_softplus=True, scheme=disc.scheme_id,
                                       coupling=disc.coupling_id).square().mean()

    loss = torch.compile(f, fullgraph=True)(**kw)
    loss.backward()
    ref = f(**{k: None if v is None else v.detach() for k, v in kw.items()})
    print("\ncompiled vs eager:", float(loss), float(ref))
    assert torch.allclose(loss, ref, rtol=1e-5)


# ------------------------------------------------------------------ the decoding step


@pytest.mark.parametrize("disc", ALL_DISCRETIZATIONS, ids=DISC_IDS)
@pytest.mark.parametrize("grouped", [False, True], ids=["G1", "G2"])
@pytest.mark.parametrize("device", DEVICES)
def test_state_update(device, disc, grouped):
    """The decode kernel vs the reference step; the state is updated in place."""
    gen = torch.Generator().manual_seed(6)
    b, D, N = 3, 10, 5
    r = lambda *s: torch.randn(*s, dtype=torch.float64, generator=gen)
    Bs = (b, 2, N) if grouped else (b, N)
    kw = dict(x=r(b, D), dt=r(b, D) * 0.5, A=-(torch.rand(D, N, dtype=torch.float64,
                                                          generator=gen) + 0.1),
              B=r(*Bs), C=r(*Bs), D=r(D), z=r(b, D), dt_bias=r(D) * 0.3,
              integration_timesteps=torch.rand(b, dtype=torch.float64, generator=gen) * 3,
              rate=torch.rand(D, dtype=torch.float64, generator=gen) + 0.2)
    kw = {k: v.to(device) for k, v in kw.items()}
    state = r(b, D, N).to(device)
    s_ref = state.clone()
    y_ref = selective_state_update_ref(s_ref, **kw, dt_softplus=True, discretization=disc)
    s = state.float()
    y = K.selective_state_update_triton(s, **{k: v.float() for k, v in kw.items()},
                                        dt_softplus=True, scheme=disc.scheme_id,
                                        coupling=disc.coupling_id)
    errs = (rel_err(y, y_ref), rel_err(s, s_ref))
    print(f"{disc!r} step errors (y, state): {errs[0]:.1e} {errs[1]:.1e}")
    assert y.dtype == torch.float32 and max(errs) <= 1e-4


@pytest.mark.parametrize("device", DEVICES)
def test_step_matches_scan(device):
    """Decoding step by step gives the scan's outputs and last state (same formulas)."""
    gen = torch.Generator().manual_seed(7)
    disc = Asymmetric("bilinear")
    kw = scan_inputs(b=2, L=6, D=6, N=4, dtype=torch.float32, generator=gen)
    kw = {k: None if v is None else v.to(device) for k, v in kw.items()}
    y, h = selective_scan(**kw, delta_softplus=True, discretization=disc, return_last_state=True,
                          backend="triton")
    s = kw["initial_state"].clone()
    ys = []
    for l in range(6):
        ys.append(K.selective_state_update_triton(
            s, kw["u"][:, l], kw["delta"][:, l], kw["A"], kw["B"][:, l], kw["C"][:, l],
            D=kw["D"], z=kw["z"][:, l], dt_bias=kw["delta_bias"], dt_softplus=True,
            integration_timesteps=kw["integration_timesteps"][:, l], rate=kw["rate"],
            scheme=disc.scheme_id, coupling=disc.coupling_id))
    err = max(rel_err(torch.stack(ys, 1), y), rel_err(s, h))
    print("step vs scan max error", err)
    assert err <= 1e-5


# ------------------------------------------------------------------ the Mamba block and backbone


@pytest.mark.parametrize("timesteps", [False, True], ids=["standard", "event"])
@pytest.mark.parametrize("device", DEVICES)
def test_mamba_block_gradients_in_place(monkeypatch, device, timesteps):
    """A Mamba block on the Triton path as separate pieces (``fused=False``) against the same
    block on the torch path: outputs and every parameter's gradient, with ∂x and ∂z written
    straight into one ∂xz buffer (eventssm.shared_grad): concatenating there would raise. (The
    fused block writes its ∂xz buffer itself: tests/test_fused_block.py.)"""
    import eventssm.shared_grad as sg
    from eventssm import Mamba

    torch.manual_seed(0)
    disc = Asymmetric("zoh") if timesteps else Standard("mamba")
    tri = Mamba(8, d_state=4, d_conv=4, expand=2, discretization=disc, backend="triton",
                fused=False)
    ref = Mamba(8, d_state=4, d_conv=4, expand=2, discretization=disc, backend="torch")
    ref.load_state_dict(tri.state_dict())
    tri, ref = tri.to(device), ref.to(device)
    h = torch.randn(2, 11, 8).to(device)
    tau = (torch.rand(2, 11) * 2).to(device) if timesteps else None
    dy = torch.randn(2, 11, 8).to(device)

    def no_cat(*a, **k):
        raise AssertionError("∂xz was concatenated instead of written in place")

    y_ref = ref(h, tau)
    (y_ref * dy).sum().backward()
    monkeypatch.setattr(sg.torch, "cat", no_cat)
    y = tri(h, tau)
    (y * dy).sum().backward()
    monkeypatch.undo()
    errs = {"y": rel_err(y, y_ref)}
    errs.update({n: rel_err(p.grad, dict(ref.named_parameters())[n].grad)
                 for n, p in tri.named_parameters()})
    print("\ntriton vs torch Mamba block:", {k: f"{v:.1e}" for k, v in errs.items()})
    assert max(errs.values()) <= 1e-4


@pytest.mark.parametrize("device, disc", device_cases(gpu={
    "standard-mamba": Standard("mamba"), "asym-zoh": Asymmetric("zoh"),
    "scaled-bilinear": Scaled("bilinear")}))
def test_mamba_forward_backward_step(device, disc):
    """The Mamba block with the kernels (fp32) vs the same weights on the PyTorch path in
    float64: outputs, every parameter gradient, and step-by-step decoding (decode kernel) vs the
    full forward."""
    from eventssm import Mamba
    from eventssm.scan import triton_available

    assert triton_available()[0], triton_available()[1]  # else both sides are the torch path
    torch.manual_seed(0)
    fast = Mamba(64, d_state=16, discretization=disc).to(device)
    slow = Mamba(64, d_state=16, discretization=disc, use_fast_path=False).to(device)
    slow.load_state_dict(fast.state_dict())
    slow = slow.double()
    B, L = 2, 300
    x = torch.randn(B, L, 64, device=device)
    tau = torch.rand(B, L, device=device) * 2
    y_fast = fast(x, integration_timesteps=tau)
    y_slow = slow(x.double(), integration_timesteps=tau.double())
    g = torch.randn_like(y_fast)
    (y_fast * g).sum().backward()
    (y_slow * g.double()).sum().backward()
    errs = {"y": rel_err(y_fast, y_slow)}
    for (name, p_fast), (_, p_slow) in zip(fast.named_parameters(), slow.named_parameters()):
        if p_slow.grad is not None or p_fast.grad is not None:
            errs[name] = rel_err(p_fast.grad, p_slow.grad)
    cache = fast.allocate_inference_cache(B, L)
    steps = [fast.step(x[:, l:l + 1], cache, integration_timesteps=tau[:, l])[0]
             for l in range(16)]
    errs["step"] = rel_err(torch.cat(steps, 1), y_fast[:, :16])
    print(f"\nMamba {disc!r} kernels vs torch path:", {k: f"{v:.1e}" for k, v in errs.items()})
    assert max(errs.values()) <= 1e-4


@pytest.mark.parametrize("device", [GPU])
def test_backbone_cuda_graphs(device):
    """A training step of an event-mode backbone under torch.compile(mode="reduce-overhead")
    (CUDA graphs: no host syncs allowed, so check_values=False) gives the eager losses and
    gradients: the kernels allocate and launch nothing a captured graph cannot replay."""
    from eventssm import MambaBackbone

    torch.manual_seed(0)
    eager = MambaBackbone(32, n_layers=2, discretization=Asymmetric("mamba")).to(device)
    graphed = MambaBackbone(32, n_layers=2, discretization=Asymmetric("mamba")).to(device)
    graphed.load_state_dict(eager.state_dict())
    step = torch.compile(graphed, mode="reduce-overhead")
    x = torch.randn(4, 64, 32, device=device)
    tau = torch.rand(4, 64, device=device)
    # a loss with signal for every parameter (the mean square of a normed output is ~1 whatever
    # the inner weights: their gradients would be round-off)
    target = torch.randn(4, 64, 32, device=device)
    losses = []
    for i in range(4):  # the first calls warm up and record, the later ones replay the graphs
        # gradients set to None each step, as optimizers do: a replay overwrites the graph's
        # outputs, so accumulating into last step's (graph-owned) .grad would read freed memory
        for p in (*eager.parameters(), *graphed.parameters()):
            p.grad = None
        xi, ti = x + 0.1 * i, tau * (1 + i)
        ref = (eager(xi, ti) - target).square().mean()
        ref.backward()
        got = (step(xi, ti, check_values=False) - target).square().mean()
        got.backward()
        losses.append((float(got), float(ref)))
    errs = {n: rel_err(a.grad, b.grad) for (n, a), b in
            zip(graphed.named_parameters(), eager.parameters())}
    g_err = max(errs.values())
    print("\nreduce-overhead vs eager losses:", losses, "grad error", g_err,
          "worst", max(errs, key=errs.get))
    assert all(abs(a - b) <= 1e-5 * abs(b) for a, b in losses)
    assert g_err <= 1e-4


# ------------------------------------------------------------------ the kernels' helpers, elementwise


@triton.jit
def _zoh_probe(t_ptr, dtB_ptr, rA_ptr, k_ptr, dk_ptr, n, BLOCK: tl.constexpr):
    """The zoh helpers evaluated elementwise."""
    o = tl.arange(0, BLOCK)
    m = o < n
    t = tl.load(t_ptr + o, mask=m, other=0.0)
    dtB = tl.load(dtB_ptr + o, mask=m, other=0.0)
    rA = tl.load(rA_ptr + o, mask=m, other=1.0)
    e = utils.exp2_fast(t)
    k = utils.zoh_k(t, e, dtB, rA)
    tl.store(k_ptr + o, k, mask=m)
    tl.store(dk_ptr + o, utils.zoh_dk_dA(t, e, dtB, k, rA), mask=m)


def zoh_truth(x: torch.Tensor, A: torch.Tensor):
    """float64 k = expm1(x)/A and ∂k/∂A = (x·e^x − expm1(x))/A² (series where that cancels)."""
    k = torch.expm1(x) / A
    big = (x * torch.exp(x) - torch.expm1(x)) / A ** 2
    dtB = x / A
    psi = sum(x ** j * (j + 1) / torch.exp(torch.lgamma(torch.tensor(j + 3.0, dtype=x.dtype)))
              for j in range(14))
    return k, torch.where(x.abs() < 1e-2, dtB ** 2 * psi, big)


# Per device: the x = dtB·A probed and the bounds on the relative errors of (k, ∂k/∂A). The
# interpreter's exp2 is exact to float32 rounding, so its bound is the series truncation and the
# cancellation left in the other branch; on the GPU MUFU.EX2 adds ~2^-22 (predicted bounds ~1.5e-6
# and ~3e-6: eventssm/kernels/utils.py).
ZOH = {
    "cpu": dict(x=[0.0, -1e-9, -1e-6, -1e-4, -1e-2, -0.1, -0.2499, -0.2501, -0.3, -0.4999, -0.5001,
                   -0.7, -1.0, -3.0, -10.0, -30.0, -100.0, 1e-5, 0.2, 0.26, 0.6],
                bounds=(2e-6, 3e-6)),
    # -|x| over 1e-9 .. 100, dense around the thresholds 1/4 and 1/2
    "cuda": dict(x=torch.cat([-torch.logspace(-9, 2, 2000, dtype=torch.float64),
                              -torch.linspace(0.2, 0.6, 2000, dtype=torch.float64)]).tolist(),
                 bounds=(3e-6, 6e-6)),
}


@pytest.mark.parametrize("A", [-1.0, -20.0, -1e-3])
@pytest.mark.parametrize("device", DEVICES)
def test_zoh_coefficients_around_the_thresholds(device, A):
    """zoh_k and zoh_dk_dA, one evaluation per element, against float64 at x = dtB·A on both
    sides of the series thresholds (|x| = 1/4 for k, 1/2 for ∂k/∂A), at 0 and at large |x|."""
    xs, (bound_k, bound_dk) = ZOH[device]["x"], ZOH[device]["bounds"]
    x = torch.tensor(xs, dtype=torch.float64)
    A64 = torch.full_like(x, A)
    dtB = (x / A64).float()
    t = (dtB.double() * A64 * 1.4426950408889634).float()
    k = torch.empty(len(x), device=device)
    dk = torch.empty(len(x), device=device)
    _zoh_probe[(1,)](t.to(device), dtB.to(device), (1.0 / A64).float().to(device), k, dk, len(x),
                     BLOCK=triton.next_power_of_2(len(x)))
    k_ref, dk_ref = zoh_truth(dtB.double() * A64, A64)
    ek = (k.cpu().double() - k_ref).abs() / k_ref.abs().clamp(min=1e-300)
    edk = (dk.cpu().double() - dk_ref).abs() / dk_ref.abs().clamp(min=1e-300)
    if len(xs) <= 32:
        for xi, a, b in zip(xs, ek.tolist(), edk.tolist()):
            print(f"x={xi:+.4g}  k rel err {a:.1e}  dk/dA rel err {b:.1e}")
    print(f"\nA = {A}: zoh coefficient max relative errors (k, dk/dA): {ek.max():.1e} {edk.max():.1e}")
    assert ek.max() <= bound_k and edk.max() <= bound_dk


@triton.jit
def _softplus_probe(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    """The kernels' softplus (Δ = softplus(δ + bias)) evaluated elementwise."""
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = o < n
    tl.store(y_ptr + o, utils.softplus(tl.load(x_ptr + o, mask=m, other=0.0)), mask=m)


# Per device: points, block and the base of the error bound (MUFU.EX2/RCP on the GPU: ~2^-22 each).
SOFTPLUS = {"cpu": dict(n=4096, block=4096, base=3e-7), "cuda": dict(n=1 << 20, block=1024, base=6e-7)}


@pytest.mark.parametrize("device", DEVICES)
def test_softplus_relative_accuracy(device):
    """The kernels' softplus (an odd series for log1p, no logarithm: one on MUFU.LG2, whose error
    is absolute near 1, would spoil tiny Δ) against float64, relative, from δ = -60 (Δ ~ 1e-26)
    to 40 (the identity branch)."""
    n, block, base = SOFTPLUS[device]["n"], SOFTPLUS[device]["block"], SOFTPLUS[device]["base"]
    xf = torch.linspace(-60, 40, n, dtype=torch.float64).float().to(device)
    y = torch.empty_like(xf)
    _softplus_probe[(triton.cdiv(n, block),)](xf, y, n, BLOCK=block)
    err, worst = softplus_error_ratio(y, xf, base=base)
    print(f"\nsoftplus max relative error {err:.2e}; worst error / bound {worst:.2f}")
    assert worst <= 1
