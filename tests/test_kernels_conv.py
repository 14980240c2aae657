"""Causal depthwise conv1d: the torch reference against ``F.conv1d`` (float64), and the Triton
kernels against the reference (fp32 vs float64, ≤ 1e-5 relative) on two devices (the ``device``
parameter, tests/helpers.py):

- ``interpret``: the CPU under ``TRITON_INTERPRET=1``, in its own pytest process,
  ``TRITON_INTERPRET=1 pytest -m interpret tests/test_kernels_conv.py`` (``make test`` does).
  Shapes are tiny; under the interpreter the kernels use short tiles (8 rows forward, 4 rows × 2
  tiles a program backward) so that tile and program boundaries are crossed. Output buffers come
  NaN-filled (tests/conftest.py), so an element a kernel does not write shows.
- ``gpu``: CUDA, the same checks plus real sizes and bf16:
  ``pytest -m gpu tests/test_kernels_conv.py -s``.

Each is skipped where it cannot run (tests/conftest.py).
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import DEVICES, GPU, INTERPRET, device_cases, load_kernels, rel_err

pytest.importorskip("triton")
load_kernels()
conv = importlib.import_module("eventssm.kernels.causal_conv1d")
causal_conv1d, causal_conv1d_ref = conv.causal_conv1d, conv.causal_conv1d_ref

TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}  # max-norm relative
ACTS = [None, "silu"]


def _inputs(B, L, D, K, *, bias=True, h0=False, n_seq=None, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, dtype=dtype, generator=g)
    return dict(x=r(B, L, D), weight=r(D, K) / K ** 0.5, bias=r(D) if bias else None,
                initial_state=r(n_seq or B, D, K - 1) if h0 else None)


def _on(kw, device):
    return {k: None if v is None else v.to(device) for k, v in kw.items()}


def _leaves(kw, dtype):
    return {k: None if v is None else v.detach().to(dtype).clone().requires_grad_(True)
            for k, v in kw.items()}


def _half_of_wide(x):
    """x as the first half of a (B, L, 2D) tensor, as x of in_proj's xz in Mamba."""
    return torch.cat([x, torch.zeros_like(x)], dim=-1)[..., :x.shape[-1]]


def _compare(kw, device, *, act="silu", cu_seqlens=None, lengths=None, final=True,
             dtype=torch.float32, tol=None, x_view=None, seed=1):
    """Forward, final state and the gradients of every input: kernel (``dtype``, on ``device``)
    vs reference (float64, on the same rounded numbers). ``x_view(x) -> view`` feeds the kernel a
    strided view of a wider tensor holding x."""
    tol = TOL[dtype] if tol is None else tol
    kw = {k: None if v is None else v.to(dtype).double().to(device) for k, v in kw.items()}
    ref_in, ker_in = _leaves(kw, torch.float64), _leaves(kw, dtype)
    common = dict(activation=act, cu_seqlens=cu_seqlens, lengths=lengths, return_final_state=final)
    out_ref = causal_conv1d_ref(**ref_in, **common)
    x_k = ker_in["x"] if x_view is None else x_view(ker_in["x"])
    out = causal_conv1d(x_k, **{k: v for k, v in ker_in.items() if k != "x"}, **common)
    y_ref, f_ref = out_ref if final else (out_ref, None)
    y, f = out if final else (out, None)
    assert y.dtype == dtype and y.shape == y_ref.shape and y.is_contiguous()
    g = torch.Generator().manual_seed(seed)
    dy = torch.randn(y_ref.shape, dtype=torch.float64, generator=g).to(device)
    loss_ref = (y_ref * dy).sum()
    loss = (y.double() * dy).sum()
    errs = {"y": rel_err(y, y_ref)}
    if final:
        assert f.dtype == dtype and f.shape == f_ref.shape
        df = torch.randn(f_ref.shape, dtype=torch.float64, generator=g).to(device)
        loss_ref = loss_ref + (f_ref * df).sum()
        loss = loss + (f.double() * df).sum()
        errs["final"] = rel_err(f, f_ref)
    loss_ref.backward()
    loss.backward()
    for k, v in ref_in.items():
        if v is None:
            continue
        assert ker_in[k].grad is not None, f"no gradient for {k}"
        assert ker_in[k].grad.dtype == dtype and ker_in[k].grad.shape == v.shape, k
        errs[f"d{k}"] = rel_err(ker_in[k].grad, v.grad)
    print(f"\nB{y.shape[0]}-L{y.shape[1]}-D{y.shape[2]} {dtype} on {device}:",
          {k: f"{e:.1e}" for k, e in errs.items()})
    for k, e in errs.items():
        assert e <= tol, f"{k}: relative max error {e:.2e} > {tol:.0e}"
    return errs


# ------------------------------------------------------------------ the reference (no kernel)


@pytest.mark.parametrize("K", [2, 3, 4])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias", [True, False])
def test_reference_is_conv1d_with_left_padding(K, act, bias):
    kw = _inputs(2, 13, 5, K, bias=bias)
    y = causal_conv1d_ref(kw["x"], kw["weight"], kw["bias"], act)
    want = F.conv1d(kw["x"].transpose(1, 2), kw["weight"][:, None], kw["bias"], padding=K - 1,
                    groups=5)[..., :13].transpose(1, 2)
    want = F.silu(want) if act else want
    err = (y - want).abs().max().item()
    print("reference vs F.conv1d", err)
    assert y.dtype == torch.float64 and err <= 1e-13


def test_reference_state_and_packing_follow_conv1d():
    """Initial state = the K-1 inputs prepended (F.conv1d without padding on the concatenation);
    final state = the last K-1 inputs; packed = each sequence alone from zeros."""
    K, D = 4, 3
    kw = _inputs(2, 9, D, K, h0=True)
    y, f = causal_conv1d_ref(**kw, activation="silu", return_final_state=True)
    xc = torch.cat([kw["initial_state"], kw["x"].transpose(1, 2)], dim=-1)
    want = F.silu(F.conv1d(xc, kw["weight"][:, None], kw["bias"], groups=D)).transpose(1, 2)
    assert (y - want).abs().max() <= 1e-13
    assert torch.equal(f, xc[..., -(K - 1):])
    lens = [4, 0, 2, 7]
    xp = torch.randn(1, sum(lens), D, dtype=torch.float64)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    yp, fp = causal_conv1d_ref(xp, kw["weight"], kw["bias"], "silu", cu_seqlens=cu,
                               return_final_state=True)
    for j, n in enumerate(lens):
        seg = xp[:, cu[j]:cu[j + 1]]
        xs = F.pad(seg.transpose(1, 2), (K - 1, 0))
        if n:
            want = F.silu(F.conv1d(xs, kw["weight"][:, None], kw["bias"], groups=D)).transpose(1, 2)
            assert (yp[:, cu[j]:cu[j + 1]] - want).abs().max() <= 1e-13
        assert torch.equal(fp[j], xs[0, :, -(K - 1):])


# ------------------------------------------------------------------ the kernels vs the reference


@pytest.mark.parametrize("K", [2, 3, 4])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("h0", [False, True], ids=["zeros", "h0"])
@pytest.mark.parametrize("device", DEVICES)
def test_kernel_matches_reference(device, K, act, bias, h0):
    # L = 21: under the interpreter two and a half forward tiles, three backward programs (the
    # last one partial)
    _compare(_inputs(2, 21, 6, K, bias=bias, h0=h0), device, act=act)


@pytest.mark.parametrize("L", [1, 2, 3, 8, 9])
@pytest.mark.parametrize("device", DEVICES)
def test_kernel_short_sequences(device, L):
    """Sequences shorter than K - 1: the final state is made of initial-state entries."""
    _compare(_inputs(2, L, 5, 4, h0=True), device)


@pytest.mark.parametrize("device", DEVICES)
def test_kernel_fp16(device):
    _compare(_inputs(2, 17, 6, 4, h0=True), device, dtype=torch.float16, tol=2e-3)


REAL_SIZES = {  # on the GPU only: (B, L, D, K, dtype, extra arguments of _compare)
    # the block benchmark's shape
    **{f"B8-L2048-D1536-K4-{n}": (8, 2048, 1536, 4, dt, {})
       for n, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16))},
    **{f"B3-L1000-D300-K{k}": (3, 1000, 300, k, torch.float32, {}) for k in (2, 3, 4)},
    "B1-L2536-D256-K4-bf16-packed": (1, 2536, 256, 4, torch.bfloat16,
                                     dict(lens=[700, 0, 1, 2, 1500, 333])),
    "B4-L600-D256-K4-fp32-padded": (4, 600, 256, 4, torch.float32,
                                    dict(lengths=[600, 2, 0, 301])),
}


@pytest.mark.parametrize("device, case", device_cases(gpu=REAL_SIZES))
def test_kernel_real_sizes(device, case):
    """x a slice of a (B, L, 2D) tensor (as in Mamba), silu, an initial state: y, final state, ∂x,
    ∂w, ∂bias, ∂h0 against the float64 reference; packed sequences (some shorter than K - 1, one
    empty) and right padding among them."""
    B, L, D, K, dtype, extra = case
    cu = lengths = None
    if "lens" in extra:
        cu = torch.tensor([0, *torch.tensor(extra["lens"]).cumsum(0).tolist()], dtype=torch.int32,
                          device=device)
    if "lengths" in extra:
        lengths = torch.tensor(extra["lengths"], device=device)
    n_seq = None if cu is None else cu.numel() - 1
    _compare(_inputs(B, L, D, K, h0=True, n_seq=n_seq), device, dtype=dtype, cu_seqlens=cu,
             lengths=lengths, x_view=_half_of_wide, seed=0)


@pytest.mark.parametrize("rows", [(4, 4, 1), (16, 8, 4)], ids=["r4-4x1", "r16-8x4"])
@pytest.mark.parametrize("device", DEVICES)
def test_tilings_from_the_kernel_config(device, rows):
    """The conv knobs of the kernel config (``EVENTSSM_CONV_*``) reach the launches, and other
    tilings give the same numbers; with 4-row tiles, one a program, the ∂w/∂bias reduction sums
    54 partial rows (several 16-row loads, the last one masked)."""
    from eventssm.kernels.config import override

    default = conv._rows()
    if device == "cpu":
        assert default == (8, 4, 2)  # the interpreter's short tiles
    fwd, bwd, tiles = rows
    with override(conv_fwd_rows=fwd, conv_bwd_rows=bwd, conv_bwd_tiles=tiles):
        assert conv._rows() == rows
        _compare(_inputs(3, 70, 6, 4, h0=True), device)
    assert conv._rows() == default


@pytest.mark.parametrize("device", DEVICES)
def test_kernel_two_channel_blocks(device):
    """D = 130: two blocks of 128 channels, the second one mostly masked."""
    _compare(_inputs(1, 11, 130, 4, h0=True), device)


@pytest.mark.parametrize("device", DEVICES)
def test_strided_input_and_conv1d_weight(device):
    """x a slice of a wider tensor (as x of in_proj's xz), nn.Conv1d's (D, 1, K) weight."""
    D, K = 6, 4
    kw = _inputs(2, 19, D, K, h0=True)

    def view(x):  # x sits in columns D .. 2D of a (B, L, 3D) tensor
        wide = torch.zeros(2, 19, 3 * D, dtype=x.dtype, device=x.device)
        wide[..., D:2 * D] = x.detach()
        v = wide[..., D:2 * D]
        assert not v.is_contiguous()
        # keep the autograd link to the leaf x: v = x + (v - x) with the difference detached
        return x + (v - x).detach()

    _compare(kw, device, x_view=view)
    # directly on the view (no autograd detour): same numbers as on a contiguous copy
    wide = torch.randn(2, 19, 3 * D).to(device)
    xv = wide[..., D:2 * D]
    conv1d = torch.nn.Conv1d(D, D, K, groups=D).to(device)
    with torch.no_grad():
        a = causal_conv1d(xv, conv1d.weight, conv1d.bias, "silu")
        b = causal_conv1d(xv.contiguous(), conv1d.weight[:, 0].contiguous(), conv1d.bias, "silu")
    assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_strided_upstream_gradient(device):
    """dy with odd strides (a transposed view) is read in place."""
    kw = _on(_inputs(2, 11, 5, 3), device)
    x = kw["x"].float().requires_grad_(True)
    y = causal_conv1d(x, kw["weight"].float(), kw["bias"].float(), "silu")
    dy = torch.randn(2, 5, 11).to(device).transpose(1, 2)
    (gx,) = torch.autograd.grad(y, x, dy)
    x64 = kw["x"].clone().requires_grad_(True)
    y64 = causal_conv1d_ref(x64, kw["weight"], kw["bias"], "silu")
    (gx64,) = torch.autograd.grad(y64, x64, dy.double())
    err = rel_err(gx, gx64)
    print("dx error, strided dy", err)
    assert err <= TOL[torch.float32]


@pytest.mark.parametrize("device", DEVICES)
def test_state_carried_across_chunks_equals_one_pass(device):
    """Chunks of 5, 1, 9 and 6 steps, each starting from the previous one's final state: the same
    outputs, final state and gradients (x, weight, bias, initial state) as one pass."""
    D, K, L = 6, 4, 21
    kw = {k: v.float().to(device) for k, v in _inputs(2, L, D, K, h0=True).items()}
    one = _leaves(kw, torch.float32)
    parts = _leaves(kw, torch.float32)
    y1, f1 = causal_conv1d(**one, activation="silu", return_final_state=True)
    ys, state = [], parts["initial_state"]
    for a, b in ((0, 5), (5, 6), (6, 15), (15, 21)):
        y, state = causal_conv1d(parts["x"][:, a:b], parts["weight"], parts["bias"], "silu",
                                 initial_state=state, return_final_state=True)
        ys.append(y)
    y2 = torch.cat(ys, dim=1)
    dy, df = torch.randn(y1.shape).to(device), torch.randn(f1.shape).to(device)
    ((y1 * dy).sum() + (f1 * df).sum()).backward()
    ((y2 * dy).sum() + (state * df).sum()).backward()
    errs = {"y": rel_err(y2, y1), "final": rel_err(state, f1)}
    errs.update({f"d{k}": rel_err(parts[k].grad, one[k].grad) for k in one})
    print(errs)
    assert max(errs.values()) <= TOL[torch.float32]


@pytest.mark.parametrize("h0", [False, True], ids=["zeros", "h0"])
@pytest.mark.parametrize("device", DEVICES)
def test_packed_equals_separate_sequences(device, h0):
    """cu_seqlens: sequences of 5, 0, 1, 12, 2 and 9 steps packed in one row (some shorter than
    K - 1, one empty, boundaries inside tiles): no leakage across boundaries; against the
    reference and against the kernel run on each sequence alone."""
    D, K = 6, 4
    lens = [5, 0, 1, 12, 2, 9]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32).to(device)
    kw = _inputs(1, sum(lens), D, K, h0=h0, n_seq=len(lens))
    _compare(kw, device, cu_seqlens=cu)
    # the kernel on each sequence alone
    k32 = {k: None if v is None else v.float().to(device) for k, v in kw.items()}
    y, f = causal_conv1d(**k32, activation="silu", cu_seqlens=cu, return_final_state=True)
    for j, n in enumerate(lens):
        a = int(cu[j])
        h = None if not h0 else k32["initial_state"][j:j + 1]
        if n == 0:
            want_f = h if h0 else torch.zeros(1, D, K - 1, device=device)
            assert torch.equal(f[j:j + 1], want_f)
            continue
        yj, fj = causal_conv1d(k32["x"][:, a:a + n], k32["weight"], k32["bias"], "silu",
                               initial_state=h, return_final_state=True)
        assert torch.allclose(y[:, a:a + n], yj, rtol=0, atol=1e-6), j
        assert torch.equal(f[j:j + 1], fj), j


@pytest.mark.parametrize("device", DEVICES)
def test_packed_int64_cu_seqlens(device):
    lens = [3, 7]
    cu = torch.tensor([0, 3, 10]).to(device)
    kw = _inputs(1, sum(lens), 4, 3)
    _compare(kw, device, cu_seqlens=cu)


@pytest.mark.parametrize("h0", [False, True], ids=["zeros", "h0"])
@pytest.mark.parametrize("device", DEVICES)
def test_right_padding_is_inert(device, h0):
    """lengths: outputs at real steps and the final state do not depend on the padding; the final
    state is the last K-1 real inputs (initial-state entries for sequences shorter than K - 1);
    gradients against the reference (padding steps get ∂x from their own outputs only)."""
    D, K, L = 5, 4, 13
    lengths = torch.tensor([13, 6, 2, 0]).to(device)
    kw = _inputs(4, L, D, K, h0=h0)
    _compare(kw, device, lengths=lengths)
    k32 = {k: None if v is None else v.float().to(device) for k, v in kw.items()}
    y, f = causal_conv1d(**k32, activation="silu", lengths=lengths, return_final_state=True)
    pad = torch.arange(L, device=device)[None, :] >= lengths[:, None]
    junk = k32["x"].masked_fill(pad[..., None], 1e3)
    y2, f2 = causal_conv1d(junk, k32["weight"], k32["bias"], "silu",
                           initial_state=k32["initial_state"], lengths=lengths,
                           return_final_state=True)
    real = ~pad[..., None].expand_as(y)
    assert torch.equal(y[real], y2[real]) and torch.equal(f, f2)
    for b, n in enumerate(lengths.tolist()):  # each sequence truncated to its length
        h = None if not h0 else k32["initial_state"][b:b + 1]
        if n == 0:
            assert torch.equal(f[b:b + 1], h if h0 else torch.zeros(1, D, K - 1, device=device))
            continue
        _, fb = causal_conv1d(k32["x"][b:b + 1, :n], k32["weight"], k32["bias"], "silu",
                              initial_state=h, return_final_state=True)
        assert torch.equal(f[b:b + 1], fb), b


@pytest.mark.parametrize("as_callable", [False, True], ids=["tensor", "callable"])
@pytest.mark.parametrize("device", DEVICES)
def test_dx_written_into_a_slice_of_a_buffer(device, as_callable):
    """∂x goes into dx_out (the first half of a (B, L, 2D) buffer) in place; the other half is
    untouched; the returned gradient is that view."""
    D = 6
    kw = _on(_inputs(2, 15, D, 4), device)
    x = kw["x"].float().requires_grad_(True)
    buf = torch.full((2, 15, 2 * D), 7.0, device=device)
    view = buf[..., :D]
    y = causal_conv1d(x, kw["weight"].float(), kw["bias"].float(), "silu",
                      dx_out=(lambda: view) if as_callable else view)
    dy = torch.randn(y.shape).to(device)
    (gx,) = torch.autograd.grad(y, x, dy)
    assert gx.data_ptr() == buf.data_ptr() and gx.stride() == buf.stride()
    assert torch.all(buf[..., D:] == 7.0)
    x64 = kw["x"].clone().requires_grad_(True)
    (want,) = torch.autograd.grad(causal_conv1d_ref(x64, kw["weight"], kw["bias"], "silu"), x64,
                                  dy.double())
    err = rel_err(buf[..., :D], want)
    print("dx_out error", err)
    assert err <= TOL[torch.float32]
    with pytest.raises(ValueError, match="dx_out"):
        y = causal_conv1d(x, kw["weight"].float(), dx_out=torch.zeros(2, 15, D + 1, device=device))
        y.sum().backward()


@pytest.mark.parametrize("device", DEVICES)
def test_only_some_gradients(device):
    """Gradients of the weight only (x frozen), and of x only (parameters frozen)."""
    kw = {k: v.float().to(device) for k, v in _inputs(2, 10, 4, 4).items() if v is not None}
    w = kw["weight"].clone().requires_grad_(True)
    y = causal_conv1d(kw["x"], w, kw["bias"], "silu")
    (gw,) = torch.autograd.grad(y.square().sum(), w)
    w64 = kw["weight"].double().requires_grad_(True)
    y64 = causal_conv1d_ref(kw["x"].double(), w64, kw["bias"].double(), "silu")
    (gw64,) = torch.autograd.grad(y64.square().sum(), w64)
    assert rel_err(gw, gw64) <= TOL[torch.float32]
    x = kw["x"].clone().requires_grad_(True)
    y = causal_conv1d(x, kw["weight"], kw["bias"], "silu")
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    x64 = kw["x"].double().requires_grad_(True)
    (gx64,) = torch.autograd.grad(causal_conv1d_ref(x64, kw["weight"].double(), kw["bias"].double(),
                                                    "silu").square().sum(), x64)
    assert rel_err(gx, gx64) <= TOL[torch.float32]


@pytest.mark.parametrize("device", DEVICES)
def test_float64_goes_to_the_reference(device):
    kw = _on(_inputs(2, 9, 3, 4, h0=True), device)
    a = causal_conv1d(**kw, activation="silu", return_final_state=True)
    b = causal_conv1d_ref(**kw, activation="silu", return_final_state=True)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("device", [GPU])
def test_matches_conv1d_module(device):
    """Against nn.Conv1d (groups = D, padding K-1, cut to L) as Mamba used it, in fp32."""
    D = 1536
    conv1d = torch.nn.Conv1d(D, D, 4, groups=D, padding=3, device=device)
    x = torch.randn(2, 512, D, device=device)
    with torch.no_grad():
        want = F.silu(conv1d(x.transpose(1, 2))[..., :512]).transpose(1, 2)
        got = causal_conv1d(x, conv1d.weight, conv1d.bias, "silu")
    err = rel_err(got, want)
    print("\nvs nn.Conv1d", err)
    assert err <= 1e-5


@pytest.mark.parametrize("device", [GPU])
def test_torch_compile_fullgraph(device):
    """Under torch.compile the conv is two custom ops: no graph break, same values."""
    D = 64
    x = torch.randn(2, 100, D, device=device, requires_grad=True)
    w = torch.randn(D, 4, device=device, requires_grad=True)

    def f(x, w):
        return causal_conv1d(x, w, None, "silu").square().mean()

    loss = torch.compile(f, fullgraph=True)(x, w)
    (gx,) = torch.autograd.grad(loss, x)
    ref = f(x, w)
    (gx_ref,) = torch.autograd.grad(ref, x)
    assert torch.allclose(loss, ref, rtol=1e-6) and rel_err(gx, gx_ref) <= 1e-6


@pytest.mark.parametrize("device", [GPU])
def test_against_causal_conv1d_package(device):
    """Against causal-conv1d's CUDA kernel when that package is importable (the benchmark's
    anchor; see ../shared/ANCHORS.md for building it)."""
    ccd = pytest.importorskip("causal_conv1d")
    D, K = 1536, 4
    x = torch.randn(4, 1024, D, device=device, dtype=torch.bfloat16)
    w, b = torch.randn(D, K, device=device, dtype=torch.bfloat16), torch.randn(D, device=device,
                                                                             dtype=torch.bfloat16)
    want = ccd.causal_conv1d_fn(x.transpose(1, 2), w, b, activation="silu").transpose(1, 2)
    got = causal_conv1d(x, w, b, "silu")
    err = rel_err(got, want)
    print("\nvs causal-conv1d", err)
    assert err <= 1e-2


# ------------------------------------------------------------------ decoding step


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("device", DEVICES)
def test_update_steps_equal_the_full_conv(device, K):
    """Decoding step by step from a (B, D, K) state gives the conv's outputs and last inputs."""
    D, L = 5, 7
    kw = {k: None if v is None else v.float().to(device)
          for k, v in _inputs(3, L, D, K, h0=True).items()}
    y, f = causal_conv1d(**kw, activation="silu", return_final_state=True)
    state = torch.cat([torch.zeros(3, D, 1, device=device), kw["initial_state"]], dim=-1)
    state_ref = state.clone().double()
    ys = []
    for l in range(L):
        ys.append(conv.causal_conv1d_update(kw["x"][:, l], state, kw["weight"], kw["bias"], "silu"))
        want = conv.causal_conv1d_update_ref(
            kw["x"][:, l].double(), state_ref, kw["weight"].double(), kw["bias"].double(), "silu")
        assert rel_err(ys[-1], want) <= TOL[torch.float32]
    err = rel_err(torch.stack(ys, 1), y)
    print("steps vs conv", err)
    assert err <= TOL[torch.float32] and torch.equal(state[..., 1:], f)
    # a strided state (a slice of a wider cache) is updated in place
    cache = torch.zeros(3, D, K + 2, device=device)
    conv.causal_conv1d_update(kw["x"][:, 0], cache[..., 1:K + 1], kw["weight"], None, None)
    assert torch.equal(cache[..., K], kw["x"][:, 0]) and torch.all(cache[..., K + 1] == 0)


@pytest.mark.parametrize("device", [GPU])
def test_update_matches_reference(device):
    """The decoding step at the block's size in bf16 against the reference step."""
    B, D, K = 16, 1536, 4
    x = torch.randn(B, D, device=device, dtype=torch.bfloat16)
    w, b = torch.randn(D, K, device=device), torch.randn(D, device=device)
    s = torch.randn(B, D, K, device=device, dtype=torch.bfloat16)
    s_ref = s.clone()
    y = conv.causal_conv1d_update(x, s, w, b, "silu")
    y_ref = conv.causal_conv1d_update_ref(x, s_ref, w, b, "silu")
    err = rel_err(y, y_ref)
    print("\nupdate vs reference", err)
    assert torch.equal(s, s_ref) and err <= 1e-2


# ------------------------------------------------------------------ errors and plumbing


@pytest.mark.parametrize("bad, match", [
    (dict(x=torch.zeros(4, 3)), "x must have shape"),
    (dict(weight=torch.zeros(5, 4)), "weight must have shape"),
    (dict(weight=torch.zeros(3, 5)), "K must be in 2..4"),
    (dict(weight=torch.zeros(3, 1)), "K must be in 2..4"),
    (dict(bias=torch.zeros(4)), "bias must have shape"),
    (dict(activation="relu"), "activation must be one of"),
    (dict(initial_state=torch.zeros(2, 3, 4)), "initial_state must have shape"),
    (dict(cu_seqlens=torch.tensor([0, 9], dtype=torch.int32)), "batch == 1"),
    (dict(lengths=torch.tensor([3])), "lengths must be a tensor of shape"),
    (dict(lengths=torch.tensor([3.0, 2.0])), "lengths must be an integer"),
])
@pytest.mark.parametrize("device", DEVICES)
def test_bad_arguments(device, bad, match):
    args = dict(x=torch.zeros(2, 9, 3), weight=torch.zeros(3, 4), bias=None, activation=None)
    args.update(bad)
    args = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    with pytest.raises((ValueError, TypeError), match=match):
        causal_conv1d(**args)


@pytest.mark.parametrize("device", [INTERPRET])
def test_outputs_are_poisoned_before_launch(device):
    """The conftest hook is active here: torch.empty is NaN-filled in interpret tests."""
    assert torch.isnan(torch.empty(3)).all() and torch.isnan(torch.empty_like(torch.zeros(2))).all()


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_custom_ops(device):
    kw = {k: v.float().to(device) for k, v in _inputs(1, 9, 4, 4, h0=True).items()}
    cu = torch.tensor([0, 4, 9], dtype=torch.int32, device=device)
    seq_idx = conv._seq_idx(cu, 9)
    h0 = torch.randn(2, 4, 3).to(device)
    for args in [(kw["x"].requires_grad_(True), kw["weight"].requires_grad_(True),
                  kw["bias"].requires_grad_(True), kw["initial_state"].requires_grad_(True),
                  None, None, None, True, True),
                 (kw["x"], kw["weight"], None, h0, cu, seq_idx, None, False, True)]:
        torch.library.opcheck(torch.ops.eventssm.causal_conv1d_fwd.default, args,
                              test_utils=("test_schema", "test_faketensor",
                                          "test_autograd_registration"))
