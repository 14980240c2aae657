"""Forward selective-scan kernel: one program per (channel block, sequence), time in a loop.

The recurrence is sequential in time but independent across (sequence, channel). Each program
takes ``BD`` channels of one sequence, one channel per lane, and keeps that channel's ``N``
states as a tuple of ``[BD]`` register vectors (every tensor in the kernel is 1-D, so Triton has
no layout to choose: a 2-D ``[N, BD]`` tile gets N across lanes in Triton 3.6, which costs a
shuffle tree for every y and repeats the per-channel work N times). Per state and step the
inner loop is one multiply, one ``ex2.approx`` and two FMAs; Δ, dtA, dtB, Ā, B̄ live only in
registers (no ``(B, L, D)`` step tensors, no ``(B, L, D, N)`` states).

Latency: the per-channel inputs (u, δ, τ, z) of chunk c+1 (``K`` steps) are loaded before
chunk c is computed; B[t], C[t] (read by every lane, a broadcast) are loaded one step ahead
and their rows for the next chunk are prefetched into L1. Chunks away from the sequence end
run without step masks. When the backward will run, the state entering every ``CK`` steps is
saved (``ckpt``, ``(n_chunks, N, D)`` fp32: ``4N/CK`` bytes per ``(b, l, d)``).

Layout: ``u, delta, z, y: (T, D)`` with ``T = batch·L`` (or the packed length), ``B, C: (T, G,
N)``, ``tau: (T,)``, ``A: (D, N)``, states ``(n_seq, D, N)``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .utils import (
    LOG2E,
    discretize,
    exp2_fast,
    load_steps,
    new_empty,
    prefetch_l1,
    prune_unrolled,
    sigmoid,
    softplus,
    step_sizes,
    store_masked,
)

__all__ = ["selective_scan_fwd"]


@triton.jit
def _load_chunk(p_u, p_dl, p_tau, p_z, n_valid, m_d, D: tl.constexpr, K: tl.constexpr,
                COUPLING: tl.constexpr, HAS_Z: tl.constexpr, MASK_T: tl.constexpr,
                EVEN_D: tl.constexpr):
    """The forward's per-channel inputs of K steps: (u, δ, τ, z) tuples (see ``load_steps``)."""
    us, dls, taus, _, zs = load_steps(p_u, p_dl, p_tau, p_dl, p_z, n_valid, m_d, D, K, COUPLING,
                                      False, HAS_Z, MASK_T, EVEN_D)
    return us, dls, taus, zs


@triton.jit
def _load_bc(B, C, p_bc, m_t, m_d, N: tl.constexpr, MASK_T: tl.constexpr,
             SPLIT_GROUPS: tl.constexpr):
    """B[t, n], C[t, n] for every n as tuples (scalars, or ``[BD]`` when channels of the block
    belong to different groups). Every lane reads the same address: a broadcast load."""
    Bs = ()
    Cs = ()
    for n in tl.static_range(N):
        if MASK_T:
            if SPLIT_GROUPS:
                m = tl.where(m_t, m_d, False)
            else:
                m = m_t
            Bs = Bs + (tl.load(B + p_bc + n, mask=m, other=0.0),)
            Cs = Cs + (tl.load(C + p_bc + n, mask=m, other=0.0),)
        else:
            Bs = Bs + (tl.load(B + p_bc + n),)
            Cs = Cs + (tl.load(C + p_bc + n),)
    return Bs, Cs


@triton.jit
def _steps(hs, Bs, Cs, cur, B, C, p_bc, p_y, n_valid, m_d, As, A2s, b_bias, b_Dskip, b_rate,
           D: tl.constexpr, G: tl.constexpr, N: tl.constexpr, K: tl.constexpr,
           SCHEME: tl.constexpr, COUPLING: tl.constexpr, SOFTPLUS: tl.constexpr,
           HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
           SPLIT_GROUPS: tl.constexpr, MASK_T: tl.constexpr, EVEN_D: tl.constexpr):
    """K steps of the recurrence from the chunk's inputs ``cur``; returns the state and B/C of
    the step after the chunk. With ``MASK_T`` steps ``k >= n_valid`` leave the state unchanged
    (dtA = dtB = 0, u = 0, B = 0: Ā = 1, B̄·u = 0) and store nothing."""
    us, dls, taus, zs = cur
    for k in tl.static_range(K):
        m_t = k < n_valid
        b_Bs = Bs
        b_Cs = Cs
        # B/C of the next step are requested before this step's arithmetic
        Bs, Cs = _load_bc(B, C, p_bc + (k + 1) * G * N, k + 1 < n_valid, m_d, N, MASK_T,
                          SPLIT_GROUPS)
        b_u = us[k].to(tl.float32)
        b_dl = dls[k].to(tl.float32)
        if HAS_BIAS:
            b_dl += b_bias
        if SOFTPLUS:
            b_dl = softplus(b_dl)
        if MASK_T:
            b_dl = tl.where(m_t, b_dl, 0.0)
        if COUPLING != 0:
            b_tau = taus[k].to(tl.float32)
        else:
            b_tau = 0.0
        b_dtA, b_dtB = step_sizes(b_dl, b_tau, b_rate, COUPLING)
        if SCHEME == 0:
            b_ku = b_dtB * b_u
        elif SCHEME == 3:
            b_ku = b_u
        b_y = tl.zeros_like(b_u)
        nhs = ()
        for n in tl.static_range(N):
            if SCHEME == 0 or SCHEME == 3:
                # the common case spelled out: one multiply, one MUFU.EX2, two FMAs per state
                b_hn = exp2_fast(b_dtA * A2s[n]) * hs[n] + b_ku * b_Bs[n].to(tl.float32)
            else:
                b_dA, b_kB = discretize(b_dtA, b_dtB, As[n], A2s[n], SCHEME)
                b_hn = b_dA * hs[n] + (b_kB * b_u) * b_Bs[n].to(tl.float32)
            b_y += b_hn * b_Cs[n].to(tl.float32)
            nhs = nhs + (b_hn,)
        hs = nhs
        if HAS_D:
            b_y += b_Dskip * b_u
        if HAS_Z:
            b_z = zs[k].to(tl.float32)
            b_y *= b_z * sigmoid(b_z)
        store_masked(p_y + k * D, b_y, m_t, m_d, MASK_T, EVEN_D)
    return hs, Bs, Cs


@triton.autotune(
    # K·N state updates are unrolled twice (masked and unmasked paths): compile time grows
    # faster than linearly (N = 16 on one CPU core: K = 2 2.4 s, K = 4 5.7 s, K = 8 20 s).
    configs=[
        triton.Config({"BD": 32, "K": 4}, num_warps=1),
        triton.Config({"BD": 32, "K": 2}, num_warps=1),
        triton.Config({"BD": 64, "K": 4}, num_warps=2),
    ],
    key=["D", "N", "G", "CK", "SCHEME", "COUPLING", "HAS_Z", "IS_VARLEN", "SAVE_CKPT", "DTYPE_KEY"],
    # N = 64 with K = 4 already spills (registers hold the state, A and two steps of B/C)
    prune_configs_by={"early_config_prune": prune_unrolled(128)},
)
@triton.heuristics({
    "SPLIT_GROUPS": lambda a: a["G"] > 1 and (a["D"] // a["G"]) % a["BD"] != 0,
    "EVEN_D": lambda a: a["D"] % a["BD"] == 0,
})
@triton.jit(do_not_specialize=["L"])
def selective_scan_fwd_kernel(
    u, delta, delta_bias, A, B, C, Dskip, z, tau, rate, h0,
    y, last, ckpt,
    cu_seqlens, chunk_offsets,
    L, D: tl.constexpr, N: tl.constexpr, G: tl.constexpr, CK: tl.constexpr,
    SCHEME: tl.constexpr, COUPLING: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_H0: tl.constexpr,
    STORE_LAST: tl.constexpr, SAVE_CKPT: tl.constexpr, IS_VARLEN: tl.constexpr,
    DTYPE_KEY: tl.constexpr, BD: tl.constexpr, K: tl.constexpr, SPLIT_GROUPS: tl.constexpr,
    EVEN_D: tl.constexpr,
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
    T = (eos - bos).to(tl.int32)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    if HAS_BIAS:
        b_bias = tl.load(delta_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    else:
        b_bias = 0.0
    if HAS_D:
        b_Dskip = tl.load(Dskip + o_d, mask=m_d, other=0.0).to(tl.float32)
    else:
        b_Dskip = 0.0
    if COUPLING == 1:
        b_rate = tl.load(rate + o_d, mask=m_d, other=0.0).to(tl.float32)
    else:
        b_rate = 0.0
    # Layout: channels across lanes, the N states of a channel a tuple of registers in its
    # thread. Every tensor is a [BD] vector, so Triton has no layout to choose (a 2-D [N, BD]
    # tile gets N across lanes in some Triton versions: shuffles for y, per-channel work 16×).
    As = ()
    A2s = ()
    hs = ()
    for n in tl.static_range(N):
        b_An = tl.load(A + o_d * N + n, mask=m_d, other=0.0).to(tl.float32)
        As = As + (b_An,)
        A2s = A2s + (b_An * LOG2E,)
        if HAS_H0:
            hs = hs + (tl.load(h0 + (i_s.to(tl.int64) * D + o_d) * N + n, mask=m_d,
                               other=0.0).to(tl.float32),)
        else:
            hs = hs + (tl.zeros([BD], dtype=tl.float32),)
    # B/C of channel d come from group d // (D / G); a block inside one group reads one row.
    if SPLIT_GROUPS:
        o_g = (o_d // (D // G)) * N
    else:
        o_g = ((i_d * BD) // (D // G)) * N

    # Pointers advance by whole chunks; inside a chunk every access is base + a compile-time
    # offset (no per-step 64-bit address arithmetic).
    p_u = u + bos * D + o_d
    p_dl = delta + bos * D + o_d
    p_y = y + bos * D + o_d
    # absent inputs (None) get a stand-in pointer that is never read
    if HAS_Z:
        p_z = z + bos * D + o_d
    else:
        p_z = p_u
    if COUPLING != 0:
        p_tau = tau + bos
    else:
        p_tau = u + bos
    p_bc = bos * G * N + o_g  # an offset: B and C share it
    # lane j of the L1 prefetch covers cache line j // K of the group's row at step j % K
    LINE = 1024 // B.dtype.element_ty.primitive_bitwidth  # elements per 128-byte line
    o_pf = tl.arange(0, BD) % K
    l_pf = tl.arange(0, BD) // K
    m_pf = l_pf * LINE < N
    p_bc_pf = bos * G * N + o_pf * G * N + ((i_d * BD) // (D // G)) * N + l_pf * LINE
    # Software pipeline: the per-channel inputs of chunk c+1 are requested before chunk c is
    # computed (their DRAM latency hides behind K steps of work), B/C of step t+1 before step t.
    # Chunks away from the end take a path without step masks.
    nxt = _load_chunk(p_u, p_dl, p_tau, p_z, T, m_d, D, K, COUPLING, HAS_Z, True, EVEN_D)
    Bs, Cs = _load_bc(B, C, p_bc, T > 0, m_d, N, True, SPLIT_GROUPS)
    for i_c in range(0, tl.cdiv(T, K)):
        if SAVE_CKPT:
            if i_c % (CK // K) == 0:
                # saved states are (n_chunks, N, D): coalesced along the lanes
                p_ck = ckpt + (i_ck + i_c // (CK // K)) * D * N + o_d
                for n in tl.static_range(N):
                    tl.store(p_ck + n * D, hs[n], mask=m_d)
        cur = nxt
        n_valid = T - i_c * K
        # B/C rows of the next chunk into L1: the per-step loads below are issued only one step
        # ahead and would otherwise wait on L2 every step (every lane reads the same address).
        prefetch_l1(B + p_bc_pf + K * G * N, m_pf & (o_pf < n_valid - K))
        prefetch_l1(C + p_bc_pf + K * G * N, m_pf & (o_pf < n_valid - K))
        if n_valid >= 2 * K:
            nxt = _load_chunk(p_u + K * D, p_dl + K * D, p_tau + K, p_z + K * D, K, m_d, D, K,
                              COUPLING, HAS_Z, False, EVEN_D)
        else:
            nxt = _load_chunk(p_u + K * D, p_dl + K * D, p_tau + K, p_z + K * D, n_valid - K, m_d,
                              D, K, COUPLING, HAS_Z, True, EVEN_D)
        if n_valid > K:
            hs, Bs, Cs = _steps(
                hs, Bs, Cs, cur, B, C, p_bc, p_y, n_valid, m_d, As, A2s, b_bias, b_Dskip, b_rate,
                D, G, N, K, SCHEME, COUPLING, SOFTPLUS, HAS_BIAS, HAS_D, HAS_Z, SPLIT_GROUPS, False, EVEN_D)
        else:
            hs, Bs, Cs = _steps(
                hs, Bs, Cs, cur, B, C, p_bc, p_y, n_valid, m_d, As, A2s, b_bias, b_Dskip, b_rate,
                D, G, N, K, SCHEME, COUPLING, SOFTPLUS, HAS_BIAS, HAS_D, HAS_Z, SPLIT_GROUPS, True, EVEN_D)
        p_u += K * D
        p_dl += K * D
        p_y += K * D
        p_z += K * D
        p_tau += K
        p_bc += K * G * N
        p_bc_pf += K * G * N
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
        ckpt = new_empty(int(offsets[-1]), N, D, like=u, dtype=torch.float32)
        offsets = offsets.to(u.device)

    def grid(meta):
        return (triton.cdiv(D, meta["BD"]), n_seq)

    selective_scan_fwd_kernel[grid](
        u, delta, delta_bias, A, B, C, Dskip, z, tau, rate, h0,
        y, last, ckpt,
        cu_seqlens, offsets,
        L, D=D, N=N, G=G, CK=CK,
        SCHEME=scheme, COUPLING=coupling, SOFTPLUS=softplus_,
        HAS_BIAS=delta_bias is not None, HAS_D=Dskip is not None, HAS_Z=z is not None,
        HAS_H0=h0 is not None, STORE_LAST=store_last, SAVE_CKPT=save_ckpt,
        IS_VARLEN=cu_seqlens is not None, DTYPE_KEY=str(u.dtype),
    )
    return y, last, ckpt, offsets
