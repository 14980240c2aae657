"""``mamba_inner_triton``: a Mamba block from ``in_proj``'s output to ``out_proj``'s as one
autograd node (as mamba-ssm's ``mamba_inner_fn``), for eager training on the Triton path.

Split into separate autograd nodes, a block step costs about 18 of them (the conv, the ``x_proj``
and ``dt_proj`` matmuls and their views, the scan, ``-exp(A_log)``, ``softplus(ρ)``, the casts,
``out_proj``, the padding mask) and the autograd engine's bookkeeping for each: at the widths
event models use (``d_model`` 64-256) that host time, not the kernels, sets the step time. Here
the forward launches the conv and scan kernels and the three matmuls directly, and the backward
launches their backward kernels and the matmuls' transposes directly, writing ∂x and ∂z into
one ``(B, L, 2D)`` buffer (no concatenation). The separate pieces stay as they are
(``causal_conv1d``, ``selective_scan_triton``): the CPU path, ``torch.compile`` (which sees
them as custom ops) and the tests use them, and this node must agree with them.

Memory: like mamba-ssm's default (``checkpoint_lvl=1``), the backward recomputes the conv's
output from ``xz`` (one launch) instead of keeping it; it keeps ``x_proj``'s output, the step
δ, the gated scan output and the scan's chunk states.

Legend: batch ``B``, steps ``L``, channels ``D = d_inner``, state ``N``, ``R = dt_rank``,
model width ``M = d_model``, conv width ``K``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .causal_conv1d import _bwd_impl as _conv_bwd
from .causal_conv1d import _fwd_impl as _conv_fwd
from .causal_conv1d import _seq_idx
from .constants import COUPLING_STANDARD, RATE_COUPLINGS
from .selective_scan import _bwd_core as _scan_bwd
from .selective_scan import _fwd_impl as _scan_fwd
from .selective_state_update import scan_codes

__all__ = ["mamba_inner_triton"]


def _autocast_dtype(like: Tensor) -> torch.dtype:
    """The dtype the block's matmuls run in: autocast's, when it is on for the device."""
    kind = like.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return like.dtype


class _MambaInner(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz, conv_w, conv_b, xproj_w, dtproj_w, dt_bias, A_log, Dskip, rho, out_w,
                out_b, tau, mask, cu, seq_idx, scheme, coupling, dt_rank, save):
        D = conv_w.shape[0]
        N = A_log.shape[1]
        cdt = xz.dtype  # the activations' dtype: autocast's (the caller casts xz) or the model's
        # the conv kernels read fp32 weights as they are (as the separate conv does)
        w_c, b_c = conv_w.reshape(D, -1), conv_b
        xw, dw, ow = xproj_w.to(cdt), dtproj_w.to(cdt), out_w.to(cdt)
        ob = None if out_b is None else out_b.to(cdt)
        x, z = xz[..., :D], xz[..., D:]
        u, _ = _conv_fwd(x, w_c, b_c, None, cu, seq_idx, None, True, False)
        x_dbl = F.linear(u, xw)  # (B, L, R + 2N)
        delta = F.linear(x_dbl[..., :dt_rank], dw).contiguous()  # (B, L, D)
        Bm, Cm = x_dbl[..., None, dt_rank:dt_rank + N], x_dbl[..., None, dt_rank + N:]
        A = -torch.exp(A_log.float())
        rate = F.softplus(rho.float()) if rho is not None and coupling in RATE_COUPLINGS else None
        y, _, ckpt, offsets = _scan_fwd(u, delta, A, Bm, Cm, Dskip.float(), z, dt_bias.float(),
                                        tau, rate, None, cu, True, scheme, coupling, save)
        out = F.linear(y, ow, ob)
        if mask is not None:
            out = out.masked_fill(~mask[..., None], 0.0)
        if save:
            ctx.save_for_backward(xz, w_c, b_c, xw, dw, ow, x_dbl, delta, y, A, Dskip, dt_bias,
                                  rho, rate, tau, mask, cu, seq_idx, ckpt, offsets)
            ctx.flags = (scheme, coupling, dt_rank, conv_w.shape, A_log.dtype,
                         None if out_b is None else out_b.dtype, xproj_w.dtype, dtproj_w.dtype,
                         out_w.dtype)
        return out

    @staticmethod
    def backward(ctx, dout):
        (xz, w_c, b_c, xw, dw, ow, x_dbl, delta, y, A, Dskip, dt_bias, rho, rate, tau, mask, cu,
         seq_idx, ckpt, offsets) = ctx.saved_tensors
        scheme, coupling, R, conv_shape, a_dtype, ob_dtype, xw_dtype, dw_dtype, ow_dtype = ctx.flags
        needs = ctx.needs_input_grad
        D, N = A.shape
        cdt = xz.dtype
        dout = dout.to(cdt)
        if mask is not None:
            dout = dout.masked_fill(~mask[..., None], 0.0)
        M = dout.shape[-1]
        dout2 = dout.reshape(-1, M)
        d_out_w = dout2.t() @ y.reshape(-1, D)  # (M, D)
        d_out_b = dout2.sum(0) if ob_dtype is not None else None
        dy = dout @ ow  # (B, L, D)
        # the conv's output again (one launch) rather than kept since the forward
        x, z = xz[..., :D], xz[..., D:]
        u, _ = _conv_fwd(x, w_c, b_c, None, cu, seq_idx, None, True, False)
        dxz = torch.empty_like(xz)
        Bm, Cm = x_dbl[..., None, R:R + N], x_dbl[..., None, R + N:]
        tau_grad = tau is not None and coupling != COUPLING_STANDARD and needs[11]
        g = _scan_bwd(u, delta, A, Bm, Cm, Dskip.float(), z, dt_bias.float(), tau, rate, ckpt,
                      offsets, cu, dy, None, True, scheme, coupling, False, tau_grad,
                      dz_out=dxz[..., D:])
        du, ddelta, dA, dB, dC, dD, _, dbias, dtau, drate, _ = g
        # δ = dt · W_dtᵀ with dt = x_dbl[..., :R]; x_dbl = u · W_xᵀ
        ddelta2 = ddelta.reshape(-1, D)
        d_dt_w = ddelta2.t() @ x_dbl[..., :R].reshape(-1, R)  # (D, R)
        dx_dbl = torch.cat([ddelta @ dw, dB.reshape(dB.shape[:2] + (N,)).to(cdt),
                            dC.reshape(dC.shape[:2] + (N,)).to(cdt)], dim=-1)  # (B, L, R + 2N)
        d_xproj_w = dx_dbl.reshape(-1, R + 2 * N).t() @ u.reshape(-1, D)  # (R + 2N, D)
        du = du + dx_dbl @ xw
        need_conv_w = needs[1] or needs[2]
        _, d_conv_w, d_conv_b, _ = _conv_bwd(x, w_c, b_c, None, cu, seq_idx, None, du, None, True,
                                             True, need_conv_w, False, dx=dxz[..., :D])
        d_rho = None
        if needs[8]:  # A rate that entered the scan (asymmetric / additive with τ), or none
            d_rho = drate * torch.sigmoid(rho.float()) if rate is not None else torch.zeros_like(rho)
            d_rho = d_rho.to(rho.dtype)
        return (dxz,
                d_conv_w.reshape(conv_shape) if needs[1] else None,
                d_conv_b if needs[2] and b_c is not None else None,
                d_xproj_w.to(xw_dtype) if needs[3] else None,
                d_dt_w.to(dw_dtype) if needs[4] else None,
                dbias.to(dt_bias.dtype) if needs[5] else None,
                (dA * A).to(a_dtype) if needs[6] else None,
                dD.to(Dskip.dtype) if needs[7] else None,
                d_rho,
                d_out_w.to(ow_dtype) if needs[9] else None,
                d_out_b.to(ob_dtype) if needs[10] and d_out_b is not None else None,
                dtau.to(tau.dtype) if tau_grad else None,
                None, None, None, None, None, None, None)


def mamba_inner_triton(
    xz: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, x_proj_weight: Tensor,
    dt_proj_weight: Tensor, dt_bias: Tensor, A_log: Tensor, D: Tensor, rho: Tensor | None,
    out_proj_weight: Tensor, out_proj_bias: Tensor | None, *, scheme: int, coupling: int,
    integration_timesteps: Tensor | None = None, mask: Tensor | None = None,
    cu_seqlens: Tensor | None = None,
) -> Tensor:
    """A Mamba block after ``in_proj`` as one autograd node, on inputs the caller validated.

    ``xz (B, L, 2D)`` (``in_proj``'s output: conv branch, then gate) -> causal conv + SiLU ->
    ``x_proj`` -> (δ = ``dt_proj`` without bias, B, C) -> selective scan (Δ = softplus(δ +
    ``dt_bias``), A = -exp(``A_log``), rate = softplus(``rho``), gate silu(z)) -> ``out_proj``
    -> ``(B, L, M)``, zero where ``mask`` (``(B, L)`` bool, True at real steps) is False.

    Weights as the modules hold them: ``conv_weight (D, 1, K)`` or ``(D, K)`` with 2 ≤ K ≤ 4,
    ``x_proj_weight (R + 2N, D)``, ``dt_proj_weight (D, R)``, ``A_log (D, N)``, ``D, dt_bias,
    rho (D,)``, ``out_proj_weight (M, D)``. ``scheme`` / ``coupling``: the configured codes of
    :mod:`.constants`; without ``integration_timesteps (B, L)`` the scan runs in standard mode
    and ``rho`` gets a zero gradient. ``cu_seqlens (n + 1,)``: sequences packed along L (B = 1).
    The matmuls run in ``xz``'s dtype (under autocast, autocast's: the weights are cast as the
    separate ``nn.Linear`` calls would cast them); the scan computes in fp32.

    Gradients: every tensor input but ``mask`` and ``cu_seqlens``; τ's when it requires grad.
    Eager only: under ``torch.compile`` use the separate pieces.
    """
    if torch.compiler.is_compiling():
        raise RuntimeError("mamba_inner_triton is for eager mode: torch.compile traces the "
                           "block's separate custom ops instead")
    cdt = _autocast_dtype(xz)
    if xz.dtype != cdt:
        xz = xz.to(cdt)
    eff = scan_codes(scheme, coupling, integration_timesteps, rho)
    tau = integration_timesteps if eff != COUPLING_STANDARD else None
    if tau is not None:
        tau = tau.contiguous()
    cu = seq_idx = None
    if cu_seqlens is not None:
        cu = cu_seqlens.to(device=xz.device, dtype=torch.int32)
        seq_idx = _seq_idx(cu, xz.shape[1])
    params = (xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, A_log, D, rho,
              out_proj_weight, out_proj_bias, tau)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in params)
    dt_rank = dt_proj_weight.shape[1]
    with torch.autocast(xz.device.type, enabled=False):
        return _MambaInner.apply(*params, mask, cu, seq_idx, scheme, eff, dt_rank, save)
