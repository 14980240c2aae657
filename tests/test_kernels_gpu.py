"""Triton kernels on a CUDA GPU at real sizes vs the float64 reference (DESIGN §6).

Skipped without CUDA (and under TRITON_INTERPRET=1, which the interpreter tests use). Run on a
GPU with ``EVENTSSM_AUTOTUNE=0 pytest -m gpu tests/test_kernels_gpu.py -s`` (one kernel
configuration per specialization keeps compilation short; the benchmark autotunes).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from helpers import (  # noqa: E402
    ALL_DISCRETIZATIONS,
    DISC_IDS,
    rel_err,
    scan_inputs,
    softplus_error_ratio,
)

from eventssm import Asymmetric, Scaled, Standard, selective_scan  # noqa: E402
from eventssm.reference import selective_scan_ref  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                       reason="kernels are interpreted in this process"),
]

# The device under test; the module is skipped above when there is none.
DEV = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None

TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}
GRAD_KEYS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "integration_timesteps", "rate",
             "initial_state")


def check_scan_gpu(disc, *, b, L, D, N, G=None, dtype=torch.float32, z=True, h0=True,
                   tau_max=3.0, lengths=None, seed=0):
    dev = DEV
    gen = torch.Generator().manual_seed(seed)
    kw = scan_inputs(b=b, L=L, D=D, N=N, G=G, z=z, h0=h0, dtype=torch.float64, tau_max=tau_max,
                     generator=gen)
    # keep Δ moderate so that long sequences neither explode nor vanish
    kw["delta"] = kw["delta"] - 2.0
    cu = None
    if lengths is not None:
        for k in ("u", "delta", "z", "B", "C", "integration_timesteps"):
            kw[k] = kw[k].reshape(1, -1, *kw[k].shape[2:])
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32,
                          device=dev)
        kw["initial_state"] = torch.randn(len(lengths), D, N, dtype=torch.float64, generator=gen)
    kw = {k: None if v is None else v.to(dtype).double().to(dev) for k, v in kw.items()}
    leaf = lambda v, dt: None if v is None else v.to(dt).clone().requires_grad_(True)
    ref_in = {k: leaf(v, torch.float64) for k, v in kw.items()}
    tri_in = {k: leaf(v, dtype) for k, v in kw.items()}
    common = dict(delta_softplus=True, discretization=disc, return_last_state=True,
                  cu_seqlens=cu)
    y_ref, h_ref = selective_scan_ref(**ref_in, **common)
    y, h = selective_scan(**tri_in, **common, backend="triton")
    assert y.dtype == dtype and h.dtype == torch.float32
    dy = torch.randn(y_ref.shape, dtype=torch.float64, device=dev)
    dh = torch.randn(h_ref.shape, dtype=torch.float64, device=dev)
    ((y_ref * dy).sum() + (h_ref * dh).sum()).backward()
    ((y.double() * dy).sum() + (h.double() * dh).sum()).backward()
    errs = {"y": rel_err(y, y_ref), "last_state": rel_err(h, h_ref)}
    for k in GRAD_KEYS:
        g_ref = None if ref_in[k] is None else ref_in[k].grad
        g = None if tri_in[k] is None else tri_in[k].grad
        if g_ref is None and g is None:
            continue
        g_ref = torch.zeros_like(ref_in[k]) if g_ref is None else g_ref
        assert g is not None, f"no gradient for {k}"
        errs[f"d{k}"] = rel_err(g, g_ref)
    print(f"\n{disc!r} {dtype} B{b}-T{L}-D{D}-N{N} max errors:",
          {k: f"{v:.1e}" for k, v in errs.items()})
    for k, v in errs.items():
        assert v <= TOL[dtype], f"{k}: relative max error {v:.2e} > {TOL[dtype]:.0e}"


@pytest.mark.parametrize("disc", ALL_DISCRETIZATIONS, ids=DISC_IDS)
def test_every_discretization_gpu(disc):
    check_scan_gpu(disc, b=2, L=1000, D=48, N=16)


SIZES = {
    "B2-T8192-D64-N16-fp32-event": (Asymmetric("mamba"), dict(b=2, L=8192, D=64, N=16)),
    "B2-T8192-D64-N16-bf16-event": (Asymmetric("zoh"),
                                    dict(b=2, L=8192, D=64, N=16, dtype=torch.bfloat16)),
    "B2-T4096-D128-N64-fp32": (Standard("mamba"), dict(b=2, L=4096, D=128, N=64)),
    "B2-T4096-D128-N64-bf16-scaled": (Scaled("mamba"),
                                      dict(b=2, L=4096, D=128, N=64, dtype=torch.bfloat16)),
    "B2-T2048-D96-N16-G3-bf16": (Standard("mamba"),
                                 dict(b=2, L=2048, D=96, N=16, G=3, dtype=torch.bfloat16)),
    "B1-T3000-D64-N16-packed": (Scaled("zoh"),
                                dict(b=3, L=1000, D=64, N=16, lengths=[1, 999, 1700, 300])),
}


@pytest.mark.parametrize("case", list(SIZES), ids=list(SIZES))
def test_real_sizes_gpu(case):
    disc, kw = SIZES[case]
    check_scan_gpu(disc, **kw)


def _mamba_pair(disc):
    """The block on the kernels (fp32) and the same weights on the PyTorch path in float64."""
    from eventssm import Mamba

    torch.manual_seed(0)
    fast = Mamba(64, d_state=16, discretization=disc).to(DEV)
    slow = Mamba(64, d_state=16, discretization=disc, use_fast_path=False).to(DEV)
    slow.load_state_dict(fast.state_dict())
    return fast, slow.double()


@pytest.mark.parametrize("disc", [Standard("mamba"), Asymmetric("zoh"), Scaled("bilinear")],
                         ids=["standard-mamba", "asym-zoh", "scaled-bilinear"])
def test_mamba_forward_backward_step_gpu(disc):
    """The Mamba block with the kernels vs the PyTorch path in float64: outputs, every
    parameter gradient, and step-by-step decoding (decode kernel) vs the full forward."""
    from eventssm.scan import triton_available

    assert triton_available()[0], triton_available()[1]  # else both sides are the torch path
    fast, slow = _mamba_pair(disc)
    B, L = 2, 300
    x = torch.randn(B, L, 64, device=DEV)
    tau = torch.rand(B, L, device=DEV) * 2
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


def test_torch_compile_gpu():
    """torch.compile of a function around the kernel op: one node, no graph break."""
    from eventssm.kernels import selective_scan_triton

    kw = scan_inputs(b=2, L=256, D=32, N=16, dtype=torch.float32, requires_grad=False)
    kw = {k: None if v is None else v.to(DEV).requires_grad_(True) for k, v in kw.items()}

    def f(**a):
        disc = Asymmetric("mamba")
        return selective_scan_triton(**a, delta_softplus=True, scheme=disc.scheme_id,
                                     coupling=disc.coupling_id).square().mean()

    loss = torch.compile(f, fullgraph=True)(**kw)
    loss.backward()
    ref = f(**{k: None if v is None else v.detach() for k, v in kw.items()})
    print("\ncompiled vs eager:", float(loss), float(ref))
    assert torch.allclose(loss, ref, rtol=1e-5)


def test_backbone_cuda_graphs_gpu():
    """A training step of an event-mode backbone under torch.compile(mode="reduce-overhead")
    (CUDA graphs: no host syncs allowed, so check_values=False) gives the eager losses and
    gradients: the kernels allocate and launch nothing a captured graph cannot replay."""
    from eventssm import MambaBackbone

    torch.manual_seed(0)
    eager = MambaBackbone(32, n_layers=2, discretization=Asymmetric("mamba")).to(DEV)
    graphed = MambaBackbone(32, n_layers=2, discretization=Asymmetric("mamba")).to(DEV)
    graphed.load_state_dict(eager.state_dict())
    step = torch.compile(graphed, mode="reduce-overhead")
    x = torch.randn(4, 64, 32, device=DEV)
    tau = torch.rand(4, 64, device=DEV)
    # a loss with signal for every parameter (the mean square of a normed output is ~1 whatever
    # the inner weights: their gradients would be round-off)
    target = torch.randn(4, 64, 32, device=DEV)
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


@pytest.mark.parametrize("disc", [Standard("zoh"), Asymmetric("zoh"), Standard("bilinear"),
                                  Scaled("bilinear")],
                         ids=["Standard-zoh", "Asymmetric-zoh", "Standard-bilinear",
                              "Scaled-bilinear"])
def test_x_from_tiny_to_large_gpu(disc):
    """x = Δ·A from ~1e-9 through the zoh series thresholds to ~-200 (Δ = softplus(δ), δ in
    [-14, 8]; A log-uniform in [-30, -1e-3]) with MUFU.EX2/RCP: against the float64 reference.

    With ``Scaled``, x = Δ·τ·A reaches ~-2e5, where bilinear's Ā = (1 + x/2)/(1 - x/2) sits
    within 1e-5 of -1: a state that flips sign and barely decays, whose last state and its
    gradients are ill-conditioned in float32 whatever computes them. So the bound is 1e-4 or
    4× the error of the same reference formulas evaluated in float32, whichever is larger."""
    gen = torch.Generator().manual_seed(21)
    b, L, D, N = 2, 512, 64, 16
    kw = scan_inputs(b=b, L=L, D=D, N=N, dtype=torch.float64, tau_max=1e3, generator=gen)
    kw["delta"] = torch.rand(b, L, D, dtype=torch.float64, generator=gen) * 22 - 14
    kw["delta_bias"] = torch.zeros(D, dtype=torch.float64)
    lo, hi = torch.log(torch.tensor(1e-3)), torch.log(torch.tensor(30.0))
    kw["A"] = -torch.exp(torch.rand(D, N, dtype=torch.float64, generator=gen) * (hi - lo) + lo)
    kw = {k: None if v is None else v.float().double().to(DEV) for k, v in kw.items()}
    ref_in = {k: None if v is None else v.clone().requires_grad_(True) for k, v in kw.items()}
    tri_in = {k: None if v is None else v.float().requires_grad_(True) for k, v in kw.items()}
    common = dict(delta_softplus=True, discretization=disc, return_last_state=True)
    y_ref, h_ref = selective_scan_ref(**ref_in, **common)
    y, h = selective_scan(**tri_in, **common, backend="triton")
    dy = torch.randn(y_ref.shape, dtype=torch.float64, device=DEV)
    ((y_ref * dy).sum() + h_ref.sum()).backward()
    ((y.double() * dy).sum() + h.double().sum()).backward()
    errs = {"y": rel_err(y, y_ref), "last": rel_err(h, h_ref)}
    for k in GRAD_KEYS:
        if tri_in[k] is not None and ref_in[k].grad is not None:
            errs[f"d{k}"] = rel_err(tri_in[k].grad, ref_in[k].grad)
    # the same formulas in float32 (torch): how far float32 itself gets from float64 here
    f32_in = {k: None if v is None else v.float().requires_grad_(True) for k, v in kw.items()}
    y32, h32 = selective_scan_ref(**f32_in, **common)
    ((y32.double() * dy).sum() + h32.double().sum()).backward()
    f32_errs = {"y": rel_err(y32, y_ref), "last": rel_err(h32, h_ref)}
    for k in GRAD_KEYS:
        if f32_in[k] is not None and ref_in[k].grad is not None:
            f32_errs[f"d{k}"] = rel_err(f32_in[k].grad, ref_in[k].grad)
    print(f"\n{disc!r} x range, triton:", {k: f"{v:.1e}" for k, v in errs.items()})
    print(f"{disc!r} x range, float32 reference:", {k: f"{v:.1e}" for k, v in f32_errs.items()})
    bad = {k: (v, f32_errs[k]) for k, v in errs.items() if v > max(1e-4, 4 * f32_errs[k])}
    assert not bad, f"errors beyond max(1e-4, 4 x float32 reference): {bad}"


try:  # the probe kernel below needs Triton (the tests that use it need a GPU as well)
    import triton
    import triton.language as tl

    from eventssm.kernels import utils as kutils
except ImportError:
    triton = None

if triton is not None:
    @triton.jit
    def _zoh_probe(t_ptr, dtB_ptr, rA_ptr, k_ptr, dk_ptr, n, BLOCK: tl.constexpr):
        """The zoh helpers evaluated elementwise."""
        o = tl.arange(0, BLOCK)
        m = o < n
        t = tl.load(t_ptr + o, mask=m, other=0.0)
        dtB = tl.load(dtB_ptr + o, mask=m, other=0.0)
        rA = tl.load(rA_ptr + o, mask=m, other=1.0)
        e = kutils.exp2_fast(t)
        k = kutils.zoh_k(t, e, dtB, rA)
        tl.store(k_ptr + o, k, mask=m)
        tl.store(dk_ptr + o, kutils.zoh_dk_dA(t, e, dtB, k, rA), mask=m)

    @triton.jit
    def _softplus_probe(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        """The kernels' softplus (Δ = softplus(δ + bias)) evaluated elementwise."""
        o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = o < n
        tl.store(y_ptr + o, kutils.softplus(tl.load(x_ptr + o, mask=m, other=0.0)), mask=m)


def test_softplus_relative_accuracy_gpu():
    """Δ = softplus(δ) on MUFU.EX2/RCP, relative to float64, for δ from -60 to 40: tiny Δ too
    (a logarithm on MUFU.LG2, whose error is absolute near 1, would spoil them)."""
    xf = torch.linspace(-60, 40, 1 << 20, dtype=torch.float64).float().to(DEV)
    y = torch.empty_like(xf)
    _softplus_probe[(triton.cdiv(xf.numel(), 1024),)](xf, y, xf.numel(), BLOCK=1024)
    err, worst = softplus_error_ratio(y, xf, base=6e-7)  # MUFU.EX2/RCP: ~2^-22 each
    print(f"\nsoftplus max relative error {err:.2e}; worst error / bound {worst:.2f}")
    assert worst <= 1


def test_zoh_coefficients_gpu():
    """The zoh coefficient helpers with MUFU.EX2 (relative error ~2^-22) at x on both sides of
    the series thresholds: k within 3e-6 and ∂k/∂A within 6e-6 of float64 (predicted bounds
    ~1.5e-6 and ~3e-6: eventssm/kernels/utils.py)."""
    # x = -|x| over 1e-9 .. 100, dense around the thresholds 1/4 and 1/2
    xs = torch.cat([-torch.logspace(-9, 2, 2000, dtype=torch.float64),
                    -torch.linspace(0.2, 0.6, 2000, dtype=torch.float64)])
    worst = {}
    for A in (-1.0, -20.0, -1e-3):
        A64 = torch.full_like(xs, A)
        dtB = (xs / A64).float()
        x = dtB.double() * A64
        t = (x * 1.4426950408889634).float()
        k = torch.empty(len(xs), device=DEV)
        dk = torch.empty(len(xs), device=DEV)
        _zoh_probe[(1,)](t.to(DEV), dtB.to(DEV), (1.0 / A64).float().to(DEV), k, dk, len(xs),
                    BLOCK=1 << (len(xs) - 1).bit_length())
        k_ref = torch.expm1(x) / A64
        psi = sum(x ** j * (j + 1) / torch.exp(torch.lgamma(torch.tensor(j + 3.0,
                                                                        dtype=torch.float64)))
                  for j in range(14))
        big = (x * torch.exp(x) - torch.expm1(x)) / A64 ** 2
        dk_ref = torch.where(x.abs() < 1e-2, (x / A64) ** 2 * psi, big)
        ek = ((k.cpu().double() - k_ref).abs() / k_ref.abs()).max().item()
        edk = ((dk.cpu().double() - dk_ref).abs() / dk_ref.abs()).max().item()
        worst[A] = (ek, edk)
    print("\nzoh coefficient max relative errors (k, dk/dA) per A:", worst)
    assert all(ek <= 3e-6 and edk <= 6e-6 for ek, edk in worst.values())
