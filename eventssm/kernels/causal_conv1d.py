"""Causal depthwise conv1d (Mamba's short conv), channel-last, in Triton; and its torch reference.

    y[b, l, d] = act(bias[d] + Σ_k w[d, k] · x[b, l - (K-1) + k, d])

with the K - 1 inputs before a sequence's first step taken from ``initial_state`` (zeros by
default). Shapes: ``x (B, L, D)`` channel-last with *any* strides (a slice of ``in_proj``'s output,
``xz[..., :D]``, is read in place), ``weight (D, K)`` (or ``nn.Conv1d``'s ``(D, 1, K)``),
``bias (D,)``, states ``(n_seq, D, K-1)`` oldest first. Sequences: the ``B`` rows of the batch, or
with ``cu_seqlens (n_seq + 1,)`` and ``B == 1`` the packed sequences along L (no input leaks
across a boundary: each starts from its own initial state, zeros by default). ``lengths (B,)`` of a
right-padded batch only decides where the final state is read (padding is causally inert for the
real steps already).

Kernels (``K`` ≤ 4 unrolled at compile time, arithmetic in fp32):

* forward: one program per ``(BL steps, BD channels, batch row)``; it loads the ``BL + K - 1``
  rows of its window once (``[BD]`` vectors along the contiguous channel axis: coalesced) and
  forms every output from registers; bias and SiLU fused.
* backward: one program per ``(ITERS·BL steps, BD channels, batch row)``; per tile it recomputes
  the pre-activation of ``BL + K - 1`` rows (the tile and the ``K - 1`` rows after it, whose
  gradients reach the tile's inputs), then ``∂x`` of the tile, and accumulates ``∂w`` and ``∂bias``
  in registers. Each program writes its partial sums to a ``(P, K + 1, D)`` fp32 buffer and one
  reduction kernel adds them in a fixed order: deterministic, no atomics.
* the final state (streaming / caches) is gathered by a small kernel only when asked for.

The gradient of ``x`` goes into a fresh tensor, or into ``dx_out`` (any strides: e.g. the first
half of a preallocated ``(B, L, 2D)`` gradient of ``xz``, so that no concatenation of ``∂x`` and
``∂z`` is needed). ``dx_out`` may be a zero-argument callable returning that view, called when the
backward runs (so the buffer need not exist during the forward).

:func:`causal_conv1d_ref` is the plain-torch reference with the same arguments (float64-capable:
the oracle of the tests and the CPU path); :func:`causal_conv1d_update` /
:func:`causal_conv1d_update_ref` are one decoding step on a ``(B, D, K)`` state.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from .config import get_config
from .utils import is_interpreting, sigmoid

__all__ = [
    "causal_conv1d",
    "causal_conv1d_ref",
    "causal_conv1d_update",
    "causal_conv1d_update_ref",
    "MAX_WIDTH",
]

#: Widest kernel the Triton path unrolls (mamba uses K = 4).
MAX_WIDTH = 4
_ACTIVATIONS = (None, "silu", "swish")


# ------------------------------------------------------------------------------ validation

def _weight_2d(weight: Tensor) -> Tensor:
    if weight.dim() == 3 and weight.shape[1] == 1:
        return weight.squeeze(1)  # nn.Conv1d's (D, 1, K): a view (its backward is one too)
    return weight


def _check(x, weight, bias, activation, initial_state, cu_seqlens, lengths, max_width=None):
    """Shapes, dtypes and devices (never values: a value check would read back from the device)."""
    for name, t in (("x", x), ("weight", weight), ("bias", bias), ("initial_state", initial_state)):
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if x.dim() != 3:
        raise ValueError(f"x must have shape (batch, L, D), got {tuple(x.shape)}")
    B, L, D = x.shape
    w = _weight_2d(weight)
    if w.dim() != 2 or w.shape[0] != D:
        raise ValueError(f"weight must have shape (D, K) = ({D}, K) or ({D}, 1, K), got {tuple(weight.shape)}")
    K = w.shape[1]
    if K < 1 or (max_width is not None and not 2 <= K <= max_width):
        raise ValueError(f"weight width K must be in 2..{max_width or 'any'}, got K = {K}")
    if bias is not None and tuple(bias.shape) != (D,):
        raise ValueError(f"bias must have shape ({D},), got {tuple(bias.shape)}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    n_seq = B
    if cu_seqlens is not None:
        if not isinstance(cu_seqlens, Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise ValueError("cu_seqlens must be a 1-D integer tensor (n_seq + 1,) of cumulative lengths")
        if cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"cu_seqlens must be int32 or int64, got {cu_seqlens.dtype}")
        if B != 1:
            raise ValueError(f"cu_seqlens requires batch == 1 (sequences packed along L), got batch {B}")
        if lengths is not None:
            raise ValueError("pass either cu_seqlens (packed) or lengths (right-padded), not both")
        n_seq = cu_seqlens.numel() - 1
    if lengths is not None:
        if not isinstance(lengths, Tensor) or tuple(lengths.shape) != (B,):
            raise ValueError(f"lengths must be a tensor of shape ({B},), got "
                             f"{tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__}")
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must be an integer tensor, got {lengths.dtype}")
        if lengths.device != x.device:
            raise ValueError(f"lengths is on {lengths.device} but x is on {x.device}")
    if initial_state is not None and tuple(initial_state.shape) != (n_seq, D, K - 1):
        raise ValueError(f"initial_state must have shape (n_seq, D, K-1) = ({n_seq}, {D}, {K - 1}), "
                         f"got {tuple(initial_state.shape)}")
    return w


# ------------------------------------------------------------------------------ reference

def _ref_rows(x, w, bias, silu, h0, ends):
    """One batch of sequences that start at row 0: ``x (B, L, D)``, ``h0 (B, D, K-1)``, ``ends
    (B,)`` (where the final state is read) -> ``y (B, L, D)``, final ``(B, D, K-1)``."""
    B, L, D = x.shape
    K = w.shape[1]
    hist = torch.cat([h0.transpose(1, 2), x], dim=1)  # (B, K-1+L, D): position p at row p+K-1
    y = sum(hist[:, k:k + L] * w[:, k] for k in range(K))  # Σ_k w[k] x[l-(K-1)+k]
    if bias is not None:
        y = y + bias
    if silu:
        y = F.silu(y)
    # the K-1 inputs before `end`: positions end-(K-1) .. end-1, i.e. rows end .. end+K-2 of hist
    idx = ends.to(x.device).long().clamp(0, L)[:, None] + torch.arange(K - 1, device=x.device)
    final = hist.gather(1, idx[:, :, None].expand(-1, -1, D)).transpose(1, 2)
    return y, final


def causal_conv1d_ref(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None,
    initial_state: Tensor | None = None, cu_seqlens: Tensor | None = None,
    lengths: Tensor | None = None, return_final_state: bool = False,
):
    """Plain-torch causal depthwise conv1d: the oracle and the CPU path (autograd for gradients).

    Same arguments and results as :func:`causal_conv1d` (without ``dx_out``). Arithmetic in
    float32, or float64 when ``x`` or ``weight`` is float64; ``y`` and the final state come back
    in ``x``'s dtype. Packed input (``cu_seqlens``) is split on the host (a read-back): this is a
    reference, not a fast path for packed batches.
    """
    w = _check(x, weight, bias, activation, initial_state, cu_seqlens, lengths)
    B, L, D = x.shape
    K = w.shape[1]
    ct = torch.float64 if torch.float64 in (x.dtype, w.dtype) else torch.float32
    silu = activation is not None
    xc, wc = x.to(ct), w.to(ct)
    bc = None if bias is None else bias.to(ct)
    if cu_seqlens is None:
        h0 = x.new_zeros(B, D, K - 1, dtype=ct) if initial_state is None else initial_state.to(ct)
        ends = lengths if lengths is not None else torch.full((B,), L, device=x.device)
        y, final = _ref_rows(xc, wc, bc, silu, h0, ends)
    else:
        cs = cu_seqlens.tolist()
        ys, finals = [], []
        for j in range(len(cs) - 1):
            seg = xc[:, cs[j]:cs[j + 1]]
            h0 = (x.new_zeros(1, D, K - 1, dtype=ct) if initial_state is None
                  else initial_state[j:j + 1].to(ct))
            y_j, f_j = _ref_rows(seg, wc, bc, silu, h0, torch.tensor([seg.shape[1]]))
            ys.append(y_j)
            finals.append(f_j)
        y, final = torch.cat(ys, dim=1), torch.cat(finals, dim=0)
    y = y.to(x.dtype)
    return (y, final.to(x.dtype)) if return_final_state else y


def causal_conv1d_update_ref(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None,
                             activation: str | None = None) -> Tensor:
    """One decoding step (plain torch): ``x (B, D)``, ``conv_state (B, D, K)`` the K most recent
    inputs oldest first, updated in place (shifted left, ``x`` appended), then
    ``y = act(bias + Σ_k w[:, k] · state[:, :, k])`` ``(B, D)`` in ``x``'s dtype."""
    w = _weight_2d(weight)
    _check_update(x, conv_state, w, bias, activation)
    conv_state.copy_(torch.cat([conv_state[..., 1:], x[..., None].to(conv_state.dtype)], dim=-1))
    ct = torch.float64 if torch.float64 in (x.dtype, w.dtype, conv_state.dtype) else torch.float32
    y = (conv_state.to(ct) * w.to(ct)).sum(-1)
    if bias is not None:
        y = y + bias.to(ct)
    if activation is not None:
        y = F.silu(y)
    return y.to(x.dtype)


def _check_update(x, conv_state, w, bias, activation):
    if x.dim() != 2:
        raise ValueError(f"x must have shape (batch, D), got {tuple(x.shape)}")
    B, D = x.shape
    if w.dim() != 2 or w.shape[0] != D:
        raise ValueError(f"weight must have shape (D, K) = ({D}, K) or ({D}, 1, K), got {tuple(w.shape)}")
    if tuple(conv_state.shape) != (B, D, w.shape[1]):
        raise ValueError(f"conv_state must have shape (batch, D, K) = ({B}, {D}, {w.shape[1]}), "
                         f"got {tuple(conv_state.shape)}")
    if bias is not None and tuple(bias.shape) != (D,):
        raise ValueError(f"bias must have shape ({D},), got {tuple(bias.shape)}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")


# ------------------------------------------------------------------------------ kernels

@triton.jit
def _window(p_x, l0, L, m_d, sxl, p_h0, sik, START: tl.constexpr, NROWS: tl.constexpr,
            K: tl.constexpr, HAS_H0: tl.constexpr):
    """Rows ``l0 + START + i`` (``i < NROWS``) of x at the program's channels as fp32 ``[BD]``
    vectors (``p_x`` points at row ``l0``); rows outside ``[0, L)`` read 0, or with ``HAS_H0``
    rows ``-(K-1) .. -1`` read the initial state ``p_h0[K-1+row]`` (only the first window rows
    can be negative: the others compile without that load)."""
    xs = ()
    for i in tl.static_range(NROWS):
        r = l0 + START + i
        v = tl.load(p_x + (START + i) * sxl, mask=tl.where((r >= 0) & (r < L), m_d, False),
                    other=0.0).to(tl.float32)
        if HAS_H0 and START + i < 0:
            v += tl.load(p_h0 + (K - 1 + r) * sik, mask=tl.where(r < 0, m_d, False),
                         other=0.0).to(tl.float32)
        xs = xs + (v,)
    return xs


@triton.jit
def _row_seq(seq_idx, cu, l, L):
    """(sequence, position in it) of packed row ``l`` (clamped into ``[0, L)``)."""
    s = tl.load(seq_idx + tl.minimum(tl.maximum(l, 0), L - 1))
    return s, l - tl.load(cu + s)


@triton.jit
def _taps(xs, J: tl.constexpr, seq, pos, h0, o_d, m_d, sib, sid, sik, K: tl.constexpr,
          IS_VARLEN: tl.constexpr, HAS_H0: tl.constexpr):
    """The K inputs ``x[l - s]`` (s = 0 .. K-1) output row ``l`` (window entry ``J``) reads. Packed
    rows take inputs before their sequence's start (``s > pos``) from its initial state (or 0)
    instead of the window, which holds the previous sequence's rows there."""
    vs = ()
    for s in tl.static_range(K):
        v = xs[J - s]
        if IS_VARLEN and s > 0:
            if HAS_H0:
                vi = tl.load(h0 + seq * sib + o_d * sid + (K - 1 - s + pos) * sik,
                             mask=tl.where(s > pos, m_d, False), other=0.0).to(tl.float32)
                v = tl.where(s > pos, vi, v)
            else:
                v = tl.where(s > pos, 0.0, v)
        vs = vs + (v,)
    return vs


@triton.jit(do_not_specialize=["L"])
def _conv_fwd_kernel(
    x, w, bias, h0, y, seq_idx, cu,
    L, D, sxb, sxl, sxd, swd, swk, sib, sid, sik,
    K: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr, HAS_BIAS: tl.constexpr,
    SILU: tl.constexpr, HAS_H0: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    i_l, i_d, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    ws = ()
    for k in tl.static_range(K):
        ws = ws + (tl.load(w + o_d * swd + k * swk, mask=m_d, other=0.0).to(tl.float32),)
    b_bias = tl.load(bias + o_d, mask=m_d, other=0.0).to(tl.float32) if HAS_BIAS else 0.0
    l0 = i_l * BL
    p_x = x + i_b.to(tl.int64) * sxb + l0.to(tl.int64) * sxl + o_d * sxd
    p_h0 = x  # the batch row's state (not packed); a stand-in when absent
    if HAS_H0:
        p_h0 = h0 + i_b.to(tl.int64) * sib + o_d * sid
    # window entry i is row l0 - (K-1) + i
    xs = _window(p_x, l0, L, m_d, sxl, p_h0, sik, 1 - K, BL + K - 1, K, HAS_H0 and not IS_VARLEN)
    p_y = y + (i_b.to(tl.int64) * L + l0) * D + o_d
    for j in tl.static_range(BL):
        l = l0 + j
        seq, pos = 0, 0
        if IS_VARLEN:
            seq, pos = _row_seq(seq_idx, cu, l, L)
        vs = _taps(xs, j + K - 1, seq, pos, h0, o_d, m_d, sib, sid, sik, K, IS_VARLEN, HAS_H0)
        acc = b_bias
        for s in tl.static_range(K):
            acc += ws[K - 1 - s] * vs[s]
        if SILU:
            acc = acc * sigmoid(acc)
        tl.store(p_y + j * D, acc.to(y.dtype.element_ty), mask=tl.where(l < L, m_d, False))


@triton.jit(do_not_specialize=["L"])
def _conv_bwd_kernel(
    x, w, bias, h0, dy, dfinal, dx, part, dh0, seq_idx, cu, lengths,
    L, D, sxb, sxl, sxd, swd, swk, sib, sid, sik, sdyb, sdyl, sdyd, sdxb, sdxl, sdxd,
    sfb, sfd, sfk,
    K: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr, ITERS: tl.constexpr,
    HAS_BIAS: tl.constexpr, SILU: tl.constexpr, HAS_H0: tl.constexpr, IS_VARLEN: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, HAS_DFINAL: tl.constexpr, STORE_DX: tl.constexpr,
    STORE_DW: tl.constexpr, STORE_DH0: tl.constexpr,
):
    i_l, i_d, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    ws = ()
    for k in tl.static_range(K):
        ws = ws + (tl.load(w + o_d * swd + k * swk, mask=m_d, other=0.0).to(tl.float32),)
    b_bias = tl.load(bias + o_d, mask=m_d, other=0.0).to(tl.float32) if HAS_BIAS else 0.0
    p_h0 = x
    if HAS_H0:
        p_h0 = h0 + i_b.to(tl.int64) * sib + o_d * sid
    # where the batch row's final state was read (not packed): steps e-(K-1) .. e-1
    e_row = L
    if HAS_LENGTHS:
        e_row = tl.minimum(tl.maximum(tl.load(lengths + i_b).to(tl.int32), 0), L)
    acc_w = ()
    for _ in tl.static_range(K):
        acc_w = acc_w + (tl.zeros([BD], tl.float32),)
    acc_b = tl.zeros([BD], tl.float32)
    for it in range(ITERS):
        l0 = (i_l * ITERS + it) * BL
        p_x = x + i_b.to(tl.int64) * sxb + l0.to(tl.int64) * sxl + o_d * sxd
        # window entry i is row l0 - (K-1) + i: the inputs of rows l0 .. l0 + BL + K - 2
        xs = _window(p_x, l0, L, m_d, sxl, p_h0, sik, 1 - K, BL + 2 * K - 2, K,
                     HAS_H0 and not IS_VARLEN)
        p_dy = dy + i_b.to(tl.int64) * sdyb + l0.to(tl.int64) * sdyl + o_d * sdyd
        # ∂pre of rows l0 .. l0 + BL + K - 2 (the tile and the K - 1 rows whose taps reach it)
        gs = ()
        poss = ()
        for j in tl.static_range(BL + K - 1):
            l = l0 + j
            seq, pos = 0, 0
            if IS_VARLEN:
                seq, pos = _row_seq(seq_idx, cu, l, L)
            vs = _taps(xs, j + K - 1, seq, pos, h0, o_d, m_d, sib, sid, sik, K, IS_VARLEN, HAS_H0)
            g = tl.load(p_dy + j * sdyl, mask=tl.where(l < L, m_d, False), other=0.0).to(tl.float32)
            if SILU:
                acc = b_bias
                for s in tl.static_range(K):
                    acc += ws[K - 1 - s] * vs[s]
                sg = sigmoid(acc)
                g = g * sg * (1.0 + acc * (1.0 - sg))
            gs = gs + (g,)
            poss = poss + (pos,)
            if j < BL:  # each row's parameter gradient is counted by the tile that owns it
                if STORE_DW:
                    acc_b += g
                    nw = ()
                    for k in tl.static_range(K):
                        nw = nw + (acc_w[k] + g * vs[K - 1 - k],)
                    acc_w = nw
        if STORE_DX:
            p_dx = dx + i_b.to(tl.int64) * sdxb + l0.to(tl.int64) * sdxl + o_d * sdxd
            for j in tl.static_range(BL):
                p = l0 + j
                acc = tl.zeros([BD], tl.float32)
                for s in tl.static_range(K):
                    g = gs[j + s]
                    if IS_VARLEN and s > 0:  # row p + s belongs to the next sequence
                        g = tl.where(poss[j + s] >= s, g, 0.0)
                    acc += ws[K - 1 - s] * g
                if HAS_DFINAL:
                    # the final state read x[p] when p is among its sequence's last K-1 steps
                    if IS_VARLEN:
                        sq = _row_seq(seq_idx, cu, p, L)[0]
                        e = tl.load(cu + sq + 1)
                    else:
                        sq = i_b
                        e = e_row
                    q = p - (e - (K - 1))
                    acc += tl.load(dfinal + sq * sfb + o_d * sfd + q * sfk,
                                   mask=tl.where((q >= 0) & (q < K - 1) & (p < L), m_d, False),
                                   other=0.0).to(tl.float32)
                tl.store(p_dx + j * sdxl, acc.to(dx.dtype.element_ty),
                         mask=tl.where(p < L, m_d, False))
        if STORE_DH0:
            # ∂h0[i] = Σ_{m ≤ i} w[i - m] ∂pre[start + m] over the sequence's first rows, written
            # by the tile holding its first row (the window reaches K - 1 rows past the tile)
            for j in tl.static_range(BL):
                if IS_VARLEN:
                    first = (poss[j] == 0) & (l0 + j < L)
                    sq = _row_seq(seq_idx, cu, l0 + j, L)[0]
                else:
                    first = l0 + j == 0
                    sq = i_b
                if IS_VARLEN or j == 0:
                    for i in tl.static_range(K - 1):
                        acc = tl.zeros([BD], tl.float32)
                        for m in tl.static_range(i + 1):
                            g = gs[j + m]
                            if IS_VARLEN and m > 0:
                                g = tl.where(poss[j + m] == m, g, 0.0)
                            acc += ws[i - m] * g
                        tl.store(dh0 + (sq * D + o_d) * (K - 1) + i, acc,
                                 mask=tl.where(first, m_d, False))
    if STORE_DW:
        # this program's partial sums: row P of (P, K + 1, D), reduced by _conv_reduce_kernel
        p_part = part + ((i_b * tl.num_programs(0) + i_l) * (K + 1)).to(tl.int64) * D + o_d
        for k in tl.static_range(K):
            tl.store(p_part + k * D, acc_w[k], mask=m_d)
        tl.store(p_part + K * D, acc_b, mask=m_d)


@triton.jit
def _conv_reduce_kernel(part, dw, db, P, D, swd, swk, K: tl.constexpr, BD: tl.constexpr,
                        BP: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Row ``k`` of ∂w (D, K) (or, for ``k == K``, ∂bias (D,)) at the program's channels: the sum
    of the backward programs' partials ``part[:, k]``, BP of them a load, in a fixed order. One
    program per (channel block, k): the sums are independent, and a program walking all P
    partials of every row alone was latency-bound (12 programs at the block's shape)."""
    i_d, k = tl.program_id(0), tl.program_id(1)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    o_p = tl.arange(0, BP)
    acc = tl.zeros([BP, BD], tl.float32)
    p_part = part + k * D + o_d[None, :]
    for p0 in range(0, P, BP):
        rows = p0 + o_p
        acc += tl.load(p_part + rows[:, None].to(tl.int64) * ((K + 1) * D),
                       mask=(rows < P)[:, None] & m_d[None, :], other=0.0)
    tot = tl.sum(acc, 0)
    if k < K:
        tl.store(dw + o_d * swd + k * swk, tot.to(dw.dtype.element_ty), mask=m_d)
    elif HAS_BIAS:
        tl.store(db + o_d, tot.to(db.dtype.element_ty), mask=m_d)


@triton.jit
def _final_state_kernel(x, h0, fs, cu, lengths, L, D, sxb, sxl, sxd, sib, sid, sik, sfb, sfd, sfk,
                        K: tl.constexpr, BD: tl.constexpr, HAS_H0: tl.constexpr,
                        IS_VARLEN: tl.constexpr, HAS_LENGTHS: tl.constexpr):
    """``fs[j, :, q]`` = input ``e - (K-1) + q`` of sequence j (``e`` its end), from the initial
    state (or 0) for positions before the sequence's start."""
    j, i_d = tl.program_id(0), tl.program_id(1)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    if IS_VARLEN:
        bos = tl.load(cu + j)
        eos = tl.load(cu + j + 1)
        p_x = x + o_d * sxd
    else:
        bos = 0
        eos = L
        if HAS_LENGTHS:
            eos = tl.minimum(tl.maximum(tl.load(lengths + j).to(tl.int32), 0), L)
        p_x = x + j.to(tl.int64) * sxb + o_d * sxd
    for q in tl.static_range(K - 1):
        p = eos - (K - 1) + q
        inside = p >= bos
        v = tl.load(p_x + p.to(tl.int64) * sxl, mask=tl.where(inside, m_d, False), other=0.0)
        v = v.to(tl.float32)
        if HAS_H0:
            v += tl.load(h0 + j * sib + o_d * sid + (K - 1 + p - bos) * sik,
                         mask=tl.where(inside, False, m_d), other=0.0).to(tl.float32)
        tl.store(fs + j * sfb + o_d * sfd + q * sfk, v.to(fs.dtype.element_ty), mask=m_d)


@triton.jit
def _conv_update_kernel(x, state, w, bias, y, D, sxb, ssb, ssd, ssk, swd, swk,
                        K: tl.constexpr, BD: tl.constexpr, HAS_BIAS: tl.constexpr,
                        SILU: tl.constexpr):
    i_b, i_d = tl.program_id(0), tl.program_id(1)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    p_s = state + i_b.to(tl.int64) * ssb + o_d * ssd
    # the new x rounded to the state's dtype first, as the state keeps it
    xt = tl.load(x + i_b.to(tl.int64) * sxb + o_d, mask=m_d, other=0.0).to(state.dtype.element_ty)
    acc = tl.load(bias + o_d, mask=m_d, other=0.0).to(tl.float32) if HAS_BIAS else 0.0
    for k in tl.static_range(K):
        if k < K - 1:
            v = tl.load(p_s + (k + 1) * ssk, mask=m_d, other=0.0)
        else:
            v = xt
        acc += tl.load(w + o_d * swd + k * swk, mask=m_d, other=0.0).to(tl.float32) * v.to(tl.float32)
        tl.store(p_s + k * ssk, v, mask=m_d)  # shifted left: a load of k+1 always precedes this
    if SILU:
        acc = acc * sigmoid(acc)
    tl.store(y + i_b.to(tl.int64) * D + o_d, acc.to(y.dtype.element_ty), mask=m_d)


# ------------------------------------------------------------------------------ launchers

def _blocks(D: int) -> tuple[int, int]:
    """(BD channels a program, warps): one channel a lane, at most 4 warps."""
    BD = min(128, max(16, triton.next_power_of_2(D)))
    return BD, max(1, BD // 32)


def _rows() -> tuple[int, int, int]:
    """(forward rows a program, backward rows a tile, backward tiles a program): the kernel
    config's ``conv_*`` knobs, by default (32, 8, 16), the best backward tiling of
    ``experiments/bench/conv_sweep.py`` on an H200 (0.109 ms for the backward's kernels at the
    block's bf16 shape, against 0.160 for (16, 8); ``conv_sweep_h200.md``). The backward
    recomputes K - 1 rows past each tile; ITERS tiles a program keep the partial-sum buffer of
    ∂w small ((B · L / (BL·ITERS), K + 1, D) fp32). Under the interpreter the defaults are short
    tiles, (8, 4, 2), so that tiny tests cross tile and program boundaries."""
    cfg = get_config()
    default = (8, 4, 2) if is_interpreting() else (32, 8, 16)
    chosen = (cfg.conv_fwd_rows, cfg.conv_bwd_rows, cfg.conv_bwd_tiles)
    return tuple(d if c is None else c for c, d in zip(chosen, default))


def _seq_idx(cu: Tensor, L: int) -> Tensor:
    """The sequence of every packed row, ``(L,)`` int32, on the device (no read-back)."""
    return torch.searchsorted(cu[1:], torch.arange(L, device=cu.device, dtype=cu.dtype),
                              right=True, out_int32=True)


def _strides3(t: Tensor | None) -> tuple[int, int, int]:
    return (0, 0, 0) if t is None else tuple(t.stride())


def _fwd_impl(x: Tensor, w: Tensor, bias: Tensor | None, h0: Tensor | None, cu: Tensor | None,
              seq_idx: Tensor | None, lengths: Tensor | None, silu: bool,
              want_final: bool) -> tuple[Tensor, Tensor]:
    B, L, D = x.shape
    K = w.shape[1]
    y = torch.empty((B, L, D), dtype=x.dtype, device=x.device)
    BD, warps = _blocks(D)
    BL = _rows()[0]
    if L > 0:
        _conv_fwd_kernel[(triton.cdiv(L, BL), triton.cdiv(D, BD), B)](
            x, w, bias, h0, y, seq_idx, cu, L, D, *x.stride(), *w.stride(), *_strides3(h0),
            K=K, BL=BL, BD=BD, HAS_BIAS=bias is not None, SILU=silu, HAS_H0=h0 is not None,
            IS_VARLEN=cu is not None, num_warps=warps)
    n_seq = B if cu is None else cu.numel() - 1
    final = y.new_empty(0)
    if want_final:
        final = torch.empty((n_seq, D, K - 1), dtype=x.dtype, device=x.device)
        if n_seq > 0:
            _final_state_kernel[(n_seq, triton.cdiv(D, BD))](
                x, h0, final, cu, lengths, L, D, *x.stride(), *_strides3(h0), *final.stride(),
                K=K, BD=BD, HAS_H0=h0 is not None, IS_VARLEN=cu is not None,
                HAS_LENGTHS=lengths is not None, num_warps=warps)
    return y, final


def _bwd_impl(x: Tensor, w: Tensor, bias: Tensor | None, h0: Tensor | None, cu: Tensor | None,
              seq_idx: Tensor | None, lengths: Tensor | None, dy: Tensor, dfinal: Tensor | None,
              silu: bool, need_dx: bool, need_dw: bool, need_dh0: bool,
              dx: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """∂x (into ``dx`` when given), ∂w (D, K) in w's dtype, ∂bias (D,) and ∂h0 (n_seq, D, K-1)
    in fp32 when asked for; empty tensors otherwise."""
    B, L, D = x.shape
    K = w.shape[1]
    n_seq = B if cu is None else cu.numel() - 1
    f32 = dict(dtype=torch.float32, device=x.device)
    if need_dx and dx is None:
        dx = torch.empty_like(x)
    BD, warps = _blocks(D)
    _, BL, ITERS = _rows()
    n_prog = triton.cdiv(L, BL * ITERS)
    part = torch.empty((B * n_prog, K + 1, D), **f32) if need_dw else None
    # packed sequences without rows get no store: zeros for them
    dh0 = None
    if need_dh0:
        dh0 = torch.zeros((n_seq, D, K - 1), **f32) if cu is not None else \
            torch.empty((n_seq, D, K - 1), **f32)
    if L > 0:
        _conv_bwd_kernel[(n_prog, triton.cdiv(D, BD), B)](
            x, w, bias, h0, dy, dfinal, dx, part, dh0, seq_idx, cu, lengths,
            L, D, *x.stride(), *w.stride(), *_strides3(h0), *dy.stride(), *_strides3(dx),
            *_strides3(dfinal),
            K=K, BL=BL, BD=BD, ITERS=ITERS, HAS_BIAS=bias is not None, SILU=silu,
            HAS_H0=h0 is not None, IS_VARLEN=cu is not None, HAS_LENGTHS=lengths is not None,
            HAS_DFINAL=dfinal is not None, STORE_DX=need_dx, STORE_DW=need_dw,
            STORE_DH0=need_dh0, num_warps=warps)
    # a fresh empty tensor for every gradient not asked for: the custom op may not return one
    # tensor twice (torch.library forbids outputs aliasing each other)
    dw, db = x.new_empty(0), x.new_empty(0)
    if need_dw:
        dw = torch.empty((D, K), dtype=w.dtype, device=x.device)
        db = torch.empty(D, dtype=bias.dtype, device=x.device) if bias is not None else db
        if L > 0:
            _conv_reduce_kernel[(triton.cdiv(D, BD), K + 1)](
                part, dw, db, B * n_prog, D, *dw.stride(), K=K, BD=BD, BP=16,
                HAS_BIAS=bias is not None, num_warps=warps)
        else:
            dw.zero_()
            db.zero_()
    if need_dh0:
        if L == 0:
            dh0.zero_()
        if dfinal is not None:
            # a sequence shorter than K - 1 steps: its final state holds initial-state entries
            # (final[q] = h0[q + length] for q + length < K - 1)
            if cu is not None:
                lens = (cu[1:] - cu[:-1]).long()
            elif lengths is not None:
                lens = lengths.long().clamp(0, L)
            else:
                lens = torch.full((B,), L, device=x.device, dtype=torch.long)
            q = torch.arange(K - 1, device=x.device)[None] - lens[:, None]  # (n_seq, K-1)
            g = dfinal.float().gather(2, q.clamp(min=0)[:, None, :].expand(-1, D, -1))
            dh0 += g * (q >= 0)[:, None, :]
    return (dx if need_dx else x.new_empty(0)), dw, db, (dh0 if need_dh0 else x.new_empty(0))


# torch.compile sees the kernels as two opaque custom ops; eager calls go through the
# autograd.Function below (the custom op's dispatch costs host time: see selective_scan.py).
_fwd_op = torch.library.custom_op("eventssm::causal_conv1d_fwd", mutates_args=())(_fwd_impl)


@_fwd_op.register_fake
def _(x, w, bias, h0, cu, seq_idx, lengths, silu, want_final):
    B, L, D = x.shape
    n_seq = B if cu is None else cu.shape[0] - 1
    final = x.new_empty((n_seq, D, w.shape[1] - 1)) if want_final else x.new_empty(0)
    return x.new_empty((B, L, D)), final


def _bwd_op_impl(x: Tensor, w: Tensor, bias: Tensor | None, h0: Tensor | None, cu: Tensor | None,
                 seq_idx: Tensor | None, lengths: Tensor | None, dy: Tensor, dfinal: Tensor | None,
                 silu: bool, need_dx: bool, need_dw: bool, need_dh0: bool) -> list[Tensor]:
    return list(_bwd_impl(x, w, bias, h0, cu, seq_idx, lengths, dy, dfinal, silu, need_dx, need_dw,
                          need_dh0))


_bwd_op = torch.library.custom_op("eventssm::causal_conv1d_bwd", mutates_args=())(_bwd_op_impl)


@_bwd_op.register_fake
def _(x, w, bias, h0, cu, seq_idx, lengths, dy, dfinal, silu, need_dx, need_dw, need_dh0):
    D, K = w.shape
    n_seq = x.shape[0] if cu is None else cu.shape[0] - 1
    return [torch.empty_like(x) if need_dx else x.new_empty(0),
            w.new_empty((D, K)) if need_dw else x.new_empty(0),
            bias.new_empty((D,)) if need_dw and bias is not None else x.new_empty(0),
            x.new_empty((n_seq, D, K - 1), dtype=torch.float32) if need_dh0 else x.new_empty(0)]


def _grads(ctx, dy, dfinal, bwd, dx=None):
    x, w, bias, h0, cu, seq_idx, lengths = ctx.saved_tensors
    needs = ctx.needs_input_grad
    if dy is None:
        dy = torch.zeros_like(x)
    if dfinal is not None and dfinal.numel() == 0:
        dfinal = None
    need_dw = needs[1] or needs[2]
    kw = {} if dx is None else {"dx": dx}
    dx, dw, db, dh0 = bwd(x, w, bias, h0, cu, seq_idx, lengths, dy, dfinal, ctx.silu, needs[0],
                          need_dw, needs[3], **kw)
    return (dx if needs[0] else None, dw if needs[1] else None,
            db if needs[2] and bias is not None else None,
            dh0.to(h0.dtype) if needs[3] else None)


def _setup_context(ctx, inputs, output):
    x, w, bias, h0, cu, seq_idx, lengths, silu, _ = inputs
    ctx.save_for_backward(x, w, bias, h0, cu, seq_idx, lengths)
    ctx.silu = silu


def _op_backward(ctx, dy, dfinal):
    return (*_grads(ctx, dy, dfinal, _bwd_op), None, None, None, None, None)


_fwd_op.register_autograd(_op_backward, setup_context=_setup_context)


class _CausalConv1dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, bias, h0, cu, seq_idx, lengths, silu, want_final, dx_out):
        y, final = _fwd_impl(x, w, bias, h0, cu, seq_idx, lengths, silu, want_final)
        _setup_context(ctx, (x, w, bias, h0, cu, seq_idx, lengths, silu, want_final), None)
        ctx.dx_out = dx_out
        ctx.mark_non_differentiable(*(() if want_final else (final,)))
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        dx = None
        if ctx.needs_input_grad[0] and ctx.dx_out is not None:
            dx = ctx.dx_out() if callable(ctx.dx_out) else ctx.dx_out
            x = ctx.saved_tensors[0]
            if not isinstance(dx, Tensor) or dx.shape != x.shape or dx.dtype != x.dtype \
                    or dx.device != x.device:
                raise ValueError(f"dx_out must give a {x.dtype} tensor of shape {tuple(x.shape)} on "
                                 f"{x.device}, got {dx if not isinstance(dx, Tensor) else (dx.dtype, tuple(dx.shape))}")
        return (*_grads(ctx, dy, dfinal, _bwd_impl, dx), None, None, None, None, None, None)


def causal_conv1d(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None,
    initial_state: Tensor | None = None, cu_seqlens: Tensor | None = None,
    lengths: Tensor | None = None, return_final_state: bool = False,
    dx_out: Tensor | Callable[[], Tensor] | None = None,
):
    """Causal depthwise conv1d with the Triton kernels (CUDA tensors, or the CPU under
    ``TRITON_INTERPRET=1``); differentiable in ``x``, ``weight``, ``bias`` and ``initial_state``.

    Args:
        x: ``(B, L, D)`` any strides, fp32/fp16/bf16 (float64 goes to :func:`causal_conv1d_ref`).
        weight: ``(D, K)`` or ``(D, 1, K)`` (``nn.Conv1d(D, D, K, groups=D).weight``), 2 ≤ K ≤ 4.
        bias: ``(D,)`` or None.
        activation: None or ``"silu"`` (``"swish"``), fused.
        initial_state: ``(n_seq, D, K-1)`` the K-1 inputs before each sequence's first step,
            oldest first (any strides, e.g. ``cache[..., 1:]`` of a ``(B, D, K)`` cache); None: 0.
        cu_seqlens: ``(n_seq + 1,)`` int32/int64 cumulative lengths of sequences packed along L
            (``B == 1``); each sequence starts from its own initial state (zeros by default).
        lengths: ``(B,)`` real steps of a right-padded batch, in ``[0, L]``; the final state is
            read from each sequence's last K-1 *real* inputs (the initial state fills in when a
            sequence is shorter than K-1). Outputs at real steps do not depend on padding anyway.
        return_final_state: also return the final state ``(n_seq, D, K-1)`` in x's dtype.
        dx_out: where to write ``∂x``: a ``(B, L, D)`` tensor of x's dtype with any strides (e.g.
            ``dxz[..., :D]`` of a buffer that the gate's gradient fills too), or a zero-argument
            callable returning one when the backward runs. Not supported under ``torch.compile``.

    Returns:
        ``y (B, L, D)`` contiguous in x's dtype (fp32 arithmetic), and the final state when asked.

    Raises:
        TypeError / ValueError: wrong dtypes, shapes, devices, K out of range, both ``cu_seqlens``
        and ``lengths``. Values (lengths in range, cu_seqlens sorted) are not checked here: that
        would read back from the device; the callers validate them once.
    """
    w = _check(x, weight, bias, activation, initial_state, cu_seqlens, lengths, MAX_WIDTH)
    if torch.float64 in (x.dtype, w.dtype) or x.shape[1] == 0:
        if dx_out is not None:
            raise ValueError("dx_out is only supported by the Triton path (not float64 or L = 0)")
        return causal_conv1d_ref(x, weight, bias, activation, initial_state, cu_seqlens, lengths,
                                 return_final_state)
    if not x.is_cuda and not is_interpreting():
        raise ValueError(f"causal_conv1d (Triton) needs CUDA tensors, got x on {x.device}; "
                         "use causal_conv1d_ref on the CPU")
    cu = seq_idx = None
    if cu_seqlens is not None:
        cu = cu_seqlens.to(device=x.device, dtype=torch.int32)
        seq_idx = _seq_idx(cu, x.shape[1])
    silu = activation is not None
    if torch.compiler.is_compiling():
        if dx_out is not None:
            raise ValueError("dx_out is not supported under torch.compile")
        y, final = _fwd_op(x, w, bias, initial_state, cu, seq_idx, lengths, silu, return_final_state)
    else:
        y, final = _CausalConv1dFn.apply(x, w, bias, initial_state, cu, seq_idx, lengths, silu,
                                         return_final_state, dx_out)
    return (y, final) if return_final_state else y


def causal_conv1d_update(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None,
                         activation: str | None = None) -> Tensor:
    """One decoding step in one Triton launch (no autograd): ``x (B, D)``, ``conv_state (B, D,
    K)`` (any strides; the K most recent inputs, oldest first) shifted left in place with ``x``
    appended, then ``y = act(bias + Σ_k w[:, k] · state[:, :, k])`` ``(B, D)`` in x's dtype. Same
    result as :func:`causal_conv1d_update_ref`; float64 or CPU tensors (without the
    interpreter) go there."""
    w = _weight_2d(weight)
    _check_update(x, conv_state, w, bias, activation)
    B, D = x.shape
    K = w.shape[1]
    if torch.float64 in (x.dtype, w.dtype, conv_state.dtype) or K > 8 or \
            (not x.is_cuda and not is_interpreting()):
        return causal_conv1d_update_ref(x, conv_state, weight, bias, activation)
    if x.stride(1) != 1:
        x = x.contiguous()
    y = torch.empty((B, D), dtype=x.dtype, device=x.device)
    BD, warps = _blocks(D)
    _conv_update_kernel[(B, triton.cdiv(D, BD))](
        x, conv_state, w, bias, y, D, x.stride(0), *conv_state.stride(), *w.stride(),
        K=K, BD=BD, HAS_BIAS=bias is not None, SILU=activation is not None, num_warps=warps)
    return y
