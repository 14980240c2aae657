"""Decode kernel: one recurrence step with the state updated in place (``Mamba.step``).

Same formulas as the scan (the helpers of :mod:`eventssm.kernels.utils`), so a model decoded
step by step gives what its scan gives. One program per (channel block, batch row).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .constants import COUPLING_STANDARD, COUPLINGS, RATE_COUPLINGS, SCHEME_MAMBA, SCHEMES
from .utils import ADDITIVE, ASYMMETRIC, LOG2E, STANDARD, ZOH, discretize, new_empty, sigmoid, softplus, step_sizes

__all__ = ["selective_state_update_triton"]


@triton.jit
def selective_state_update_kernel(
    state, x, dt, dt_bias, A, B, C, Dskip, z, tau, rate, y,
    D: tl.constexpr, N: tl.constexpr, G: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr,
    SCHEME: tl.constexpr, COUPLING: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
):
    i_d, i_b = tl.program_id(0), tl.program_id(1)
    o_d = i_d * BD + tl.arange(0, BD)
    o_n = tl.arange(0, BN)
    m_d, m_n = o_d < D, o_n < N
    o_dn = o_d[None, :] * N + o_n[:, None]
    m_dn = m_d[None, :] & m_n[:, None]
    o_bc = (o_d // (D // G))[None, :] * N + o_n[:, None]
    i_b = i_b.to(tl.int64)

    b_x = tl.load(x + i_b * D + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_dl = tl.load(dt + i_b * D + o_d, mask=m_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        b_dl += tl.load(dt_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    if SOFTPLUS:
        b_dl = softplus(b_dl)
    b_tau = tl.load(tau + i_b).to(tl.float32) if COUPLING != STANDARD else 0.0
    USES_RATE: tl.constexpr = COUPLING == ASYMMETRIC or COUPLING == ADDITIVE
    b_rate = tl.load(rate + o_d, mask=m_d, other=0.0).to(tl.float32) if USES_RATE else 0.0
    b_dtA, b_dtB = step_sizes(b_dl, b_tau, b_rate, COUPLING)
    b_A = tl.load(A + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    b_A2 = b_A * LOG2E
    b_rA = 1.0 / tl.where(b_A == 0.0, 1.0, b_A) if SCHEME == ZOH else b_A  # 0: masked states
    b_dA, b_kB = discretize(b_dtA[None, :], b_dtB[None, :], b_A, b_A2, b_rA, SCHEME,
                            COUPLING == STANDARD)
    b_B = tl.load(B + i_b * G * N + o_bc, mask=m_dn, other=0.0).to(tl.float32)
    b_C = tl.load(C + i_b * G * N + o_bc, mask=m_dn, other=0.0).to(tl.float32)
    p_h = state + i_b * D * N + o_dn
    b_h = b_dA * tl.load(p_h, mask=m_dn, other=0.0) + (b_kB * b_x[None, :]) * b_B
    tl.store(p_h, b_h, mask=m_dn)
    b_y = tl.sum(b_h * b_C, 0)
    if HAS_D:
        b_y += tl.load(Dskip + o_d, mask=m_d, other=0.0).to(tl.float32) * b_x
    if HAS_Z:
        b_z = tl.load(z + i_b * D + o_d, mask=m_d, other=0.0).to(tl.float32)
        b_y *= b_z * sigmoid(b_z)
    tl.store(y + i_b * D + o_d, b_y.to(y.dtype.element_ty), mask=m_d)


def scan_codes(scheme: int, coupling: int, tau, rate) -> int:
    """Check the integer codes (:mod:`.constants`) and return the *effective* coupling: standard
    when no timesteps are given (DESIGN §3), which then need not be read."""
    if scheme not in SCHEMES.values():
        raise ValueError(f"scheme must be one of {SCHEMES} (eventssm.kernels.constants), got {scheme!r}")
    if coupling not in COUPLINGS.values():
        raise ValueError(f"coupling must be one of {COUPLINGS} (eventssm.kernels.constants), "
                         f"got {coupling!r}")
    if tau is None:
        return COUPLING_STANDARD
    if coupling in RATE_COUPLINGS and rate is None:
        raise ValueError("rate (D,) is required by the asymmetric and additive couplings when "
                         "integration_timesteps are given")
    return coupling


def selective_state_update_triton(
    state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
    integration_timesteps=None, rate=None, scheme: int = SCHEME_MAMBA,
    coupling: int = COUPLING_STANDARD, *, discretization=None,
):
    """One step of the scan, updating ``state`` in place; the formulas of the scan kernels (and of
    the core's ``selective_state_update_ref``).

    Shapes: ``state: (b, D, N)`` float32, contiguous (updated in place); ``x, dt, z: (b, D)``;
    ``B, C: (b, N)`` or ``(b, G, N)``; ``A: (D, N)``; ``D, dt_bias, rate: (D,)``;
    ``integration_timesteps: (b,)``; ``scheme`` / ``coupling``: integer codes of
    :mod:`eventssm.kernels.constants` (the coupling falls back to standard when no timesteps are
    given). Returns ``y (b, D)`` in ``x``'s dtype.

    ``discretization``: transitional, for callers that still pass the core's object (anything
    with ``scheme_id`` and ``coupling_id``); it overrides ``scheme`` and ``coupling``.

    Raises ``ValueError`` for a state that is not contiguous float32 (the caller routes those,
    e.g. float64 tests, to the reference), unknown codes, or a missing rate.
    """
    if discretization is not None:
        scheme, coupling = discretization.scheme_id, discretization.coupling_id
    if state.dtype != torch.float32 or not state.is_contiguous():
        raise ValueError(f"state must be a contiguous float32 tensor (updated in place), got "
                         f"{state.dtype}{'' if state.is_contiguous() else ', not contiguous'}")
    tau = integration_timesteps
    coupling = scan_codes(scheme, coupling, tau, rate)
    b, Dm, N = state.shape
    if B.dim() == 2:
        B, C = B[:, None], C[:, None]
    G = B.shape[1]
    c = lambda t: None if t is None else t.contiguous()
    y = new_empty(x.shape, like=x)
    BD = min(64, triton.next_power_of_2(Dm))
    selective_state_update_kernel[(triton.cdiv(Dm, BD), b)](
        state, c(x), c(dt), c(dt_bias), c(A), c(B), c(C), c(D), c(z),
        c(tau) if coupling != COUPLING_STANDARD else None,
        c(rate) if coupling in RATE_COUPLINGS else None, y,
        D=Dm, N=N, G=G, BN=triton.next_power_of_2(N), BD=BD,
        SCHEME=scheme, COUPLING=coupling, SOFTPLUS=bool(dt_softplus),
        HAS_BIAS=dt_bias is not None, HAS_D=D is not None, HAS_Z=z is not None,
        num_warps=2,
    )
    return y
