"""``eventssm.shared_grad.split_xz``: the conv's and the scan's backward write ∂x and ∂z into one
buffer that becomes ∂xz as it is (no concatenation); anything else falls back to concatenating.

The in-place writers here are two small autograd functions standing in for the Triton conv and
scan (whose ``dx_out`` / ``dz_out`` are tested in tests/test_kernels.py, interpreter and GPU)."""

from __future__ import annotations

import torch

from eventssm.shared_grad import split_xz

WRITTEN: list[int] = []  # where the writers put their gradients


class _WritesInto(torch.autograd.Function):
    """y = 3·t; the backward writes ∂t = 3·∂y into ``out()`` and returns that tensor."""

    @staticmethod
    def forward(ctx, t, out):
        ctx.out = out
        return 3 * t

    @staticmethod
    def backward(ctx, g):
        dt = ctx.out()
        WRITTEN.append(dt.data_ptr())
        dt.copy_(3 * g)
        return dt, None


def _run(in_place: bool):
    """``(xz, its ∂xz, the gradient autograd handed to xz's hook, dy)`` for y = 3x · sin(3z)."""
    torch.manual_seed(0)
    xz = torch.randn(2, 5, 8, requires_grad=True)
    seen = {}
    xz.register_hook(lambda g: seen.setdefault("grad", g))
    x, z, dx_out, dz_out = split_xz(xz, 4)
    if in_place:
        y = _WritesInto.apply(x, dx_out) * _WritesInto.apply(z, dz_out).sin()
    else:
        y = (3 * x) * (3 * z).sin()
    dy = torch.randn_like(y)
    y.backward(dy)
    return xz, seen["grad"], dy


def _chunk_grad(xz, dy):
    """∂xz of the same function through a plain ``chunk`` (autograd concatenates)."""
    ref = xz.detach().clone().requires_grad_(True)
    x, z = ref.chunk(2, dim=-1)
    ((3 * x) * (3 * z).sin()).backward(dy)
    return ref.grad


def test_both_halves_written_in_place_is_the_gradient_itself():
    WRITTEN.clear()
    xz, grad, dy = _run(in_place=True)
    err = (xz.grad - _chunk_grad(xz, dy)).abs().max().item()
    print("in-place ∂xz vs plain chunk:", err)
    assert err <= 1e-6
    # the gradient autograd saw for xz is the (B, L, 2D) buffer whose halves the writers filled
    assert grad.shape == xz.shape and grad.is_contiguous()
    # the z writer (its branch runs backward first here or not: either order) wrote at +D
    assert sorted(WRITTEN) == [grad.data_ptr(), grad.data_ptr() + 4 * grad.element_size()]


def test_fallback_concatenates_when_not_written_in_place():
    xz, _, dy = _run(in_place=False)
    err = (xz.grad - _chunk_grad(xz, dy)).abs().max().item()
    print("fallback ∂xz vs plain chunk:", err)
    assert err <= 1e-6


def test_one_branch_only_gets_zeros_for_the_other():
    xz = torch.randn(2, 3, 6, requires_grad=True)
    x, z, _, _ = split_xz(xz, 3)
    (2 * x).sum().backward()
    assert torch.equal(xz.grad[..., :3], torch.full((2, 3, 3), 2.0))
    assert torch.equal(xz.grad[..., 3:], torch.zeros(2, 3, 3))
