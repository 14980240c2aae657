"""The channel-last causal conv of the torch path (eventssm.conv) against nn.Conv1d in float64.

The oracle is ``nn.Conv1d(D, D, K, groups=D, padding=K-1)`` on ``(B, D, L)`` with the last
``K-1`` outputs cut off (what Mamba used before), with autograd for every gradient.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from eventssm.conv import causal_conv1d, causal_conv1d_update
from tests.helpers import DEVICES, rel_err


def _oracle(x, weight, bias, activation, initial_state=None):
    """nn.Conv1d on (B, D, K-1+L) (the carried inputs prepended), channel-first."""
    B, L, D = x.shape
    K = weight.shape[1]
    conv = nn.Conv1d(D, D, K, groups=D, bias=bias is not None, dtype=x.dtype)
    del conv.weight, conv.bias  # use the test's tensors (and their gradients)
    conv.weight = weight[:, None]
    conv.bias = bias
    head = x.new_zeros(B, D, K - 1) if initial_state is None else initial_state
    y = conv(torch.cat([head, x.transpose(1, 2)], -1)).transpose(1, 2)
    return F.silu(y) if activation == "silu" else y


def _inputs(B, L, D, K, bias=True, state=False, strided=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, dtype=torch.float64, generator=g)
    # x as a half of a wider (B, L, 2D) buffer, like in_proj's output: strided, not contiguous
    x = r(B, L, 2 * D)[..., :D] if strided else r(B, L, D)
    return dict(x=x, weight=r(D, K), bias=r(D) if bias else None,
                initial_state=r(B, D, K - 1) if state else None)


CASES = [(2, 9, 6, 4, True, False), (3, 17, 5, 3, False, True), (1, 2, 4, 4, True, True),
         (2, 5, 3, 1, True, False), (2, 1, 8, 2, True, True)]
IDS = [f"B{b}-L{L}-D{d}-K{k}-{'bias' if bb else 'nobias'}-{'state' if s else 'zeros'}"
       for b, L, d, k, bb, s in CASES]


@pytest.mark.parametrize("activation", ["silu", None])
@pytest.mark.parametrize("B,L,D,K,bias,state", CASES, ids=IDS)
def test_matches_nn_conv1d_with_every_gradient(B, L, D, K, bias, state, activation):
    kw = _inputs(B, L, D, K, bias, state)
    leaves = {k: v.detach().requires_grad_() for k, v in kw.items() if v is not None}
    args = {**kw, **leaves}
    y = causal_conv1d(args["x"], args["weight"], args["bias"], activation,
                      initial_state=args["initial_state"])
    y_ref = _oracle(args["x"], args["weight"], args["bias"], activation, args["initial_state"])
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, list(leaves.values()), gy)
    grads_ref = torch.autograd.grad(y_ref, list(leaves.values()), gy)
    errs = {"y": rel_err(y, y_ref), **{k: rel_err(a, b) for k, a, b in zip(leaves, grads, grads_ref)}}
    print(errs)
    assert y.shape == (B, L, D) and y.dtype == torch.float64
    assert max(errs.values()) < 1e-12


@pytest.mark.parametrize("split", [1, 2, 5, 8])
@pytest.mark.parametrize("K", [1, 2, 4])
def test_state_carried_across_chunks_equals_one_pass(split, K):
    """Chunk 1 returns its final state, chunk 2 starts from it: outputs, final state and the
    gradients (through the carried state too) equal one pass; chunks shorter than K-1 included."""
    kw = _inputs(2, 9, 5, K, state=True)
    x = kw["x"].detach().requires_grad_()
    y, last = causal_conv1d(x, kw["weight"], kw["bias"], "silu", initial_state=kw["initial_state"],
                            return_final_state=True)
    y1, s1 = causal_conv1d(x[:, :split], kw["weight"], kw["bias"], "silu",
                           initial_state=kw["initial_state"], return_final_state=True)
    y2, s2 = causal_conv1d(x[:, split:], kw["weight"], kw["bias"], "silu", initial_state=s1,
                           return_final_state=True)
    # the final state is the last K-1 inputs (oldest first)
    whole = torch.cat([kw["initial_state"], x.transpose(1, 2)], -1)
    assert torch.equal(last, whole[..., whole.shape[-1] - (K - 1):])
    gy = torch.randn_like(y)
    g_one = torch.autograd.grad(y, x, gy)[0]
    g_two = torch.autograd.grad(torch.cat([y1, y2], 1), x, gy)[0]
    errs = (rel_err(torch.cat([y1, y2], 1), y), rel_err(s2, last), rel_err(g_two, g_one))
    print(split, K, errs)
    assert max(errs) < 1e-13


def test_padding_is_inert():
    """lengths: each sequence's outputs equal the sequence alone and padding (large garbage here)
    stays out of the final state; outputs at padding are the plain conv's (the caller masks
    them) and, with their gradient masked, every gradient is the sum over the sequences alone."""
    lens = [9, 4, 0, 1]
    kw = _inputs(4, 9, 6, 4, state=True)
    x = kw["x"].clone()
    for i, n in enumerate(lens):
        x[i, n:] = 1e6 * torch.randn(9 - n, 6, dtype=torch.float64)
    x.requires_grad_()
    w = kw["weight"].detach().requires_grad_()
    y, last = causal_conv1d(x, w, kw["bias"], "silu", initial_state=kw["initial_state"],
                            lengths=torch.tensor(lens), return_final_state=True)
    assert torch.equal(y, causal_conv1d(x, w, kw["bias"], "silu", initial_state=kw["initial_state"]))
    real = (torch.arange(9)[None, :] < torch.tensor(lens)[:, None])[..., None]
    gy = torch.randn_like(y) * real
    gx, gw = torch.autograd.grad(y, (x, w), gy)
    assert (gx[~real.expand_as(gx)] == 0).all()
    gw_alone = torch.zeros_like(w)
    for i, n in enumerate(lens):
        xi = x[i:i + 1, :n].detach().requires_grad_()
        yi, li = causal_conv1d(xi, w, kw["bias"], "silu", initial_state=kw["initial_state"][i:i + 1],
                               return_final_state=True)
        gxi, gwi = torch.autograd.grad(yi, (xi, w), gy[i:i + 1, :n])
        gw_alone += gwi
        errs = (rel_err(y[i, :n], yi[0]) if n else 0.0, rel_err(last[i], li[0]),
                rel_err(gx[i, :n], gxi[0]) if n else 0.0)
        print(i, n, errs)
        assert max(errs) < 1e-13
    print("weight gradient:", rel_err(gw, gw_alone))
    assert rel_err(gw, gw_alone) < 1e-13


@pytest.mark.parametrize("K", [1, 2, 4])
def test_update_steps_equal_the_conv(K):
    """causal_conv1d_update on a (B, D, K) window, one step at a time, equals the conv over the
    sequence from the window's last K-1 inputs, and leaves the last K inputs in the window."""
    kw = _inputs(2, 6, 5, K, state=True)
    window = torch.cat([torch.randn(2, 5, 1, dtype=torch.float64), kw["initial_state"]], -1)
    y = causal_conv1d(kw["x"], kw["weight"], kw["bias"], "silu", initial_state=window[..., 1:])
    ys = [causal_conv1d_update(kw["x"][:, l], window, kw["weight"], kw["bias"], "silu")
          for l in range(6)]
    err = rel_err(torch.stack(ys, 1), y)
    print(K, err)
    assert err < 1e-13
    assert torch.equal(window, kw["x"][:, 6 - K:].transpose(1, 2))


def test_packed_sequences_equal_each_alone():
    lens = [3, 0, 6, 1]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    kw = _inputs(1, sum(lens), 5, 4)
    h0 = torch.randn(len(lens), 5, 3, dtype=torch.float64)
    y, last = causal_conv1d(kw["x"], kw["weight"], kw["bias"], "silu", initial_state=h0,
                            cu_seqlens=cu, return_final_state=True)
    for i in range(len(lens)):
        xi = kw["x"][:, cu[i]:cu[i + 1]]
        yi, li = causal_conv1d(xi, kw["weight"], kw["bias"], "silu", initial_state=h0[i:i + 1],
                               return_final_state=True)
        assert rel_err(y[:, cu[i]:cu[i + 1]], yi) < 1e-13 and rel_err(last[i], li[0]) < 1e-13


def test_half_input_computes_in_float32():
    """A bf16 x with float32 weights (autocast in_proj): float32 arithmetic, bf16 output."""
    kw = _inputs(2, 7, 4, 4)
    w, b = kw["weight"].float(), kw["bias"].float()
    x = kw["x"].to(torch.bfloat16)
    y = causal_conv1d(x, w, b, "silu")
    y_ref = _oracle(x.double(), w.double(), b.double(), "silu")
    print(rel_err(y, y_ref))
    assert y.dtype == torch.bfloat16 and rel_err(y, y_ref) < 1e-2


def _kernel_conv():
    """eventssm.kernels.causal_conv1d, or a skip when Triton or the kernel is missing."""
    K = pytest.importorskip("eventssm.kernels")
    if not hasattr(K, "causal_conv1d"):
        pytest.skip("this version of eventssm.kernels has no causal_conv1d")
    return K.causal_conv1d


CONTRACT = pytest.mark.parametrize("state,lengths", [(False, None), (True, None), (False, [7, 3, 0]),
                                                     (True, [7, 3, 0])],
                                    ids=["zeros-full", "state-full", "zeros-padded", "state-padded"])


@CONTRACT
@pytest.mark.parametrize("dev", DEVICES)
def test_kernel_keeps_the_contract_mamba_relies_on(dev, state, lengths):
    """What Mamba expects of the backend's conv, checked on the Triton kernel (on both kernel
    devices, tests/helpers.py) against this module's conv (float32, strided x, a strided initial
    state): equal outputs and final states (the last K-1 real inputs), equal gradients of x,
    weight, bias and the initial state, and the same decoding step on a (B, D, K) window."""
    kconv = _kernel_conv()
    kw = _inputs(3, 7, 6, 4, state=state)
    kw = {k: None if v is None else v.float().to(dev) for k, v in kw.items()}
    if state:  # a view of a (B, D, K) cache, as Mamba passes it
        kw["initial_state"] = torch.cat([torch.zeros_like(kw["initial_state"][..., :1]),
                                         kw["initial_state"]], -1)[..., 1:]
    lens = None if lengths is None else torch.tensor(lengths, device=dev)
    outs, grads = [], []
    for fn in (kconv, causal_conv1d):
        leaves = {k: v.detach().requires_grad_() for k, v in kw.items() if v is not None}
        a = {**kw, **leaves}
        y, last = fn(a["x"], a["weight"], a["bias"], "silu", initial_state=a["initial_state"],
                     lengths=lens, return_final_state=True)
        gy = torch.linspace(-1, 1, y.numel(), device=dev).reshape(y.shape)
        grads.append(dict(zip(leaves, torch.autograd.grad(y, list(leaves.values()), gy))))
        outs.append((y, last))
    errs = {"y": rel_err(*[o[0] for o in outs]), "final": rel_err(*[o[1] for o in outs]),
            **{k: rel_err(grads[0][k], grads[1][k]) for k in grads[1]}}
    K = pytest.importorskip("eventssm.kernels")
    windows = [torch.randn(3, 6, 4, device=dev) for _ in range(2)]
    windows[1].copy_(windows[0])
    x1 = kw["x"][:, 0]
    steps = [fn(x1, win, kw["weight"], kw["bias"], "silu")
             for fn, win in zip((K.causal_conv1d_update, causal_conv1d_update), windows)]
    errs.update(step=rel_err(*steps), window=rel_err(*windows))
    print(errs)
    assert max(errs.values()) < 1e-5
