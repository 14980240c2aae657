"""``selective_scan_triton``: the Triton scan as a differentiable op.

The forward and backward kernels are registered as ``torch.library`` custom ops
(``eventssm::selective_scan_fwd`` / ``eventssm::selective_scan_bwd``) with fake (meta)
implementations and an autograd formula, so ``torch.compile`` treats the scan as one opaque
node instead of breaking the graph around a Python ``autograd.Function``.

The forward saves the state entering every chunk of ``CK`` steps only when a gradient will be
needed; the backward recomputes the chunk from it (see :mod:`.selective_scan_bwd`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .constants import COUPLING_STANDARD, RATE_COUPLINGS, SCHEME_MAMBA
from .selective_scan_bwd import selective_scan_bwd
from .selective_scan_fwd import chunk_slots, selective_scan_fwd, strided_ok
from .selective_state_update import scan_codes
from .utils import is_interpreting

__all__ = ["selective_scan_triton", "chunk_size"]


def chunk_size(N: int) -> int:
    """Steps between saved states: the backward recomputes each such chunk from its state.

    Saving costs ``4N/CK`` bytes per ``(b, l, d)`` written by the forward and read by the
    backward (0.5 for N = 16), against 12 (fp32) or 6 (bf16) bytes of ``u, δ, y``. Under the
    interpreter the chunks are short so that small tests cross several of them.
    """
    return 16 if is_interpreting() else 128


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


def _fwd_impl(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
    z: Tensor | None, delta_bias: Tensor | None, tau: Tensor | None, rate: Tensor | None,
    h0: Tensor | None, cu_seqlens: Tensor | None, softplus: bool, scheme: int, coupling: int,
    save_ckpt: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    y, last, ckpt, offsets = selective_scan_fwd(
        u, delta, A, B, C, D, z, delta_bias, softplus, tau, rate, h0, cu_seqlens,
        scheme, coupling, store_last=True, save_ckpt=save_ckpt, CK=chunk_size(A.shape[1]))
    if not save_ckpt:
        ckpt, offsets = _empty(last), _empty(last).int()
    return y, last, ckpt, offsets


_fwd_op = torch.library.custom_op("eventssm::selective_scan_fwd", mutates_args=())(_fwd_impl)


@_fwd_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, tau, rate, h0, cu_seqlens, softplus, scheme,
      coupling, save_ckpt):
    b, L, Dm = u.shape
    N = A.shape[1]
    n_seq = b if cu_seqlens is None else cu_seqlens.shape[0] - 1
    last = u.new_empty(n_seq, Dm, N, dtype=torch.float32)
    if not save_ckpt:
        return torch.empty_like(u), last, last.new_empty(0), last.new_empty(0, dtype=torch.int32)
    n_ck = chunk_slots(n_seq, L, chunk_size(N), packed=cu_seqlens is not None)
    ckpt = u.new_empty(n_ck, N, Dm, dtype=torch.float32)
    return torch.empty_like(u), last, ckpt, last.new_empty(n_seq + 1, dtype=torch.int32)


def _bwd_impl(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
    z: Tensor | None, delta_bias: Tensor | None, tau: Tensor | None, rate: Tensor | None,
    ckpt: Tensor, offsets: Tensor, cu_seqlens: Tensor | None, dy: Tensor,
    dlast: Tensor | None, softplus: bool, scheme: int, coupling: int, store_dh0: bool,
    tau_grad: bool,
) -> list[Tensor]:
    return _bwd_core(u, delta, A, B, C, D, z, delta_bias, tau, rate, ckpt, offsets, cu_seqlens,
                     dy, dlast, softplus, scheme, coupling, store_dh0, tau_grad)


def _bwd_core(u, delta, A, B, C, D, z, delta_bias, tau, rate, ckpt, offsets, cu_seqlens, dy,
              dlast, softplus, scheme, coupling, store_dh0, tau_grad, dz_out=None):
    """The backward launch; ``dz_out`` (eager calls only): where ∂z goes, returned as it is."""
    g = selective_scan_bwd(
        u, delta, A, B, C, D, z, delta_bias, softplus, tau, rate, ckpt, offsets, cu_seqlens,
        dy.contiguous(), None if dlast is None else dlast.contiguous(), scheme, coupling,
        CK=chunk_size(A.shape[1]), store_dh0=store_dh0, tau_grad=tau_grad, dz_out=dz_out)
    # ∂B and ∂C come as halves of one buffer: custom-op outputs may not alias each other
    return [_empty(u) if g[k] is None else g[k] if k == "z" and dz_out is not None
            else g[k].contiguous() for k in _GRAD_NAMES]


_bwd_op = torch.library.custom_op("eventssm::selective_scan_bwd", mutates_args=())(_bwd_impl)


_GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "tau", "rate", "h0")


@_bwd_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, tau, rate, ckpt, offsets, cu_seqlens, dy, dlast,
      softplus, scheme, coupling, store_dh0, tau_grad):
    f32 = lambda t: torch.empty(t.shape, dtype=torch.float32, device=t.device)
    n_seq = offsets.shape[0] - 1
    e = u.new_empty(0)
    return [
        torch.empty_like(u), torch.empty_like(delta), f32(A), f32(B), f32(C),
        e if D is None else f32(D), e if z is None else torch.empty_like(z),
        e if delta_bias is None else f32(delta_bias), f32(tau) if tau_grad else e,
        f32(rate) if coupling in RATE_COUPLINGS else e,
        u.new_empty(n_seq, A.shape[0], A.shape[1], dtype=torch.float32) if store_dh0 else e,
    ]


def _setup_context(ctx, inputs, output):
    (u, delta, A, B, C, D, z, delta_bias, tau, rate, h0, cu_seqlens, softplus, scheme,
     coupling, save_ckpt) = inputs
    _, _, ckpt, offsets = output
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, tau, rate, h0, cu_seqlens, ckpt,
                          offsets)
    ctx.flags = (softplus, scheme, coupling, save_ckpt)


def _backward(ctx, dy, dlast, _dckpt, _doffsets, bwd=_bwd_op):
    (u, delta, A, B, C, D, z, delta_bias, tau, rate, h0, cu_seqlens, ckpt,
     offsets) = ctx.saved_tensors
    softplus, scheme, coupling, save_ckpt = ctx.flags
    if not save_ckpt:
        raise RuntimeError("selective_scan_triton: backward through a forward run without "
                           "gradients (no chunk states were saved)")
    needs = ctx.needs_input_grad
    if dy is None:
        dy = torch.zeros_like(u)
    extra = {}
    if getattr(ctx, "dz_out", None) is not None and z is not None and needs[6]:
        extra["dz_out"] = _resolve_out(ctx.dz_out, z, "dz_out")
    grads = bwd(u, delta, A, B, C, D, z, delta_bias, tau, rate, ckpt, offsets, cu_seqlens,
                dy, dlast, softplus, scheme, coupling,
                store_dh0=h0 is not None and needs[10],
                tau_grad=tau is not None and coupling != COUPLING_STANDARD and needs[8], **extra)
    g = dict(zip(_GRAD_NAMES, grads))

    def cast(name, like):
        if like is None or g[name].numel() == 0 and like.numel() != 0:
            return None
        return g[name].to(like.dtype)

    return (cast("u", u), cast("delta", delta), cast("A", A), cast("B", B), cast("C", C),
            cast("D", D), cast("z", z), cast("delta_bias", delta_bias), cast("tau", tau),
            cast("rate", rate), cast("h0", h0), None, None, None, None, None)


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def _resolve_out(out, like: Tensor, name: str) -> Tensor:
    """A caller's gradient buffer (a tensor, or a callable returning one), checked against the
    input it is the gradient of."""
    t = out() if callable(out) else out
    if not isinstance(t, Tensor) or t.shape != like.shape or t.dtype != like.dtype \
            or t.device != like.device or not strided_ok(t, like.shape[1], (like.shape[-1],)):
        got = (t.dtype, tuple(t.shape), t.stride()) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{name} must give a {like.dtype} tensor of shape {tuple(like.shape)} on "
                         f"{like.device} with evenly spaced dense rows, got {got}")
    return t


class _ScanFunction(torch.autograd.Function):
    """The same forward and backward for eager mode without the custom op's dispatch: on an
    H100 with torch 2.11 the custom-op wrappers (argument defaults, aliasing checks) cost about
    a millisecond of host time per forward+backward, more than the kernels at small sizes.
    ``torch.compile`` sees the custom ops instead (``selective_scan_triton``). ``dz_out`` (last
    argument, after the custom op's): where the backward writes ∂z, or None."""

    @staticmethod
    def forward(ctx, *args):
        *inputs, dz_out = args
        out = _fwd_impl(*inputs)
        _setup_context(ctx, inputs, out)
        ctx.dz_out = dz_out
        ctx.mark_non_differentiable(out[2], out[3])
        return out

    @staticmethod
    def backward(ctx, dy, dlast, _dckpt, _doffsets):
        return (*_backward(ctx, dy, dlast, _dckpt, _doffsets, bwd=_bwd_core), None)


def selective_scan_triton(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
    z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
    integration_timesteps: Tensor | None = None, rate: Tensor | None = None,
    scheme: int = SCHEME_MAMBA, coupling: int = COUPLING_STANDARD,
    initial_state: Tensor | None = None, return_last_state: bool = False,
    cu_seqlens: Tensor | None = None, dz_out: Tensor | Callable[[], Tensor] | None = None,
):
    """Selective scan with the Triton kernels (DESIGN §2-3), for inputs validated by the caller
    (``eventssm.selective_scan`` checks values and shapes and calls this for ``backend="triton"``).

    Shapes: ``u, delta, z: (batch, L, D)``; ``B, C: (batch, L, N)`` or ``(batch, L, G, N)``;
    ``A: (D, N)``; ``D, delta_bias, rate: (D,)``; ``integration_timesteps: (batch, L)``;
    ``initial_state: (batch, D, N)`` (``(n_seq, D, N)`` with ``cu_seqlens (n_seq + 1,)`` int32
    or int64 and ``batch == 1``). Inputs fp16/bf16/fp32 (arithmetic in fp32; a float64 τ is read
    as fp32).

    The discretization comes as two integer codes of :mod:`eventssm.kernels.constants`:
    ``scheme`` (``SCHEME_MAMBA``, ``SCHEME_ZOH``, ``SCHEME_BILINEAR``, ``SCHEME_DIRAC``) and
    ``coupling`` (``COUPLING_STANDARD``, ``COUPLING_ASYMMETRIC``, ``COUPLING_SCALED``,
    ``COUPLING_ADDITIVE``). The
    coupling is the configured one: without ``integration_timesteps`` (or with the standard
    coupling) τ is not read and the scan runs in standard mode; ``rate`` (the activated
    per-channel rate r) is read only by the asymmetric coupling with τ.

    ``z`` and ``B, C`` may be slices of wider rows (``xz[..., D:]``, columns of ``x_proj``'s
    output): they are read in place, not copied, when their last dimension is dense, their rows
    evenly spaced and (B, C) share strides; ``u`` and ``delta`` are made contiguous if they are not.

    ``dz_out``: where the backward writes ∂z, a ``(batch, L, D)`` tensor of z's dtype with evenly
    spaced dense rows (e.g. ``dxz[..., D:]`` of the gradient buffer of ``in_proj``'s output, whose
    other half the conv's ``dx_out`` fills: no concatenation), or a zero-argument callable
    returning one when the backward runs; the gradient returned for z is that tensor. Eager only
    (not under ``torch.compile``).

    Returns ``y (batch, L, D)`` in ``u``'s dtype, and with ``return_last_state`` also the last
    state ``(batch or n_seq, D, N)`` in fp32. Gradients flow to every tensor input, to the last
    state's cotangent and, when ``integration_timesteps`` requires grad, to τ.

    Raises:
        TypeError: float64 ``u, delta, A, B, C`` (the kernels compute in fp32: the caller sends
            float64 to the reference).
        ValueError: unknown codes; the asymmetric coupling with τ but no ``rate``.
    """
    if any(t.dtype == torch.float64 for t in (u, delta, A, B, C)):
        raise TypeError("selective_scan_triton computes in float32: float64 inputs belong to the "
                        "reference (eventssm.selective_scan routes them there)")
    tau = integration_timesteps
    coupling = scan_codes(scheme, coupling, tau, rate)
    if coupling == COUPLING_STANDARD:
        tau = None
    c = lambda t: None if t is None else t.contiguous()
    Bk, Ck = (B[:, :, None], C[:, :, None]) if B.dim() == 3 else (B, C)
    # z, B and C may be slices of wider rows (z = xz[..., D:], B/C of x_proj's output): read in
    # place when the rest of their layout is dense (and B, C share strides), else copied
    L = u.shape[1]
    zk = z if z is not None and strided_ok(z, L, (z.shape[-1],)) else c(z)
    if not (Bk.stride() == Ck.stride() and strided_ok(Bk, L, tuple(Bk.shape[2:]))):
        Bk, Ck = Bk.contiguous(), Ck.contiguous()
    rate_k = rate if coupling in RATE_COUPLINGS else None
    cu = None if cu_seqlens is None else cu_seqlens.to(device=u.device, dtype=torch.int32)
    save_ckpt = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad
        for t in (u, delta, A, B, C, D, z, delta_bias, tau, rate_k, initial_state))
    # torch.compile traces the custom op (one opaque node); eager calls skip its dispatch
    args = (c(u), c(delta), c(A), Bk, Ck, c(D), zk, c(delta_bias), c(tau), c(rate_k),
            c(initial_state), c(cu), bool(delta_softplus), scheme, coupling, save_ckpt)
    if torch.compiler.is_compiling():
        if dz_out is not None:
            raise ValueError("dz_out is not supported under torch.compile")
        y, last, _, _ = _fwd_op(*args)
    else:
        y, last, _, _ = _ScanFunction.apply(*args, dz_out)
    return (y, last) if return_last_state else y
