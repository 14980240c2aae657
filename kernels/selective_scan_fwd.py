"""Forward selective-scan kernel: one program per (channel block, sequence), time in a loop.

The recurrence is sequential in time but independent across (sequence, channel), so each
program keeps the state of ``BD`` channels as a register tile ``h [N, BD]`` and walks its
sequence once: every input is read once, ``y`` is written once, and Δ, dtA, dtB, Ā, B̄ live only
in registers (no ``(B, L, D)`` step tensors, no ``(B, L, D, N)`` states). Time advances in chunks
of ``K`` steps unrolled at compile time, so the loads of a whole chunk can be issued before the
first use (they do not depend on the state). When the backward will run, the state entering
every ``CK`` steps is saved (``ckpt``, ``(n_chunks, D, N)`` fp32, a multiple ``4N/CK`` bytes per
``(b, l, d)`` of extra traffic): the backward recomputes each chunk from there.

Layout: ``u, delta, z, y: (T, D)`` with ``T = batch·L`` (or the packed length), ``B, C: (T, G,
N)``, ``tau: (T,)``, ``A: (D, N)``, states ``(n_seq, D, N)``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .utils import autotune_configs, discretize, new_empty, sigmoid, softplus, step_sizes

__all__ = ["selective_scan_fwd"]


@triton.autotune(
    configs=autotune_configs([
        triton.Config({"BD": 8, "K": 16}, num_warps=1),
        triton.Config({"BD": 16, "K": 16}, num_warps=1),
        triton.Config({"BD": 32, "K": 8}, num_warps=1),
        triton.Config({"BD": 64, "K": 8}, num_warps=2),
    ]),
    key=["D", "N", "G", "CK", "SCHEME", "COUPLING", "HAS_Z", "IS_VARLEN", "SAVE_CKPT", "DTYPE_KEY"],
)
@triton.heuristics({
    "SPLIT_GROUPS": lambda a: a["G"] > 1 and (a["D"] // a["G"]) % a["BD"] != 0,
})
@triton.jit(do_not_specialize=["L"])
def selective_scan_fwd_kernel(
    u, delta, delta_bias, A, B, C, Dskip, z, tau, rate, h0,
    y, last, ckpt,
    cu_seqlens, chunk_offsets,
    L, D: tl.constexpr, N: tl.constexpr, G: tl.constexpr, CK: tl.constexpr, BN: tl.constexpr,
    SCHEME: tl.constexpr, COUPLING: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_H0: tl.constexpr,
    STORE_LAST: tl.constexpr, SAVE_CKPT: tl.constexpr, IS_VARLEN: tl.constexpr,
    DTYPE_KEY: tl.constexpr, BD: tl.constexpr, K: tl.constexpr, SPLIT_GROUPS: tl.constexpr,
):
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_s).to(tl.int64)
        eos = tl.load(cu_seqlens + i_s + 1).to(tl.int64)
        i_ck = tl.load(chunk_offsets + i_s).to(tl.int64)
    else:
        bos = i_s.to(tl.int64) * L
        eos = bos + L
        i_ck = i_s.to(tl.int64) * tl.cdiv(L, CK)
    o_d = i_d * BD + tl.arange(0, BD)
    o_n = tl.arange(0, BN)
    m_d = o_d < D
    m_n = o_n < N
    # [BN, BD] offsets of a (D, N) row-major state
    o_dn = o_d[None, :] * N + o_n[:, None]
    m_dn = m_d[None, :] & m_n[:, None]

    b_A = tl.load(A + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    if HAS_BIAS:
        b_bias = tl.load(delta_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    if HAS_D:
        b_Dskip = tl.load(Dskip + o_d, mask=m_d, other=0.0).to(tl.float32)
    if COUPLING == 1:
        b_rate = tl.load(rate + o_d, mask=m_d, other=0.0).to(tl.float32)
    else:
        b_rate = 0.0
    # B/C of channel d come from group d // (D / G); a block inside one group reads one row.
    if SPLIT_GROUPS:
        o_bc = (o_d // (D // G))[None, :] * N + o_n[:, None]
    else:
        o_bc = ((i_d * BD) // (D // G)) * N + o_n[:, None]
    if HAS_H0:
        b_h = tl.load(h0 + i_s.to(tl.int64) * D * N + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    else:
        b_h = tl.zeros([BN, BD], dtype=tl.float32)

    for i_c in range(0, tl.cdiv(eos - bos, K)):
        if SAVE_CKPT:
            if i_c % (CK // K) == 0:
                tl.store(ckpt + (i_ck + i_c // (CK // K)) * D * N + o_dn, b_h, mask=m_dn)
        # All loads of the chunk first: they do not depend on the state, and issued together
        # their latency is paid once per chunk instead of once per step (the compiler cannot
        # hoist a load above an earlier step's store of y by itself: it may alias).
        us = ()
        dls = ()
        taus = ()
        Bs = ()
        Cs = ()
        zs = ()
        for k in tl.static_range(K):
            t = bos + i_c * K + k
            m_t = t < eos
            m = tl.where(m_t, m_d, False)
            m_bc = tl.where(m_t, m_n[:, None], False)
            us = us + (tl.load(u + t * D + o_d, mask=m, other=0.0),)
            dls = dls + (tl.load(delta + t * D + o_d, mask=m, other=0.0),)
            Bs = Bs + (tl.load(B + t * G * N + o_bc, mask=m_bc, other=0.0),)
            Cs = Cs + (tl.load(C + t * G * N + o_bc, mask=m_bc, other=0.0),)
            if COUPLING != 0:
                taus = taus + (tl.load(tau + t, mask=m_t, other=0.0),)
            if HAS_Z:
                zs = zs + (tl.load(z + t * D + o_d, mask=m, other=0.0),)
        for k in tl.static_range(K):
            t = bos + i_c * K + k
            m_t = t < eos
            m = tl.where(m_t, m_d, False)
            b_u = us[k].to(tl.float32)
            b_dl = dls[k].to(tl.float32)
            if HAS_BIAS:
                b_dl += b_bias
            if SOFTPLUS:
                b_dl = softplus(b_dl)
            # A step past the end gets dtA = dtB = 0: Ā = 1, B̄·u = 0, the state passes unchanged.
            b_dl = tl.where(m_t, b_dl, 0.0)
            if COUPLING != 0:
                b_tau = taus[k].to(tl.float32)
            else:
                b_tau = 0.0
            b_dtA, b_dtB = step_sizes(b_dl, b_tau, b_rate, COUPLING)
            b_dA, b_kB = discretize(b_dtA[None, :], b_dtB[None, :], b_A, SCHEME)
            b_h = b_dA * b_h + (b_kB * b_u[None, :]) * Bs[k].to(tl.float32)
            b_y = tl.sum(b_h * Cs[k].to(tl.float32), 0)
            if HAS_D:
                b_y += b_Dskip * b_u
            if HAS_Z:
                b_z = zs[k].to(tl.float32)
                b_y *= b_z * sigmoid(b_z)
            tl.store(y + t * D + o_d, b_y.to(y.dtype.element_ty), mask=m)
    if STORE_LAST:
        tl.store(last + i_s.to(tl.int64) * D * N + o_dn, b_h, mask=m_dn)


def chunk_offsets_of(cu_seqlens: torch.Tensor | None, n_seq: int, L: int, K: int) -> torch.Tensor:
    """(n_seq + 1,) int32: index of each sequence's first saved chunk state (K steps a chunk)."""
    if cu_seqlens is None:
        n = torch.full((n_seq,), triton.cdiv(L, K), dtype=torch.int64)
    else:
        n = (cu_seqlens[1:] - cu_seqlens[:-1]).long().cpu()
        n = (n + K - 1) // K
    return torch.cat([n.new_zeros(1), n.cumsum(0)]).to(torch.int32)


def selective_scan_fwd(u, delta, A, B, C, Dskip, z, delta_bias, softplus_, tau, rate, h0,
                       cu_seqlens, scheme: int, coupling: int, store_last: bool,
                       save_ckpt: bool, CK: int):
    """Launch the forward kernel on contiguous inputs.

    ``u, delta, z: (b, L, D)``; ``B, C: (b, L, G, N)``; ``tau: (b, L)`` or None; ``coupling``
    is the effective one (0 when no τ enters). Returns ``y (b, L, D)`` in u's dtype, the last
    state ``(n_seq, D, N)`` fp32 (or None), the chunk states ``(n_chunks, D, N)`` fp32 (or
    None) and the chunk offsets ``(n_seq + 1,)`` int32 (or None).
    """
    b, L, D = u.shape
    G, N = B.shape[-2:]
    n_seq = b if cu_seqlens is None else cu_seqlens.numel() - 1
    y = new_empty(u.shape, like=u)
    last = new_empty(n_seq, D, N, like=u, dtype=torch.float32) if store_last else None
    offsets = ckpt = None
    if save_ckpt:
        offsets = chunk_offsets_of(cu_seqlens, n_seq, L, CK)
        ckpt = new_empty(int(offsets[-1]), D, N, like=u, dtype=torch.float32)
        offsets = offsets.to(u.device)

    def grid(meta):
        return (triton.cdiv(D, meta["BD"]), n_seq)

    selective_scan_fwd_kernel[grid](
        u, delta, delta_bias, A, B, C, Dskip, z, tau, rate, h0,
        y, last, ckpt,
        cu_seqlens, offsets,
        L, D=D, N=N, G=G, CK=CK, BN=triton.next_power_of_2(N),
        SCHEME=scheme, COUPLING=coupling, SOFTPLUS=softplus_,
        HAS_BIAS=delta_bias is not None, HAS_D=Dskip is not None, HAS_Z=z is not None,
        HAS_H0=h0 is not None, STORE_LAST=store_last, SAVE_CKPT=save_ckpt,
        IS_VARLEN=cu_seqlens is not None, DTYPE_KEY=str(u.dtype),
    )
    return y, last, ckpt, offsets
