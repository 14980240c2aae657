"""One gradient buffer for ``in_proj``'s output, filled in place by the conv's and the scan's
backward (no concatenation).

A Mamba block splits ``xz = in_proj(h)`` ``(B, L, 2D)`` into the conv branch ``x = xz[..., :D]``
and the gate ``z = xz[..., D:]``. Left to autograd, the conv's backward returns a fresh ``∂x``,
the scan's a fresh ``∂z``, and the split's backward concatenates them into a third ``(B, L, 2D)``
tensor: two extra writes and a read of the whole activation per block step. mamba-ssm's fused
``mamba_inner_fn`` instead allocates ``∂xz`` once and has both kernels write their halves into
it; :func:`split_xz` does the same across the two separate autograd nodes. The conv's ``dx_out``
and the scan's ``dz_out`` (Triton kernels, eager mode) are callables that allocate the buffer on
first use and return its halves; the split's backward sees both gradients already in place and
returns the buffer itself. When either half was not written there (another backend, a gradient
that reached only one branch), it falls back to concatenating, so the result is always right.

Legend: batch ``B``, steps ``L``, channels ``D = d_inner``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["split_xz"]


class _Buffer:
    """The lazily allocated ``(B, L, 2D)`` gradient of ``xz`` and its two halves."""

    def __init__(self, xz: Tensor, d: int) -> None:
        self.shape, self.dtype, self.device, self.d = xz.shape, xz.dtype, xz.device, d
        self.buf: Tensor | None = None

    def get(self) -> Tensor:
        if self.buf is None:
            self.buf = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        return self.buf

    def x_half(self) -> Tensor:
        return self.get()[..., : self.d]

    def z_half(self) -> Tensor:
        return self.get()[..., self.d:]


def _is_half(g: Tensor | None, buf: Tensor, offset: int, d: int) -> bool:
    """Whether ``g`` is exactly the view ``buf[..., offset:offset + d]``."""
    return (g is not None and g.shape == buf.shape[:-1] + (d,) and g.stride() == buf.stride()
            and g.data_ptr() == buf.data_ptr() + offset * buf.element_size())


class _SplitXZ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz: Tensor, d: int, buffer: _Buffer):
        ctx.buffer, ctx.d = buffer, d
        return xz[..., :d], xz[..., d:]

    @staticmethod
    def backward(ctx, dx: Tensor | None, dz: Tensor | None):
        buf, d = ctx.buffer.buf, ctx.d
        ctx.buffer.buf = None  # the buffer leaves with the gradient: nothing kept past backward
        if buf is not None and _is_half(dx, buf, 0, d) and _is_half(dz, buf, d, d):
            return buf, None, None
        like = dz if dx is None else dx
        dx = torch.zeros_like(like) if dx is None else dx
        dz = torch.zeros_like(like) if dz is None else dz
        return torch.cat([dx, dz], dim=-1), None, None


def split_xz(xz: Tensor, d: int) -> tuple[Tensor, Tensor, Callable[[], Tensor], Callable[[], Tensor]]:
    """``xz (B, L, 2D)`` -> ``(x, z, dx_out, dz_out)``: the two ``(B, L, D)`` halves (views) and
    the zero-argument callables to pass as the conv's ``dx_out`` and the scan's ``dz_out``, so
    that their backward writes into one ``(B, L, 2D)`` buffer that becomes ``∂xz`` as it is."""
    buffer = _Buffer(xz, d)
    x, z = _SplitXZ.apply(xz, d, buffer)
    return x, z, buffer.x_half, buffer.z_half
