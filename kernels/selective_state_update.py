"""Decode kernel: one recurrence step with the state updated in place (``Mamba.step``).

Same formulas as the scan (the helpers of :mod:`eventssm.kernels.utils`), so a model decoded
step by step gives what its scan gives. One program per (channel block, batch row).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from eventssm.discretization import as_discretization

from .utils import LOG2E, RATE_COUPLINGS, discretize, new_empty, sigmoid, softplus, step_sizes

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
    b_tau = tl.load(tau + i_b).to(tl.float32) if COUPLING != 0 else 0.0
    b_rate = tl.load(rate + o_d, mask=m_d, other=0.0).to(tl.float32) if (COUPLING == 1 or COUPLING == 3) else 0.0
    b_dtA, b_dtB = step_sizes(b_dl, b_tau, b_rate, COUPLING)
    b_A = tl.load(A + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    b_A2 = b_A * LOG2E
    b_dA, b_kB = discretize(b_dtA[None, :], b_dtB[None, :], b_A, b_A2, SCHEME)
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


def selective_state_update_triton(
    state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
    integration_timesteps=None, rate=None, discretization="mamba",
):
    """One step of the scan, updating ``state`` in place; same contract as
    :func:`eventssm.selective_state_update_ref`.

    Shapes: ``state: (b, D, N)`` float32 (contiguous; updated in place); ``x, dt, z: (b, D)``;
    ``B, C: (b, N)`` or ``(b, G, N)``; ``A: (D, N)``; ``D, dt_bias, rate: (D,)``;
    ``integration_timesteps: (b,)``. Returns ``y (b, D)`` in ``x``'s dtype.

    A float64 state (used by tests) is handed to the reference step.
    """
    disc = as_discretization(discretization)
    if state.dtype != torch.float32 or not state.is_contiguous():
        from eventssm.reference import selective_state_update_ref

        return selective_state_update_ref(
            state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus,
            integration_timesteps=integration_timesteps, rate=rate, discretization=disc)
    b, Dm, N = state.shape
    if B.dim() == 2:
        B, C = B[:, None], C[:, None]
    G = B.shape[1]
    tau = integration_timesteps if disc.event_mode(integration_timesteps) else None
    coupling = disc.coupling_id if tau is not None else 0
    if coupling in RATE_COUPLINGS and rate is None:
        raise ValueError(f"rate (D,) is required by {disc!r} when integration_timesteps are given")
    c = lambda t: None if t is None else t.contiguous()
    y = new_empty(x.shape, like=x)
    BD = min(64, triton.next_power_of_2(Dm))
    selective_state_update_kernel[(triton.cdiv(Dm, BD), b)](
        state, c(x), c(dt), c(dt_bias), c(A), c(B), c(C), c(D), c(z),
        c(tau) if coupling else None, c(rate) if coupling in RATE_COUPLINGS else None, y,
        D=Dm, N=N, G=G, BN=triton.next_power_of_2(N), BD=BD,
        SCHEME=disc.scheme_id, COUPLING=coupling, SOFTPLUS=bool(dt_softplus),
        HAS_BIAS=dt_bias is not None, HAS_D=D is not None, HAS_Z=z is not None,
        num_warps=2,
    )
    return y
