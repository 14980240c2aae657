"""The chunked CPU path (``backend="torch"``) against the float64 reference loop.

Every comparison feeds both paths the same tensors (rounded to the tested dtype first), runs the
reference in float64 and checks outputs, the last state and the gradient of every input under
random cotangents, with the max-norm relative error printed before the assert.
"""

from __future__ import annotations

import pytest
import torch

from eventssm import Additive, Asymmetric, Scaled, Standard, selective_scan
from eventssm.chunked import selective_scan_chunked
from eventssm.reference import selective_scan_ref

SCHEMES = ("mamba", "zoh", "bilinear", "dirac")
COUPLINGS = (Standard, Asymmetric, Scaled, Additive)
TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 2e-2}
FLOAT_INPUTS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "integration_timesteps",
                "rate", "initial_state")


def make_inputs(b=2, L=37, D=6, N=4, G=None, tau=(0.0, 2.0), z=True, skip=True, h0=True,
                n_state=None, seed=0):
    """Float64 inputs; ``tau=(lo, hi)`` draws gaps log-uniformly in [lo, hi] (lo may be 0)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    bc = (b, L, G, N) if G else (b, L, N)
    x = dict(
        u=r(b, L, D),
        delta=r(b, L, D),
        A=-torch.rand(D, N, generator=g, dtype=torch.float64) * 3 - 0.05,
        B=r(*bc),
        C=r(*bc),
        D=r(D) if skip else None,
        z=r(b, L, D) if z else None,
        delta_bias=0.5 * r(D),
        rate=torch.rand(D, generator=g, dtype=torch.float64) + 0.2,
        initial_state=r(n_state or b, D, N) if h0 else None,
    )
    if tau is not None:
        lo, hi = tau
        t = torch.exp(torch.empty(b, L, dtype=torch.float64).uniform_(
            torch.log(torch.tensor(max(lo, 1e-3))).item(), torch.log(torch.tensor(hi)).item(),
            generator=g))
        if lo == 0:
            t[torch.rand(b, L, generator=g) < 0.2] = 0.0  # exact zero gaps
        x["integration_timesteps"] = t
    return {k: v for k, v in x.items() if v is not None}


def run(fn, inputs, dtype, cot_seed=1, **kw):
    """y, last state and the gradient of every float input under random cotangents."""
    leaves = {k: v.to(dtype).detach().requires_grad_() for k, v in inputs.items()}
    if fn is selective_scan_ref:  # the oracle: same (rounded) inputs, float64 arithmetic
        leaves = {k: v.detach().to(torch.float64).requires_grad_() for k, v in leaves.items()}
        kw.pop("chunk_size", None)
    y, h = fn(**leaves, return_last_state=True, **kw)
    g = torch.Generator().manual_seed(cot_seed)
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    gh = torch.randn(h.shape, generator=g, dtype=torch.float64)
    loss = (y.double() * gy).sum() + (h.double() * gh).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True,
                                materialize_grads=True)
    out = {"y": y, "h_last": h}
    out.update({f"d{k}": gr for k, gr in zip(leaves, grads)})
    return out


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() if b.numel() else 0.0


def check(inputs, dtype=torch.float32, tol=None, **kw):
    ref = run(selective_scan_ref, inputs, dtype, **kw)
    got = run(selective_scan_chunked, inputs, dtype, **kw)
    errs = {k: rel_err(got[k], ref[k]) for k in ref}
    print(" ".join(f"{k}={e:.1e}" for k, e in errs.items()))
    assert got["y"].dtype == dtype
    for k in ref:
        assert got[k].shape == ref[k].shape, k
        assert torch.isfinite(got[k]).all(), k
    tol = TOL[dtype] if tol is None else tol
    bad = {k: e for k, e in errs.items() if not e <= tol}
    assert not bad, f"relative error above {tol}: {bad}"
    return errs


@pytest.mark.parametrize("chunk", [8, 20], ids=["T8", "T20"])
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("coupling", COUPLINGS, ids=lambda c: c.__name__)
def test_every_scheme_and_coupling(scheme, coupling, chunk):
    """z, D, delta_bias + softplus, τ, rate, h0, last state; L = 37 over chunks of 8 or 20."""
    check(make_inputs(), discretization=coupling(scheme=scheme), delta_softplus=True,
          chunk_size=chunk)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("coupling", (Asymmetric, Scaled, Additive), ids=lambda c: c.__name__)
def test_timesteps_from_zero_to_1e4(scheme, coupling):
    """Gaps spanning 0 (exactly) to 1e4: Ā underflows to 0 (exp) or nears -1 (bilinear)."""
    x = make_inputs(b=2, L=41, tau=(0.0, 1e4), seed=3)
    x["integration_timesteps"][0, :3] = torch.tensor([0.0, 1e4, 0.0], dtype=torch.float64)
    check(x, discretization=coupling(scheme=scheme), delta_softplus=True, chunk_size=16)


@pytest.mark.parametrize("L,chunk", [(1, None), (5, None), (13, 64), (16, 16), (17, 16),
                                     (29, 1), (29, 3), (64, 7)],
                         ids=lambda v: str(v))
def test_lengths_and_chunk_sizes(L, chunk):
    """Odd lengths, L shorter than a chunk, L a multiple of it, chunks of one step."""
    check(make_inputs(L=L, seed=L), discretization=Asymmetric("zoh"), delta_softplus=True,
          chunk_size=chunk)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_groups_without_optional_inputs(scheme):
    """Grouped B/C (G=3 over D=6), no z, no D skip, no initial state, no softplus."""
    x = make_inputs(b=3, L=23, D=6, N=5, G=3, z=False, skip=False, h0=False, seed=7)
    x["delta"] = x["delta"].abs() * 0.5  # positive steps without softplus
    check(x, discretization=Scaled(scheme), chunk_size=8)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("h0", [True, False], ids=["h0", "zeros"])
@pytest.mark.parametrize("chunk", [8, 32])
def test_cu_seqlens_packing(scheme, h0, chunk):
    """Packed sequences (one empty, one of length 1, some crossing chunk boundaries, one
    starting a chunk), each from its own initial state."""
    cu = torch.tensor([0, 5, 5, 19, 20, 40, 45], dtype=torch.int32)
    x = make_inputs(b=1, L=45, G=2, h0=h0, n_state=6, seed=11)
    check(x, discretization=Asymmetric(scheme), delta_softplus=True, chunk_size=chunk,
          cu_seqlens=cu)


def test_packing_equals_separate_sequences():
    """Chunked path, packed == each sequence scanned alone (outputs and last states)."""
    lens = [7, 0, 12, 1]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    x = make_inputs(b=1, L=sum(lens), n_state=len(lens), seed=5)
    x = {k: v.float() for k, v in x.items()}
    kw = dict(discretization=Asymmetric("bilinear"), delta_softplus=True, chunk_size=4)
    y, h = selective_scan_chunked(**x, cu_seqlens=cu, return_last_state=True, **kw)
    for i, (bos, eos) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        one = {k: (v[:, bos:eos] if v.dim() >= 2 and v.shape[:2] == (1, sum(lens)) else v)
               for k, v in x.items()}
        one["initial_state"] = x["initial_state"][i : i + 1]
        y_i, h_i = selective_scan_chunked(**one, return_last_state=True, **kw)
        print(i, rel_err(y[:, bos:eos], y_i) if eos > bos else 0.0, rel_err(h[i], h_i[0]))
        torch.testing.assert_close(y[:, bos:eos], y_i, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(h[i : i + 1], h_i, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64],
                         ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("scheme", ["mamba", "bilinear"])
def test_input_dtypes(dtype, scheme):
    """Half inputs: fp32 arithmetic, outputs in u's dtype; float64 inputs: float64 throughout."""
    x = make_inputs(L=29, seed=13)
    got = check(x, dtype=dtype, discretization=Asymmetric(scheme), delta_softplus=True,
                chunk_size=8)
    assert got["y"] <= TOL[dtype]


def test_last_state_only_and_output_only():
    """Gradients when only h_last (or only y) reaches the loss."""
    x = {k: v.float().requires_grad_() for k, v in make_inputs(L=19, seed=2).items()}
    kw = dict(discretization=Scaled("zoh"), delta_softplus=True, return_last_state=True)
    for pick in (1, 0):
        grads = []
        for fn in (selective_scan_ref, selective_scan_chunked):
            extra = {"chunk_size": 4} if fn is selective_scan_chunked else {}
            out = fn(**x, **kw, **extra)[pick]
            grads.append(torch.autograd.grad(out.square().sum(), list(x.values()),
                                             allow_unused=True, materialize_grads=True))
        for k, a, b in zip(x, *grads):
            print(pick, k, rel_err(b, a))
            assert rel_err(b, a) <= 1e-4, (pick, k)


def test_public_op_dispatches_here():
    x = {k: v.float() for k, v in make_inputs(L=11, seed=4).items()}
    kw = dict(discretization=Asymmetric("mamba"), delta_softplus=True)
    y_torch = selective_scan(**x, backend="torch", **kw)
    y_ref = selective_scan(**x, backend="reference", **kw)
    print(rel_err(y_torch, y_ref))
    assert rel_err(y_torch, y_ref) <= 1e-5


def test_empty_sequence():
    x = {k: v.float() for k, v in make_inputs(L=0, seed=4, tau=None).items()}
    y, h = selective_scan_chunked(**x, return_last_state=True, delta_softplus=True)
    assert y.shape == (2, 0, 6)
    torch.testing.assert_close(h, x["initial_state"])


def test_no_full_size_tensor_saved_for_backward():
    """Autograd keeps chunk-boundary states, never a (b, L, D, N) tensor of the sequence."""
    b, L, D, N = 2, 256, 8, 16
    x = {k: v.float().requires_grad_() for k, v in make_inputs(b, L, D, N, seed=9).items()}
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = selective_scan_chunked(**x, discretization=Asymmetric("zoh"), delta_softplus=True,
                                   chunk_size=32)
    print("largest saved tensor", max(sizes), "vs b*L*D*N =", b * L * D * N)
    assert max(sizes) <= b * L * D * N // 8  # 256/32 boundaries of (b, D, N)
    y.sum().backward()
    assert all(v.grad is not None for v in x.values())
