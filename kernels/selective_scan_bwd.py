"""Backward selective-scan kernel: reverse time, recomputing each chunk from its saved state.

With ``g[l] = ∂loss/∂h[l]`` (the adjoint; ``g[L-1]`` starts from the last state's cotangent)
the recurrence ``h[l] = Ā[l] h[l-1] + k[l] B[l] u[l]`` and ``y[l] = C[l]·h[l] + D u[l]`` give,
walking ``l`` backwards:

    g[l]    += C[l] y'[l]                          (y' = ∂loss/∂y before the gate)
    ∂Ā[l]    = g[l] ⊙ h[l-1],   ∂k[l] = g[l] ⊙ B[l] u[l]
    ∂u[l]    = Σ_n g[l] k[l] B[l] + D y'[l],   ∂B[l] = Σ_d g[l] k[l] u[l],   ∂C[l] = Σ_d y'[l] h[l]
    g[l-1]   = Ā[l] ⊙ g[l]

and the chain rule through the scheme (∂Ā/∂dtA, ∂Ā/∂A, ∂k/∂dtB, ∂k/∂A) and the coupling
(dtA from Δ, τ, r) to δ, delta_bias, A, rate and τ.

Layout: one program per (32 / S channels, sequence), one warp; ``S`` adjacent lanes share a
channel (``lanes_per_channel``: 4 for N = 16 and 64), lane ``j`` holding states
``(j % S)·N/S`` to ``(j % S + 1)·N/S - 1`` of channel ``j // S`` (contiguous, so that B/C rows load
as vectors) as a tuple of ``[32]`` register vectors (so are the
adjoint ``g`` and the ∂A accumulator); per-channel sums over the states (y, ∂u, ∂dtA) take
``log2 S`` shuffles. Splitting a channel over lanes multiplies the warps by S: with one channel
a lane there are only batch·D/32 of them and the step is latency-bound. ``h[l-1]`` is needed in
reverse order: for each chunk of ``CK`` steps (reverse order) the program reloads the state the
forward saved, runs the chunk forward storing the state entering every sub-chunk of ``K``
steps to a per-program scratch (small: it stays in L2), then walks the sub-chunks backwards,
recomputing each one's ``K`` states into registers. Inputs of the next sub-chunk are prefetched
into L1 while the current one is computed.

The per-step channel sums ∂B[t, :] and ∂C[t, :] (2N values, each a sum over the warp's
channels) are reduced together by a butterfly reduce-scatter (``channel_sums``): ``32/S - 1``
shuffles for all of them instead of ``log2(32/S)`` per value, after which every lane holds
one sum and one coalesced atomic add per step writes them into a (T, G, 2N) buffer.
Whole-sequence sums (∂A, ∂D, ∂delta_bias, ∂rate) accumulate in registers and are added once
per program.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .utils import (
    LN2,
    LOG2E,
    advance_states,
    channel_params,
    channel_sums,
    discretize,
    discretize_grad,
    exp2_fast,
    group_sum,
    lanes_per_channel,
    load_row_vec,
    load_steps,
    new_empty,
    prefetch_l1,
    prune_unrolled,
    sigmoid,
    step_coeffs,
    store_masked,
    vector_bytes,
)

__all__ = ["selective_scan_bwd"]


@triton.jit
def _prefetch_rows(p, lo, T, m_d, D: tl.constexpr, K: tl.constexpr):
    """Bring the K rows ``p + k·D`` (steps ``lo + k`` of the sequence, those in ``[0, T)``) into
    L1: no registers and no wait, so the loads of a later sub-chunk find them there."""
    for k in tl.static_range(K):
        prefetch_l1(p + k * D, tl.where((lo + k >= 0) & (lo + k < T), m_d, False))


@triton.jit
def _forward_sub(hs, cur, B, p_bc, n_valid, m_d, As, A2s, b_bias, b_rate,
                 G: tl.constexpr, N: tl.constexpr, NS: tl.constexpr, VEC: tl.constexpr,
                 K: tl.constexpr, SCHEME: tl.constexpr, COUPLING: tl.constexpr,
                 SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr, MASK_T: tl.constexpr,
                 KEEP: tl.constexpr):
    """K forward steps from ``hs``: the state after the sub-chunk, or with ``KEEP`` the tuple of
    its K + 1 states ``h[0..K]`` (``h[0] = hs``)."""
    us, dls, taus, dys, zs = cur
    hs_all = (hs,)
    for k in tl.static_range(K):
        m_t = k < n_valid
        Bs = load_row_vec(B, p_bc + k * G * N, tl.where(m_t, m_d, False), NS, VEC, True)
        _, _, dtA, dtB = step_coeffs(dls[k], taus[k], m_t, b_bias, b_rate, COUPLING, SOFTPLUS,
                                 HAS_BIAS, MASK_T)
        hs = advance_states(hs, Bs, us[k].to(tl.float32), dtA, dtB, As, A2s, NS, SCHEME)
        if KEEP:
            hs_all = hs_all + (hs,)
    if KEEP:
        return hs_all
    else:
        return hs


@triton.jit
def _backward_sub(g, dA_acc, b_dD, b_dbias, b_drate, h0s, cur, B, C, p_bc, p_du, p_ddl, p_dz,
                  p_dtau, p_dbc, n_valid, m_d, m_w, lane, sub, o_g2, As, A2s, b_bias, b_Dskip,
                  b_rate, D: tl.constexpr, G: tl.constexpr, N: tl.constexpr, NS: tl.constexpr,
                  S: tl.constexpr, VEC: tl.constexpr, K: tl.constexpr,
                  SCHEME: tl.constexpr, COUPLING: tl.constexpr, SOFTPLUS: tl.constexpr,
                  HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                  TAU_GRAD: tl.constexpr, SPLIT_GROUPS: tl.constexpr, MASK_T: tl.constexpr,
                  EVEN_D: tl.constexpr):
    """The K steps of one sub-chunk in reverse, from the state entering it (``h0s``) and the
    adjoint after it (``g``); returns the adjoint before it and the updated accumulators."""
    us, dls, taus, dys, zs = cur
    # the sub-chunk's states h[0..K] (h[0] = h0s) recomputed into registers
    hs_all = _forward_sub(h0s, cur, B, p_bc, n_valid, m_d, As, A2s, b_bias, b_rate, G, N, NS, VEC,
                          K, SCHEME, COUPLING, SOFTPLUS, HAS_BIAS, MASK_T, True)
    # after the reduce-scatter each lane holds Q of the 2N sums (see channel_sums)
    Q: tl.constexpr = (2 * N + 31) // 32
    for k in tl.static_range(K - 1, -1, -1):
        m_t = k < n_valid
        hk = hs_all[k + 1]
        hp = hs_all[k]
        Bs = load_row_vec(B, p_bc + k * G * N, tl.where(m_t, m_d, False), NS, VEC, True)
        Cs = load_row_vec(C, p_bc + k * G * N, tl.where(m_t, m_d, False), NS, VEC, True)
        b_u = us[k].to(tl.float32)
        b_x, b_dl, dtA, dtB = step_coeffs(dls[k], taus[k], m_t, b_bias, b_rate, COUPLING, SOFTPLUS,
                                      HAS_BIAS, MASK_T)
        b_dy = dys[k].to(tl.float32)
        if HAS_Z:
            b_z = zs[k].to(tl.float32)
            b_sz = sigmoid(b_z)
            b_ypre = tl.zeros_like(b_u)
            for n in tl.static_range(NS):
                b_ypre += hk[n] * Cs[n]
            b_ypre = group_sum(b_ypre, S) + b_Dskip * b_u
            b_dz = b_dy * b_ypre * b_sz * (1.0 + b_z * (1.0 - b_sz))
            store_masked(p_dz + k * D, b_dz, m_t, m_w, MASK_T, EVEN_D and S == 1)
            b_dy = b_dy * b_z * b_sz
        if SCHEME == 0:
            ku = dtB * b_u
        elif SCHEME == 3:
            ku = b_u
        # per state: adjoint update, the ∂B/∂C terms, the ∂u / ∂dtA / ∂dtB / ∂A contributions
        dBs = ()
        dCs = ()
        ng = ()
        ndA = ()
        s_u = tl.zeros_like(b_u)  # Σ_n g k B (∂u before D)
        s_dtA = tl.zeros_like(b_u)  # Σ_n g h[l-1] ∂Ā/∂dtA (A pre-scaled by log2 e: see below)
        s_dtB = tl.zeros_like(b_u)  # Σ_n g B u ∂k/∂dtB (zoh, bilinear)
        for n in tl.static_range(NS):
            gn = g[n] + b_dy * Cs[n]
            dCs = dCs + (b_dy * hk[n],)
            if SCHEME == 0 or SCHEME == 3:
                dBs = dBs + (gn * ku,)
                s_u += gn * Bs[n]
                dAn = exp2_fast(dtA * A2s[n])
                q = (gn * hp[n]) * dAn
                s_dtA += q * A2s[n]
                ndA = ndA + (dA_acc[n] + q * dtA,)
            else:
                dAn, kB = discretize(dtA, dtB, As[n], A2s[n], SCHEME)
                ddA_ddtA, ddA_dA, dk_ddtB, dk_dA = discretize_grad(dtA, dtB, As[n], dAn, kB, SCHEME)
                gk = gn * kB
                dBs = dBs + (gk * b_u,)
                s_u += gk * Bs[n]
                gh = gn * hp[n]
                gBu = gn * Bs[n] * b_u
                s_dtA += gh * ddA_ddtA * LOG2E
                s_dtB += gBu * dk_ddtB
                ndA = ndA + (dA_acc[n] + gh * ddA_dA + gBu * dk_dA,)
            ng = ng + (gn * dAn,)
        g = ng
        dA_acc = ndA
        # per-channel sums over the channel's S lanes
        s_u = group_sum(s_u, S)
        d_dtA = group_sum(s_dtA, S) * LN2
        if SCHEME == 1 or SCHEME == 2:
            s_dtB = group_sum(s_dtB, S)
        if SCHEME == 0:
            b_du = s_u * dtB
            d_dtB = s_u * b_u
        elif SCHEME == 3:
            b_du = s_u
            d_dtB = tl.zeros_like(b_u)
        else:
            b_du = s_u
            d_dtB = s_dtB
        if HAS_D:
            b_du += b_Dskip * b_dy
            b_dD += b_dy * b_u
        store_masked(p_du + k * D, b_du, m_t, m_w, MASK_T, EVEN_D and S == 1)
        # chain rule through the coupling
        if COUPLING == 1:
            b_ddl = d_dtB
            b_drate += d_dtA * taus[k].to(tl.float32)
            b_dtau_l = d_dtA * b_rate
        elif COUPLING == 2:
            b_ddl = d_dtB + d_dtA * taus[k].to(tl.float32)
            b_dtau_l = d_dtA * b_dl
        else:
            b_ddl = d_dtB + d_dtA
            b_dtau_l = d_dtA
        if TAU_GRAD:
            b_dtau = tl.sum(tl.where(m_w, b_dtau_l, 0.0), 0)
            if MASK_T:
                tl.atomic_add(p_dtau + k, b_dtau, mask=m_t, sem="relaxed")
            else:
                tl.atomic_add(p_dtau + k, b_dtau, sem="relaxed")
        if SOFTPLUS:
            b_ddl = b_ddl * sigmoid(b_x)
        b_ddl = tl.where(m_d, b_ddl, 0.0)
        if MASK_T:
            b_ddl = tl.where(m_t, b_ddl, 0.0)
        b_dbias += b_ddl
        store_masked(p_ddl + k * D, b_ddl, m_t, m_w, MASK_T, EVEN_D and S == 1)
        # ∂B[t, g, :], ∂C[t, g, :]: sums over the block's channels, added to (T, G, 2N)
        p_row = p_dbc + k * G * 2 * N
        if SPLIT_GROUPS:
            m = tl.where(m_t, m_d, False)
            for n in tl.static_range(NS):
                tl.atomic_add(p_row + o_g2 + sub * NS + n, dBs[n], mask=m, sem="relaxed")
                tl.atomic_add(p_row + o_g2 + N + sub * NS + n, dCs[n], mask=m, sem="relaxed")
        else:
            vals = dBs + dCs
            for _ in tl.static_range((32 // S) * Q - 2 * NS):
                vals = vals + (tl.zeros_like(b_u),)
            sums = channel_sums(vals, lane, Q, 2 * NS, S)
            for i in tl.static_range(Q):
                # value v of sub-lane `sub`: ∂B of state sub·NS + v, or ∂C of sub·NS + v - NS
                v = (lane // S) * Q + i
                o = tl.where(v < NS, sub * NS + v, N + sub * NS + (v - NS))
                m = v < 2 * NS
                if MASK_T:
                    m = tl.where(m_t, m, False)
                tl.atomic_add(p_row + o_g2 + o, sums[i], mask=m, sem="relaxed")
    return g, dA_acc, b_dD, b_dbias, b_drate


@triton.autotune(
    configs=[
        triton.Config({"K": 4}, num_warps=1),
        triton.Config({"K": 2}, num_warps=1),
    ],
    key=["D", "N", "G", "CK", "SCHEME", "COUPLING", "HAS_Z", "IS_VARLEN", "DTYPE_KEY", "S", "VEC"],
    # the sub-chunk's K + 1 states are live at once: more than 32 a lane spills
    prune_configs_by={"early_config_prune": prune_unrolled(32)},
    reset_to_zero=["dA", "dBC", "dDskip", "dbias", "drate", "dtau"],
)
@triton.heuristics({
    "SPLIT_GROUPS": lambda a: a["G"] > 1 and (a["D"] // a["G"]) % a["BD"] != 0,
    "EVEN_D": lambda a: a["D"] % a["BD"] == 0,
})
@triton.jit(do_not_specialize=["L"])
def selective_scan_bwd_kernel(
    u, delta, delta_bias, A, B, C, Dskip, z, tau, rate, ckpt, scratch, dy, dlast,
    du, ddelta, dA, dBC, dDskip, dz, dbias, drate, dtau, dh0,
    cu_seqlens, chunk_offsets,
    L, D: tl.constexpr, N: tl.constexpr, G: tl.constexpr, CK: tl.constexpr,
    SLOTS: tl.constexpr,
    SCHEME: tl.constexpr, COUPLING: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DLAST: tl.constexpr,
    STORE_DH0: tl.constexpr, TAU_GRAD: tl.constexpr, IS_VARLEN: tl.constexpr,
    DTYPE_KEY: tl.constexpr, S: tl.constexpr, BD: tl.constexpr, VEC: tl.constexpr,
    K: tl.constexpr, SPLIT_GROUPS: tl.constexpr, EVEN_D: tl.constexpr,
):
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    NS: tl.constexpr = N // S
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_s).to(tl.int64)
        eos = tl.load(cu_seqlens + i_s + 1).to(tl.int64)
        i_ck = tl.load(chunk_offsets + i_s).to(tl.int64)
    else:
        bos = i_s.to(tl.int64) * L
        eos = bos + L
        i_ck = i_s.to(tl.int64) * tl.cdiv(L, CK)
    T = (eos - bos).to(tl.int32)
    # lane j: channel j // S, states (j % S), (j % S) + S, ... (S lanes a channel)
    lane = tl.arange(0, 32)
    sub = lane % S
    o_d = i_d * BD + lane // S
    m_d = o_d < D
    m_w = m_d & (sub == 0)  # per-channel outputs are written by the channel's first lane
    o_dn = o_d * N + sub * NS  # (D, N) tensors: state sub·NS + i of channel o_d
    b_bias, b_Dskip, b_rate, As, A2s = channel_params(A, delta_bias, Dskip, rate, o_d, m_d, o_dn,
                                                      NS, HAS_BIAS, HAS_D, COUPLING)
    g = ()
    dA_acc = ()
    for i in tl.static_range(NS):
        if HAS_DLAST:
            g = g + (tl.load(dlast + i_s.to(tl.int64) * D * N + o_dn + i, mask=m_d, other=0.0),)
        else:
            g = g + (tl.zeros([32], dtype=tl.float32),)
        dA_acc = dA_acc + (tl.zeros([32], dtype=tl.float32),)
    b_dD = tl.zeros([32], dtype=tl.float32)
    b_dbias = tl.zeros([32], dtype=tl.float32)
    b_drate = tl.zeros([32], dtype=tl.float32)
    # B/C (and ∂B/∂C) of channel d come from group d // (D / G)
    if SPLIT_GROUPS:
        o_g = (o_d // (D // G)) * N
    else:
        o_g = ((i_d * BD) // (D // G)) * N
    o_g2 = 2 * o_g
    o_bc = o_g + sub * NS

    # pointers without the sequence start: offsets are (t) * D with bos int64
    p_u = u + o_d
    p_dl = delta + o_d
    p_dy = dy + o_d
    p_du = du + o_d
    p_ddl = ddelta + o_d
    if HAS_Z:
        p_z = z + o_d
        p_dz = dz + o_d
    else:
        p_z = p_u
        p_dz = p_du
    if COUPLING != 0:
        p_tau = tau
    else:
        p_tau = u
    # this program's scratch: the state entering each sub-chunk of a chunk, (SLOTS, NS, 32)
    p_scr = scratch + (i_s.to(tl.int64) * tl.num_programs(0) + i_d) * SLOTS * NS * 32 + lane
    # L1 prefetch of a B/C row: lane j covers cache line j // K of the row at step j % K
    LINE = 1024 // B.dtype.element_ty.primitive_bitwidth
    o_pf = lane % K
    l_pf = lane // K
    m_pf = l_pf * LINE < N
    o_bc_pf = o_pf * G * N + ((i_d * BD) // (D // G)) * N + l_pf * LINE

    for i_o in range(tl.cdiv(T, CK) - 1, -1, -1):
        n_ck = tl.minimum(T - i_o * CK, CK)
        n_sub = tl.cdiv(n_ck, K)
        # forward over the chunk from its saved state ((n_chunks, N, D)), keeping the state
        # entering every sub-chunk
        hs = ()
        for i in tl.static_range(NS):
            hs = hs + (tl.load(ckpt + ((i_ck + i_o) * N + sub * NS + i) * D + o_d, mask=m_d,
                               other=0.0),)
        for i_c in range(0, n_sub):
            for i in tl.static_range(NS):
                tl.store(p_scr + (i_c * NS + i) * 32, hs[i])
            t = bos + i_o * CK + i_c * K
            n_valid = n_ck - i_c * K
            cur = load_steps(p_u + t * D, p_dl + t * D, p_tau + t, p_dy, p_z, n_valid, m_d, D, K,
                             COUPLING, False, False, True, EVEN_D)
            prefetch_l1(B + (t + K) * G * N + o_bc_pf, m_pf & (o_pf < n_valid - K))
            # the inputs two sub-chunks ahead: DRAM latency is about one sub-chunk of work
            _prefetch_rows(p_u + (t + 2 * K) * D, t - bos + 2 * K, T, m_d, D, K)
            _prefetch_rows(p_dl + (t + 2 * K) * D, t - bos + 2 * K, T, m_d, D, K)
            hs = _forward_sub(hs, cur, B, t * G * N + o_bc, n_valid, m_d, As, A2s, b_bias,
                              b_rate, G, N, NS, VEC, K, SCHEME, COUPLING, SOFTPLUS, HAS_BIAS, True,
                              False)
        # backwards over the sub-chunks
        for i_c in range(n_sub - 1, -1, -1):
            h0s = ()
            for i in tl.static_range(NS):
                h0s = h0s + (tl.load(p_scr + (i_c * NS + i) * 32),)
            t = bos + i_o * CK + i_c * K
            n_valid = n_ck - i_c * K
            cur = load_steps(p_u + t * D, p_dl + t * D, p_tau + t, p_dy + t * D, p_z + t * D,
                             n_valid, m_d, D, K, COUPLING, True, HAS_Z, True, EVEN_D)
            prefetch_l1(B + (t - K) * G * N + o_bc_pf, m_pf & (t - bos >= K))
            prefetch_l1(C + (t - K) * G * N + o_bc_pf, m_pf & (t - bos >= K))
            prefetch_l1(C + (t) * G * N + o_bc_pf, m_pf & (o_pf < n_valid))
            # the previous sub-chunk's state and inputs (dy and z two back: first read here)
            for i in tl.static_range(NS):
                prefetch_l1(p_scr + ((i_c - 1) * NS + i) * 32, m_d & (i_c > 0))
            _prefetch_rows(p_u + (t - K) * D, t - bos - K, T, m_d, D, K)
            _prefetch_rows(p_dl + (t - K) * D, t - bos - K, T, m_d, D, K)
            _prefetch_rows(p_dy + (t - 2 * K) * D, t - bos - 2 * K, T, m_d, D, K)
            if HAS_Z:
                _prefetch_rows(p_z + (t - 2 * K) * D, t - bos - 2 * K, T, m_d, D, K)
            g, dA_acc, b_dD, b_dbias, b_drate = _backward_sub(
                g, dA_acc, b_dD, b_dbias, b_drate, h0s, cur, B, C, t * G * N + o_bc,
                p_du + t * D, p_ddl + t * D, p_dz + t * D, dtau + t, dBC + t * G * 2 * N,
                n_valid, m_d, m_w, lane, sub, o_g2, As, A2s, b_bias, b_Dskip, b_rate,
                D, G, N, NS, S, VEC, K, SCHEME, COUPLING, SOFTPLUS, HAS_BIAS, HAS_D, HAS_Z, TAU_GRAD,
                SPLIT_GROUPS, True, EVEN_D)

    for i in tl.static_range(NS):
        tl.atomic_add(dA + o_dn + i, dA_acc[i], mask=m_d, sem="relaxed")
        if STORE_DH0:
            tl.store(dh0 + i_s.to(tl.int64) * D * N + o_dn + i, g[i], mask=m_d)
    if HAS_D:
        tl.atomic_add(dDskip + o_d, b_dD, mask=m_w, sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias + o_d, b_dbias, mask=m_w, sem="relaxed")
    if COUPLING == 1:
        tl.atomic_add(drate + o_d, b_drate, mask=m_w, sem="relaxed")


def selective_scan_bwd(u, delta, A, B, C, Dskip, z, delta_bias, softplus_, tau, rate, ckpt,
                       offsets, cu_seqlens, dy, dlast, scheme: int, coupling: int, CK: int,
                       store_dh0: bool, tau_grad: bool):
    """Launch the backward kernel. Shapes as in ``selective_scan_fwd``; ``dy (b, L, D)``,
    ``dlast (n_seq, D, N)`` fp32 or None. Returns a dict of gradients (fp32 for the reduced
    ones, the input dtype for the per-step ones; None where the input was absent)."""
    b, L, D = u.shape
    G, N = B.shape[-2:]
    n_seq = b if cu_seqlens is None else cu_seqlens.numel() - 1
    f32 = dict(device=u.device, dtype=torch.float32)
    du = new_empty(u.shape, like=u)
    ddelta = new_empty(delta.shape, like=delta)
    dz = new_empty(z.shape, like=z) if z is not None else None
    dA = torch.zeros(D, N, **f32)
    # ∂B and ∂C share one buffer (T, G, 2N): a step's 2N channel sums are one coalesced add
    dBC = torch.zeros(b, L, G, 2 * N, **f32)
    # Absent gradients still get a (tiny) buffer: the autotuner zeroes every reset_to_zero
    # argument between its trial launches.
    dDskip = torch.zeros(D if Dskip is not None else 1, **f32)
    dbias = torch.zeros(D if delta_bias is not None else 1, **f32)
    drate = torch.zeros(D if coupling == 1 else 1, **f32)
    dtau = torch.zeros((b, L) if tau_grad else (1,), **f32)
    dh0 = new_empty(n_seq, D, N, like=u, dtype=torch.float32) if store_dh0 else None
    # Per-program slots for the sub-chunk states of one chunk (K >= 2 steps a sub-chunk): with
    # at most a few programs per SM alive at once this stays in L2.
    slots = CK // 2
    S = lanes_per_channel(N, "backward")
    n_dblk = triton.cdiv(D, 32 // S)
    scratch = new_empty(n_seq * n_dblk * slots * (N // S) * 32, like=u, dtype=torch.float32)

    grid = (n_dblk, n_seq)
    selective_scan_bwd_kernel[grid](
        u, delta, delta_bias, A, B, C, Dskip, z, tau, rate, ckpt, scratch, dy, dlast,
        du, ddelta, dA, dBC, dDskip, dz, dbias, drate, dtau, dh0,
        cu_seqlens, offsets,
        L, D=D, N=N, G=G, CK=CK, SLOTS=slots,
        SCHEME=scheme, COUPLING=coupling, SOFTPLUS=softplus_,
        HAS_BIAS=delta_bias is not None, HAS_D=Dskip is not None, HAS_Z=z is not None,
        HAS_DLAST=dlast is not None, STORE_DH0=store_dh0, TAU_GRAD=tau_grad,
        IS_VARLEN=cu_seqlens is not None, DTYPE_KEY=str(u.dtype), S=S, BD=32 // S,
        VEC=vector_bytes(N, N // S, B, C),
    )
    return dict(u=du, delta=ddelta, A=dA, B=dBC[..., :N], C=dBC[..., N:],
                D=dDskip if Dskip is not None else None,
                z=dz, delta_bias=dbias if delta_bias is not None else None,
                rate=drate if coupling == 1 else None, tau=dtau if tau_grad else None, h0=dh0)
