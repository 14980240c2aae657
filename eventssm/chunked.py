"""Chunked selective scan: the fast pure-PyTorch path behind ``selective_scan(backend="torch")``.

Same signature and semantics as :func:`eventssm.reference.selective_scan_ref` (every scheme ×
coupling, z, D, delta_bias + softplus, integration timesteps, rate, initial and last state,
grouped B/C, ``cu_seqlens``), but fast on a CPU and with memory bounded by the chunk size.

Legend: batch ``b``, step ``l`` (``L`` steps), channel ``d`` (``D``), state ``n`` (``N``), groups
``G`` of ``Dg = D/G`` channels sharing B/C, chunk length ``T``.

Why it is fast. The reference spends its time in Python: a dozen small autograd ops per step,
and autograd records all of them (``O(L)`` graph nodes, full ``(b, L, D, N)`` saved tensors).
Here time is cut into chunks of ``T`` steps. Per chunk, everything that does not depend on the
previous state (``Ā``, ``B̄·u``, the readout ``C·h``, every gradient product) is one vectorised op
over a ``(T, b, D, N)`` buffer; only the recurrence ``h = Ā ⊙ h + B̄u`` itself stays a loop, and
it is a single in-place ``addcmul_`` per step. The recurrence is linear, so it is run exactly in
the same order as the reference (no log-space cumulative products: bilinear's Ā can be negative
and exp(−cumsum) overflows at large τ), which keeps the numbers equal to the loop's.

Memory. A custom :class:`torch.autograd.Function` saves only the inputs and the state at each
chunk boundary (``(L/T, b, D, N)``). Its backward walks the chunks in reverse, recomputes the
chunk's states from the saved boundary state, runs the adjoint recurrence
``g[l] = C[l]·gy[l] + Ā[l+1] ⊙ g[l+1]`` and forms every gradient with chunk-sized buffers; the
derivatives of Ā and B̄ with respect to ``(dtA, dtB, A)`` come from a chunk-local autograd
graph over :func:`~eventssm.discretization.discretize_A`/``discretize_B``, so the scheme
formulas live in one place. What happens before the recurrence (``delta_bias``, softplus, the
time coupling with τ and the rate) and after it (``D`` skip, ``silu(z)`` gate) acts on
``(b, L, D)`` tensors and is left to ordinary autograd; hence the gradients of
``integration_timesteps`` and ``rate`` come for free.

Packed sequences (``cu_seqlens``, ``b == 1``) run along the packed axis; the recurrence restarts
from the sequence's own initial state at each ``bos`` and the adjoint is cut there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from eventssm.discretization import Discretization, as_discretization, discretize_A, discretize_B
from eventssm.reference import compute_dtype

__all__ = ["selective_scan_chunked", "default_chunk_size"]

# Target size (elements) of one (T, b, D, N) chunk buffer: big enough that the vectorised ops
# amortise PyTorch's per-op overhead, small enough that the handful of live chunk buffers stay
# in the last-level cache.
_CHUNK_ELEMS = 1 << 18
_MIN_CHUNK, _MAX_CHUNK = 16, 256


def default_chunk_size(L: int, b: int, D: int, N: int) -> int:
    """Chunk length ``T`` used when ``chunk_size`` is not given."""
    T = _CHUNK_ELEMS // max(1, b * D * N)
    return int(max(1, min(max(_MIN_CHUNK, min(_MAX_CHUNK, T)), L)))


class _Packing:
    """Where packed sequences start and end along the packed axis (``cu_seqlens``, ``b == 1``)."""

    def __init__(self, cu_seqlens: Tensor) -> None:
        bounds = [int(x) for x in cu_seqlens.tolist()]
        self.n_seq = len(bounds) - 1
        self.starts: dict[int, int] = {}  # bos -> sequence index (non-empty sequences only)
        self.ends: dict[int, int] = {}  # eos - 1 -> sequence index
        self.empty: list[int] = []  # sequences of length 0: last state = initial state
        for i, (bos, eos) in enumerate(zip(bounds[:-1], bounds[1:])):
            if eos > bos:
                self.starts[bos] = i
                self.ends[eos - 1] = i
            else:
                self.empty.append(i)


def _coefficients(scheme: str, dtA: Tensor, dtB: Tensor, A: Tensor) -> tuple[Tensor, Tensor]:
    """Ā ``(T, b, D, N)`` and the input factor k ``(T, b, D, 1 or N)`` of one chunk."""
    dA = discretize_A(scheme, dtA[..., None], A)
    kB = discretize_B(scheme, dtB[..., None], A)
    if kB.dim() < dA.dim() or kB.shape[:-1] != dA.shape[:-1]:  # dirac's scalar one
        kB = kB.expand(*dA.shape[:-1], kB.shape[-1])
    return dA, kB


def _input_term(kB: Tensor, u: Tensor, Bm: Tensor) -> tuple[Tensor, Tensor]:
    """``ku = k·u (T, b, D, K)`` and a fresh buffer ``B̄u = ku·B (T, b, D, N)``; Bm ``(T, b, G, N)``."""
    ku = kB * u[..., None]
    T, b, Dm, K = ku.shape
    G, N = Bm.shape[2:]
    bu = ku.view(T, b, G, Dm // G, K) * Bm[:, :, :, None, :]  # (T, b, G, Dg, N)
    return ku, bu.view(T, b, Dm, N)


def _bmm_view(x: Tensor, G: int) -> Tensor:
    """``(T, b, D, M)`` -> ``(T·b·G, Dg, M)`` (a view) for per-group batched matmuls."""
    T, b, Dm, M = x.shape
    return x.view(T * b * G, Dm // G, M)


def _recur(H: Tensor, dA: Tensor, h: Tensor, l0: int, h0: Tensor, pack: _Packing | None,
           h_last: Tensor | None) -> None:
    """In place: ``H[t] <- dA[t] ⊙ H[t-1] + H[t]`` for the chunk starting at step ``l0``.

    ``H`` holds ``B̄u`` on entry and the states on return; ``h`` is the state before the chunk.
    With packing, a sequence start restarts from its initial state and an end writes ``h_last``.
    """
    prev = h
    for t in range(H.shape[0]):
        if pack is not None:
            i = pack.starts.get(l0 + t)
            if i is not None:
                prev = h0[i : i + 1]
        Ht = H[t]
        Ht.addcmul_(dA[t], prev)
        if pack is not None and h_last is not None:
            i = pack.ends.get(l0 + t)
            if i is not None:
                h_last[i] = Ht[0]
        prev = Ht


class _ChunkedScan(torch.autograd.Function):
    """The recurrence and readout ``y[l] = Σ_n C[l, n] h[l, ·, n]``, time-major, in chunks.

    Inputs: ``u, dtA, dtB (L, b, D)``, ``A (D, N)``, ``Bm, Cm (L, b, G, N)``, ``h0 (b or n_seq,
    D, N)``, all in the compute dtype. Outputs: ``y (L, b, D)`` and the last state.
    """

    @staticmethod
    def forward(ctx, u, dtA, dtB, A, Bm, Cm, h0, scheme: str, chunk: int, pack: _Packing | None):
        L, b, Dm = u.shape
        G, N = Bm.shape[2:]
        n_chunks = math.ceil(L / chunk)
        y = u.new_empty(L, b, Dm)
        boundary = u.new_empty(n_chunks, b, Dm, N)  # state entering each chunk
        h_last = h0.clone() if pack is not None else None  # empty sequences keep h0
        h = h0 if pack is None else h0.new_zeros(1, Dm, N)
        for c in range(n_chunks):
            l0, l1 = c * chunk, min(L, (c + 1) * chunk)
            boundary[c] = h
            dA, kB = _coefficients(scheme, dtA[l0:l1], dtB[l0:l1], A)
            _, H = _input_term(kB, u[l0:l1], Bm[l0:l1])  # (T, b, D, N), becomes the states
            _recur(H, dA, h, l0, h0, pack, h_last)
            h = H[-1]
            # y = Σ_n H C: (T·b·G, Dg, N) @ (T·b·G, N, 1)
            T = l1 - l0
            y[l0:l1] = torch.bmm(_bmm_view(H, G), Cm[l0:l1].reshape(T * b * G, N, 1)).view(T, b, Dm)
        if pack is None:
            h_last = h.clone() if n_chunks else h0.clone()
        ctx.save_for_backward(u, dtA, dtB, A, Bm, Cm, h0, boundary)
        ctx.scheme, ctx.chunk, ctx.pack = scheme, chunk, pack
        ctx.set_materialize_grads(False)
        return y, h_last

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh_last):
        u, dtA, dtB, A, Bm, Cm, h0, boundary = ctx.saved_tensors
        scheme, chunk, pack = ctx.scheme, ctx.chunk, ctx.pack
        need_u, need_dtA, need_dtB, need_A, need_B, need_C, need_h0 = ctx.needs_input_grad[:7]
        L, b, Dm = u.shape
        G, N = Bm.shape[2:]
        Dg = Dm // G
        n_chunks = boundary.shape[0]

        gu = torch.zeros_like(u) if need_u else None
        gdtA = torch.zeros_like(dtA) if need_dtA else None
        gdtB = torch.zeros_like(dtB) if need_dtB else None
        gA = torch.zeros_like(A) if need_A else None
        gB = torch.zeros_like(Bm) if need_B else None
        gC = torch.zeros_like(Cm) if need_C else None
        gh0 = torch.zeros_like(h0)
        if pack is not None and gh_last is not None:
            for i in pack.empty:
                gh0[i] += gh_last[i]
        # gradient reaching the state just before the current chunk from everything after it
        carry = gh_last if pack is None else None
        A_leaf = A.detach().requires_grad_(need_A)
        coef_inputs = []

        for c in reversed(range(n_chunks)):
            l0, l1 = c * chunk, min(L, (c + 1) * chunk)
            T = l1 - l0
            # 1. recompute Ā, k (with a chunk-local graph for their derivatives) and the states
            dtA_c = dtA[l0:l1].detach().requires_grad_(need_dtA)
            dtB_c = dtB[l0:l1].detach().requires_grad_(need_dtB)
            with torch.enable_grad():
                dA_g, kB_g = _coefficients(scheme, dtA_c, dtB_c, A_leaf)
            dA, kB = dA_g.detach(), kB_g.detach()
            u_c, B_c = u[l0:l1], Bm[l0:l1]
            ku, H = _input_term(kB, u_c, B_c)
            h_in = boundary[c]
            _recur(H, dA, h_in, l0, h0, pack, None)
            gy_c = None if gy is None else gy[l0:l1]

            # 2. gradient of the states: direct part C·gy (T, b, D, N), then the adjoint recurrence
            if gy_c is not None:
                gH = (gy_c.reshape(T, b, G, Dg, 1) * Cm[l0:l1].reshape(T, b, G, 1, N)).view(T, b, Dm, N)
                if need_C:  # gC[l, g, n] = Σ_dg gy[l, g, dg] H[l, g, dg, n]
                    gC[l0:l1] = torch.bmm(gy_c.reshape(T * b * G, 1, Dg), _bmm_view(H, G)).view(T, b, G, N)
            else:
                gH = torch.zeros_like(H)
            for t in reversed(range(T)):
                if t == T - 1:
                    if carry is not None:
                        gH[t] += carry
                elif pack is None or (l0 + t + 1) not in pack.starts:
                    gH[t].addcmul_(dA[t + 1], gH[t + 1])
                if pack is not None and gh_last is not None:
                    i = pack.ends.get(l0 + t)
                    if i is not None:
                        gH[t] += gh_last[i]

            # 3. gradient of Ā: gH ⊙ (state before the step); restarts read their initial state
            gdA = torch.empty_like(H)
            torch.mul(gH[1:], H[:-1], out=gdA[1:])
            restarts = [] if pack is None else [(t, pack.starts[l0 + t]) for t in range(T)
                                                if (l0 + t) in pack.starts]
            torch.mul(gH[0], h_in, out=gdA[0])
            for t, i in restarts:
                torch.mul(gH[t], h0[i], out=gdA[t])
                gh0[i] += (dA[t] * gH[t])[0]
            if restarts and restarts[0][0] == 0:
                carry = None
            else:
                carry = dA[0] * gH[0]

            # 4. gradient of the input term B̄u = (k u) ⊙ B
            if ku.shape[-1] == 1:  # mamba, dirac: ku (T, b, D, 1)
                gku = torch.bmm(_bmm_view(gH, G), B_c.reshape(T * b * G, N, 1)).view(T, b, Dm, 1)
                if need_B:
                    gB[l0:l1] = torch.bmm(_bmm_view(gH, G).transpose(1, 2), _bmm_view(ku, G)).view(T, b, G, N)
            else:  # zoh, bilinear: ku (T, b, D, N)
                gku = (gH.view(T, b, G, Dg, N) * B_c[:, :, :, None, :]).view(T, b, Dm, N)
                if need_B:
                    gB[l0:l1] = (gH * ku).view(T, b, G, Dg, N).sum(3)
            if need_u:
                gu[l0:l1] = (gku * kB).sum(-1)
            # 5. gradients of Ā and k -> dtA, dtB, A through the chunk-local graph
            outs, grads = [], []
            if dA_g.requires_grad:
                outs.append(dA_g)
                grads.append(gdA)
            if kB_g.requires_grad:
                outs.append(kB_g)
                grads.append(gku * u_c[..., None])
            coef_inputs = [x for x, need in ((dtA_c, need_dtA), (dtB_c, need_dtB), (A_leaf, need_A)) if need]
            if outs and coef_inputs:
                got = iter(torch.autograd.grad(outs, coef_inputs, grads, allow_unused=True))
                for target, need in ((gdtA, need_dtA), (gdtB, need_dtB), (gA, need_A)):
                    if need:
                        g = next(got)
                        if g is None:
                            continue
                        if target is gA:
                            gA += g
                        else:
                            target[l0:l1] = g
        if pack is None and carry is not None:
            gh0 += carry
        return gu, gdtA, gdtB, gA, gB, gC, (gh0 if need_h0 else None), None, None, None


def selective_scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    integration_timesteps: Tensor | None = None,
    rate: Tensor | None = None,
    discretization: Discretization | str = "mamba",
    initial_state: Tensor | None = None,
    return_last_state: bool = False,
    cu_seqlens: Tensor | None = None,
    chunk_size: int | None = None,
):
    """Chunked selective scan (same signature and semantics as :func:`eventssm.selective_scan`).

    Shapes: ``u, delta, z: (b, L, D)``; ``B, C: (b, L, N)`` or ``(b, L, G, N)``; ``A: (D, N)``;
    ``D, delta_bias, rate: (D,)``; ``integration_timesteps: (b, L)``; ``initial_state:
    (b, D, N)`` (or ``(n_seq, D, N)`` with ``cu_seqlens``); ``cu_seqlens: (n_seq + 1,)`` with
    ``b == 1``. Inputs are not validated here (``selective_scan`` does that).

    Arithmetic is float32 (float64 when an input is float64); ``chunk_size`` is the number of
    steps per chunk (default :func:`default_chunk_size`); it changes speed and memory, not
    results. Every floating input is differentiable, ``integration_timesteps`` included.

    Returns ``y (b, L, D)`` in ``u``'s dtype, and with ``return_last_state`` also the last state
    ``(b, D, N)`` (``(n_seq, D, N)`` with ``cu_seqlens``) in the compute dtype.
    """
    disc = as_discretization(discretization)
    cdt = compute_dtype(u, delta, A, B, C, integration_timesteps)
    cast = lambda t: None if t is None else t.to(cdt)
    u_, delta_, A_, B_, C_, D_, z_ = map(cast, (u, delta, A, B, C, D, z))
    tau = cast(integration_timesteps)
    if delta_bias is not None:
        delta_ = delta_ + delta_bias.to(cdt)
    if delta_softplus:
        delta_ = F.softplus(delta_)
    if not disc.event_mode(tau):
        tau = None
    dtA, dtB = disc.step_sizes(delta_, tau, cast(rate))  # (b, L, D) each

    b, L, Dm = u_.shape
    N = A_.shape[1]
    if B_.dim() == 3:  # one group
        B_, C_ = B_[:, :, None, :], C_[:, :, None, :]
    pack = None if cu_seqlens is None else _Packing(cu_seqlens)
    n_state = b if pack is None else pack.n_seq
    h0 = u_.new_zeros(n_state, Dm, N) if initial_state is None else initial_state.to(cdt)
    T = chunk_size or default_chunk_size(L, b, Dm, N)

    # time-major layout: the recurrence slices one step of every chunk buffer contiguously
    tm = lambda t: t.transpose(0, 1).contiguous()
    y, h_last = _ChunkedScan.apply(tm(u_), tm(dtA), tm(dtB), A_, tm(B_), tm(C_), h0, disc.scheme, T, pack)
    y = y.transpose(0, 1)
    if D_ is not None:
        y = y + u_ * D_
    if z_ is not None:
        y = y * F.silu(z_)
    y = y.to(u.dtype)
    return (y, h_last) if return_last_state else y
