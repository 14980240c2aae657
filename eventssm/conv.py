"""Causal depthwise conv1d, channel-last: the PyTorch path of the Mamba block's short conv.

Same signature as :func:`eventssm.kernels.causal_conv1d` (the Triton kernel used on CUDA), so
that the dispatcher (:mod:`eventssm.dispatch`) can hand either to ``Mamba``:

    y[b, l, d] = act(bias[d] + Σ_k weight[d, k] · x̃[b, l − (K−1) + k, d])

where ``x̃`` is the sequence ``x[b]`` preceded by its ``K − 1`` carried inputs (``initial_state``,
zeros by default). Activations stay ``(B, L, D)`` from end to end: no transpose to ``(B, D, L)``,
no two-sided padding and ``[..., :L]`` slice as with ``nn.Conv1d``.

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

__all__ = ["causal_conv1d", "ACTIVATIONS"]

ACTIVATIONS = (None, "silu")


def _silu_grad(pre: Tensor) -> Tensor:
    """d silu(p) / dp = σ(p) (1 + p (1 − σ(p)))."""
    s = torch.sigmoid(pre)
    return s * (1 + pre * (1 - s))


class _CausalConv(torch.autograd.Function):
    """The dense case, without a padded copy of ``x``: tap ``k`` of output ``l`` reads
    ``x[l - s]`` with ``s = K-1-k``, from ``head`` when ``l < s``.

    ``x (B, L, D)`` any strides, ``head (B, K-1, D)`` (the carried inputs) or None (zeros),
    ``w (K, D)``, ``bias (D,)`` or None, all in the compute dtype -> ``y (B, L, D)``;
    ``mask (B, L)`` zeroes padded outputs.
    """

    @staticmethod
    def forward(ctx, x, head, w, bias, silu: bool, mask):
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
        if mask is not None:
            y = y.masked_fill(~mask[..., None], 0.0)
        ctx.save_for_backward(x, head, w, pre if silu else None, mask)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, gy):
        x, head, w, pre, mask = ctx.saved_tensors
        need_x, need_head, need_w, need_b = ctx.needs_input_grad[:4]
        K, L = w.shape[0], x.shape[1]
        g = gy if pre is None else gy * _silu_grad(pre)  # gradient of the pre-activation
        if mask is not None:
            g = g.masked_fill(~mask[..., None], 0.0)
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
        return gx, ghead, gw, gb, None, None


def _dense(x, weight, bias, silu, initial_state, lengths, return_final_state):
    """One batch of right-padded sequences (no ``cu_seqlens``)."""
    B, L, D = x.shape
    K = weight.shape[1]
    cdt = torch.promote_types(x.dtype, weight.dtype)
    head = None if initial_state is None else initial_state.transpose(1, 2).to(cdt)  # (B, K-1, D)
    mask = None if lengths is None else torch.arange(L, device=x.device)[None, :] < lengths[:, None]
    y = _CausalConv.apply(x.to(cdt), head, weight.t().to(cdt),
                          None if bias is None else bias.to(cdt), silu, mask).to(x.dtype)
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
    return y, final.to(x.dtype if initial_state is None else initial_state.dtype)


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = "silu",
    initial_state: Tensor | None = None,
    cu_seqlens: Tensor | None = None,
    lengths: Tensor | None = None,
    return_final_state: bool = False,
):
    """Causal depthwise conv over ``L``, channel-last, with bias and activation fused.

    Args:
        x: ``(B, L, D)``, any strides (e.g. a half of ``in_proj``'s output).
        weight: ``(D, K)`` (``nn.Conv1d(D, D, K, groups=D).weight[:, 0]``).
        bias: ``(D,)`` or None.
        activation: ``"silu"`` or None.
        initial_state: ``(B, D, K-1)`` the inputs before ``x[:, 0]`` (oldest first); zeros when
            None. With ``cu_seqlens``: ``(n_seq, D, K-1)``, one per packed sequence.
        cu_seqlens: ``(n_seq + 1,)`` cumulative lengths of sequences packed along ``L``
            (``B == 1``); each sequence starts from its own initial state.
        lengths: ``(B,)`` real steps of right-padded sequences: outputs at padding
            (``l >= lengths[b]``) are 0 and padding (any finite values) does not enter the final
            state. ``Mamba`` relies on both: a padded step must feed ``u = 0`` to the scan
            (``dirac``'s B̄ = B), and a cache must hold the last real inputs. The Triton kernel
            keeps the same contract (``tests/test_conv.py`` checks it).
        return_final_state: also return the ``K-1`` most recent inputs of every sequence.

    Returns:
        ``y (B, L, D)`` in ``x``'s dtype; with ``return_final_state`` also ``final_state
        (B or n_seq, D, K-1)`` (oldest first), in ``initial_state``'s dtype (``x``'s when None).

    Inputs are trusted (the callers validate); arithmetic is in the promoted dtype of ``x`` and
    ``weight`` (float32 for a bf16 ``x`` with float32 weights), as with the Triton kernel.
    """
    silu = activation == "silu"
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
