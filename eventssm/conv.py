"""Causal depthwise conv1d, channel-last: the PyTorch path of the Mamba block's short conv.

Same contract as :func:`eventssm.kernels.causal_conv1d` and ``causal_conv1d_update`` (the Triton
kernels used on CUDA), so that the dispatcher (:mod:`eventssm.dispatch`) can hand either to
``Mamba``:

    y[b, l, d] = act(bias[d] + Σ_k weight[d, k] · x̃[b, l − (K−1) + k, d])

where ``x̃`` is the sequence ``x[b]`` preceded by its ``K − 1`` carried inputs (``initial_state``,
zeros by default). Activations stay ``(B, L, D)`` from end to end: no transpose to ``(B, D, L)``,
no two-sided padding and ``[..., :L]`` slice as with ``nn.Conv1d``.

With ``lengths`` only the final state changes: it ends at each sequence's last real input.

Why taps and a hand-written backward. The conv is ``K`` (4) multiply-adds per element over
``(B, L, D)`` tensors, which the CPU does at memory speed when every operand is channel-last:
each tap is one in-place ``addcmul_`` of a shifted slice of ``x`` into the output, with no padded
copy of ``x`` (the carried inputs enter only the first ``K-1`` outputs). Left to autograd, each
shifted slice would give its gradient back as a full-size zero tensor with the slice copied in
(``K`` of them, summed); here the backward accumulates the ``K`` shifted products into one
buffer in place, and saves ``x`` itself (a view of ``in_proj``'s output in ``Mamba``).

Legend: batch ``B``, steps ``L``, channels ``D``, conv width ``K``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["causal_conv1d", "causal_conv1d_update", "ACTIVATIONS"]

ACTIVATIONS = (None, "silu", "swish")


def _silu(activation: str | None) -> bool:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return activation is not None


def _weight_2d(weight: Tensor) -> Tensor:
    """``(D, K)`` from ``(D, K)`` or ``nn.Conv1d``'s ``(D, 1, K)``."""
    return weight[:, 0] if weight.dim() == 3 else weight


def _silu_grad(pre: Tensor) -> Tensor:
    """d silu(p) / dp = σ(p) (1 + p (1 − σ(p)))."""
    s = torch.sigmoid(pre)
    return s * (1 + pre * (1 - s))


class _CausalConv(torch.autograd.Function):
    """The dense case, without a padded copy of ``x``: tap ``k`` of output ``l`` reads
    ``x[l - s]`` with ``s = K-1-k``, from ``head`` when ``l < s``.

    ``x (B, L, D)`` any strides, ``head (B, K-1, D)`` (the carried inputs) or None (zeros),
    ``w (K, D)``, ``bias (D,)`` or None, all in the compute dtype -> ``y (B, L, D)``.
    """

    @staticmethod
    def forward(ctx, x, head, w, bias, silu: bool):
        K, L = w.shape[0], x.shape[1]
        pre = x * w[K - 1]  # the current step's tap: a fresh contiguous (B, L, D) buffer
        for s in range(1, K):  # earlier steps: x[l - s] · w[K-1-s]
            if s < L:
                pre[:, s:].addcmul_(x[:, :L - s], w[K - 1 - s])
            if head is not None:  # the first s outputs reach back into the carried inputs
                n = min(s, L)
                pre[:, :n].addcmul_(head[:, K - 1 - s:K - 1 - s + n], w[K - 1 - s])
        if bias is not None:
            pre += bias
        y = F.silu(pre) if silu else pre
        ctx.save_for_backward(x, head, w, pre if silu else None)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, gy):
        x, head, w, pre = ctx.saved_tensors
        need_x, need_head, need_w, need_b = ctx.needs_input_grad[:4]
        K, L = w.shape[0], x.shape[1]
        g = gy if pre is None else gy * _silu_grad(pre)  # gradient of the pre-activation
        gx = g * w[K - 1] if need_x else None
        ghead = torch.zeros_like(head) if need_head else None
        gw = torch.empty_like(w) if need_w else None
        if need_w:
            gw[K - 1] = (g * x).sum((0, 1))
        for s in range(1, K):
            k, n = K - 1 - s, min(s, L)
            if need_x and s < L:
                gx[:, :L - s].addcmul_(g[:, s:], w[k])
            if need_head and head is not None:
                ghead[:, k:k + n].addcmul_(g[:, :n], w[k])
            if need_w:
                gw[k] = (g[:, s:] * x[:, :L - s]).sum((0, 1)) if s < L else 0.0
                if head is not None:
                    gw[k] += (g[:, :n] * head[:, k:k + n]).sum((0, 1))
        gb = g.sum((0, 1)) if ctx.has_bias and need_b else None
        return gx, ghead, gw, gb, None


def _dense(x, weight, bias, silu, initial_state, lengths, return_final_state):
    """One batch of right-padded sequences (no ``cu_seqlens``)."""
    B, L, D = x.shape
    K = weight.shape[1]
    cdt = torch.promote_types(x.dtype, weight.dtype)
    head = None if initial_state is None else initial_state.transpose(1, 2).to(cdt)  # (B, K-1, D)
    y = _CausalConv.apply(x.to(cdt), head, weight.t().to(cdt),
                          None if bias is None else bias.to(cdt), silu).to(x.dtype)
    if not return_final_state:
        return y
    # the K-1 most recent inputs of each sequence end at its length (right padding); those
    # before the sequence's start come from the carried inputs
    end = torch.full((B,), L, device=x.device) if lengths is None else lengths.to(x.device)
    idx = (end[:, None] - (K - 1) + torch.arange(K - 1, device=x.device))[..., None]  # (B, K-1, 1)
    from_x = x.gather(1, idx.clamp(min=0).expand(B, K - 1, D)) if L else x.new_zeros(B, K - 1, D)
    if head is None:
        head = x.new_zeros(B, K - 1, D)
    from_head = head.gather(1, (idx + K - 1).clamp(max=K - 2).expand(B, K - 1, D))
    final = torch.where(idx >= 0, from_x.to(head.dtype), from_head).transpose(1, 2)
    return y, final.to(x.dtype)


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
    initial_state: Tensor | None = None,
    cu_seqlens: Tensor | None = None,
    lengths: Tensor | None = None,
    return_final_state: bool = False,
):
    """Causal depthwise conv over ``L``, channel-last, with bias and activation fused.

    Args:
        x: ``(B, L, D)``, any strides (e.g. a half of ``in_proj``'s output).
        weight: ``(D, K)`` or ``nn.Conv1d``'s ``(D, 1, K)``.
        bias: ``(D,)`` or None.
        activation: None or ``"silu"`` (``"swish"``).
        initial_state: ``(B, D, K-1)`` the inputs before ``x[:, 0]`` (oldest first), any strides
            (e.g. ``cache[..., 1:]`` of a ``(B, D, K)`` cache); zeros when None. With
            ``cu_seqlens``: ``(n_seq, D, K-1)``, one per packed sequence.
        cu_seqlens: ``(n_seq + 1,)`` cumulative lengths of sequences packed along ``L``
            (``B == 1``); each sequence starts from its own initial state.
        lengths: ``(B,)`` real steps of right-padded sequences: the final state is read from
            each sequence's last K-1 *real* inputs (the initial state fills in when a sequence
            is shorter). Outputs at real steps do not depend on padding anyway; those at padding
            are computed like any other (the caller masks what it needs masked).
        return_final_state: also return the ``K-1`` most recent inputs of every sequence.

    Returns:
        ``y (B, L, D)`` in ``x``'s dtype; with ``return_final_state`` also ``final_state
        (B or n_seq, D, K-1)`` (oldest first) in ``x``'s dtype.

    Inputs are trusted (the callers validate them); arithmetic is in the promoted dtype of ``x``
    and ``weight`` (float32 for a bf16 ``x`` with float32 weights), as in the Triton kernel.
    """
    silu, weight = _silu(activation), _weight_2d(weight)
    if cu_seqlens is None:
        return _dense(x, weight, bias, silu, initial_state, lengths, return_final_state)
    # Packed sequences (B == 1): each one alone, from its own state. A CPU path: a Python loop
    # over sequences is fine here and obviously right.
    bounds = [int(v) for v in cu_seqlens.tolist()]
    ys, finals = [], []
    for i, (bos, eos) in enumerate(zip(bounds[:-1], bounds[1:])):
        h0 = None if initial_state is None else initial_state[i:i + 1]
        out = _dense(x[:, bos:eos], weight, bias, silu, h0, None, return_final_state)
        ys.append(out[0] if return_final_state else out)
        if return_final_state:
            finals.append(out[1])
    y = torch.cat(ys, dim=1) if ys else x.new_zeros(x.shape)
    return (y, torch.cat(finals, dim=0)) if return_final_state else y


def causal_conv1d_update(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None,
                         activation: str | None = None) -> Tensor:
    """One decoding step: ``x (B, D)``; ``conv_state (B, D, K)`` the K most recent inputs, oldest
    first (mamba-ssm's layout), shifted left in place with ``x`` appended; then
    ``y = act(bias + Σ_k weight[:, k] · state[:, :, k])`` ``(B, D)`` in ``x``'s dtype.

    The same numbers as :func:`causal_conv1d` on one step from ``initial_state =
    conv_state[..., 1:]``. No autograd (decoding)."""
    silu, w = _silu(activation), _weight_2d(weight)
    conv_state.copy_(torch.cat([conv_state[..., 1:], x[..., None].to(conv_state.dtype)], dim=-1))
    cdt = torch.promote_types(torch.promote_types(x.dtype, w.dtype), conv_state.dtype)
    y = (conv_state.to(cdt) * w.to(cdt)).sum(-1)
    if bias is not None:
        y = y + bias.to(cdt)
    return (F.silu(y) if silu else y).to(x.dtype)
