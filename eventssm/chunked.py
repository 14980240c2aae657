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
graph over the scheme formulas of :mod:`eventssm.discretization` (``discretize_B`` as is,
``discretize_A`` too except that exp(x) is evaluated as exp2(x·log2 e), several times faster on
the CPU: see :func:`_coefficients`). What happens before the recurrence (``delta_bias``, softplus, the
time coupling with τ and the rate) and after it (``D`` skip, ``silu(z)`` gate) acts on
``(b, L, D)`` tensors and is left to ordinary autograd; hence the gradients of
``integration_timesteps`` and ``rate`` come for free.

Packed sequences (``cu_seqlens``, ``b == 1``) run along the packed axis: at each ``bos`` the
term ``Ā h0[i]`` is added to the input and the decay set to zero, so the state restarts from the
sequence's own initial state and the adjoint is cut there, with no branch in the scan loops.

Inside the op the state is laid out ``(G, N, Dg)`` and time-major (see :class:`_ChunkedScan`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
_LOG2E = 1.4426950408889634


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


def _coefficients(scheme: str, dtA: Tensor, dtB: Tensor, At: Tensor) -> tuple[Tensor, Tensor]:
    """Ā ``(T, b, G, N, Dg)`` and the input factor k ``(T, b, G, 1 or N, Dg)`` of one chunk.

    ``dtA, dtB: (T, b, G, Dg)``, ``At: (G, N, Dg)``; the scheme formulas are elementwise, so the
    (N, D)-major layout changes nothing in them. k is :func:`discretize_B`'s; Ā is
    :func:`discretize_A`'s, except that the exp schemes evaluate exp(dtA·A) as
    exp2(dtA·(A·log2 e)): equal up to rounding, and torch's vectorised CPU exp2 is ~5x faster
    than its exp, which would otherwise be the single largest cost of the scan.
    """
    if scheme == "bilinear":
        dA = discretize_A(scheme, dtA[..., None, :], At)
    else:
        dA = torch.exp2(dtA[..., None, :] * (At * _LOG2E))
    return dA, discretize_B(scheme, dtB[..., None, :], At)


def _scan(H: Tensor, a: Tensor, h: Tensor) -> None:
    """In place ``H[t] <- a[t] ⊙ H[t-1] + H[t]`` for ``t = 0..T-1`` with ``H[-1] = h``.

    One ``addcmul_`` per step on a contiguous ``(b, G, N, Dg)`` slice. (A two-level variant,
    sub-chunks scanned side by side and then corrected with their decay products, was measured
    slower at the benchmark shapes: it trades per-step op overhead for two extra full passes.)
    """
    prev = h
    for Ht, at in zip(H.unbind(0), a.unbind(0)):
        Ht.addcmul_(at, prev)
        prev = Ht


def _scan_reverse(G: Tensor, a: Tensor, carry: Tensor | None) -> None:
    """The adjoint of :func:`_scan`, in place: ``G[t] <- G[t] + a[t+1] ⊙ G[t+1]`` for
    ``t = T-1..0``, where ``a[T] G[T]`` is ``carry`` (None: nothing comes from after the chunk)."""
    Gs, As = G.unbind(0), a.unbind(0)
    if carry is not None:
        Gs[-1].add_(carry)
    for t in range(len(Gs) - 2, -1, -1):
        Gs[t].addcmul_(As[t + 1], Gs[t + 1])


def _restarts(H: Tensor, dA: Tensor, l0: int, h0: Tensor, pack: _Packing | None):
    """Fold packed sequence starts in the chunk at ``l0`` into the data of the scan.

    A start at step ``t`` of sequence ``i`` has ``h[t] = Ā[t] h0[i] + B̄u[t]``: ``Ā[t] h0[i]`` is
    added to ``H[t]`` and the decay at ``t`` is zeroed (on a copy), so no state or gradient
    crosses the boundary. Returns the decays to scan with and the ``(t, i)`` restarts.
    """
    if pack is None:
        return dA, []
    starts = [(t, pack.starts[l0 + t]) for t in range(H.shape[0]) if (l0 + t) in pack.starts]
    if not starts:
        return dA, []
    a = dA.clone()
    for t, i in starts:
        H[t].addcmul_(dA[t], h0[i])
        a[t].zero_()
    return a, starts


def _ends(T: int, l0: int, pack: _Packing | None) -> list[tuple[int, int]]:
    """``(t, i)``: packed sequence ``i`` ends at step ``t`` of the chunk at ``l0``."""
    if pack is None:
        return []
    return [(t, pack.ends[l0 + t]) for t in range(T) if (l0 + t) in pack.ends]


class _ChunkedScan(torch.autograd.Function):
    """The recurrence and the readout ``y[l] = Σ_n C[l, n] h[l, n, ·]``, time-major, in chunks.

    Layout: the state is kept as ``(G, N, Dg)`` (state index before channel) so that the
    readout is a batched row-vector x matrix product, the one shape the CPU BLAS does fast.
    Inputs: ``u, dtA, dtB (L, b, G, Dg)``, ``At (G, N, Dg)``, ``Bm, Cm (L, b, G, N)``,
    ``h0 (b or n_seq, G, N, Dg)``, all contiguous, in the compute dtype.
    Outputs: ``y (L, b, G, Dg)`` and the last state ``(b or n_seq, G, N, Dg)``.
    """

    @staticmethod
    def forward(ctx, u, dtA, dtB, At, Bm, Cm, h0, scheme: str, chunk: int, pack: _Packing | None):
        L, b, G, Dg = u.shape
        N = At.shape[1]
        n_chunks = math.ceil(L / chunk)
        y = u.new_empty(L, b, G, Dg)
        boundary = u.new_empty(n_chunks, b, G, N, Dg)  # state entering each chunk
        h_last = h0.clone() if pack is not None else None  # empty sequences keep h0
        h = h0 if pack is None else h0.new_zeros(1, G, N, Dg)
        for c in range(n_chunks):
            l0, l1 = c * chunk, min(L, (c + 1) * chunk)
            T = l1 - l0
            boundary[c] = h
            dA, kB = _coefficients(scheme, dtA[l0:l1], dtB[l0:l1], At)
            H = (kB * u[l0:l1, :, :, None, :]) * Bm[l0:l1, :, :, :, None]  # B̄u (T, b, G, N, Dg)
            a, _ = _restarts(H, dA, l0, h0, pack)
            _scan(H, a, h)  # H now holds the states
            for t, i in _ends(T, l0, pack):
                h_last[i] = H[t, 0]
            h = H[-1]
            # y = C H: (T·b·G, 1, N) @ (T·b·G, N, Dg)
            torch.bmm(Cm[l0:l1].reshape(T * b * G, 1, N), H.view(T * b * G, N, Dg),
                      out=y[l0:l1].view(T * b * G, 1, Dg))
        if pack is None:
            h_last = h.clone() if n_chunks else h0.clone()
        ctx.save_for_backward(u, dtA, dtB, At, Bm, Cm, h0, boundary)
        ctx.scheme, ctx.chunk, ctx.pack = scheme, chunk, pack
        ctx.set_materialize_grads(False)
        return y, h_last

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh_last):
        return (*_Backward(ctx, gy, gh_last).run(), None, None, None)


@dataclass(frozen=True)
class _Chunk:
    """What the backward recomputes of the chunk ``[l0, l1)`` (``T`` steps; ``K`` is 1 for the
    mamba and dirac schemes, ``N`` for zoh and bilinear)."""

    l0: int
    l1: int
    dtA: Tensor  # (T, b, G, Dg) leaves of the chunk-local graph ...
    dtB: Tensor
    dA_graph: Tensor  # ... and Ā (T, b, G, N, Dg), k (T, b, G, K, Dg) in it
    kB_graph: Tensor
    dA: Tensor  # Ā and k detached
    kB: Tensor
    u: Tensor  # (T, b, G, 1, Dg)
    B: Tensor  # (T, b, G, N, 1)
    ku: Tensor  # k u (T, b, G, K, Dg)
    H: Tensor  # the states (T, b, G, N, Dg)
    h_in: Tensor  # the state entering the chunk (b, G, N, Dg)
    a: Tensor  # the decays scanned with: Ā, zero at packed restarts
    restarts: list[tuple[int, int]]  # (t, i): sequence i restarts at step t of the chunk


class _Backward:
    """:meth:`_ChunkedScan.backward`: the chunks in reverse order, each in five steps (the
    methods below). Holds the saved inputs, the gradient buffers (None where autograd asks for
    none) and ``carry``, the gradient reaching the state just before the current chunk from
    everything after it (already multiplied by that chunk's first Ā)."""

    def __init__(self, ctx, gy: Tensor | None, gh_last: Tensor | None) -> None:
        self.u, self.dtA, self.dtB, self.At, self.Bm, self.Cm, self.h0, self.boundary = ctx.saved_tensors
        self.scheme, self.chunk, self.pack = ctx.scheme, ctx.chunk, ctx.pack
        self.need_u, self.need_dtA, self.need_dtB, self.need_A, need_B, need_C, self.need_h0 = \
            ctx.needs_input_grad[:7]
        self.gy = None if gy is None else gy.contiguous()
        self.gh_last = gh_last
        zeros = lambda t, need: torch.zeros_like(t) if need else None
        self.gu, self.gdtA = zeros(self.u, self.need_u), zeros(self.dtA, self.need_dtA)
        self.gdtB, self.gA = zeros(self.dtB, self.need_dtB), zeros(self.At, self.need_A)
        self.gB, self.gC = zeros(self.Bm, need_B), zeros(self.Cm, need_C)
        self.gh0 = torch.zeros_like(self.h0)  # restarts and the carry add to it in any case
        self.carry = gh_last if self.pack is None else None
        self.A_leaf = self.At.detach().requires_grad_(self.need_A)

    def run(self) -> tuple:
        """The gradients of ``u, dtA, dtB, At, Bm, Cm, h0`` (None where not needed)."""
        if self.pack is not None and self.gh_last is not None:
            for i in self.pack.empty:  # an empty sequence's last state is its initial state
                self.gh0[i] += self.gh_last[i]
        L = self.u.shape[0]
        for c in reversed(range(self.boundary.shape[0])):
            ch = self._recompute(c, c * self.chunk, min(L, (c + 1) * self.chunk))
            gH = self._state_grads(ch)
            gdA = self._decay_grads(ch, gH)
            gku = self._input_grads(ch, gH)
            self._coefficient_grads(ch, gdA, gku)
        if self.pack is None and self.carry is not None:
            self.gh0 += self.carry
        return (self.gu, self.gdtA, self.gdtB, self.gA, self.gB, self.gC,
                self.gh0 if self.need_h0 else None)

    def _recompute(self, c: int, l0: int, l1: int) -> _Chunk:
        """Step 1: Ā and k of chunk ``c`` (with a chunk-local graph for their derivatives) and
        its states, scanned again from the saved boundary state."""
        dtA = self.dtA[l0:l1].detach().requires_grad_(self.need_dtA)
        dtB = self.dtB[l0:l1].detach().requires_grad_(self.need_dtB)
        with torch.enable_grad():
            dA_graph, kB_graph = _coefficients(self.scheme, dtA, dtB, self.A_leaf)
        dA, kB = dA_graph.detach(), kB_graph.detach()
        u = self.u[l0:l1, :, :, None, :]
        B = self.Bm[l0:l1, :, :, :, None]
        ku = kB * u
        H = ku * B
        h_in = self.boundary[c]
        a, restarts = _restarts(H, dA, l0, self.h0, self.pack)
        _scan(H, a, h_in)
        return _Chunk(l0, l1, dtA, dtB, dA_graph, kB_graph, dA, kB, u, B, ku, H, h_in, a, restarts)

    def _state_grads(self, ch: _Chunk) -> Tensor:
        """Step 2: the gradient g of the chunk's states ``(T, b, G, N, Dg)``: the direct part
        C gy (and ``gC``), what the packed sequences' last states receive, then the adjoint
        recurrence ``g[l] = C[l] gy[l] + Ā[l+1] ⊙ g[l+1]``, cut at packed sequence starts."""
        l0, l1 = ch.l0, ch.l1
        if self.gy is not None:
            gy = self.gy[l0:l1, :, :, None, :]  # (T, b, G, 1, Dg)
            gH = self.Cm[l0:l1, :, :, :, None] * gy
            if self.gC is not None:  # gC[l, g, n] = Σ_dg H[l, g, n, dg] gy[l, g, dg]
                torch.sum(ch.H * gy, dim=-1, out=self.gC[l0:l1])
        else:
            gH = torch.zeros_like(ch.H)
        if self.gh_last is not None:
            for t, i in _ends(l1 - l0, l0, self.pack):
                gH[t] += self.gh_last[i]
        _scan_reverse(gH, ch.a, self.carry)
        return gH

    def _decay_grads(self, ch: _Chunk, gH: Tensor) -> Tensor:
        """Step 3: the gradient of Ā, g ⊙ (the state before the step), where a restart reads
        its sequence's initial state (and passes that state its gradient); then the carry into
        the chunk before (none across a restart at the chunk's first step)."""
        gdA = torch.empty_like(ch.H)
        torch.mul(gH[1:], ch.H[:-1], out=gdA[1:])
        torch.mul(gH[0], ch.h_in, out=gdA[0])
        for t, i in ch.restarts:
            torch.mul(gH[t], self.h0[i], out=gdA[t])
            self.gh0[i] += (ch.dA[t] * gH[t])[0]
        self.carry = None if ch.restarts and ch.restarts[0][0] == 0 else ch.a[0] * gH[0]
        return gdA

    def _input_grads(self, ch: _Chunk, gH: Tensor) -> Tensor:
        """Step 4: the gradients of the input term B̄u = (k u) ⊙ B: ``gB``, ``gu``, and that of
        k u (returned, for step 5)."""
        l0, l1 = ch.l0, ch.l1
        T, b, G, N, Dg = gH.shape
        if self.gB is not None:  # gB[l, g, n] = Σ_dg g[l, g, n, dg] ku[l, g, ·, dg]
            torch.sum(gH * ch.ku, dim=-1, out=self.gB[l0:l1])
        if ch.ku.shape[-2] == 1:  # (T·b·G, 1, N) @ (T·b·G, N, Dg): Σ_n B g
            gku = torch.bmm(self.Bm[l0:l1].reshape(T * b * G, 1, N), gH.view(T * b * G, N, Dg))
            gku = gku.view(T, b, G, 1, Dg)
        else:
            gku = gH * ch.B
        if self.gu is not None:
            torch.sum(gku * ch.kB, dim=-2, out=self.gu[l0:l1])
        return gku

    def _coefficient_grads(self, ch: _Chunk, gdA: Tensor, gku: Tensor) -> None:
        """Step 5: the gradients of Ā and k -> ``gdtA``, ``gdtB`` (this chunk's rows) and ``gA``
        (summed over chunks), through the chunk-local graph."""
        outs, grads = [], []
        if ch.dA_graph.requires_grad:
            outs.append(ch.dA_graph)
            grads.append(gdA)
        if ch.kB_graph.requires_grad:
            outs.append(ch.kB_graph)
            grads.append(gku * ch.u)
        wanted = [(x, g) for x, g in ((ch.dtA, self.gdtA), (ch.dtB, self.gdtB), (self.A_leaf, self.gA))
                  if g is not None]
        if not (outs and wanted):
            return
        got = torch.autograd.grad(outs, [x for x, _ in wanted], grads, allow_unused=True)
        for (_, target), g in zip(wanted, got):
            if g is None:
                continue
            if target is self.gA:
                target += g
            else:
                target[ch.l0:ch.l1] = g


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
    G = B_.shape[2]
    Dg = Dm // G
    pack = None if cu_seqlens is None else _Packing(cu_seqlens)
    n_state = b if pack is None else pack.n_seq
    T = chunk_size or default_chunk_size(L, b, Dm, N)

    # Layout of the op: time-major (one step of a chunk buffer is contiguous) and the state as
    # (G, N, Dg); the transposes are (b, L, D)-sized and differentiated by autograd.
    tm = lambda t: t.transpose(0, 1).contiguous()  # (b, L, ...) -> (L, b, ...)
    to_gnd = lambda h: h.reshape(-1, G, Dg, N).transpose(-1, -2).contiguous()  # (n, D, N) -> (n, G, N, Dg)
    h0 = u_.new_zeros(n_state, G, N, Dg) if initial_state is None else to_gnd(initial_state.to(cdt))
    tm_d = lambda t: tm(t).view(L, b, G, Dg)
    dtA_t = tm_d(dtA)
    dtB_t = dtA_t if dtB is dtA else tm_d(dtB)  # standard mode: one step size, one copy
    y, h_last = _ChunkedScan.apply(
        tm_d(u_), dtA_t, dtB_t, to_gnd(A_)[0], tm(B_), tm(C_), h0, disc.scheme, T, pack
    )
    y = y.view(L, b, Dm).transpose(0, 1)  # (b, L, D) view of time-major memory
    # The (b, L, D)-major operand first: elementwise ops lay their output out like their first
    # operand, so y comes back in the caller's layout (out_proj then needs no copy) at no extra
    # pass. Addition and multiplication commute exactly: the numbers do not change.
    if D_ is not None:
        y = u_ * D_ + y
    if z_ is not None:
        y = F.silu(z_) * y
    y = y.to(u.dtype)
    if not return_last_state:
        return y
    return y, h_last.transpose(-1, -2).reshape(n_state, Dm, N)
