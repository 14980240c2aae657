"""Backward selective-scan kernel: reverse time, recomputing each chunk from its saved state.

With ``g[l] = ∂loss/∂h[l]`` (the adjoint; ``g[L-1]`` starts from the last state's cotangent)
the recurrence ``h[l] = Ā[l] h[l-1] + k[l] B[l] u[l]`` and ``y[l] = C[l]·h[l] + D u[l]`` give,
walking ``l`` backwards:

    g[l]    += C[l] y'[l]                          (y' = ∂loss/∂y before the gate)
    ∂Ā[l]    = g[l] ⊙ h[l-1],   ∂k[l] = g[l] ⊙ B[l] u[l]
    ∂u[l]    = Σ_n g[l] k[l] B[l] + D y'[l],   ∂B[l] = Σ_d g[l] k[l] u[l],   ∂C[l] = Σ_d y'[l] h[l]
    g[l-1]   = Ā[l] ⊙ g[l]

and the chain rule through the scheme (∂Ā/∂dtA, ∂Ā/∂A, ∂k/∂dtB, ∂k/∂A) and the coupling
(dtA from Δ, τ, r) to δ, delta_bias, A, rate and τ. ``h[l-1]`` is needed in reverse order: each
program reloads the state saved at the start of a chunk of ``K`` steps, recomputes the chunk's
``K`` states forward into registers (a compile-time tuple), then walks them backwards. Per-step
sums over channels (∂B, ∂C, ∂τ) and whole-sequence sums (∂A, ∂D, ∂delta_bias, ∂rate) are
reduced within the program and added to fp32 buffers with atomics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .utils import (
    LOG2E,
    autotune_configs,
    discretize,
    discretize_grad,
    new_empty,
    sigmoid,
    softplus,
    step_sizes,
)

__all__ = ["selective_scan_bwd"]


@triton.jit
def _load_step(u, delta, tau, B, t, m_t, m_d, o_d, o_bc, m_n, b_bias, b_rate, b_A, b_A2,
               D: tl.constexpr, N: tl.constexpr, G: tl.constexpr,
               SCHEME: tl.constexpr, COUPLING: tl.constexpr, SOFTPLUS: tl.constexpr,
               HAS_BIAS: tl.constexpr):
    """Inputs of one step and its coefficients (same formulas as the forward)."""
    m = tl.where(m_t, m_d, False)
    b_u = tl.load(u + t * D + o_d, mask=m, other=0.0).to(tl.float32)
    b_raw = tl.load(delta + t * D + o_d, mask=m, other=0.0).to(tl.float32)
    if COUPLING != 0:
        b_tau = tl.load(tau + t, mask=m_t, other=0.0).to(tl.float32)
    else:
        b_tau = 0.0
    b_B = tl.load(B + t * G * N + o_bc, mask=tl.where(m_t, m_n[:, None], False), other=0.0).to(tl.float32)
    return _coeffs(b_u, b_raw, b_tau, b_B, m_t, b_bias, b_rate, b_A, b_A2, SCHEME, COUPLING, SOFTPLUS,
                   HAS_BIAS)


@triton.jit
def _coeffs(b_u, b_raw, b_tau, b_B, m_t, b_bias, b_rate, b_A, b_A2, SCHEME: tl.constexpr,
            COUPLING: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Coefficients of one step from its loaded inputs."""
    if HAS_BIAS:
        b_raw += b_bias
    if SOFTPLUS:
        b_dl = softplus(b_raw)
    else:
        b_dl = b_raw
    b_dl = tl.where(m_t, b_dl, 0.0)
    b_dtA, b_dtB = step_sizes(b_dl, b_tau, b_rate, COUPLING)
    b_dA, b_kB = discretize(b_dtA[None, :], b_dtB[None, :], b_A, b_A2, SCHEME)
    return b_u, b_raw, b_dl, b_tau, b_dtA, b_dtB, b_dA, b_kB, b_B


@triton.autotune(
    configs=autotune_configs([
        triton.Config({"BD": 8, "K": 4}, num_warps=1),
        triton.Config({"BD": 16, "K": 4}, num_warps=1),
        triton.Config({"BD": 32, "K": 2}, num_warps=1),
    ]),
    key=["D", "N", "G", "CK", "SCHEME", "COUPLING", "HAS_Z", "IS_VARLEN", "DTYPE_KEY"],
    reset_to_zero=["dA", "dB", "dC", "dDskip", "dbias", "drate", "dtau"],
)
@triton.heuristics({
    "SPLIT_GROUPS": lambda a: a["G"] > 1 and (a["D"] // a["G"]) % a["BD"] != 0,
})
@triton.jit(do_not_specialize=["L", "sN"])
def selective_scan_bwd_kernel(
    u, delta, delta_bias, A, B, C, Dskip, z, tau, rate, ckpt, scratch, dy, dlast,
    du, ddelta, dA, dB, dC, dDskip, dz, dbias, drate, dtau, dh0,
    cu_seqlens, chunk_offsets,
    L, sN, D: tl.constexpr, N: tl.constexpr, G: tl.constexpr, CK: tl.constexpr, BN: tl.constexpr,
    DP: tl.constexpr,
    SCHEME: tl.constexpr, COUPLING: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DLAST: tl.constexpr,
    STORE_DH0: tl.constexpr, TAU_GRAD: tl.constexpr, IS_VARLEN: tl.constexpr,
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
    # Same layout as the forward: channels across lanes, states in registers (``sN`` = 1 hides
    # the n-contiguity of (D, N) tensors from Triton's layout choice).
    o_dn = o_d[None, :] * N + o_n[:, None] * sN
    m_dn = m_d[None, :] & m_n[:, None]
    o_nd = o_n[:, None] * D + o_d[None, :]

    b_A = tl.load(A + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    b_A2 = b_A * LOG2E
    b_bias = tl.load(delta_bias + o_d, mask=m_d, other=0.0).to(tl.float32) if HAS_BIAS else 0.0
    b_Dskip = tl.load(Dskip + o_d, mask=m_d, other=0.0).to(tl.float32) if HAS_D else 0.0
    b_rate = tl.load(rate + o_d, mask=m_d, other=0.0).to(tl.float32) if COUPLING == 1 else 0.0
    if SPLIT_GROUPS:
        o_bc = (o_d // (D // G))[None, :] * N + o_n[:, None] * sN
    else:
        o_bc = ((i_d * BD) // (D // G)) * N + o_n[:, None]

    if HAS_DLAST:
        b_g = tl.load(dlast + i_s.to(tl.int64) * D * N + o_dn, mask=m_dn, other=0.0)
    else:
        b_g = tl.zeros([BN, BD], dtype=tl.float32)
    b_dA_acc = tl.zeros([BN, BD], dtype=tl.float32)
    b_dD_acc = tl.zeros([BD], dtype=tl.float32)
    b_dbias_acc = tl.zeros([BD], dtype=tl.float32)
    b_drate_acc = tl.zeros([BD], dtype=tl.float32)

    # scratch slots of this program: the state entering each K-step sub-chunk of a CK-chunk
    p_scr = scratch + ((i_s.to(tl.int64) * (CK // K)) * BN + o_n[:, None]) * DP + o_d[None, :]
    for i_o in range(tl.cdiv(eos - bos, CK) - 1, -1, -1):
        start = bos + i_o * CK
        n_sub = tl.cdiv(tl.minimum(eos - start, CK), K)
        # forward over the CK-chunk from its saved state, keeping every K-th state
        b_h = tl.load(ckpt + (i_ck + i_o) * D * N + o_nd, mask=m_dn, other=0.0)
        for i_c in range(0, n_sub):
            tl.store(p_scr + i_c * BN * DP, b_h)
            for k in tl.static_range(K):
                t = start + i_c * K + k
                b_u, b_raw, b_dl, b_tau, b_dtA, b_dtB, b_dA, b_kB, b_B = _load_step(
                    u, delta, tau, B, t, t < eos, m_d, o_d, o_bc, m_n, b_bias, b_rate, b_A, b_A2,
                    D, N, G, SCHEME, COUPLING, SOFTPLUS, HAS_BIAS)
                b_h = b_dA * b_h + (b_kB * b_u[None, :]) * b_B
        for i_c in range(n_sub - 1, -1, -1):
            b_h0 = tl.load(p_scr + i_c * BN * DP)
            # forward over the sub-chunk, keeping its K states
            b_h = b_h0
            # All of the sub-chunk's inputs are loaded here, before any store of the reverse
            # walk (which the compiler cannot move loads above), and kept in registers.
            hs = ()
            us = ()
            raws = ()
            taus = ()
            Bs = ()
            Cs = ()
            dys = ()
            zs = ()
            for k in tl.static_range(K):
                t = start + i_c * K + k
                m_t = t < eos
                m = tl.where(m_t, m_d, False)
                m_bc = tl.where(m_t, m_n[:, None], False)
                us = us + (tl.load(u + t * D + o_d, mask=m, other=0.0),)
                raws = raws + (tl.load(delta + t * D + o_d, mask=m, other=0.0),)
                Bs = Bs + (tl.load(B + t * G * N + o_bc, mask=m_bc, other=0.0),)
                Cs = Cs + (tl.load(C + t * G * N + o_bc, mask=m_bc, other=0.0),)
                dys = dys + (tl.load(dy + t * D + o_d, mask=m, other=0.0),)
                if COUPLING != 0:
                    taus = taus + (tl.load(tau + t, mask=m_t, other=0.0).to(tl.float32),)
                else:
                    taus = taus + (0.0,)
                if HAS_Z:
                    zs = zs + (tl.load(z + t * D + o_d, mask=m, other=0.0),)
            for k in tl.static_range(K):
                t = start + i_c * K + k
                b_u, b_raw, b_dl, b_tau, b_dtA, b_dtB, b_dA, b_kB, b_B = _coeffs(
                    us[k].to(tl.float32), raws[k].to(tl.float32), taus[k],
                    Bs[k].to(tl.float32), t < eos, b_bias, b_rate, b_A, b_A2, SCHEME, COUPLING,
                    SOFTPLUS, HAS_BIAS)
                b_h = b_dA * b_h + (b_kB * b_u[None, :]) * b_B
                hs = hs + (b_h,)
            # backwards over the chunk
            for k in tl.static_range(K - 1, -1, -1):
                t = start + i_c * K + k
                m_t = t < eos
                m = tl.where(m_t, m_d, False)
                b_u, b_raw, b_dl, b_tau, b_dtA, b_dtB, b_dA, b_kB, b_B = _coeffs(
                    us[k].to(tl.float32), raws[k].to(tl.float32), taus[k],
                    Bs[k].to(tl.float32), m_t, b_bias, b_rate, b_A, b_A2, SCHEME, COUPLING,
                    SOFTPLUS, HAS_BIAS)
                b_C = Cs[k].to(tl.float32)
                b_dy = dys[k].to(tl.float32)
                b_hk = hs[k]
                if k > 0:
                    b_hp = hs[k - 1]
                else:
                    b_hp = b_h0
                if HAS_Z:
                    b_z = zs[k].to(tl.float32)
                    b_sz = sigmoid(b_z)
                    b_ypre = tl.sum(b_hk * b_C, 0) + b_Dskip * b_u
                    b_dz = b_dy * b_ypre * b_sz * (1.0 + b_z * (1.0 - b_sz))
                    tl.store(dz + t * D + o_d, b_dz.to(dz.dtype.element_ty), mask=m)
                    b_dy = b_dy * b_z * b_sz
                # adjoint of h[l]
                b_g += b_dy[None, :] * b_C
                b_dC = b_dy[None, :] * b_hk
                b_gk = b_g * b_kB
                b_dB = b_gk * b_u[None, :]
                if SPLIT_GROUPS:
                    tl.atomic_add(dC + t * G * N + o_bc, b_dC, mask=tl.where(m_t, m_dn, False), sem="relaxed")
                    tl.atomic_add(dB + t * G * N + o_bc, b_dB, mask=tl.where(m_t, m_dn, False), sem="relaxed")
                else:
                    tl.atomic_add(dC + t * G * N + o_bc, tl.sum(b_dC, 1)[:, None],
                                  mask=tl.where(m_t, m_n[:, None], False), sem="relaxed")
                    tl.atomic_add(dB + t * G * N + o_bc, tl.sum(b_dB, 1)[:, None],
                                  mask=tl.where(m_t, m_n[:, None], False), sem="relaxed")
                b_du = tl.sum(b_gk * b_B, 0)
                if HAS_D:
                    b_du += b_Dskip * b_dy
                    b_dD_acc += b_dy * b_u
                tl.store(du + t * D + o_d, b_du.to(du.dtype.element_ty), mask=m)
                # chain rule through the scheme
                b_ddA_ddtA, b_ddA_dA, b_dk_ddtB, b_dk_dA = discretize_grad(
                    b_dtA[None, :], b_dtB[None, :], b_A, b_dA, b_kB, SCHEME)
                b_gh = b_g * b_hp
                b_gBu = b_g * b_B * b_u[None, :]
                b_d_dtA = tl.sum(b_gh * b_ddA_ddtA, 0)
                if SCHEME == 0:
                    b_d_dtB = tl.sum(b_gBu, 0)
                elif SCHEME == 3:
                    b_d_dtB = tl.zeros([BD], dtype=tl.float32)
                else:
                    b_d_dtB = tl.sum(b_gBu * b_dk_ddtB, 0)
                b_dA_acc += b_gh * b_ddA_dA
                if SCHEME == 1 or SCHEME == 2:
                    b_dA_acc += b_gBu * b_dk_dA
                # chain rule through the coupling
                if COUPLING == 1:
                    b_ddl = b_d_dtB
                    b_drate_acc += b_d_dtA * b_tau
                    b_dtau = tl.sum(tl.where(m_d, b_d_dtA * b_rate, 0.0), 0)
                elif COUPLING == 2:
                    b_ddl = b_d_dtB + b_d_dtA * b_tau
                    b_dtau = tl.sum(tl.where(m_d, b_d_dtA * b_dl, 0.0), 0)
                else:
                    b_ddl = b_d_dtB + b_d_dtA
                    b_dtau = 0.0
                if TAU_GRAD:
                    tl.atomic_add(dtau + t, b_dtau, mask=m_t, sem="relaxed")
                if SOFTPLUS:
                    b_ddl = b_ddl * sigmoid(b_raw)
                b_ddl = tl.where(m, b_ddl, 0.0)
                b_dbias_acc += b_ddl
                tl.store(ddelta + t * D + o_d, b_ddl.to(ddelta.dtype.element_ty), mask=m)
                # adjoint of h[l-1]
                b_g = b_g * b_dA

    tl.atomic_add(dA + o_dn, b_dA_acc, mask=m_dn, sem="relaxed")
    if HAS_D:
        tl.atomic_add(dDskip + o_d, b_dD_acc, mask=m_d, sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias + o_d, b_dbias_acc, mask=m_d, sem="relaxed")
    if COUPLING == 1:
        tl.atomic_add(drate + o_d, b_drate_acc, mask=m_d, sem="relaxed")
    if STORE_DH0:
        tl.store(dh0 + i_s.to(tl.int64) * D * N + o_dn, b_g, mask=m_dn)


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
    dB = torch.zeros(B.shape, **f32)
    dC = torch.zeros(C.shape, **f32)
    # Absent gradients still get a (tiny) buffer: the autotuner zeroes every reset_to_zero
    # argument between its trial launches.
    dDskip = torch.zeros(D if Dskip is not None else 1, **f32)
    dbias = torch.zeros(D if delta_bias is not None else 1, **f32)
    drate = torch.zeros(D if coupling == 1 else 1, **f32)
    dtau = torch.zeros((b, L) if tau_grad else (1,), **f32)
    dh0 = new_empty(n_seq, D, N, like=u, dtype=torch.float32) if store_dh0 else None
    # Per (sequence, channel) slots for the sub-chunk states of one CK-chunk (K >= 2 steps a
    # sub-chunk); small enough to stay in L2.
    BN, DP = triton.next_power_of_2(N), triton.cdiv(D, 128) * 128
    scratch = new_empty(n_seq * (CK // 2) * BN * DP, like=u, dtype=torch.float32)

    def grid(meta):
        return (triton.cdiv(D, meta["BD"]), n_seq)

    selective_scan_bwd_kernel[grid](
        u, delta, delta_bias, A, B, C, Dskip, z, tau, rate, ckpt, scratch, dy, dlast,
        du, ddelta, dA, dB, dC, dDskip, dz, dbias, drate, dtau, dh0,
        cu_seqlens, offsets,
        L, 1, D=D, N=N, G=G, CK=CK, BN=BN, DP=DP,
        SCHEME=scheme, COUPLING=coupling, SOFTPLUS=softplus_,
        HAS_BIAS=delta_bias is not None, HAS_D=Dskip is not None, HAS_Z=z is not None,
        HAS_DLAST=dlast is not None, STORE_DH0=store_dh0, TAU_GRAD=tau_grad,
        IS_VARLEN=cu_seqlens is not None, DTYPE_KEY=str(u.dtype),
    )
    return dict(u=du, delta=ddelta, A=dA, B=dB, C=dC, D=dDskip if Dskip is not None else None,
                z=dz, delta_bias=dbias if delta_bias is not None else None,
                rate=drate if coupling == 1 else None, tau=dtau if tau_grad else None, h0=dh0)
