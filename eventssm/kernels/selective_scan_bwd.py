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
recomputing each one's ``K`` states into registers.

Latency (Nsight Compute showed most of the stall samples on loads used right after they were
issued): both passes request the inputs of the next sub-chunk (u, δ, τ, the saved state, and
the B rows in the chunk pass) before computing the current one; the reverse pass loads a whole
sub-chunk's B and C rows before its recompute; full sub-chunks take a path without step masks
(the masked path's branches kept the loads from being hoisted); and inputs are prefetched into
L2 ``prefetch_distance()`` sub-chunks ahead (dy, C and z of a sub-chunk during its chunk pass).

The per-step channel sums ∂B[t, :] and ∂C[t, :] (2N values, each a sum over the warp's
channels) are reduced together by a butterfly reduce-scatter (``channel_sums``): ``32/S - 1``
shuffles for all of them instead of ``log2(32/S)`` per value, after which every lane holds
one sum and one coalesced atomic add per step writes them into a (T, G, 2N) buffer.
Whole-sequence sums (∂A, ∂D, ∂delta_bias, ∂rate) accumulate in registers and are added once
per program.

Those adds are fp32 atomics from many programs (the channel blocks of a group for ∂τ, ∂B, ∂C;
the sequences for the whole-sequence sums), so the order of the additions, and the last bits,
change from run to run. Under torch's deterministic mode
(``torch.use_deterministic_algorithms(True)``, read on the host at each launch) every program
stores its sums into its own slot of a partial-sum buffer instead, ``(blocks a group, T, G,
2N)``, ``(blocks, T)`` and ``(n_seq, D[, N])``, and torch adds the slots in a fixed order
afterwards. A block straddling groups reduces the lanes of each group it reaches separately
(``MAXG`` reduce-scatters a step), so no two lanes write one address.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .constants import RATE_COUPLINGS
from .selective_scan_fwd import row_strides
from .utils import (
    ADDITIVE,
    ASYMMETRIC,
    BILINEAR,
    DIRAC,
    LN2,
    MAMBA,
    SCALED,
    STANDARD,
    ZOH,
    advance_states,
    channel_params,
    channel_sums,
    discretize_grad,
    exp2_fast,
    group_sum,
    lanes_per_channel,
    load_cols,
    load_row_vec,
    load_steps,
    new_empty,
    prefetch_distance,
    prefetch_l2,
    prefetch_rows_l2,
    prune_unrolled,
    sigmoid,
    step_coeffs,
    store_masked,
    unfilled,
    vector_bytes,
)

__all__ = ["selective_scan_bwd"]


def split_groups(D: int, G: int, BD: int) -> bool:
    """Whether a block of ``BD`` channels can straddle B/C groups (``D / G`` channels each)."""
    return G > 1 and (D // G) % BD != 0


@triton.jit
def _load_rows(X, p_bc, n_valid, m_d, G: tl.constexpr, N: tl.constexpr, NS: tl.constexpr,
               VEC: tl.constexpr, K: tl.constexpr, MASK_T: tl.constexpr,
               SPLIT_GROUPS: tl.constexpr, SBC: tl.constexpr):
    """The lane's NS entries of the B (or C) rows of K steps, a flat tuple (step k at k·NS).
    Without split groups every lane reads its block's group row, so only the steps need masks."""
    xs = ()
    for k in tl.static_range(K):
        m = tl.where(k < n_valid, m_d, False) if MASK_T else m_d
        xs = xs + load_row_vec(X, p_bc + k * SBC, m, NS, VEC, MASK_T or SPLIT_GROUPS)
    return xs


@triton.jit
def _sub_inputs(p_u, p_dl, p_tau, B, t, n_valid, m_d, o_bc, D: tl.constexpr, G: tl.constexpr,
                N: tl.constexpr, NS: tl.constexpr, VEC: tl.constexpr, K: tl.constexpr,
                COUPLING: tl.constexpr, MASK_T: tl.constexpr, SPLIT_GROUPS: tl.constexpr,
                EVEN_D: tl.constexpr, SBC: tl.constexpr):
    """What the chunk pass reads for the K steps from ``t``: (u, δ, τ) tuples and B rows."""
    cur = load_steps(p_u + t * D, p_dl + t * D, p_tau + t, p_dl, p_dl, n_valid, m_d, D, K,
                     COUPLING, False, False, MASK_T, EVEN_D, D)
    return cur, _load_rows(B, t * SBC + o_bc, n_valid, m_d, G, N, NS, VEC, K, MASK_T,
                           SPLIT_GROUPS, SBC)


@triton.jit
def _forward_sub(hs, cur, Bks, n_valid, As, A2s, rAs, b_bias, b_rate, NS: tl.constexpr,
                 K: tl.constexpr, SCHEME: tl.constexpr, COUPLING: tl.constexpr,
                 SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr, MASK_T: tl.constexpr,
                 KEEP: tl.constexpr):
    """K forward steps from ``hs`` (B rows ``Bks`` from ``_load_rows``): the state after the
    sub-chunk, or with ``KEEP`` the tuple of its K + 1 states ``h[0..K]`` (``h[0] = hs``)."""
    us, dls, taus, dys, zs = cur
    hs_all = (hs,)
    for k in tl.static_range(K):
        m_t = k < n_valid
        Bs = ()
        for i in tl.static_range(NS):
            Bs = Bs + (Bks[k * NS + i],)
        _, _, dtA, dtB = step_coeffs(dls[k], taus[k], m_t, b_bias, b_rate, COUPLING, SOFTPLUS,
                                     HAS_BIAS, MASK_T)
        hs = advance_states(hs, Bs, us[k].to(tl.float32), dtA, dtB, As, A2s, rAs, NS, SCHEME,
                            COUPLING == STANDARD)
        if KEEP:
            hs_all = hs_all + (hs,)
    if KEEP:
        return hs_all
    else:
        return hs


@triton.jit
def _backward_sub(g, dA_acc, b_dD, b_dbias, b_drate, h0s, cur, B, C, p_bc, p_du, p_ddl, p_dz,
                  p_dtau, p_dbc, n_valid, m_d, m_w, lane, sub, o_g2, o_g0, As, A2s, rAs, b_bias,
                  b_Dskip, b_rate, D: tl.constexpr, G: tl.constexpr, N: tl.constexpr, NS: tl.constexpr,
                  S: tl.constexpr, VEC: tl.constexpr, K: tl.constexpr,
                  SCHEME: tl.constexpr, COUPLING: tl.constexpr, SOFTPLUS: tl.constexpr,
                  HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                  TAU_GRAD: tl.constexpr, SPLIT_GROUPS: tl.constexpr, MASK_T: tl.constexpr,
                  EVEN_D: tl.constexpr, SBC: tl.constexpr, SDZ: tl.constexpr,
                  DETERMINISTIC: tl.constexpr, MAXG: tl.constexpr):
    """The K steps of one sub-chunk in reverse, from the state entering it (``h0s``) and the
    adjoint after it (``g``); returns the adjoint before it and the updated accumulators. With
    ``DETERMINISTIC`` the per-step sums ∂τ, ∂B, ∂C are stored into this program's slot of a
    partial-sum buffer (``p_dtau``, ``p_dbc`` point into it) instead of added to a shared one."""
    us, dls, taus, dys, zs = cur
    # B and C rows of the whole sub-chunk first: C is not needed before the reverse steps, so
    # its loads overlap the recompute
    Bks = _load_rows(B, p_bc, n_valid, m_d, G, N, NS, VEC, K, MASK_T, SPLIT_GROUPS, SBC)
    Cks = _load_rows(C, p_bc, n_valid, m_d, G, N, NS, VEC, K, MASK_T, SPLIT_GROUPS, SBC)
    # the sub-chunk's states h[0..K] (h[0] = h0s) recomputed into registers
    hs_all = _forward_sub(h0s, cur, Bks, n_valid, As, A2s, rAs, b_bias, b_rate, NS, K, SCHEME,
                          COUPLING, SOFTPLUS, HAS_BIAS, MASK_T, True)
    # after the reduce-scatter each lane holds Q of the 2N sums (see channel_sums)
    Q: tl.constexpr = (2 * N + 31) // 32
    for k in tl.static_range(K - 1, -1, -1):
        m_t = k < n_valid
        hk = hs_all[k + 1]
        hp = hs_all[k]
        Bs = ()
        Cs = ()
        for i in tl.static_range(NS):
            Bs = Bs + (Bks[k * NS + i],)
            Cs = Cs + (Cks[k * NS + i],)
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
            store_masked(p_dz + k * SDZ, b_dz, m_t, m_w, MASK_T, EVEN_D and S == 1)
            b_dy = b_dy * b_z * b_sz
        if SCHEME == MAMBA:
            ku = dtB * b_u
        elif SCHEME == DIRAC:
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
            if SCHEME == MAMBA or SCHEME == DIRAC:
                dBs = dBs + (gn * ku,)
                s_u += gn * Bs[n]
                dAn = exp2_fast(dtA * A2s[n])
                q = (gn * hp[n]) * dAn
                s_dtA += q * A2s[n]
                ndA = ndA + (dA_acc[n] + q * dtA,)
            else:
                # zoh / bilinear: Ā, k and their four partials from one evaluation
                dAn, kB, ddA_dt, ddA_dA, dk_ddtB, dk_dA = discretize_grad(
                    dtA, dtB, As[n], A2s[n], rAs[n], SCHEME, COUPLING == STANDARD)
                gB = gn * Bs[n]
                dBs = dBs + ((gn * kB) * b_u,)
                s_u += gB * kB
                gh = gn * hp[n]
                gBu = gB * b_u
                s_dtA += gh * ddA_dt  # ∂Ā/∂dtA·log2 e: × ln 2 below, as for the exp2 schemes
                s_dtB += gBu * dk_ddtB
                ndA = ndA + (dA_acc[n] + gh * ddA_dA + gBu * dk_dA,)
            ng = ng + (gn * dAn,)
        g = ng
        dA_acc = ndA
        # per-channel sums over the channel's S lanes
        s_u = group_sum(s_u, S)
        d_dtA = group_sum(s_dtA, S) * LN2
        if SCHEME == ZOH or SCHEME == BILINEAR:
            s_dtB = group_sum(s_dtB, S)
        if SCHEME == MAMBA:
            b_du = s_u * dtB
            d_dtB = s_u * b_u
        elif SCHEME == DIRAC:
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
        if COUPLING == ASYMMETRIC:
            b_ddl = d_dtB
            b_drate += d_dtA * taus[k].to(tl.float32)
            b_dtau_l = d_dtA * b_rate
        elif COUPLING == SCALED:
            b_ddl = d_dtB + d_dtA * taus[k].to(tl.float32)
            b_dtau_l = d_dtA * b_dl
        elif COUPLING == ADDITIVE:
            b_ddl = d_dtB + d_dtA
            b_drate += d_dtA * taus[k].to(tl.float32)
            b_dtau_l = d_dtA * b_rate
        else:
            b_ddl = d_dtB + d_dtA
            b_dtau_l = d_dtA
        if TAU_GRAD:
            b_dtau = tl.sum(tl.where(m_w, b_dtau_l, 0.0), 0)
            if DETERMINISTIC:
                if MASK_T:
                    tl.store(p_dtau + k, b_dtau, mask=m_t)
                else:
                    tl.store(p_dtau + k, b_dtau)
            elif MASK_T:
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
        if SPLIT_GROUPS and DETERMINISTIC:
            # the block's channels span up to MAXG groups: one reduce-scatter per group over the
            # lanes in it, so that no two lanes add to one address (their order would be free)
            vals = dBs + dCs
            for _ in tl.static_range((32 // S) * Q - 2 * NS):
                vals = vals + (tl.zeros_like(b_u),)
            for j in tl.static_range(MAXG):
                o_gj = o_g0 + j * 2 * N
                vj = ()
                for i in tl.static_range((32 // S) * Q):
                    vj = vj + (tl.where(o_g2 == o_gj, vals[i], 0.0),)
                sums = channel_sums(vj, lane, Q, 2 * NS, S)
                for i in tl.static_range(Q):
                    v = (lane // S) * Q + i
                    o = tl.where(v < NS, sub * NS + v, N + sub * NS + (v - NS))
                    m = tl.where(o_gj < G * 2 * N, v < 2 * NS, False)
                    if MASK_T:
                        m = tl.where(m_t, m, False)
                    tl.store(p_row + o_gj + o, sums[i], mask=m)
        elif SPLIT_GROUPS:
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
                if DETERMINISTIC:
                    tl.store(p_row + o_g2 + o, sums[i], mask=m)
                else:
                    tl.atomic_add(p_row + o_g2 + o, sums[i], mask=m, sem="relaxed")
    return g, dA_acc, b_dD, b_dbias, b_drate


@triton.autotune(
    # K = 4 capped at 168 registers: 12 one-warp programs an SM, enough for (8, 4096, 1536, 16)
    # in one wave (with z or τ ptxas otherwise took 240-245 registers, 8 programs an SM);
    # ptxas fits the N = 16 cases in it with at most 8 bytes of spills.
    configs=[
        triton.Config({"K": 4}, num_warps=1, maxnreg=168),
        triton.Config({"K": 2}, num_warps=1),
    ],
    key=["D", "N", "G", "CK", "SCHEME", "COUPLING", "HAS_Z", "IS_VARLEN", "DTYPE_KEY", "S", "VEC",
         "DETERMINISTIC"],
    # the sub-chunk's K + 1 states are live at once: more than 32 a lane spills
    prune_configs_by={"early_config_prune": prune_unrolled(32)},
    reset_to_zero=["dA", "dBC", "dDskip", "dbias", "drate", "dtau"],
)
@triton.heuristics({
    "SPLIT_GROUPS": lambda a: split_groups(a["D"], a["G"], a["BD"]),
    "EVEN_D": lambda a: a["D"] % a["BD"] == 0,
    "MAXG": lambda a: min(a["G"], (a["BD"] - 1) // (a["D"] // a["G"]) + 2),
})
@triton.jit(do_not_specialize=["L", "ROWS"])
def selective_scan_bwd_kernel(
    u, delta, delta_bias, A, B, C, Dskip, z, tau, rate, ckpt, scratch, dy, dlast,
    du, ddelta, dA, dBC, dDskip, dz, dbias, drate, dtau, dh0,
    cu_seqlens, chunk_offsets,
    L, ROWS, D: tl.constexpr, N: tl.constexpr, G: tl.constexpr, CK: tl.constexpr,
    SLOTS: tl.constexpr,
    SCHEME: tl.constexpr, COUPLING: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DLAST: tl.constexpr,
    STORE_DH0: tl.constexpr, TAU_GRAD: tl.constexpr, IS_VARLEN: tl.constexpr,
    DTYPE_KEY: tl.constexpr, S: tl.constexpr, BD: tl.constexpr, VEC: tl.constexpr,
    K: tl.constexpr, SPLIT_GROUPS: tl.constexpr, EVEN_D: tl.constexpr,
    PF_DIST: tl.constexpr, SZ: tl.constexpr, SBC: tl.constexpr, SDZ: tl.constexpr,
    DETERMINISTIC: tl.constexpr, MAXG: tl.constexpr,
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
    # lane j: channel j // S, states (j % S)·NS ... (j % S)·NS + NS - 1 (S lanes a channel;
    # contiguous, so that B/C rows load as vectors)
    lane = tl.arange(0, 32)
    sub = lane % S
    o_d = i_d * BD + lane // S
    m_d = o_d < D
    m_w = m_d & (sub == 0)  # per-channel outputs are written by the channel's first lane
    o_dn = o_d * N + sub * NS  # (D, N) tensors: state sub·NS + i of channel o_d
    b_bias, b_Dskip, b_rate, As, A2s, rAs = channel_params(A, delta_bias, Dskip, rate, o_d, m_d,
                                                           o_dn, NS, HAS_BIAS, HAS_D, COUPLING,
                                                           SCHEME)
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
    o_g0 = 2 * ((i_d * BD) // (D // G)) * N  # the block's first group in a (T, G, 2N) row
    o_bc = o_g + sub * NS
    # the (ROWS,) ∂τ and (ROWS, G, 2N) ∂B/∂C buffers this program adds to, or with DETERMINISTIC
    # its slot of their partial sums (see selective_scan_bwd)
    p_dtau0 = dtau
    p_dbc0 = dBC
    if DETERMINISTIC:
        p_dtau0 = dtau + i_d.to(tl.int64) * ROWS
        if SPLIT_GROUPS:
            p_dbc0 = dBC + i_d.to(tl.int64) * ROWS * G * 2 * N
        else:
            p_dbc0 = dBC + (i_d % ((D // G + BD - 1) // BD)).to(tl.int64) * ROWS * G * 2 * N

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
    if COUPLING != STANDARD:
        p_tau = tau
    else:
        p_tau = u
    # this program's scratch: the state entering each sub-chunk of a chunk, (SLOTS, NS, 32)
    p_scr = scratch + (i_s.to(tl.int64) * tl.num_programs(0) + i_d) * SLOTS * NS * 32 + lane
    # a B/C prefetch: lane j covers 32-byte sector j // K of the group's row at step j % K
    SECT = 256 // B.dtype.element_ty.primitive_bitwidth
    o_pf = lane % K
    l_pf = lane // K
    m_pf = l_pf * SECT < N
    o_bc_pf = o_pf * SBC + ((i_d * BD) // (D // G)) * N + l_pf * SECT
    FAR: tl.constexpr = PF_DIST * K  # L2 prefetch distance in steps (see prefetch_distance)

    for i_o in range(tl.cdiv(T, CK) - 1, -1, -1):
        n_ck = tl.minimum(T - i_o * CK, CK)
        n_sub = tl.cdiv(n_ck, K)
        # forward over the chunk from its saved state ((n_chunks, N, D)), keeping the state
        # entering every sub-chunk
        hs = ()
        for i in tl.static_range(NS):
            hs = hs + (tl.load(ckpt + ((i_ck + i_o) * N + sub * NS + i) * D + o_d, mask=m_d,
                               other=0.0),)
        # Chunk pass. Software pipeline: the inputs of sub-chunk i_c + 1 are requested before
        # sub-chunk i_c is computed (a load used right away waited on L2 every sub-chunk).
        t0 = bos + i_o * CK
        nxt, nxt_B = _sub_inputs(p_u, p_dl, p_tau, B, t0, n_ck, m_d, o_bc, D, G, N, NS, VEC, K,
                                 COUPLING, True, SPLIT_GROUPS, EVEN_D, SBC)
        for i_c in range(0, n_sub):
            cur = nxt
            Bks = nxt_B
            for i in tl.static_range(NS):
                tl.store(p_scr + (i_c * NS + i) * 32, hs[i])
            t = t0 + i_c * K
            n_valid = n_ck - i_c * K
            if n_valid >= 2 * K:
                nxt, nxt_B = _sub_inputs(p_u, p_dl, p_tau, B, t + K, K, m_d, o_bc, D, G, N, NS,
                                         VEC, K, COUPLING, False, SPLIT_GROUPS, EVEN_D, SBC)
            else:
                nxt, nxt_B = _sub_inputs(p_u, p_dl, p_tau, B, t + K, n_valid - K, m_d, o_bc, D,
                                         G, N, NS, VEC, K, COUPLING, True, SPLIT_GROUPS, EVEN_D,
                                         SBC)
            # into L2: what the chunk pass reads FAR steps on, and what the reverse pass reads
            # first (dy, C, z) of this sub-chunk
            if PF_DIST > 0:
                prefetch_l2(B + (t + FAR) * SBC + o_bc_pf, m_pf & (o_pf < n_valid - FAR))
                prefetch_rows_l2(p_u + (t + FAR) * D, t - bos + FAR, T, m_d, D, K)
                prefetch_rows_l2(p_dl + (t + FAR) * D, t - bos + FAR, T, m_d, D, K)
                if COUPLING != STANDARD:
                    prefetch_l2(p_tau + t + FAR + o_pf, (l_pf == 0) & (o_pf < n_valid - FAR))
                prefetch_l2(C + t * SBC + o_bc_pf, m_pf & (o_pf < n_valid))
                prefetch_rows_l2(p_dy + t * D, t - bos, T, m_d, D, K)
                if HAS_Z:
                    prefetch_rows_l2(p_z + t * SZ, t - bos, T, m_d, SZ, K)
            # full sub-chunks take the path without step masks
            if n_valid >= K:
                hs = _forward_sub(hs, cur, Bks, K, As, A2s, rAs, b_bias, b_rate, NS, K, SCHEME,
                                  COUPLING, SOFTPLUS, HAS_BIAS, False, False)
            else:
                hs = _forward_sub(hs, cur, Bks, n_valid, As, A2s, rAs, b_bias, b_rate, NS, K, SCHEME,
                                  COUPLING, SOFTPLUS, HAS_BIAS, True, False)
        # Reverse pass over the sub-chunks; the state entering sub-chunk i_c - 1 and its u, δ, τ
        # are requested before sub-chunk i_c is computed (the recompute needs them first).
        t_last = t0 + (n_sub - 1) * K
        nxt = load_steps(p_u + t_last * D, p_dl + t_last * D, p_tau + t_last, p_dy, p_z,
                         (t0 + n_ck - t_last).to(tl.int32), m_d, D, K, COUPLING, False, False,
                         True, EVEN_D, SZ)
        nxt_h = ()
        for i in tl.static_range(NS):
            nxt_h = nxt_h + (tl.load(p_scr + ((n_sub - 1) * NS + i) * 32),)
        for i_c in range(n_sub - 1, -1, -1):
            us, dls, taus, _, _ = nxt
            h0s = nxt_h
            t = t0 + i_c * K
            n_valid = n_ck - i_c * K
            if i_c > 0:  # sub-chunk i_c - 1 is a full one
                nxt = load_steps(p_u + (t - K) * D, p_dl + (t - K) * D, p_tau + t - K, p_dy, p_z,
                                 K, m_d, D, K, COUPLING, False, False, False, EVEN_D, SZ)
                nxt_h = ()
                for i in tl.static_range(NS):
                    nxt_h = nxt_h + (tl.load(p_scr + ((i_c - 1) * NS + i) * 32),)
            # the previous chunk's first sub-chunks into L2 (its chunk pass starts right after
            # this one's last sub-chunks)
            if PF_DIST > 0:
                if i_c < PF_DIST:
                    prefetch_l2(B + (t - CK) * SBC + o_bc_pf, m_pf & (t - bos >= CK))
                    prefetch_rows_l2(p_u + (t - CK) * D, t - bos - CK, T, m_d, D, K)
                    prefetch_rows_l2(p_dl + (t - CK) * D, t - bos - CK, T, m_d, D, K)
                    if COUPLING != STANDARD:
                        prefetch_l2(p_tau + t - CK + o_pf, (l_pf == 0) & (t - bos >= CK))
            if n_valid >= K:
                dys = load_cols(p_dy + t * D, K, m_d, D, K, False, EVEN_D)
                zs = dys
                if HAS_Z:
                    zs = load_cols(p_z + t * SZ, K, m_d, SZ, K, False, EVEN_D)
                g, dA_acc, b_dD, b_dbias, b_drate = _backward_sub(
                    g, dA_acc, b_dD, b_dbias, b_drate, h0s, (us, dls, taus, dys, zs), B, C,
                    t * SBC + o_bc, p_du + t * D, p_ddl + t * D, p_dz + t * SDZ, p_dtau0 + t,
                    p_dbc0 + t * G * 2 * N, K, m_d, m_w, lane, sub, o_g2, o_g0, As, A2s, rAs,
                    b_bias, b_Dskip, b_rate, D, G, N, NS, S, VEC, K, SCHEME, COUPLING, SOFTPLUS,
                    HAS_BIAS, HAS_D, HAS_Z, TAU_GRAD, SPLIT_GROUPS, False, EVEN_D, SBC, SDZ,
                    DETERMINISTIC, MAXG)
            else:
                dys = load_cols(p_dy + t * D, n_valid, m_d, D, K, True, EVEN_D)
                zs = dys
                if HAS_Z:
                    zs = load_cols(p_z + t * SZ, n_valid, m_d, SZ, K, True, EVEN_D)
                g, dA_acc, b_dD, b_dbias, b_drate = _backward_sub(
                    g, dA_acc, b_dD, b_dbias, b_drate, h0s, (us, dls, taus, dys, zs), B, C,
                    t * SBC + o_bc, p_du + t * D, p_ddl + t * D, p_dz + t * SDZ, p_dtau0 + t,
                    p_dbc0 + t * G * 2 * N, n_valid, m_d, m_w, lane, sub, o_g2, o_g0, As, A2s,
                    rAs, b_bias, b_Dskip, b_rate, D, G, N, NS, S, VEC, K, SCHEME, COUPLING,
                    SOFTPLUS, HAS_BIAS, HAS_D, HAS_Z, TAU_GRAD, SPLIT_GROUPS, True, EVEN_D, SBC,
                    SDZ, DETERMINISTIC, MAXG)

    if DETERMINISTIC:
        # the sequence's sums into its own row of (n_seq, D, N) / (n_seq, D) partials
        for i in tl.static_range(NS):
            tl.store(dA + i_s.to(tl.int64) * D * N + o_dn + i, dA_acc[i], mask=m_d)
            if STORE_DH0:
                tl.store(dh0 + i_s.to(tl.int64) * D * N + o_dn + i, g[i], mask=m_d)
        if HAS_D:
            tl.store(dDskip + i_s.to(tl.int64) * D + o_d, b_dD, mask=m_w)
        if HAS_BIAS:
            tl.store(dbias + i_s.to(tl.int64) * D + o_d, b_dbias, mask=m_w)
        if COUPLING == ASYMMETRIC or COUPLING == ADDITIVE:
            tl.store(drate + i_s.to(tl.int64) * D + o_d, b_drate, mask=m_w)
    else:
        for i in tl.static_range(NS):
            tl.atomic_add(dA + o_dn + i, dA_acc[i], mask=m_d, sem="relaxed")
            if STORE_DH0:
                tl.store(dh0 + i_s.to(tl.int64) * D * N + o_dn + i, g[i], mask=m_d)
        if HAS_D:
            tl.atomic_add(dDskip + o_d, b_dD, mask=m_w, sem="relaxed")
        if HAS_BIAS:
            tl.atomic_add(dbias + o_d, b_dbias, mask=m_w, sem="relaxed")
        if COUPLING == ASYMMETRIC or COUPLING == ADDITIVE:
            tl.atomic_add(drate + o_d, b_drate, mask=m_w, sem="relaxed")


def selective_scan_bwd(u, delta, A, B, C, Dskip, z, delta_bias, softplus_, tau, rate, ckpt,
                       offsets, cu_seqlens, dy, dlast, scheme: int, coupling: int, CK: int,
                       store_dh0: bool, tau_grad: bool, dz_out=None):
    """Launch the backward kernel. Shapes as in ``selective_scan_fwd``; ``dy (b, L, D)``,
    ``dlast (n_seq, D, N)`` fp32 or None; ``dz_out``: where to write ∂z (z's shape and dtype,
    rows evenly spaced: e.g. the second half of a ``(b, L, 2D)`` buffer). Returns a dict of
    gradients (fp32 for the reduced ones, the input dtype for the per-step ones; None where the
    input was absent)."""
    b, L, D = u.shape
    G, N = B.shape[-2:]
    n_seq = b if cu_seqlens is None else cu_seqlens.numel() - 1
    f32 = dict(device=u.device, dtype=torch.float32)
    du = new_empty(u.shape, like=u)
    ddelta = new_empty(delta.shape, like=delta)
    dz = None
    if z is not None:
        dz = dz_out if dz_out is not None else new_empty(z.shape, like=z)
    dh0 = new_empty(n_seq, D, N, like=u, dtype=torch.float32) if store_dh0 else None
    S = lanes_per_channel(N, "backward")
    BD = 32 // S
    n_dblk = triton.cdiv(D, BD)
    # Read on the host when the backward runs (no device sync): Trainer(deterministic=True) and
    # torch.use_deterministic_algorithms(True) set it.
    deterministic = torch.are_deterministic_algorithms_enabled()
    # Absent gradients still get a (tiny) buffer: the autotuner zeroes every reset_to_zero
    # argument between its trial launches.
    if not deterministic:
        dA = torch.zeros(D, N, **f32)
        # ∂B and ∂C share one buffer (T, G, 2N): a step's 2N channel sums are one coalesced add
        dBC = torch.zeros(b, L, G, 2 * N, **f32)
        dDskip = torch.zeros(D if Dskip is not None else 1, **f32)
        dbias = torch.zeros(D if delta_bias is not None else 1, **f32)
        drate = torch.zeros(D if coupling in RATE_COUPLINGS else 1, **f32)
        dtau = torch.zeros((b, L) if tau_grad else (1,), **f32)
    else:
        # Fixed-order sums: float atomics from many programs add in whatever order they arrive,
        # so every program stores its sums into its own slot and torch adds the slots afterwards
        # (deterministic): whole-sequence sums one slot a sequence, per-step sums (∂τ, ∂B, ∂C)
        # one slot a channel block (of a group: blocks of different groups write different
        # columns). A block straddling groups writes only the groups it reaches, and packed
        # rows past the last sequence get no program: those buffers start from zeros, the
        # others are written in full.
        split = split_groups(D, G, BD)
        bc_slots = n_dblk if split else triton.cdiv(D // G, BD)

        def partials(*shape, zero=False):
            if zero:
                return torch.zeros(shape, **f32)
            with unfilled():
                return torch.empty(shape, **f32)

        packed = cu_seqlens is not None
        dA = partials(n_seq, D, N)
        dBC = partials(bc_slots, b, L, G, 2 * N, zero=packed or split)
        dDskip = partials(n_seq, D) if Dskip is not None else partials(1)
        dbias = partials(n_seq, D) if delta_bias is not None else partials(1)
        drate = partials(n_seq, D) if coupling in RATE_COUPLINGS else partials(1)
        dtau = partials(n_dblk, b, L, zero=packed) if tau_grad else partials(1)
    # Per-program slots for the sub-chunk states of one chunk (K >= 2 steps a sub-chunk): with
    # at most a few programs per SM alive at once this stays in L2.
    slots = CK // 2
    SZ, SBC = row_strides(z, B)
    SDZ = dz.stride(1) if dz is not None else 0
    scratch = new_empty(n_seq * n_dblk * slots * (N // S) * 32, like=u, dtype=torch.float32)

    grid = (n_dblk, n_seq)
    selective_scan_bwd_kernel[grid](
        u, delta, delta_bias, A, B, C, Dskip, z, tau, rate, ckpt, scratch, dy, dlast,
        du, ddelta, dA, dBC, dDskip, dz, dbias, drate, dtau, dh0,
        cu_seqlens, offsets,
        L, b * L, D=D, N=N, G=G, CK=CK, SLOTS=slots,
        SCHEME=scheme, COUPLING=coupling, SOFTPLUS=softplus_,
        HAS_BIAS=delta_bias is not None, HAS_D=Dskip is not None, HAS_Z=z is not None,
        HAS_DLAST=dlast is not None, STORE_DH0=store_dh0, TAU_GRAD=tau_grad,
        IS_VARLEN=cu_seqlens is not None, DTYPE_KEY=str(u.dtype), S=S, BD=BD,
        VEC=vector_bytes(N, N // S, B, C, row=SBC), PF_DIST=prefetch_distance(), SZ=SZ, SBC=SBC,
        SDZ=SDZ, DETERMINISTIC=deterministic,
    )
    if deterministic:
        dA, dBC, dDskip, dbias, drate, dtau = (t.sum(0) for t in (dA, dBC, dDskip, dbias, drate,
                                                                   dtau))
    return dict(u=du, delta=ddelta, A=dA, B=dBC[..., :N], C=dBC[..., N:],
                D=dDskip if Dskip is not None else None,
                z=dz, delta_bias=dbias if delta_bias is not None else None,
                rate=drate if coupling in RATE_COUPLINGS else None, tau=dtau if tau_grad else None, h0=dh0)
