"""``selective_scan``: the one public op. Validates its inputs, then runs the backend's scan.

Backends (picked by :mod:`eventssm.dispatch`, the one place that decides):

* ``"triton"``: fused Triton kernels (forward + backward) from :mod:`eventssm.kernels`; CUDA tensors.
* ``"torch"``: the chunked pure-PyTorch path of :mod:`eventssm.chunked` (fast on the CPU).
* ``"reference"``: the per-step loop of :mod:`eventssm.reference` (the oracle; slow).
* ``"auto"`` (default): Triton for CUDA tensors when Triton is importable, ``"torch"`` otherwise.

Validation happens here, once: the backends' functions trust their inputs, and the modules
(``Mamba`` and the models) validate their own inputs at their door and call the backend's scan
through :func:`eventssm.dispatch.path` directly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eventssm.checks import ValueChecks
from eventssm.discretization import Discretization, as_discretization
from eventssm.dispatch import BACKENDS, path, triton_available
from eventssm.time import add_timesteps_check

__all__ = ["selective_scan", "triton_available", "BACKENDS"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _shape(name: str, t: Tensor, expected: tuple, got_note: str = "") -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(t.shape)}{got_note}")


def _validate(u, delta, A, B, C, D, z, delta_bias, integration_timesteps, rate, disc, initial_state,
              cu_seqlens, checks: ValueChecks):
    """Check types, dtypes, devices and shapes (and ``cu_seqlens``, which the CPU path reads
    anyway); the checks of the gaps' and the rate's values go to ``checks``."""
    tensors = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias,
                   integration_timesteps=integration_timesteps, rate=rate,
                   initial_state=initial_state)
    for name in ("u", "delta", "A", "B", "C"):  # required: a None fails here, not deep inside
        if not isinstance(tensors[name], Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(tensors[name]).__name__}")
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.dtype not in _FLOATS:
            raise ValueError(f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got {t.dtype}")
        if t.device != u.device:
            raise ValueError(f"{name} is on {t.device} but u is on {u.device}: move all inputs to one device")
    if u.dim() != 3:
        raise ValueError(f"u must have shape (batch, L, D), got {tuple(u.shape)}")
    b, L, Dm = u.shape
    _shape("delta", delta, (b, L, Dm))
    if z is not None:
        _shape("z", z, (b, L, Dm))
    if A.dim() != 2 or A.shape[0] != Dm:
        raise ValueError(f"A must have shape (D, N) = ({Dm}, N), got {tuple(A.shape)}")
    N = A.shape[1]
    if B.dim() == 3:
        _shape("B", B, (b, L, N))
        _shape("C", C, (b, L, N))
    elif B.dim() == 4:
        G = B.shape[2]
        _shape("B", B, (b, L, G, N))
        _shape("C", C, (b, L, G, N))
        if G == 0 or Dm % G != 0:
            raise ValueError(f"B/C have {G} groups, which must divide D = {Dm}")
    else:
        raise ValueError(f"B must have shape (batch, L, N) or (batch, L, G, N), got {tuple(B.shape)}")
    if C.dim() != B.dim():
        raise ValueError(f"C must have the same layout as B {tuple(B.shape)}, got {tuple(C.shape)}")
    for name in ("D", "delta_bias", "rate"):
        if tensors[name] is not None:
            _shape(name, tensors[name], (Dm,))
    if integration_timesteps is not None:
        _shape("integration_timesteps", integration_timesteps, (b, L))
        add_timesteps_check(checks, integration_timesteps, "integration_timesteps")
    if disc.uses_rate and integration_timesteps is not None and rate is None:
        raise ValueError(
            f"rate (D,) is required by {disc!r} when integration_timesteps are given "
            "(the positive per-channel rate r, e.g. softplus of a learned parameter)"
        )
    if rate is not None:
        checks.add("rate", lambda: _rate_bad(rate), lambda: _check_rate(rate))
    n_seq = b
    if cu_seqlens is not None:
        if not isinstance(cu_seqlens, Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise ValueError("cu_seqlens must be a 1-D integer tensor (n_seq + 1,) of cumulative lengths")
        if cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"cu_seqlens must be int32 or int64, got {cu_seqlens.dtype}")
        if b != 1:
            raise ValueError(
                f"cu_seqlens requires batch == 1 (sequences packed along L), got batch {b}; "
                "flatten the batch with u.reshape(1, -1, D) and pass the cumulative lengths"
            )
        cs = cu_seqlens.tolist()
        if cs[0] != 0 or cs[-1] != L or any(a > c for a, c in zip(cs[:-1], cs[1:])):
            raise ValueError(f"cu_seqlens must start at 0, be non-decreasing and end at L = {L}, got {cs}")
        n_seq = len(cs) - 1
    if initial_state is not None:
        _shape("initial_state", initial_state, (n_seq, Dm, N),
               " (one state per packed sequence)" if cu_seqlens is not None else "")


def _rate_bad(rate: Tensor) -> Tensor:
    return (rate <= 0).any() | ~torch.isfinite(rate).all()


def _check_rate(rate: Tensor) -> None:
    if bool(_rate_bad(rate)):
        raise ValueError("rate must be positive and finite (pass the activated rate, e.g. softplus(ρ))")


def selective_scan(
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
    backend: str = "auto",
    check_values: bool = True,
):
    r"""Selective scan with per-step time deltas (DESIGN §2-3).

    .. math::
        Δ = \mathrm{softplus}(δ + b),\ (dt_A, dt_B) = \mathrm{coupling}(Δ, τ),\
        h_l = \bar A_l ⊙ h_{l-1} + \bar B_l u_l,\ y_l = C_l h_l + D ⊙ u_l\ (⊙\,\mathrm{silu}(z_l))

    Args:
        u: ``(batch, L, D)`` input.
        delta: ``(batch, L, D)`` raw step δ.
        A: ``(D, N)`` real (negative) state matrix diagonal.
        B, C: ``(batch, L, N)``, or ``(batch, L, G, N)`` with channel groups (``D % G == 0``).
        D: ``(D,)`` skip connection.
        z: ``(batch, L, D)`` gate; the output is multiplied by ``silu(z)``.
        delta_bias: ``(D,)`` added to δ before the softplus.
        delta_softplus: apply softplus to ``δ + delta_bias``.
        integration_timesteps: ``(batch, L)`` gaps τ ≥ 0 (finite).
        rate: ``(D,)`` positive per-channel rate r (already activated), for the asymmetric coupling.
        discretization: a :class:`~eventssm.Discretization` or a scheme string (lrnnx style:
            asymmetric coupling with that scheme).
        initial_state: ``(batch, D, N)`` (``(n_seq, D, N)`` with ``cu_seqlens``), default zeros.
        return_last_state: also return ``h[L-1]`` (differentiable).
        cu_seqlens: ``(n_seq + 1,)`` int32/int64 cumulative lengths of sequences packed along L
            (requires ``batch == 1``); each sequence starts from its own initial state.
        backend: ``"auto" | "triton" | "torch" | "reference"``.
        check_values: check that ``integration_timesteps`` are finite and ``>= 0`` and ``rate``
            positive and finite. The checks read one flag back from the device (a host sync that
            stalls the launch queue and splits a ``torch.compile`` graph). ``False`` skips them:
            for values validated already, or inside a CUDA-graph-captured step. Shapes, dtypes
            and devices are always checked.

    Returns:
        ``y (batch, L, D)`` in ``u``'s dtype; with ``return_last_state`` also the last state
        ``(batch, D, N)`` (``(n_seq, D, N)`` when packed) in float32 (float64 for float64 input).

    Raises:
        ValueError: a required tensor that is None, an argument with a wrong type, shape, dtype
        or device, NaN/Inf/negative timesteps,
        a missing rate, ``cu_seqlens`` with batch > 1, an unknown backend, or ``backend="triton"``
        where Triton is unavailable or the tensors are not on CUDA.
    """
    disc = as_discretization(discretization)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    ValueChecks.at_door(check_values, lambda checks: _validate(
        u, delta, A, B, C, D, z, delta_bias, integration_timesteps, rate, disc, initial_state,
        cu_seqlens, checks))
    return path(backend, u.device).scan(
        u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
        integration_timesteps=integration_timesteps, rate=rate, discretization=disc,
        initial_state=initial_state, return_last_state=return_last_state, cu_seqlens=cu_seqlens)
