"""Forward selective-scan kernel: one program per (channel block, sequence), time in a loop.

The recurrence is sequential in time but independent across (sequence, channel). A program is
one warp: ``S`` adjacent lanes share a channel (``lanes_per_channel``: 4 when 4 divides N), so
it takes ``32/S`` channels of one sequence, and lane ``j`` keeps states ``(j % S)·N/S`` to
``(j % S + 1)·N/S - 1`` of channel ``j // S`` as a tuple of ``[32]`` register vectors (every
tensor in the kernel is 1-D, so Triton has no layout to choose). Per state and step the inner
loop is one multiply, one ``ex2.approx`` and two FMAs; ``y`` is summed over the channel's lanes
by ``log2 S`` shuffles. Δ, dtA, dtB, Ā, B̄ live only in registers (no ``(B, L, D)`` step
tensors, no ``(B, L, D, N)`` states).

Why S lanes a channel: with one, a launch has batch·D/32 warps (384 at (8, 4096, 1536, 16)
for 528 schedulers) and each lane holds N states plus the B/C rows in flight; S lanes give S
times the warps and leave the registers to load the B/C rows a whole chunk ahead. The
per-channel work of a step (softplus, D skip, gate, store) is shared out: the channel's lane
``k % S`` does it for step ``k`` and passes Δ to the others by a shuffle.

Latency: the inputs of chunk c+1 (``K`` steps of u, δ, τ, z and the lane's part of the B/C rows,
those as 16-byte vector loads: ``load_row_vec``) are requested before chunk c is computed, and
every input ``prefetch_distance()`` chunks ahead (4 by default) is prefetched into L2, so that
those register loads hit L2 instead of waiting on DRAM. Chunks away from the sequence end run
without step masks. When the backward will run, the state entering every ``CK`` steps is saved
(``ckpt``, ``(n_chunks, N, D)`` fp32: ``4N/CK`` bytes per ``(b, l, d)``).

Layout: ``u, delta, z, y: (T, D)`` with ``T = batch·L`` (or the packed length), ``B, C: (T, G,
N)``, ``tau: (T,)``, ``A: (D, N)``, states ``(n_seq, D, N)``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .utils import (
    STANDARD,
    advance_states,
    channel_params,
    group_bcast,
    group_sum,
    lanes_per_channel,
    load_row_vec,
    load_steps,
    new_empty,
    owned,
    prefetch_distance,
    prefetch_l2,
    prefetch_rows_l2,
    prune_unrolled,
    sigmoid,
    step_coeffs,
    step_sizes,
    store_masked,
    vector_bytes,
)

__all__ = ["selective_scan_fwd"]


@triton.jit
def _load_chunk(p_u, p_dl, p_tau, p_z, B, C, p_bc, n_valid, m_d, m_bc, D: tl.constexpr,
                G: tl.constexpr, N: tl.constexpr, NS: tl.constexpr, K: tl.constexpr,
                VEC: tl.constexpr, COUPLING: tl.constexpr, HAS_Z: tl.constexpr,
                SPLIT_GROUPS: tl.constexpr, MASK_T: tl.constexpr, EVEN_D: tl.constexpr,
                SZ: tl.constexpr, SBC: tl.constexpr):
    """The inputs of K steps: per-channel (u, δ, τ, z) tuples (see ``load_steps``) and the
    lane's NS entries of the B and C rows of every step (flat tuples, step k at ``k·NS``)."""
    us, dls, taus, _, zs = load_steps(p_u, p_dl, p_tau, p_dl, p_z, n_valid, m_d, D, K, COUPLING,
                                      False, HAS_Z, MASK_T, EVEN_D, SZ)
    Bs = ()
    Cs = ()
    for k in tl.static_range(K):
        m = tl.where(k < n_valid, m_bc, False) if MASK_T else m_bc
        Bs = Bs + load_row_vec(B, p_bc + k * SBC, m, NS, VEC, MASK_T or SPLIT_GROUPS)
        Cs = Cs + load_row_vec(C, p_bc + k * SBC, m, NS, VEC, MASK_T or SPLIT_GROUPS)
    return us, dls, taus, zs, Bs, Cs


@triton.jit
def _steps(hs, cur, p_y, n_valid, m_d, lane, sub, As, A2s, rAs, b_bias, b_Dskip, b_rate,
           D: tl.constexpr, NS: tl.constexpr, S: tl.constexpr, K: tl.constexpr,
           SCHEME: tl.constexpr, COUPLING: tl.constexpr, SOFTPLUS: tl.constexpr,
           HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
           MASK_T: tl.constexpr, EVEN_D: tl.constexpr):
    """K steps of the recurrence from the chunk's inputs ``cur``; returns the state after them.
    With ``MASK_T`` steps ``k >= n_valid`` leave the state unchanged (Δ = 0, u = 0, B = 0:
    Ā = 1, B̄·u = 0) and store nothing.

    The per-channel work of a step (Δ = softplus(δ + bias): three MUFU; the D skip, the gate:
    two more; the store) is done once, by the lane of the channel that *owns* the step
    (step ``j·S + sub``), not on all S lanes: Δ goes to the others by one shuffle a step."""
    us, dls, taus, zs, Bks, Cks = cur
    KS: tl.constexpr = (K + S - 1) // S  # steps a lane owns
    dl_own = ()
    for j in tl.static_range(KS):
        m_own = (j * S + sub) < n_valid
        _, dl, _, _ = step_coeffs(owned(dls, j, sub, S, K), 0.0, m_own, b_bias, b_rate, 0,
                                  SOFTPLUS, HAS_BIAS, MASK_T)
        dl_own = dl_own + (dl,)
    ys = ()
    for k in tl.static_range(K):
        b_u = us[k].to(tl.float32)
        b_dl = group_bcast(dl_own[k // S], k % S, lane, S)
        if COUPLING != STANDARD:
            b_tau = taus[k].to(tl.float32)
        else:
            b_tau = 0.0
        b_dtA, b_dtB = step_sizes(b_dl, b_tau, b_rate, COUPLING)
        b_Bs = ()
        for i in tl.static_range(NS):
            b_Bs = b_Bs + (Bks[k * NS + i],)
        hs = advance_states(hs, b_Bs, b_u, b_dtA, b_dtB, As, A2s, rAs, NS, SCHEME,
                            COUPLING == STANDARD)
        b_y = tl.zeros_like(b_u)
        for i in tl.static_range(NS):
            b_y += hs[i] * Cks[k * NS + i]
        ys = ys + (group_sum(b_y, S),)  # the channel's S lanes each hold N / S of the terms
    # the owned steps' outputs: D skip, gate, store
    for j in tl.static_range(KS):
        b_y = owned(ys, j, sub, S, K)
        if HAS_D:
            b_y += b_Dskip * owned(us, j, sub, S, K).to(tl.float32)
        if HAS_Z:
            b_z = owned(zs, j, sub, S, K).to(tl.float32)
            b_y *= b_z * sigmoid(b_z)
        if S == 1:
            store_masked(p_y + j * D, b_y, j < n_valid, m_d, MASK_T, EVEN_D)
        else:
            k_own = j * S + sub
            m = m_d & (k_own < K)
            if MASK_T:
                m = m & (k_own < n_valid)
            tl.store(p_y + k_own * D, b_y.to(p_y.dtype.element_ty), mask=m)
    return hs


@triton.jit
def _chunk(hs, cur, i_c, T, p_u, p_dl, p_tau, p_z, p_y, B, C, p_bc, p_bc_pf, m_d, m_bc, m_pf,
           o_pf, l_pf, lane, sub, As, A2s, rAs, b_bias, b_Dskip, b_rate, D: tl.constexpr,
           G: tl.constexpr, N: tl.constexpr, NS: tl.constexpr, S: tl.constexpr, K: tl.constexpr,
           VEC: tl.constexpr, SCHEME: tl.constexpr, COUPLING: tl.constexpr,
           SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr,
           HAS_Z: tl.constexpr, SPLIT_GROUPS: tl.constexpr, EVEN_D: tl.constexpr,
           PF_DIST: tl.constexpr, SZ: tl.constexpr, SBC: tl.constexpr):
    """Chunk ``i_c`` (pointers at its first step) from its inputs ``cur``: prefetches chunk
    ``i_c + PF_DIST`` into L2, requests the inputs of chunk ``i_c + 1``, runs the K steps.
    Returns the state after them and the next chunk's inputs."""
    n_valid = T - i_c * K
    # every input PF_DIST chunks ahead into L2 (see prefetch_distance)
    if PF_DIST > 0:
        FAR: tl.constexpr = PF_DIST * K
        prefetch_l2(B + p_bc_pf + FAR * SBC, m_pf & (o_pf < n_valid - FAR))
        prefetch_l2(C + p_bc_pf + FAR * SBC, m_pf & (o_pf < n_valid - FAR))
        prefetch_rows_l2(p_u + FAR * D, i_c * K + FAR, T, m_d, D, K)
        prefetch_rows_l2(p_dl + FAR * D, i_c * K + FAR, T, m_d, D, K)
        if HAS_Z:
            prefetch_rows_l2(p_z + FAR * SZ, i_c * K + FAR, T, m_d, SZ, K)
        if COUPLING != STANDARD:
            prefetch_l2(p_tau + FAR + o_pf, (l_pf == 0) & (o_pf < n_valid - FAR))
    if n_valid >= 2 * K:
        nxt = _load_chunk(p_u + K * D, p_dl + K * D, p_tau + K, p_z + K * SZ, B, C,
                          p_bc + K * SBC, K, m_d, m_bc, D, G, N, NS, K, VEC, COUPLING, HAS_Z,
                          SPLIT_GROUPS, False, EVEN_D, SZ, SBC)
    else:
        nxt = _load_chunk(p_u + K * D, p_dl + K * D, p_tau + K, p_z + K * SZ, B, C,
                          p_bc + K * SBC, n_valid - K, m_d, m_bc, D, G, N, NS, K, VEC,
                          COUPLING, HAS_Z, SPLIT_GROUPS, True, EVEN_D, SZ, SBC)
    if n_valid > K:
        hs = _steps(hs, cur, p_y, n_valid, m_d, lane, sub, As, A2s, rAs, b_bias, b_Dskip, b_rate, D,
                    NS, S, K, SCHEME, COUPLING, SOFTPLUS, HAS_BIAS, HAS_D, HAS_Z, False, EVEN_D)
    else:
        hs = _steps(hs, cur, p_y, n_valid, m_d, lane, sub, As, A2s, rAs, b_bias, b_Dskip, b_rate, D,
                    NS, S, K, SCHEME, COUPLING, SOFTPLUS, HAS_BIAS, HAS_D, HAS_Z, True, EVEN_D)
    return hs, nxt


@triton.autotune(
    # K·N/S state updates are unrolled twice (masked and unmasked paths): compile time and
    # registers grow with it (N = 16, S = 1 on one CPU core: K = 2 2.4 s, K = 4 5.7 s, K = 8 20 s).
    configs=[
        triton.Config({"K": 4}, num_warps=1),
        triton.Config({"K": 2}, num_warps=1),
    ],
    key=["D", "N", "G", "CK", "SCHEME", "COUPLING", "HAS_Z", "IS_VARLEN", "SAVE_CKPT", "DTYPE_KEY",
         "S", "VEC"],
    # the B/C rows of two chunks (4·K·N/S values) live in registers: K·N/S > 32 spills
    prune_configs_by={"early_config_prune": prune_unrolled(32)},
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
    DTYPE_KEY: tl.constexpr, S: tl.constexpr, BD: tl.constexpr, VEC: tl.constexpr,
    K: tl.constexpr, SPLIT_GROUPS: tl.constexpr, EVEN_D: tl.constexpr,
    PF_DIST: tl.constexpr, SZ: tl.constexpr, SBC: tl.constexpr,
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
    # Every tensor is a [32] vector, so Triton has no layout to choose (a 2-D [N, BD] tile gets
    # N across lanes in some Triton versions: shuffles for y, per-channel work N times).
    o_dn = o_d * N + sub * NS  # (D, N) tensors: state sub·NS + i of channel o_d
    b_bias, b_Dskip, b_rate, As, A2s, rAs = channel_params(A, delta_bias, Dskip, rate, o_d, m_d,
                                                           o_dn, NS, HAS_BIAS, HAS_D, COUPLING,
                                                           SCHEME)
    hs = ()
    for i in tl.static_range(NS):
        if HAS_H0:
            hs = hs + (tl.load(h0 + i_s.to(tl.int64) * D * N + o_dn + i, mask=m_d,
                               other=0.0).to(tl.float32),)
        else:
            hs = hs + (tl.zeros([32], dtype=tl.float32),)
    # B/C of channel d come from group d // (D / G); a block inside one group reads one row.
    # Without split groups every lane reads a valid row (its block's), masked channels too.
    if SPLIT_GROUPS:
        o_g = (o_d // (D // G)) * N
        m_bc = m_d
    else:
        o_g = ((i_d * BD) // (D // G)) * N
        m_bc = lane >= 0

    # Pointers advance by whole chunks; inside a chunk every access is base + a compile-time
    # offset (no per-step 64-bit address arithmetic).
    p_u = u + bos * D + o_d
    p_dl = delta + bos * D + o_d
    p_y = y + bos * D + o_d
    # absent inputs (None) get a stand-in pointer that is never read
    if HAS_Z:
        p_z = z + bos * SZ + o_d
    else:
        p_z = p_u
    if COUPLING != STANDARD:
        p_tau = tau + bos
    else:
        p_tau = u + bos
    p_bc = bos * SBC + o_g + sub * NS  # an offset: B and C share it (and their strides)
    # lane j of a B/C prefetch covers 32-byte sector j // K of the group's row at step j % K
    SECT = 256 // B.dtype.element_ty.primitive_bitwidth  # elements per sector
    o_pf = lane % K
    l_pf = lane // K
    m_pf = l_pf * SECT < N
    p_bc_pf = bos * SBC + o_pf * SBC + ((i_d * BD) // (D // G)) * N + l_pf * SECT
    # Software pipeline: the inputs of chunk c+1 (u, δ, τ, z and the B/C rows) are requested
    # before chunk c is computed (a load one step ahead, the first design, bounded the step time
    # at the memory latency), and the inputs of chunk c+PF_DIST are prefetched into L2: a chunk
    # of work is shorter than a DRAM access. Chunks away from the end take a path without step
    # masks.
    nxt = _load_chunk(p_u, p_dl, p_tau, p_z, B, C, p_bc, T, m_d, m_bc, D, G, N, NS, K, VEC,
                      COUPLING, HAS_Z, SPLIT_GROUPS, True, EVEN_D, SZ, SBC)
    for i_c in range(0, tl.cdiv(T, K)):
        if SAVE_CKPT:
            if i_c % (CK // K) == 0:
                # saved states are (n_chunks, N, D): coalesced along the channels
                p_ck = ckpt + ((i_ck + i_c // (CK // K)) * N + sub * NS) * D + o_d
                for i in tl.static_range(NS):
                    tl.store(p_ck + i * D, hs[i], mask=m_d)
        # One register set for the next chunk, copied into the current one at the loop's end: a
        # ping-pong over two sets (two chunks an iteration) avoids the copies but is no faster at
        # (8, 4096, 1536, 16), slower at N = 64, and twice the code (experiments/results/
        # kernel_notes.md, "Not adopted: a ping-pong forward").
        hs, nxt = _chunk(hs, nxt, i_c, T, p_u, p_dl, p_tau, p_z, p_y, B, C, p_bc, p_bc_pf, m_d,
                         m_bc, m_pf, o_pf, l_pf, lane, sub, As, A2s, rAs, b_bias, b_Dskip, b_rate, D, G,
                         N, NS, S, K, VEC, SCHEME, COUPLING, SOFTPLUS, HAS_BIAS, HAS_D, HAS_Z,
                         SPLIT_GROUPS, EVEN_D, PF_DIST, SZ, SBC)
        p_u += K * D
        p_dl += K * D
        p_y += K * D
        p_z += K * SZ
        p_tau += K
        p_bc += K * SBC
        p_bc_pf += K * SBC
    if STORE_LAST:
        p_last = last + i_s.to(tl.int64) * D * N + o_dn
        for i in tl.static_range(NS):
            tl.store(p_last + i, hs[i], mask=m_d)


def chunk_slots(n_seq: int, L: int, CK: int, packed: bool) -> int:
    """Chunk states to allocate for ``n_seq`` sequences of ``L`` steps each, or (``packed``)
    ``L`` steps in all: at most ``cdiv(L, CK) + n_seq`` chunks then (a partial chunk each), a
    bound that needs no read of the lengths from the device."""
    return triton.cdiv(L, CK) + n_seq if packed else n_seq * triton.cdiv(L, CK)


def chunk_offsets_of(cu_seqlens: torch.Tensor | None, n_seq: int, L: int, CK: int,
                     device: torch.device) -> tuple[torch.Tensor, int]:
    """Index of each sequence's first saved chunk state (``(n_seq + 1,)`` int32, on ``device``)
    and a number of chunk slots that is enough for all of them, computed without reading
    anything back from the device (a host sync would stall the launch queue: see
    ``chunk_slots``)."""
    n_slots = chunk_slots(n_seq, L, CK, packed=cu_seqlens is not None)
    if cu_seqlens is None:
        offsets = torch.arange(n_seq + 1, device=device, dtype=torch.int32) * triton.cdiv(L, CK)
        return offsets, n_slots
    n = (cu_seqlens[1:] - cu_seqlens[:-1] + CK - 1) // CK
    return torch.cat([n.new_zeros(1), n.cumsum(0)]).to(torch.int32), n_slots


def selective_scan_fwd(u, delta, A, B, C, Dskip, z, delta_bias, softplus_, tau, rate, h0,
                       cu_seqlens, scheme: int, coupling: int, store_last: bool,
                       save_ckpt: bool, CK: int):
    """Launch the forward kernel. ``u, delta`` contiguous; ``z`` and ``B, C`` may be slices of
    wider rows (see ``row_strides``).

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
    if save_ckpt or cu_seqlens is not None:  # a packed batch's kernel reads its offsets either way
        offsets, n_ck = chunk_offsets_of(cu_seqlens, n_seq, L, CK, u.device)
    if save_ckpt:
        ckpt = new_empty(n_ck, N, D, like=u, dtype=torch.float32)

    S = lanes_per_channel(N, "forward")
    SZ, SBC = row_strides(z, B)
    vec = vector_bytes(N, N // S, B, C, row=SBC)
    grid = (triton.cdiv(D, 32 // S), n_seq)
    selective_scan_fwd_kernel[grid](
        u, delta, delta_bias, A, B, C, Dskip, z, tau, rate, h0,
        y, last, ckpt,
        cu_seqlens, offsets,
        L, D=D, N=N, G=G, CK=CK,
        SCHEME=scheme, COUPLING=coupling, SOFTPLUS=softplus_,
        HAS_BIAS=delta_bias is not None, HAS_D=Dskip is not None, HAS_Z=z is not None,
        HAS_H0=h0 is not None, STORE_LAST=store_last, SAVE_CKPT=save_ckpt,
        IS_VARLEN=cu_seqlens is not None, DTYPE_KEY=str(u.dtype), S=S, BD=32 // S,
        VEC=vec, PF_DIST=prefetch_distance(), SZ=SZ, SBC=SBC,
    )
    return y, last, ckpt, offsets


def row_strides(z, B) -> tuple[int, int]:
    """(z's, B's and C's) step between rows (time steps), in elements: the kernels read z
    ``(b, L, D)`` and B, C ``(b, L, G, N)`` with these, so that slices of wider rows (z of
    ``in_proj``'s ``(b, L, 2D)`` output, B and C of ``x_proj``'s ``(b, L, R + 2N)``) need no copy.
    The launcher makes sure the rest of the layout is dense (``scan_layout``)."""
    return (z.stride(1) if z is not None else 0), B.stride(1)


def strided_ok(t, L: int, inner: tuple[int, ...]) -> bool:
    """Whether ``t (b, L, *inner)`` is a slice of wider rows that the kernels read in place: the
    inner dimensions dense, rows ``t.stride(1)`` apart and batches ``L`` rows apart."""
    if t.stride(-1) != 1 and t.shape[-1] > 1:
        return False
    if len(inner) == 2 and inner[0] > 1 and t.stride(2) != inner[1]:
        return False
    row = 1
    for n in inner:
        row *= n
    if L > 1 and t.stride(1) < row:  # overlapping rows (an expanded tensor)
        return False
    return t.shape[0] <= 1 or t.stride(0) == L * t.stride(1)
