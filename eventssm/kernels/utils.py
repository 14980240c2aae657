"""Shared pieces of the selective-scan kernels: discretization math in registers, launch helpers.

The formulas are those of DESIGN §3 (the core's ``eventssm.discretization`` computes the same in
torch); every kernel includes them through these ``@triton.jit`` helpers, so the scan, its
backward and the decode step can never disagree on a scheme. Scheme and coupling are
``tl.constexpr`` integer codes (:mod:`.constants`; here as ``MAMBA``, ``ZOH``, ... for the jitted
code): each combination compiles to straight-line code.

The helpers are elementwise: the scan kernels call them on ``[BD]`` vectors (one channel per
lane, one state at a time), the decode kernel on ``[N, BD]`` tiles with ``[1, BD]`` per-channel
rows (``dtA``, ``dtB``) that broadcast over the state.
"""

from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

from . import constants
from .config import get_config

# The codes of .constants as constexprs (a @triton.jit function may read only constexpr globals).
MAMBA: tl.constexpr = tl.constexpr(constants.SCHEME_MAMBA)
ZOH: tl.constexpr = tl.constexpr(constants.SCHEME_ZOH)
BILINEAR: tl.constexpr = tl.constexpr(constants.SCHEME_BILINEAR)
DIRAC: tl.constexpr = tl.constexpr(constants.SCHEME_DIRAC)
STANDARD: tl.constexpr = tl.constexpr(constants.COUPLING_STANDARD)
ASYMMETRIC: tl.constexpr = tl.constexpr(constants.COUPLING_ASYMMETRIC)
SCALED: tl.constexpr = tl.constexpr(constants.COUPLING_SCALED)
ADDITIVE: tl.constexpr = tl.constexpr(constants.COUPLING_ADDITIVE)

LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)


def new_empty(*shape, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.empty`` for kernel outputs (tests/conftest.py fills ``torch.empty`` with NaN in
    the interpreter tests, so elements a kernel does not write show). The kernels write them in
    full, so under deterministic mode they skip torch's NaN fill (see ``unfilled``)."""
    if torch.are_deterministic_algorithms_enabled():
        with unfilled():
            return torch.empty(*shape, dtype=dtype or like.dtype, device=like.device)
    return torch.empty(*shape, dtype=dtype or like.dtype, device=like.device)


@contextlib.contextmanager
def unfilled():
    """``torch.empty`` without the NaN fill that torch gives it under deterministic mode
    (``torch.utils.deterministic.fill_uninitialized_memory``), for buffers a kernel writes in
    full: the fill would be one more pass over them, and what it makes deterministic is never
    read."""
    det = torch.utils.deterministic
    prev = det.fill_uninitialized_memory
    det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        det.fill_uninitialized_memory = prev


def is_interpreting() -> bool:
    """Whether Triton runs kernels with its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def prune_unrolled(max_unrolled: int):
    """An ``early_config_prune`` for the scan kernels, which unroll K steps of the N / S states a
    lane holds: keeps the configs with ``K·N/S <= max_unrolled`` (compile time and registers
    grow with it; the smallest K survives in any case), then only the first one when not
    autotuning (see ``autotune_configs``)."""

    def prune(configs, nargs, **kwargs):
        arg = lambda k, default=None: kwargs.get(k, nargs.get(k, default))
        per_lane = arg("N") // arg("S", 1)
        keep = [c for c in configs if c.kwargs["K"] * per_lane <= max_unrolled]
        keep = keep or [min(configs, key=lambda c: c.kwargs["K"])]
        return autotune_configs(keep)

    return prune


def lanes_per_channel(N: int, kernel: str) -> int:
    """Lanes S sharing one channel's N states in a scan kernel (``"forward"`` or ``"backward"``;
    ``KernelConfig.fwd_lanes`` / ``bwd_lanes`` override: ``EVENTSSM_FWD_LANES`` / ``..._BWD_...``).

    With one lane a channel a launch has only sequences·D/32 warps (384 at (8, 4096, 1536,
    16), fewer than the H100's 528 schedulers) and the step is latency-bound. ``S`` lanes a
    channel give ``S`` times the warps and ``1/S`` of the registers a lane needs (room for the
    forward's B/C rows of two chunks, and N = 64 without spills), for ``log2 S`` shuffles per
    per-channel sum. Measured on the H100 (experiments/results/kernel_notes.md): backward at
    (8, 4096, 1536, 16) fp32, fwd+bwd 6.0 / 5.1 / 4.7 ms with S = 1 / 2 / 4; forward 0.82 /
    0.73 ms with S = 2 / 4 there, 3.3 / 3.6 ms with S = 4 / 8 at (16, 8192, 512, 64).
    """
    cfg = get_config()
    S = {"forward": cfg.fwd_lanes, "backward": cfg.bwd_lanes}[kernel]
    if S is not None:
        if N % S:
            var = {"forward": "EVENTSSM_FWD_LANES", "backward": "EVENTSSM_BWD_LANES"}[kernel]
            raise ValueError(f"{kernel} lanes ({var}) must divide N = {N}, got {S}")
        return S
    return 4 if N % 4 == 0 else (2 if N % 2 == 0 else 1)


def prefetch_distance() -> int:
    """How many chunks ahead the scan kernels prefetch their inputs into L2 (0: not at all;
    ``KernelConfig.prefetch``, ``EVENTSSM_PREFETCH``).

    Why into L2: the register loads of a chunk are issued one chunk ahead, about 600 cycles of
    work, less than a DRAM access under load, so an L1 prefetch of the B/C rows two chunks ahead
    alone leaves the forward waiting on those rows at the end of every chunk (42 % of its stall
    samples in Nsight Compute). Measured on the H100 at (8, 4096, 1536, 16) fp32: forward 0.73 ms
    with the L1 prefetch alone, 0.58 with L2 prefetch 2 or 4 chunks ahead, 0.60 with 8
    (experiments/results/kernel_notes.md).
    """
    return get_config().prefetch


def autotune_configs(configs: list[triton.Config]) -> list[triton.Config]:
    """All configs on a GPU; only the first under the interpreter (each would run serially),
    with ``KernelConfig.autotune`` off (``EVENTSSM_AUTOTUNE=0``; tests: one compilation per
    specialization), or under torch's deterministic mode: the autotuner picks by timing, so two
    runs could otherwise run different configs (the backward keys its choice by the mode; the
    forward, which has no atomics, keeps whichever it chose first in the process)."""
    if is_interpreting() or not get_config().autotune or torch.are_deterministic_algorithms_enabled():
        return configs[:1]
    return configs


# On a GPU the hot exponentials and reciprocals use the single-instruction PTX forms: the IEEE-ish
# ``tl.exp``/``/`` add range checks around each (denormal scaling, a slow-path branch) that cost
# more issue slots than the exponential itself in a loop that does one per state element. The
# interpreter cannot run PTX and uses the portable forms.
_PTX: tl.constexpr = tl.constexpr(not is_interpreting())
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)


@triton.jit
def exp2_fast(x):
    """2^x (MUFU.EX2, flushing subnormal results to 0; relative error ~2^-22)."""
    if _PTX:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.exp2(x)


@triton.jit
def rcp_fast(x):
    """1/x (MUFU.RCP; relative error ~2^-23)."""
    if _PTX:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return 1.0 / x


@triton.jit
def prefetch_l2(p, mask):
    """Ask for the sector at ``p`` to be brought into L2 (no registers, no wait); a no-op under
    the interpreter. Issued several chunks ahead, so that the register loads of a chunk (one
    chunk ahead) find their data in L2 instead of waiting on DRAM."""
    if _PTX:
        tl.inline_asm_elementwise("{ .reg .pred q; setp.ne.b32 q, $2, 0; @q prefetch.global.L2 [$1]; }",
                                  "=r,l,r", [p, mask.to(tl.int32)], dtype=tl.int32, is_pure=False,
                                  pack=1)


@triton.jit
def prefetch_rows_l2(p, lo, T, m_d, D: tl.constexpr, K: tl.constexpr):
    """``prefetch_l2`` of the K rows ``p + k·D`` (steps ``lo + k`` of the sequence, those in
    ``[0, T)``) of a (T, D) tensor: the lanes' channels of each row, one sector a row."""
    for k in tl.static_range(K):
        prefetch_l2(p + k * D, tl.where((lo + k >= 0) & (lo + k < T), m_d, False))


@triton.jit
def load_masked(p, m_t, m_d, MASK_T: tl.constexpr, EVEN_D: tl.constexpr):
    """A ``[BD]`` load masked by step (when ``MASK_T``) and channel (unless ``EVEN_D``).
    Unmasked loads are the common case: a masked one also zero-fills its destination, an
    instruction per value."""
    if MASK_T:
        # tl.where builds the [BD] mask (the interpreter cannot broadcast a scalar mask)
        return tl.load(p, mask=tl.where(m_t, m_d, False), other=0.0)
    else:
        if EVEN_D:
            return tl.load(p)
        else:
            return tl.load(p, mask=m_d, other=0.0)


@triton.jit
def store_masked(p, x, m_t, m_d, MASK_T: tl.constexpr, EVEN_D: tl.constexpr):
    """The store matching ``load_masked`` (``x`` cast to the pointer's element type)."""
    x = x.to(p.dtype.element_ty)
    if MASK_T:
        tl.store(p, x, mask=tl.where(m_t, m_d, False))
    else:
        if EVEN_D:
            tl.store(p, x)
        else:
            tl.store(p, x, mask=m_d)


@triton.jit
def load_steps(p_u, p_dl, p_tau, p_dy, p_z, n_valid, m_d, D: tl.constexpr, K: tl.constexpr,
               COUPLING: tl.constexpr, HAS_DY: tl.constexpr, HAS_Z: tl.constexpr,
               MASK_T: tl.constexpr, EVEN_D: tl.constexpr, DZ: tl.constexpr):
    """The per-channel inputs (u, δ, τ, dy, z) of the K steps starting at the pointers, as
    tuples of ``[BD]`` vectors (steps ``k >= n_valid`` read as 0 when ``MASK_T``); rows are
    ``D`` elements apart, z's ``DZ`` (a slice of a wider tensor). Absent inputs (τ without
    coupling, dy, z without their flags) alias δ's tuple: empty tuples cannot be loop-carried."""
    us = ()
    dls = ()
    taus = ()
    dys = ()
    zs = ()
    for k in tl.static_range(K):
        m_t = k < n_valid
        us = us + (load_masked(p_u + k * D, m_t, m_d, MASK_T, EVEN_D),)
        dls = dls + (load_masked(p_dl + k * D, m_t, m_d, MASK_T, EVEN_D),)
        if COUPLING != STANDARD:
            if MASK_T:
                taus = taus + (tl.load(p_tau + k, mask=m_t, other=0.0),)
            else:
                taus = taus + (tl.load(p_tau + k),)
        if HAS_DY:
            dys = dys + (load_masked(p_dy + k * D, m_t, m_d, MASK_T, EVEN_D),)
        if HAS_Z:
            zs = zs + (load_masked(p_z + k * DZ, m_t, m_d, MASK_T, EVEN_D),)
    if COUPLING == STANDARD:
        taus = dls
    if not HAS_DY:
        dys = dls
    if not HAS_Z:
        zs = dls
    return us, dls, taus, dys, zs


@triton.jit
def load_cols(p, n_valid, m_d, D: tl.constexpr, K: tl.constexpr, MASK_T: tl.constexpr,
              EVEN_D: tl.constexpr):
    """The lanes' channels of K rows ``p + k·D`` of a (T, D) tensor, a tuple of ``[32]``
    vectors (rows ``k >= n_valid`` read as 0 when ``MASK_T``)."""
    xs = ()
    for k in tl.static_range(K):
        xs = xs + (load_masked(p + k * D, k < n_valid, m_d, MASK_T, EVEN_D),)
    return xs


@triton.jit
def shfl_xor(x, M: tl.constexpr):
    """The value ``x`` of lane ``lane ^ M`` (``shfl.sync.bfly``; fp32, a full warp)."""
    return tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, $2, 0x1f, -1;", "=f,f,r",
                                     [x, tl.full(x.shape, M, tl.int32)], dtype=tl.float32,
                                     is_pure=True, pack=1)


@triton.jit
def _reduce_scatter_level(vals, up, H: tl.constexpr, M: tl.constexpr):
    """One butterfly level: pairs (vals[i], vals[i + H]); the lane with bit M clear keeps the
    low half, its partner the high half, each adding what the other sends."""
    out = ()
    for i in tl.static_range(H):
        lo = vals[i]
        hi = vals[i + H]
        keep = tl.where(up, hi, lo)
        send = tl.where(up, lo, hi)
        out = out + (keep + shfl_xor(send, M),)
    return out


@triton.jit
def channel_sums(vals, lane, Q: tl.constexpr, NV: tl.constexpr, S: tl.constexpr):
    """Sums over the channels of a warp of many values at once (a reduce-scatter).

    The warp's 32 lanes hold ``32 / S`` channels, ``S`` adjacent lanes a channel (lane ``j``:
    channel ``j // S``, sub-lane ``j % S``). ``vals`` is a tuple of ``(32 / S)·Q`` ``[32]``
    vectors (``lane`` is ``tl.arange(0, 32)``); returns ``Q`` vectors where lane ``j``, entry
    ``i``, holds the sum over the lanes of sub-lane ``j % S`` of ``vals[(j // S)·Q + i]``.
    Butterfly levels of halving exchanges over the channel bits cost ``(32/S - 1)·Q``
    shuffles, against ``log2(32/S)`` per value for separate ``tl.sum`` trees. The
    interpreter (no PTX) computes the same with ``tl.sum`` over the first ``NV`` values (the
    rest must be zero padding).
    """
    if _PTX:
        # level on lane bit M (M >= S): the H = M·Q/S pairs split between the two partners
        v = vals
        v = _reduce_scatter_level(v, (lane & 16) != 0, 16 * Q // S, 16)
        v = _reduce_scatter_level(v, (lane & 8) != 0, 8 * Q // S, 8)
        if S <= 4:
            v = _reduce_scatter_level(v, (lane & 4) != 0, 4 * Q // S, 4)
        if S <= 2:
            v = _reduce_scatter_level(v, (lane & 2) != 0, 2 * Q // S, 2)
        if S <= 1:
            v = _reduce_scatter_level(v, (lane & 1) != 0, Q, 1)
        return v
    else:
        out = ()
        for i in tl.static_range(Q):
            acc = tl.zeros(lane.shape, tl.float32)
            for c in tl.static_range(32 // S):
                if c * Q + i < NV:
                    x = vals[c * Q + i]
                    for s in tl.static_range(S):
                        tot = tl.sum(tl.where(lane % S == s, x, 0.0), 0)
                        acc = tl.where(lane == c * S + s, tot, acc)
            out = out + (acc,)
        return out


@triton.jit
def group_sum(x, S: tl.constexpr):
    """Sum of ``x [32]`` over each group of ``S`` adjacent lanes, on every lane of the group."""
    if S == 1:
        return x
    else:
        if _PTX:
            x = x + shfl_xor(x, 1)
            if S >= 4:
                x = x + shfl_xor(x, 2)
            if S >= 8:
                x = x + shfl_xor(x, 4)
            return x
        else:
            sums = tl.sum(tl.reshape(x, [x.shape[0] // S, S]), 1)
            return tl.reshape(tl.broadcast_to(sums[:, None], [x.shape[0] // S, S]), [x.shape[0]])


@triton.jit
def group_bcast(x, SRC: tl.constexpr, lane, S: tl.constexpr):
    """``x`` of sub-lane ``SRC`` of each group of ``S`` adjacent lanes, on every lane of the group
    (``shfl.sync.idx``; ``lane`` is ``tl.arange(0, 32)``)."""
    if S == 1:
        return x
    else:
        if _PTX:
            src = (lane & (32 - S)) | SRC
            return tl.inline_asm_elementwise("shfl.sync.idx.b32 $0, $1, $2, 0x1f, -1;", "=f,f,r",
                                             [x, src], dtype=tl.float32, is_pure=True, pack=1)
        else:
            x2 = tl.reshape(x, [x.shape[0] // S, S])
            pick = tl.sum(tl.where(tl.arange(0, S)[None, :] == SRC, x2, 0.0), 1)
            return tl.reshape(tl.broadcast_to(pick[:, None], [x.shape[0] // S, S]), [x.shape[0]])


@triton.jit
def owned(xs, J: tl.constexpr, sub, S: tl.constexpr, K: tl.constexpr):
    """Of the K per-step values ``xs``, the one of step ``J·S + sub`` on each lane (the step a
    lane *owns* when the S lanes of a channel share out a chunk's per-channel work; lanes
    whose step is past K get step ``J·S``)."""
    v = xs[J * S]
    for s in tl.static_range(1, S):
        if J * S + s < K:
            v = tl.where(sub == s, xs[J * S + s], v)
    return v


@triton.jit
def exp_fast(x):
    return exp2_fast(x * LOG2E)


# log1p(w) for w in [0, 1] as 2·atanh(s) = 2s·(1 + s²/3 + s⁴/5 + … + s¹²/13), s = w/(2 + w) ≤ 1/3:
# truncation ≤ (1/3)¹⁴/15 ≈ 1.4e-8 relative, and relative accuracy all the way down to w → 0.
# (The textbook log(t)·w/(t − 1), t = 1 + w, is exact with an exact log, but MUFU.LG2's error is
# absolute near t = 1 (2^-22 by CUDA's documentation): at δ = −14 that bounds Δ = softplus(δ)
# only to ~20 %, which the scaled coupling's Δ·τ would carry into Ā; the suspected cause of a GPU
# test's 7e-4 error, not yet confirmed on a GPU.)
_S3: tl.constexpr = tl.constexpr(1.0 / 3)
_S5: tl.constexpr = tl.constexpr(1.0 / 5)
_S7: tl.constexpr = tl.constexpr(1.0 / 7)
_S9: tl.constexpr = tl.constexpr(1.0 / 9)
_S11: tl.constexpr = tl.constexpr(1.0 / 11)
_S13: tl.constexpr = tl.constexpr(1.0 / 13)


@triton.jit
def softplus(x):
    """log(1 + e^x), finite and accurate (relative, ~1e-7) for every x (PyTorch's threshold of
    20 included): one MUFU.EX2, one MUFU.RCP and a short odd series, no logarithm."""
    w = exp_fast(-tl.abs(x))  # in (0, 1]
    s = w * rcp_fast(2.0 + w)
    s2 = s * s
    p = 1.0 + s2 * (_S3 + s2 * (_S5 + s2 * (_S7 + s2 * (_S9 + s2 * (_S11 + s2 * _S13)))))
    log1p_w = 2.0 * s * p
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + log1p_w)


@triton.jit
def sigmoid(x):
    return rcp_fast(1.0 + exp_fast(-x))


# ---- the schemes, one evaluation per element -----------------------------------------------------
# Per state and step the mamba scheme costs a multiply and one MUFU.EX2 for Ā. The other schemes
# are written to add as little as possible to that, with no double evaluation:
# * zoh: k = (e^x − 1)/A with x = dtB·A. With the standard coupling (dtA = dtB) e^x *is* Ā: no
#   second exponential. Per element either a short series of φ(x) = (e^x − 1)/x in t = x·log2 e
#   (FMAs) or (e^x − 1)·(1/A) with 1/A computed once per program; both are a few FMA-pipe
#   instructions and a select picks one (no IEEE exp, no division, no branch).
# * bilinear: one MUFU.RCP of w = 1 − dtA·A/2 gives Ā = 2/w − 1 and, when dtA = dtB, k = dtB/w.
# * dirac: k = 1.
# Event mode (dtA ≠ dtB) needs a second exponential (zoh) or reciprocal (bilinear) for k.
#
# Accuracy (relative, per element; MUFU.EX2 and RCP err by ~2^-22): the zoh series runs to t^4 for
# |x| < 1/4 (truncation ≤ 1.5e-6) and (e^x − 1)/A beyond (the rounding of e^x, 2^-22, over
# |e^x − 1| ≥ 0.22: ≤ 1.1e-6). Its A-derivative ψ(x) = ((x − 1)e^x + 1)/x² cancels more (its
# numerator ~x²/2), so its series runs to t^6 for |x| < 1/2 (truncation ≤ 4e-7; beyond, ≤ 3e-6).

#: |t| = |dtB·A·log2 e| below which φ and ψ come from their series
ZOH_PHI_T: tl.constexpr = tl.constexpr(0.25 * 1.4426950408889634)
ZOH_PSI_T: tl.constexpr = tl.constexpr(0.5 * 1.4426950408889634)
# φ(x) = Σ x^k/(k+1)!  and  ψ(x) = Σ x^k (k+1)/(k+2)!, as polynomials in t = x·log2 e
_L = 0.6931471805599453
_P1: tl.constexpr = tl.constexpr(_L / 2)
_P2: tl.constexpr = tl.constexpr(_L ** 2 / 6)
_P3: tl.constexpr = tl.constexpr(_L ** 3 / 24)
_P4: tl.constexpr = tl.constexpr(_L ** 4 / 120)
_Q1: tl.constexpr = tl.constexpr(_L * 2 / 6)
_Q2: tl.constexpr = tl.constexpr(_L ** 2 * 3 / 24)
_Q3: tl.constexpr = tl.constexpr(_L ** 3 * 4 / 120)
_Q4: tl.constexpr = tl.constexpr(_L ** 4 * 5 / 720)
_Q5: tl.constexpr = tl.constexpr(_L ** 5 * 6 / 5040)
_Q6: tl.constexpr = tl.constexpr(_L ** 6 * 7 / 40320)


@triton.jit
def zoh_k(t, e, dtB, rA):
    """The zoh input coefficient k = (e^x − 1)/A = dtB·φ(x) (B̄ = k·B), from ``t = x·log2 e``
    (x = dtB·A), ``e = 2^t`` and ``rA = 1/A``; the series where e^x − 1 would cancel."""
    phi = 1.0 + t * (_P1 + t * (_P2 + t * (_P3 + t * _P4)))
    return tl.where(tl.abs(t) < ZOH_PHI_T, dtB * phi, e * rA - rA)  # (e − 1)/A in one FMA


@triton.jit
def zoh_dk_dA(t, e, dtB, k, rA):
    """∂k/∂A = dtB²·ψ(x) = (dtB·e^x − k)/A (same arguments as ``zoh_k``, and its ``k``)."""
    psi = 0.5 + t * (_Q1 + t * (_Q2 + t * (_Q3 + t * (_Q4 + t * (_Q5 + t * _Q6)))))
    return tl.where(tl.abs(t) < ZOH_PSI_T, (dtB * dtB) * psi, (dtB * e - k) * rA)


@triton.jit
def step_sizes(delta, tau, rate, COUPLING: tl.constexpr):
    """(dtA, dtB) from Δ, τ and the rate r; COUPLING is the *effective* coupling (standard when
    no τ is given)."""
    if COUPLING == ASYMMETRIC:  # asymmetric: decay driven by elapsed time
        dtA = tau * rate
    elif COUPLING == SCALED:  # scaled: learned step times observed gap
        dtA = delta * tau
    elif COUPLING == ADDITIVE:  # additive: selective step plus decay with elapsed time
        dtA = delta + tau * rate
    else:
        dtA = delta
    return dtA, delta


@triton.jit
def discretize(dtA, dtB, A, A2, rA, SCHEME: tl.constexpr, SAME_DT: tl.constexpr):
    """(Ā, k) with B̄ = k·B, for step sizes ``dtA, dtB`` (per channel: ``[1, BD]`` or ``[32]``)
    and per-state ``A``, ``A2 = A·log2 e`` and ``rA = 1/A`` (used by zoh only; precomputed once).
    ``SAME_DT``: dtA = dtB (the standard coupling), so that k reuses Ā's exponential or
    reciprocal. k is per channel for mamba/dirac and per state for zoh/bilinear."""
    if SCHEME == BILINEAR:
        r = rcp_fast(1.0 - (0.5 * dtA) * A)
        dA = 2.0 * r - 1.0  # (1 + x/2)/(1 − x/2) = 2/(1 − x/2) − 1
        if SAME_DT:
            kB = dtB * r
        else:
            kB = dtB * rcp_fast(1.0 - (0.5 * dtB) * A)
    else:
        tA = dtA * A2
        dA = exp2_fast(tA)
        if SCHEME == MAMBA:
            kB = dtB
        elif SCHEME == ZOH:
            if SAME_DT:
                kB = zoh_k(tA, dA, dtB, rA)
            else:
                tB = dtB * A2
                kB = zoh_k(tB, exp2_fast(tB), dtB, rA)
        else:
            kB = tl.full(dtB.shape, 1.0, tl.float32)
    return dA, kB


@triton.jit
def discretize_grad(dtA, dtB, A, A2, rA, SCHEME: tl.constexpr, SAME_DT: tl.constexpr):
    """For zoh and bilinear: (Ā, k, ∂Ā/∂dtA · log2 e, ∂Ā/∂A, ∂k/∂dtB, ∂k/∂A), every one from one
    evaluation of the exponential(s) or reciprocal(s) of ``discretize`` (same arguments).
    ∂Ā/∂dtA comes scaled by log2 e: the backward sums it over states and multiplies by ln 2 once
    per channel, as it does for the exp2-based Ā = 2^(dtA·A2)."""
    if SCHEME == BILINEAR:
        r = rcp_fast(1.0 - (0.5 * dtA) * A)
        dA = 2.0 * r - 1.0
        r2 = r * r  # ∂Ā/∂x = 1/(1 − x/2)²
        dA_dt = r2 * A2
        dA_dA = r2 * dtA
        if SAME_DT:
            rB = r
            rB2 = r2
        else:
            rB = rcp_fast(1.0 - (0.5 * dtB) * A)
            rB2 = rB * rB
        kB = dtB * rB
        dk_ddtB = rB2  # ∂/∂dtB of dtB/(1 − dtB·A/2)
        dk_dA = 0.5 * kB * kB
    else:  # zoh
        tA = dtA * A2
        dA = exp2_fast(tA)
        dA_dt = dA * A2
        dA_dA = dA * dtA
        if SAME_DT:
            tB = tA
            e = dA
        else:
            tB = dtB * A2
            e = exp2_fast(tB)
        kB = zoh_k(tB, e, dtB, rA)
        dk_ddtB = e  # ∂/∂dtB of (e^(dtB·A) − 1)/A: no cancellation
        dk_dA = zoh_dk_dA(tB, e, dtB, kB, rA)
    return dA, kB, dA_dt, dA_dA, dk_ddtB, dk_dA


# ---- a lane's states: parameters, rows and one step (shared by the forward and the backward) ----
# Both scan kernels lay a program out as 32 lanes, S adjacent lanes a channel; lane j holds
# states ``j % S``, ``j % S + S``, ... (NS = N / S of them) of channel ``j // S`` as a tuple of
# ``[32]`` vectors.


def vector_bytes(N: int, NS: int, *tensors: torch.Tensor, row: int | None = None) -> int:
    """Widest access (16, 8 or 4 bytes; 0: element by element) that ``load_row_vec`` may use to
    read a lane's NS contiguous entries of rows of N elements from every one of ``tensors``:
    it must divide the lane's span, the row length, the step between rows (``row`` elements,
    when the rows are slices of wider ones) and each base address."""
    es = tensors[0].element_size()
    for a in (16, 8, 4):
        if (NS * es) % a == 0 and (N * es) % a == 0 and (row is None or (row * es) % a == 0) \
                and all(t.data_ptr() % a == 0 for t in tensors):
            return a
    return 0


def _ld_asm(words: int, masked: bool) -> tl.constexpr:
    """PTX for ``words`` (1, 2 or 4) consecutive 32-bit words with one ``ld.global`` (operands:
    the outputs, the address and, when ``masked``, a predicate word: off reads zeros)."""
    outs = ", ".join(f"${i}" for i in range(words))
    ld = f"ld.global.b32 {outs}, [${words}];" if words == 1 else \
        f"ld.global.v{words}.b32 {{{outs}}}, [${words}];"
    if not masked:
        return tl.constexpr(ld)
    zero = " ".join(f"mov.b32 ${i}, 0;" for i in range(words))
    return tl.constexpr(f"{{ .reg .pred q; setp.ne.b32 q, ${words + 1}, 0; {zero} @q {ld} }}")


_LD1, _LD2, _LD4 = _ld_asm(1, False), _ld_asm(2, False), _ld_asm(4, False)
_LD1M, _LD2M, _LD4M = _ld_asm(1, True), _ld_asm(2, True), _ld_asm(4, True)


@triton.jit
def _ld_words(p, m, WORDS: tl.constexpr, MASK: tl.constexpr):
    """WORDS consecutive 32-bit words at ``p`` (aligned to 4·WORDS bytes) as int32 tensors."""
    if MASK:
        mi = m.to(tl.int32)
        if WORDS == 4:
            return tl.inline_asm_elementwise(_LD4M, "=r,=r,=r,=r,l,r", [p, mi],
                                             dtype=(tl.int32, tl.int32, tl.int32, tl.int32),
                                             is_pure=True, pack=1)
        elif WORDS == 2:
            return tl.inline_asm_elementwise(_LD2M, "=r,=r,l,r", [p, mi], dtype=(tl.int32, tl.int32),
                                             is_pure=True, pack=1)
        else:
            return (tl.inline_asm_elementwise(_LD1M, "=r,l,r", [p, mi], dtype=tl.int32,
                                              is_pure=True, pack=1),)
    else:
        if WORDS == 4:
            return tl.inline_asm_elementwise(_LD4, "=r,=r,=r,=r,l", [p],
                                             dtype=(tl.int32, tl.int32, tl.int32, tl.int32),
                                             is_pure=True, pack=1)
        elif WORDS == 2:
            return tl.inline_asm_elementwise(_LD2, "=r,=r,l", [p], dtype=(tl.int32, tl.int32),
                                             is_pure=True, pack=1)
        else:
            return (tl.inline_asm_elementwise(_LD1, "=r,l", [p], dtype=tl.int32, is_pure=True,
                                              pack=1),)


@triton.jit
def load_row_vec(X, p, m, NS: tl.constexpr, VEC: tl.constexpr, MASK: tl.constexpr):
    """The lane's NS *contiguous* entries ``X[p : p + NS]`` of a row as fp32 ``[32]`` vectors,
    read ``VEC`` bytes per instruction (``vector_bytes``; 0: element by element, as under the
    interpreter). All lanes of a channel group read the same addresses, so without vectors
    every value costs a load instruction per lane; with 16-byte loads a quarter (fp32) or an
    eighth (bf16/fp16) of that."""
    if VEC == 0 or not _PTX:
        xs = ()
        for i in tl.static_range(NS):
            if MASK:  # a masked load also zero-fills: only where needed
                xs = xs + (tl.load(X + p + i, mask=m, other=0.0).to(tl.float32),)
            else:
                xs = xs + (tl.load(X + p + i).to(tl.float32),)
        return xs
    else:
        BITS: tl.constexpr = X.dtype.element_ty.primitive_bitwidth
        WORDS: tl.constexpr = VEC // 4
        PER: tl.constexpr = VEC * 8 // BITS  # values per access
        xs = ()
        for j in tl.static_range(NS // PER):
            ws = _ld_words(X + p + j * PER, m, WORDS, MASK)
            for w in tl.static_range(WORDS):
                if BITS == 32:
                    xs = xs + (ws[w].to(tl.float32, bitcast=True),)
                elif X.dtype.element_ty == tl.bfloat16:
                    # bf16 is the high half of an fp32: shift or mask into place
                    xs = xs + ((ws[w] << 16).to(tl.float32, bitcast=True),
                               (ws[w] & -65536).to(tl.float32, bitcast=True))
                else:
                    xs = xs + (ws[w].to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32),
                               (ws[w] >> 16).to(tl.int16).to(tl.float16, bitcast=True)
                               .to(tl.float32))
        return xs


@triton.jit
def channel_params(A, delta_bias, Dskip, rate, o_d, m_d, o_dn, NS: tl.constexpr,
                   HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, COUPLING: tl.constexpr,
                   SCHEME: tl.constexpr):
    """The per-channel parameters both scan kernels start from: ``(bias, D skip, rate)`` as fp32
    ``[32]`` vectors (0.0 where absent) and the lane's NS entries of A (``A + o_dn + i``) as
    tuples ``As``, ``A2s = A·log2 e`` (Ā = 2^(dtA·A2): one multiply and one MUFU.EX2) and, for
    zoh, ``rAs = 1/A`` (one division a program instead of one a step; ``As`` otherwise)."""
    b_bias = tl.load(delta_bias + o_d, mask=m_d, other=0.0).to(tl.float32) if HAS_BIAS else 0.0
    b_Dskip = tl.load(Dskip + o_d, mask=m_d, other=0.0).to(tl.float32) if HAS_D else 0.0
    USES_RATE: tl.constexpr = COUPLING == ASYMMETRIC or COUPLING == ADDITIVE
    b_rate = tl.load(rate + o_d, mask=m_d, other=0.0).to(tl.float32) if USES_RATE else 0.0
    As = ()
    A2s = ()
    rAs = ()
    for i in tl.static_range(NS):
        b_An = tl.load(A + o_dn + i, mask=m_d, other=0.0).to(tl.float32)
        As = As + (b_An,)
        A2s = A2s + (b_An * LOG2E,)
        if SCHEME == ZOH:
            # (A = 0, e.g. a masked channel: any finite value, never used since t = 0 there)
            rAs = rAs + (1.0 / tl.where(b_An == 0.0, 1.0, b_An),)
    if SCHEME != ZOH:
        rAs = As
    return b_bias, b_Dskip, b_rate, As, A2s, rAs


@triton.jit
def step_coeffs(raw, tau, m_t, b_bias, b_rate, COUPLING: tl.constexpr, SOFTPLUS: tl.constexpr,
                HAS_BIAS: tl.constexpr, MASK_T: tl.constexpr):
    """(δ + bias, Δ, dtA, dtB) of one step; masked steps get Δ = 0 (Ā = 1, B̄ = 0)."""
    x = raw.to(tl.float32)
    if HAS_BIAS:
        x += b_bias
    if SOFTPLUS:
        dl = softplus(x)
    else:
        dl = x
    if MASK_T:
        dl = tl.where(m_t, dl, 0.0)
    if COUPLING != STANDARD:
        b_tau = tau.to(tl.float32)
    else:
        b_tau = 0.0
    dtA, dtB = step_sizes(dl, b_tau, b_rate, COUPLING)
    return x, dl, dtA, dtB


@triton.jit
def advance_states(hs, Bs, u, dtA, dtB, As, A2s, rAs, NS: tl.constexpr, SCHEME: tl.constexpr,
                   SAME_DT: tl.constexpr):
    """One step ``h ← Ā h + k B u`` of the lane's NS states (``A2 = A·log2 e``, ``rA = 1/A``;
    ``SAME_DT``: dtA = dtB, see ``discretize``)."""
    if SCHEME == MAMBA or SCHEME == BILINEAR:
        ku = dtB * u
    else:
        ku = u
    out = ()
    for n in tl.static_range(NS):
        if SCHEME == MAMBA or SCHEME == DIRAC:
            # the common case spelled out: one multiply, one MUFU.EX2, two FMAs per state
            h = exp2_fast(dtA * A2s[n]) * hs[n] + ku * Bs[n]
        elif SCHEME == BILINEAR:
            # k = dtB·r: the channel's dtB·u times the reciprocal
            r = rcp_fast(1.0 - (0.5 * dtA) * As[n])
            if SAME_DT:
                rB = r
            else:
                rB = rcp_fast(1.0 - (0.5 * dtB) * As[n])
            h = (2.0 * r - 1.0) * hs[n] + (rB * ku) * Bs[n]
        else:
            dA, kB = discretize(dtA, dtB, As[n], A2s[n], rAs[n], SCHEME, SAME_DT)
            h = dA * hs[n] + (kB * u) * Bs[n]
        out = out + (h,)
    return out
