"""Triton kernels on the CPU under TRITON_INTERPRET=1 vs the float64 reference (DESIGN §6).

The interpreter is chosen when a kernel is *decorated*, and setting TRITON_INTERPRET inside a
pytest process would leak into every other test module of that process (e.g. make
``backend="triton"`` accept CPU tensors), so these tests run in their own pytest invocation with
the variable set from outside: ``TRITON_INTERPRET=1 pytest -m interpret`` (``make test`` does
this). Without it the module is skipped with that instruction. Output buffers come NaN-filled
(tests/conftest.py). Shapes are tiny (L <= 128) and the backward's chunks are
short under the interpreter (16 steps, sub-chunks of 4) so that chunk and sub-chunk boundaries,
partial chunks and packed sequences are all crossed. bf16 is not tested here (the interpreter
computes it wrongly); it is in test_kernels_gpu.py.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton interpreter tests: run `TRITON_INTERPRET=1 pytest -m interpret` (make test does)",
                allow_module_level=True)
pytest.importorskip("triton")

from eventssm import Asymmetric, Scaled, Standard, selective_scan  # noqa: E402
from eventssm.reference import selective_scan_ref, selective_state_update_ref  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from helpers import (  # noqa: E402
    ALL_DISCRETIZATIONS,
    DISC_IDS,
    interpreted_kernels,
    rel_err,
    scan_inputs,
    softplus_error_ratio,
)

pytestmark = pytest.mark.interpret


K = interpreted_kernels()
config = importlib.import_module("eventssm.kernels.config")
utils = importlib.import_module("eventssm.kernels.utils")
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

TOL = {torch.float32: 1e-4, torch.float16: 5e-3}
GRAD_KEYS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "integration_timesteps", "rate",
             "initial_state")


def _pack(kw, b, lengths, D, N):
    """Reshape batch inputs to one packed row with cu_seqlens splitting it at ``lengths``."""
    for k in ("u", "delta", "z", "B", "C", "integration_timesteps"):
        if kw[k] is not None:
            kw[k] = kw[k].reshape(1, -1, *kw[k].shape[2:])
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    if kw["initial_state"] is not None:
        kw["initial_state"] = torch.randn(len(lengths), D, N, dtype=torch.float64)
    return kw, cu


def _strided_leaf(v, extra_before, extra_after):
    """A leaf with v's values that is a slice of wider rows (as z of in_proj's (b, L, 2D) output
    or B/C of x_proj's): v's last two dimensions flattened into columns of a wider tensor."""
    b, L = v.shape[:2]
    flat = v.detach().reshape(b, L, -1)
    wide = torch.full((b, L, extra_before + flat.shape[-1] + extra_after), 7.0, dtype=v.dtype)
    wide[..., extra_before:extra_before + flat.shape[-1]] = flat
    out = wide[..., extra_before:extra_before + flat.shape[-1]].unflatten(-1, v.shape[2:])
    assert not out.is_contiguous() or L == 1
    return out.detach().requires_grad_(True)


def check_scan(disc, *, b=2, L=37, D=6, N=4, G=None, z=True, h0=True, dtype=torch.float32,
               tau_max=5.0, lengths=None, tau_grad=True, seed=0, strided=False):
    """Forward, last state and every gradient of the Triton scan vs the float64 reference.
    ``strided``: z, B and C are slices of wider rows (read in place by the kernels)."""
    gen = torch.Generator().manual_seed(seed)
    kw = scan_inputs(b=b, L=L, D=D, N=N, G=G, z=z, h0=h0, dtype=torch.float64, tau_max=tau_max,
                     generator=gen)
    cu = None
    if lengths is not None:
        assert sum(lengths) == b * L
        kw, cu = _pack(kw, b, lengths, D, N)
    # The reference sees the same (rounded) numbers as the kernel, in float64.
    kw = {k: None if v is None else v.to(dtype).double() for k, v in kw.items()}
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
    dy = torch.randn(y_ref.shape, dtype=torch.float64, generator=gen)
    dh = torch.randn(h_ref.shape, dtype=torch.float64, generator=gen)
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
    print(f"{disc!r} {dtype} max errors:", {k: f"{v:.1e}" for k, v in errs.items()})
    for k, v in errs.items():
        assert v <= TOL[dtype], f"{k}: relative max error {v:.2e} > {TOL[dtype]:.0e}"


@pytest.mark.parametrize("disc", ALL_DISCRETIZATIONS, ids=DISC_IDS)
def test_scan_every_discretization(disc):
    check_scan(disc)


CASES = {
    # id: (discretization, kwargs)
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


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_scan_cases(case):
    disc, kw = CASES[case]
    check_scan(disc, **kw)


def _x_range_inputs(seed, tau_max):
    """Scan inputs whose x = Δ·A spans the zoh/bilinear formulas' regimes: Δ = softplus(δ + b)
    from ~1e-6 to ~8 (δ uniform in [-14, 8]) and A log-uniform in [-30, -1e-3], so that x runs
    from ~-1e-9 through both series thresholds (|x| = 1/4, 1/2) to ~-200."""
    gen = torch.Generator().manual_seed(seed)
    kw = scan_inputs(b=2, L=33, D=8, N=4, dtype=torch.float64, tau_max=tau_max, generator=gen)
    kw["delta"] = torch.rand(kw["delta"].shape, dtype=torch.float64, generator=gen) * 22 - 14
    kw["delta_bias"] = torch.zeros_like(kw["delta_bias"])
    kw["A"] = -torch.exp(torch.rand(kw["A"].shape, dtype=torch.float64, generator=gen)
                         * (torch.log(torch.tensor(30.0)) - torch.log(torch.tensor(1e-3)))
                         + torch.log(torch.tensor(1e-3)))
    return kw


@pytest.mark.parametrize("disc", [Standard("zoh"), Asymmetric("zoh"), Scaled("zoh"),
                                  Standard("bilinear"), Asymmetric("bilinear")],
                         ids=["Standard-zoh", "Asymmetric-zoh", "Scaled-zoh", "Standard-bilinear",
                              "Asymmetric-bilinear"])
def test_scan_x_from_tiny_to_large(disc):
    """x = dtB·A from ~0 (Δ → 0 or A → 0: k → dtB) to large |x| (k → -1/A), and τ up to 1e3 in
    event mode: every output and gradient against the float64 reference."""
    kw = _x_range_inputs(11, 1e3)
    common = dict(delta_softplus=True, discretization=disc, return_last_state=True)
    ref_in = {k: None if v is None else v.clone().requires_grad_(True) for k, v in kw.items()}
    tri_in = {k: None if v is None else v.float().requires_grad_(True) for k, v in kw.items()}
    # the reference sees the float32-rounded numbers
    ref_in = {k: None if v is None else v.float().double().detach().requires_grad_(True)
              for k, v in ref_in.items()}
    y_ref, h_ref = selective_scan_ref(**ref_in, **common)
    y, h = selective_scan(**tri_in, **common, backend="triton")
    gen = torch.Generator().manual_seed(12)
    dy = torch.randn(y_ref.shape, dtype=torch.float64, generator=gen)
    dh = torch.randn(h_ref.shape, dtype=torch.float64, generator=gen)
    ((y_ref * dy).sum() + (h_ref * dh).sum()).backward()
    ((y.double() * dy).sum() + (h.double() * dh).sum()).backward()
    errs = {"y": rel_err(y, y_ref), "last": rel_err(h, h_ref)}
    for k in GRAD_KEYS:
        if tri_in[k] is not None and ref_in[k].grad is not None:
            errs[f"d{k}"] = rel_err(tri_in[k].grad, ref_in[k].grad)
    print(disc, {k: f"{v:.1e}" for k, v in errs.items()})
    assert max(errs.values()) <= 1e-4


@triton.jit
def _zoh_probe(t_ptr, dtB_ptr, rA_ptr, k_ptr, dk_ptr, n, BLOCK: tl.constexpr):
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
              for j in range(12))
    return k, torch.where(x.abs() < 1e-2, dtB ** 2 * psi, big)


ZOH_X = [0.0, -1e-9, -1e-6, -1e-4, -1e-2, -0.1, -0.2499, -0.2501, -0.3, -0.4999, -0.5001, -0.7,
         -1.0, -3.0, -10.0, -30.0, -100.0, 1e-5, 0.2, 0.26, 0.6]


@pytest.mark.parametrize("A", [-1.0, -20.0, -1e-3])
def test_zoh_coefficients_around_the_thresholds(A):
    """zoh_k and zoh_dk_dA, one evaluation per element, against float64 at x = dtB·A on both
    sides of the series thresholds (|x| = 1/4 for k, 1/2 for ∂k/∂A), at 0 and at large |x|. The
    interpreter's exp2 is exact to float32 rounding, so this bounds the series truncation and
    the cancellation left in the other branch (on the GPU MUFU.EX2 adds ~2^-22: see
    test_kernels_gpu.py)."""
    x = torch.tensor(ZOH_X, dtype=torch.float64)
    A64 = torch.full_like(x, A)
    dtB = (x / A64).float()
    t = (dtB.double() * A64 * 1.4426950408889634).float()
    k = torch.empty(len(x))
    dk = torch.empty(len(x))
    _zoh_probe[(1,)](t, dtB, (1.0 / A64).float(), k, dk, len(x), BLOCK=32)
    k_ref, dk_ref = zoh_truth(dtB.double() * A64, A64)
    ek = ((k.double() - k_ref).abs() / k_ref.abs().clamp(min=1e-300)).tolist()
    edk = ((dk.double() - dk_ref).abs() / dk_ref.abs().clamp(min=1e-300)).tolist()
    for xi, a, b in zip(ZOH_X, ek, edk):
        print(f"x={xi:+.4g}  k rel err {a:.1e}  dk/dA rel err {b:.1e}")
    assert max(ek) <= 2e-6 and max(edk) <= 3e-6


def test_strided_inputs_are_read_in_place(monkeypatch):
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
    xz = torch.randn(b, L, 2 * D)
    x_dbl = torch.randn(b, L, 3 + 2 * N)
    z, Bm, Cm = xz[..., D:], x_dbl[..., 3:3 + N], x_dbl[..., 3 + N:]
    u, delta = torch.randn(b, L, D), torch.randn(b, L, D)
    A = -torch.rand(D, N) - 0.5
    y = selective_scan(u, delta, A, Bm, Cm, z=z, delta_softplus=True, backend="triton")
    assert seen["z"].data_ptr() == z.data_ptr() and seen["z"].stride() == z.stride()
    assert seen["B"].data_ptr() == Bm.data_ptr() and seen["C"].data_ptr() == Cm.data_ptr()
    ref = selective_scan_ref(u.double(), delta.double(), A.double(), Bm.double(), Cm.double(),
                             z=z.double(), delta_softplus=True)
    assert rel_err(y, ref) <= 1e-5
    # a layout the kernels cannot read in place (B and C with different strides) is copied
    B2 = torch.randn(b, L, 2 * N)[..., :N]
    selective_scan(u, delta, A, B2, Cm, z=z, delta_softplus=True, backend="triton")
    assert seen["B"].is_contiguous() and seen["C"].is_contiguous()


def test_dz_and_dx_written_into_one_buffer():
    """The gate's ∂z (scan, ``dz_out``) and the conv input's ∂x (conv, ``dx_out``) land in the two
    halves of one (b, L, 2D) buffer, the gradient of in_proj's output xz, with no concatenation:
    equal to the gradients autograd assembles from the default path."""
    from eventssm.kernels import causal_conv1d
    from eventssm.kernels.constants import COUPLING_STANDARD as STANDARD
    from eventssm.kernels.constants import SCHEME_ZOH as ZOH

    b, L, D, N = 2, 19, 6, 4
    gen = torch.Generator().manual_seed(9)
    xz0 = torch.randn(b, L, 2 * D, generator=gen)
    w, cb = torch.randn(D, 4, generator=gen) * 0.5, torch.randn(D, generator=gen)
    A = -torch.rand(D, N, generator=gen) - 0.5
    Bm, Cm = torch.randn(b, L, N, generator=gen), torch.randn(b, L, N, generator=gen)
    delta = torch.randn(b, L, D, generator=gen)
    dy = torch.randn(b, L, D, generator=gen)

    def run(buffered):
        xz = xz0.clone().requires_grad_(True)
        buf = torch.full((b, L, 2 * D), 5.0)
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


@pytest.mark.parametrize("distance", [0, 64])
def test_scan_prefetch_distance(distance):
    """Both kernels without L2 prefetch (PF_DIST = 0 compiles the prefetches out) and with a
    distance past the sequence's end (every prefetch masked off): same results."""
    with config.override(prefetch=distance):
        check_scan(Asymmetric("mamba"), L=41, D=32, N=4)


def test_scan_without_grad_saves_nothing_and_matches():
    gen = torch.Generator().manual_seed(3)
    kw = scan_inputs(b=2, L=19, D=6, N=4, dtype=torch.float32, generator=gen)
    ref = selective_scan_ref(**{k: None if v is None else v.double() for k, v in kw.items()},
                             delta_softplus=True, discretization=Scaled("zoh"))
    with torch.no_grad():
        y = selective_scan(**kw, delta_softplus=True, discretization=Scaled("zoh"),
                           backend="triton")
    err = rel_err(y, ref)
    print("no-grad forward max error", err)
    assert err <= 1e-4


def test_scan_last_state_only_gradient():
    """A loss of the last state alone: the cotangent enters at the end of each sequence."""
    gen = torch.Generator().manual_seed(4)
    kw = scan_inputs(b=2, L=23, D=6, N=4, dtype=torch.float64, generator=gen)
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


def test_opcheck_custom_op():
    """Schema, fake (meta) kernel and autograd registration of the custom op are consistent."""
    gen = torch.Generator().manual_seed(5)
    kw = scan_inputs(b=2, L=11, D=4, N=4, dtype=torch.float32, requires_grad=True, generator=gen)
    args = (kw["u"], kw["delta"], kw["A"], kw["B"][:, :, None], kw["C"][:, :, None], kw["D"],
            kw["z"], kw["delta_bias"], kw["integration_timesteps"], kw["rate"],
            kw["initial_state"], None, True, 1, 1, True)
    torch.library.opcheck(torch.ops.eventssm.selective_scan_fwd.default, args,
                          test_utils=("test_schema", "test_faketensor",
                                      "test_autograd_registration"))


@pytest.mark.parametrize("disc", ALL_DISCRETIZATIONS, ids=DISC_IDS)
@pytest.mark.parametrize("grouped", [False, True], ids=["G1", "G2"])
def test_state_update(disc, grouped):
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
    state = r(b, D, N)
    s_ref = state.clone()
    y_ref = selective_state_update_ref(s_ref, **kw, dt_softplus=True, discretization=disc)
    s = state.float()
    y = K.selective_state_update_triton(s, **{k: v.float() for k, v in kw.items()},
                                        dt_softplus=True, scheme=disc.scheme_id,
                                        coupling=disc.coupling_id)
    errs = (rel_err(y, y_ref), rel_err(s, s_ref))
    print(f"{disc!r} step errors (y, state): {errs[0]:.1e} {errs[1]:.1e}")
    assert y.dtype == torch.float32 and max(errs) <= 1e-4


def test_step_matches_scan():
    """Decoding step by step gives the scan's outputs and last state (same formulas)."""
    gen = torch.Generator().manual_seed(7)
    disc = Asymmetric("bilinear")
    kw = scan_inputs(b=2, L=6, D=6, N=4, dtype=torch.float32, generator=gen)
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


@pytest.mark.parametrize("timesteps", [False, True], ids=["standard", "event"])
def test_mamba_block_gradients_in_place(monkeypatch, timesteps):
    """A Mamba block on the Triton path (kernels interpreted) against the same block on the torch
    path: outputs and every parameter's gradient, with ∂x and ∂z written straight into one ∂xz
    buffer (eventssm.shared_grad): concatenating there would raise."""
    import eventssm.shared_grad as sg
    from eventssm import Mamba

    torch.manual_seed(0)
    disc = Asymmetric("zoh") if timesteps else Standard("mamba")
    tri = Mamba(8, d_state=4, d_conv=4, expand=2, discretization=disc, backend="triton")
    ref = Mamba(8, d_state=4, d_conv=4, expand=2, discretization=disc, backend="torch")
    ref.load_state_dict(tri.state_dict())
    h = torch.randn(2, 11, 8)
    tau = torch.rand(2, 11) * 2 if timesteps else None
    dy = torch.randn(2, 11, 8)

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


@triton.jit
def _softplus_probe(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    m = o < n
    tl.store(y_ptr + o, utils.softplus(tl.load(x_ptr + o, mask=m, other=0.0)), mask=m)


def test_softplus_series_relative_accuracy():
    """The kernels' softplus (an odd series for log1p, no logarithm) against float64, relative,
    from δ = -60 (Δ ~ 1e-26) to 40 (the identity branch)."""
    xf = torch.linspace(-60, 40, 4096, dtype=torch.float64).float()
    y = torch.empty(4096, dtype=torch.float32)
    _softplus_probe[(1,)](xf, y, 4096, BLOCK=4096)
    err, worst = softplus_error_ratio(y, xf, base=3e-7)
    print(f"\nsoftplus max relative error {err:.2e}; worst error / bound {worst:.2f}")
    assert worst <= 1
