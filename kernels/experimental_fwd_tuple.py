"""EXPERIMENT (v3, not used by the package; see experiments/results/kernel_notes.md).

Correct (interpreter tests, H100 fp32/bf16 check) but not faster than v2: fp32 fwd 1.94 ms vs
2.07, bf16 3.41 ms vs 1.38 (2-byte loads are not pipelined by cp.async). Kept for its layout:
channels across lanes, the N states a tuple in registers (4 FMA-pipe ops + 1 MUFU per element).

Forward selective-scan kernel: one program per (channel block, sequence), time in a loop.

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
        triton.Config({"BD": 32, "NS": 4}, num_warps=1),
        triton.Config({"BD": 32, "NS": 6}, num_warps=1),
        triton.Config({"BD": 64, "NS": 4}, num_warps=2),
        triton.Config({"BD": 64, "NS": 4}, num_warps=1),
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
    DTYPE_KEY: tl.constexpr, BD: tl.constexpr, NS: tl.constexpr, SPLIT_GROUPS: tl.constexpr,
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
    # Channels across lanes, the N states of a channel in registers of its thread (a tuple of
    # N [BD] vectors): the sum over n of h·C needs no shuffles, per-channel work (softplus, skip,
    # gate) is done once per channel, and B[t, n], C[t, n] are per-thread scalar loads.
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
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
        o_g = (o_d // (D // G)) * N
    else:
        o_g = ((i_d * BD) // (D // G)) * N
    As = ()
    hs = ()
    for n in tl.static_range(N):
        b_An = tl.load(A + o_d * N + n, mask=m_d, other=0.0).to(tl.float32)
        if SCHEME == 0 or SCHEME == 3:
            b_An = b_An * 1.4426950408889634  # log2(e); Ā = 2^(dtA · A log2 e): one multiply less per element
        As = As + (b_An,)
        if HAS_H0:
            hs = hs + (tl.load(h0 + (i_s.to(tl.int64) * D + o_d) * N + n, mask=m_d,
                               other=0.0).to(tl.float32),)
        else:
            hs = hs + (tl.zeros([BD], dtype=tl.float32),)

    # One step per iteration; the software pipeliner (num_stages) issues the loads NS - 1
    # steps ahead through shared memory, so the DRAM latency is hidden without holding
    # prefetched steps in registers.
    for i_t in tl.range(0, eos - bos, num_stages=NS):
        t = bos + i_t
        if SAVE_CKPT:
            if i_t % CK == 0:
                p_ck = ckpt + ((i_ck + i_t // CK) * D + o_d) * N
                for n in tl.static_range(N):
                    tl.store(p_ck + n, hs[n], mask=m_d)
        b_u = tl.load(u + t * D + o_d, mask=m_d, other=0.0).to(tl.float32)
        b_dl = tl.load(delta + t * D + o_d, mask=m_d, other=0.0).to(tl.float32)
        if COUPLING != 0:
            b_tau = tl.load(tau + t).to(tl.float32)
        else:
            b_tau = 0.0
        if HAS_BIAS:
            b_dl += b_bias
        if SOFTPLUS:
            b_dl = softplus(b_dl)
        b_dtA, b_dtB = step_sizes(b_dl, b_tau, b_rate, COUPLING)
        if SCHEME == 0:
            b_ku = b_dtB * b_u
        elif SCHEME == 3:
            b_ku = b_u
        p_bc = t * G * N + o_g
        b_y = tl.zeros([BD], dtype=tl.float32)
        nhs = ()
        for n in tl.static_range(N):
            b_Bn = tl.load(B + p_bc + n).to(tl.float32)
            b_Cn = tl.load(C + p_bc + n).to(tl.float32)
            if SCHEME == 0 or SCHEME == 3:
                b_hn = tl.exp2(b_dtA * As[n]) * hs[n] + b_ku * b_Bn
            else:
                b_dA, b_kB = discretize(b_dtA, b_dtB, As[n], SCHEME)
                b_hn = b_dA * hs[n] + (b_kB * b_u) * b_Bn
            b_y += b_hn * b_Cn
            nhs = nhs + (b_hn,)
        hs = nhs
        if HAS_D:
            b_y += b_Dskip * b_u
        if HAS_Z:
            b_z = tl.load(z + t * D + o_d, mask=m_d, other=0.0).to(tl.float32)
            b_y *= b_z * sigmoid(b_z)
        tl.store(y + t * D + o_d, b_y.to(y.dtype.element_ty), mask=m_d)
    if STORE_LAST:
        p_last = last + (i_s.to(tl.int64) * D + o_d) * N
        for n in tl.static_range(N):
            tl.store(p_last + n, hs[n], mask=m_d)


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
