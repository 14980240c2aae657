"""Plain-PyTorch selective scan and single step: the oracle every fast path is tested against.

Short and obviously right: one Python loop over time, autograd for gradients, any float dtype.
Arithmetic runs in float32, or float64 when any input is float64 (so tests can compare fast
float32 paths against a float64 oracle); outputs are cast back to ``u``'s dtype.

Legend: batch ``b``, step ``l`` (``L`` steps), channel ``d`` (``D``), state ``n`` (``N``),
groups ``G`` of channels sharing B/C (``D % G == 0``; channel ``d`` reads group ``d // (D/G)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from eventssm.discretization import Discretization, as_discretization

__all__ = ["selective_scan_ref", "selective_state_update_ref", "compute_dtype"]


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """float64 if any given tensor is float64, else float32 (DESIGN §2: fp32 arithmetic)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _per_channel(M: Tensor, D: int, grouped: bool) -> Tensor:
    """B or C at one step: ``(b, N)`` -> ``(b, 1, N)``; grouped ``(b, G, N)`` -> ``(b, D, N)``."""
    if not grouped:
        return M[:, None, :]
    G = M.shape[1]
    return M.repeat_interleave(D // G, dim=1)


def _scan_one(
    u, delta, A, B, C, D, z, tau, rate, disc: Discretization, h0, grouped: bool
) -> tuple[Tensor, Tensor]:
    """Scan one batch of equal-length sequences. Inputs already in the compute dtype.

    u, delta, z: (b, L, D); B, C: (b, L, N) or (b, L, G, N); tau: (b, L) or None; h0: (b, D, N).
    Returns y (b, L, D) and h[L-1] (b, D, N).
    """
    b, L, Dm = u.shape
    h = h0
    ys = []
    for l in range(L):
        tau_l = None if tau is None else tau[:, l]
        dA, kB = disc.coefficients(delta[:, l], tau_l, rate, A)  # (b, D, N), broadcastable
        Bl = _per_channel(B[:, l], Dm, grouped)  # (b, 1 or D, N)
        Cl = _per_channel(C[:, l], Dm, grouped)
        h = dA * h + kB * Bl * u[:, l, :, None]  # (b, D, N)
        ys.append((h * Cl).sum(-1))  # (b, D)
    y = torch.stack(ys, dim=1) if ys else u.new_zeros(b, 0, Dm)
    if D is not None:
        y = y + u * D
    if z is not None:
        y = y * F.silu(z)
    return y, h


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    integration_timesteps: Tensor | None = None,
    rate: Tensor | None = None,
    discretization: Discretization | str = "mamba",
    initial_state: Tensor | None = None,
    return_last_state: bool = False,
    cu_seqlens: Tensor | None = None,
):
    """Reference selective scan (same signature and semantics as :func:`eventssm.selective_scan`).

    Shapes: ``u, delta, z: (b, L, D)``; ``B, C: (b, L, N)`` or ``(b, L, G, N)``; ``A: (D, N)``;
    ``D, delta_bias, rate: (D,)``; ``integration_timesteps: (b, L)``; ``initial_state:
    (b, D, N)`` (or ``(n_seq, D, N)`` with ``cu_seqlens``); ``cu_seqlens: (n_seq + 1,)`` with
    ``b == 1``. Inputs are not validated here (``selective_scan`` does that).

    Returns ``y (b, L, D)`` in ``u``'s dtype, and with ``return_last_state`` also the last state
    ``(b, D, N)`` (``(n_seq, D, N)`` with ``cu_seqlens``) in float32 (float64 for float64 inputs).
    """
    disc = as_discretization(discretization)
    cdt = compute_dtype(u, delta, A, B, C, integration_timesteps)
    cast = lambda t: None if t is None else t.to(cdt)
    u_, delta_, A_, B_, C_, D_, z_ = map(cast, (u, delta, A, B, C, D, z))
    tau = cast(integration_timesteps)
    rate_ = cast(rate)
    if delta_bias is not None:
        delta_ = delta_ + delta_bias.to(cdt)
    if delta_softplus:
        delta_ = F.softplus(delta_)
    if not disc.event_mode(tau):
        tau = None
    grouped = B_.dim() == 4
    Dm, N = A_.shape

    if cu_seqlens is None:
        h0 = u_.new_zeros(u_.shape[0], Dm, N) if initial_state is None else initial_state.to(cdt)
        y, h = _scan_one(u_, delta_, A_, B_, C_, D_, z_, tau, rate_, disc, h0, grouped)
    else:
        # Packed variable-length input (b == 1): each segment starts from its own initial state.
        bounds = [int(x) for x in cu_seqlens.tolist()]
        ys, hs = [], []
        for i, (bos, eos) in enumerate(zip(bounds[:-1], bounds[1:])):
            sl = lambda t, bos=bos, eos=eos: None if t is None else t[:, bos:eos]
            h0 = u_.new_zeros(1, Dm, N) if initial_state is None else initial_state[i : i + 1].to(cdt)
            y_i, h_i = _scan_one(
                sl(u_), sl(delta_), A_, sl(B_), sl(C_), D_, sl(z_), sl(tau), rate_, disc, h0, grouped
            )
            ys.append(y_i)
            hs.append(h_i)
        y = torch.cat(ys, dim=1)
        h = torch.cat(hs, dim=0)
    y = y.to(u.dtype)
    return (y, h) if return_last_state else y


def selective_state_update_ref(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    integration_timesteps: Tensor | None = None,
    rate: Tensor | None = None,
    discretization: Discretization | str = "mamba",
) -> Tensor:
    """One recurrence step, updating ``state`` in place (the decode path of ``Mamba.step``).

    Shapes: ``state: (b, D, N)`` (float32 or float64); ``x, dt, z: (b, D)``; ``B, C: (b, N)`` or
    ``(b, G, N)``; ``A: (D, N)``; ``integration_timesteps: (b,)``. Returns ``y (b, D)`` in
    ``x``'s dtype. Same formulas as one step of :func:`selective_scan_ref`.
    """
    disc = as_discretization(discretization)
    cdt = state.dtype
    dt_ = dt.to(cdt)
    if dt_bias is not None:
        dt_ = dt_ + dt_bias.to(cdt)
    if dt_softplus:
        dt_ = F.softplus(dt_)
    tau = None if integration_timesteps is None else integration_timesteps.to(cdt)
    if not disc.event_mode(tau):
        tau = None
    rate_ = None if rate is None else rate.to(cdt)
    Dm = A.shape[0]
    grouped = B.dim() == 3
    dA, kB = disc.coefficients(dt_, tau, rate_, A.to(cdt))
    Bx = _per_channel(B.to(cdt), Dm, grouped)
    Cx = _per_channel(C.to(cdt), Dm, grouped)
    new_state = dA * state + kB * Bx * x.to(cdt)[..., None]
    state.copy_(new_state)
    y = (new_state * Cx).sum(-1)
    if D is not None:
        y = y + x.to(cdt) * D.to(cdt)
    if z is not None:
        y = y * F.silu(z.to(cdt))
    return y.to(x.dtype)
