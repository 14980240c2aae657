"""Causal conv1d kernels on a CUDA GPU at real sizes (and bf16) vs the float64 reference.

Skipped without CUDA and under TRITON_INTERPRET=1. Run on a GPU with
``pytest -m gpu tests/test_conv_gpu.py -s``.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from helpers import rel_err  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                       reason="kernels are interpreted in this process"),
]
pytest.importorskip("triton")

from eventssm.kernels.causal_conv1d import (  # noqa: E402
    causal_conv1d,
    causal_conv1d_ref,
    causal_conv1d_update,
    causal_conv1d_update_ref,
)

DEV = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def _check(B, L, D, K, dtype, *, h0=True, cu_seqlens=None, lengths=None, strided=True, seed=0):
    """Kernel on ``dtype`` inputs (x a slice of a (B, L, 2D) tensor, as in Mamba) vs the float64
    reference on the same rounded numbers: y, final state, ∂x, ∂w, ∂bias, ∂h0."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    r = lambda *s: torch.randn(*s, device=DEV, generator=g).to(dtype).double()
    n_seq = B if cu_seqlens is None else cu_seqlens.numel() - 1
    kw = dict(x=r(B, L, D), weight=r(D, K) / K ** 0.5, bias=r(D),
              initial_state=r(n_seq, D, K - 1) if h0 else None)
    ref_in = {k: None if v is None else v.clone().requires_grad_(True) for k, v in kw.items()}
    ker_in = {k: None if v is None else v.to(dtype).requires_grad_(True) for k, v in kw.items()}
    common = dict(activation="silu", cu_seqlens=cu_seqlens, lengths=lengths,
                  return_final_state=True)
    y_ref, f_ref = causal_conv1d_ref(**ref_in, **common)
    x = ker_in["x"]
    if strided:
        wide = torch.cat([x, torch.zeros_like(x)], dim=-1)  # (B, L, 2D): x is its first half
        x = wide[..., :D]
    y, f = causal_conv1d(x, ker_in["weight"], ker_in["bias"], initial_state=ker_in["initial_state"],
                         **common)
    dy = torch.randn(y_ref.shape, device=DEV, dtype=torch.float64, generator=g)
    df = torch.randn(f_ref.shape, device=DEV, dtype=torch.float64, generator=g)
    ((y_ref * dy).sum() + (f_ref * df).sum()).backward()
    ((y.double() * dy).sum() + (f.double() * df).sum()).backward()
    errs = {"y": rel_err(y, y_ref), "final": rel_err(f, f_ref)}
    for k, v in ref_in.items():
        if v is not None:
            errs[f"d{k}"] = rel_err(ker_in[k].grad, v.grad)
    print(f"\nB{B}-L{L}-D{D}-K{K} {dtype}:", {k: f"{e:.1e}" for k, e in errs.items()})
    for k, e in errs.items():
        assert e <= TOL[dtype], f"{k}: {e:.2e} > {TOL[dtype]:.0e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_mamba_shape(dtype):
    """The block benchmark's shape: (8, 2048, 1536), K = 4."""
    _check(8, 2048, 1536, 4, dtype)


@pytest.mark.parametrize("K", [2, 3, 4])
def test_odd_sizes(K):
    _check(3, 1000, 300, K, torch.float32)


def test_packed_and_padded():
    lens = [700, 0, 1, 2, 1500, 333]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=DEV)
    _check(1, sum(lens), 256, 4, torch.bfloat16, cu_seqlens=cu)
    _check(4, 600, 256, 4, torch.float32, lengths=torch.tensor([600, 2, 0, 301], device=DEV))


def test_matches_conv1d_module():
    """Against nn.Conv1d (groups = D, padding K-1, cut to L) as Mamba used it, in fp32."""
    D = 1536
    conv = torch.nn.Conv1d(D, D, 4, groups=D, padding=3, device=DEV)
    x = torch.randn(2, 512, D, device=DEV)
    with torch.no_grad():
        want = F.silu(conv(x.transpose(1, 2))[..., :512]).transpose(1, 2)
        got = causal_conv1d(x, conv.weight, conv.bias, "silu")
    err = rel_err(got, want)
    print("\nvs nn.Conv1d", err)
    assert err <= 1e-5


def test_update_matches_reference():
    B, D, K = 16, 1536, 4
    x = torch.randn(B, D, device=DEV, dtype=torch.bfloat16)
    w, b = torch.randn(D, K, device=DEV), torch.randn(D, device=DEV)
    s = torch.randn(B, D, K, device=DEV, dtype=torch.bfloat16)
    s_ref = s.clone()
    y = causal_conv1d_update(x, s, w, b, "silu")
    y_ref = causal_conv1d_update_ref(x, s_ref, w, b, "silu")
    err = rel_err(y, y_ref)
    print("\nupdate vs reference", err)
    assert torch.equal(s, s_ref) and err <= 1e-2


def test_torch_compile_fullgraph():
    """Under torch.compile the conv is two custom ops: no graph break, same values."""
    D = 64
    x = torch.randn(2, 100, D, device=DEV, requires_grad=True)
    w = torch.randn(D, 4, device=DEV, requires_grad=True)

    def f(x, w):
        return causal_conv1d(x, w, None, "silu").square().mean()

    loss = torch.compile(f, fullgraph=True)(x, w)
    (gx,) = torch.autograd.grad(loss, x)
    ref = f(x, w)
    (gx_ref,) = torch.autograd.grad(ref, x)
    assert torch.allclose(loss, ref, rtol=1e-6) and rel_err(gx, gx_ref) <= 1e-6


def test_against_causal_conv1d_package():
    """Against causal-conv1d's CUDA kernel when that package is importable (the benchmark's
    anchor; see ../shared/ANCHORS.md for building it)."""
    ccd = pytest.importorskip("causal_conv1d")
    D, K = 1536, 4
    x = torch.randn(4, 1024, D, device=DEV, dtype=torch.bfloat16)
    w, b = torch.randn(D, K, device=DEV, dtype=torch.bfloat16), torch.randn(D, device=DEV,
                                                                          dtype=torch.bfloat16)
    want = ccd.causal_conv1d_fn(x.transpose(1, 2), w, b, activation="silu").transpose(1, 2)
    got = causal_conv1d(x, w, b, "silu")
    err = rel_err(got, want)
    print("\nvs causal-conv1d", err)
    assert err <= 1e-2
