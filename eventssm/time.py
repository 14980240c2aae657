"""Absolute timestamps -> integration timesteps (the gaps τ that drive event-mode discretizations).

Shapes: batch ``B``, steps ``L``.

Rules (DESIGN §3):

* gaps are backward differences ``τ[l] = t[l] - t[l-1]`` computed in float64, so that large
  absolute times (epoch seconds, nanoseconds) do not lose the small differences between them;
* ``τ[0] = 0`` unless a state is carried in from an earlier chunk, then ``τ[0] = t[0] - t_last``;
* ``time_scale`` multiplies the gaps (e.g. ``1/3600`` turns seconds into hours); it is a configured
  number, never a guess;
* padding (positions ``>= lengths[b]``) gets ``τ = 0`` so that the state passes through unchanged;
* decreasing timestamps, NaN/Inf and shape mismatches raise ``ValueError`` naming the argument and
  the first bad position.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "timesteps_from_timestamps",
    "check_timesteps",
    "length_mask",
]


def _first_bad(bad: torch.Tensor) -> tuple[int, ...]:
    """Index tuple of the first True element of ``bad`` (row-major)."""
    flat = int(torch.nonzero(bad.reshape(-1), as_tuple=False)[0, 0])
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), bad.shape))


def length_mask(lengths: torch.Tensor, L: int, name: str = "lengths",
                check_values: bool = True) -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, L)`` bool mask of real steps; validates the lengths (shape and
    dtype always; values in ``[0, L]`` with ``check_values``, a host sync)."""
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1:
        raise ValueError(f"{name} must have shape (batch,), got {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {lengths.dtype}")
    if check_values and lengths.numel() and bool((lengths.min() < 0) | (lengths.max() > L)):
        bad = int(torch.nonzero((lengths < 0) | (lengths > L))[0, 0])
        raise ValueError(
            f"{name}[{bad}] = {int(lengths[bad])} is outside [0, {L}] (sequence length {L})"
        )
    return torch.arange(L, device=lengths.device)[None, :] < lengths[:, None]


def check_timesteps(tau: torch.Tensor, name: str = "integration_timesteps") -> None:
    """Raise ``ValueError`` if ``tau`` holds NaN, Inf or negative values (naming the position)."""
    if not tau.dtype.is_floating_point:
        return  # integer gaps can only be checked for sign
    # One host sync for both checks (each bool() waits for the device: on CUDA a second one
    # showed up as a visible share of a scan call).
    if not bool((~torch.isfinite(tau) | (tau < 0)).any()):
        return
    bad = ~torch.isfinite(tau)
    if bool(bad.any()):
        pos = _first_bad(bad)
        raise ValueError(f"{name} must be finite; got {tau[pos].item()} at position {pos}")
    neg = tau < 0
    if bool(neg.any()):
        pos = _first_bad(neg)
        raise ValueError(
            f"{name} must be >= 0 (time cannot run backwards); got {tau[pos].item()} at "
            f"position {pos}"
        )


def timesteps_from_timestamps(
    timestamps: torch.Tensor,
    *,
    time_scale: float = 1.0,
    last_time: torch.Tensor | float | None = None,
    lengths: torch.Tensor | None = None,
    name: str = "timestamps",
    check_values: bool = True,
) -> torch.Tensor:
    """Absolute times ``(B, L)`` or ``(L,)`` -> float64 gaps of the same shape.

    Args:
        timestamps: absolute times, float or integer dtype (int64 nanoseconds are fine: the
            difference is taken in integers first, then cast to float64).
        time_scale: positive finite factor applied to every gap (unit conversion).
        last_time: ``(B,)`` time of the last step already absorbed into a carried state; when
            given, ``τ[0] = t[0] - last_time`` instead of 0.
        lengths: ``(B,)`` real steps per sequence; gaps at padding are set to 0 (and padding may
            hold anything, it is not validated).
        name: argument name used in error messages.
        check_values: check the values (finite times that do not decrease, lengths in
            ``[0, L]``): host syncs. ``False`` only for times validated already, e.g. inside a
            CUDA-graph-captured training step.

    Returns:
        float64 tensor of gaps, same shape as ``timestamps``.

    Raises:
        ValueError: non-tensor or wrong-rank input, NaN/Inf times, decreasing times (at the first
        bad position), a non-positive or non-finite ``time_scale``.
    """
    if not isinstance(timestamps, torch.Tensor):
        timestamps = torch.as_tensor(timestamps)
    if timestamps.dtype == torch.bool or timestamps.is_complex():
        raise ValueError(f"{name} must be a real float or integer tensor, got {timestamps.dtype}")
    if timestamps.dim() not in (1, 2):
        raise ValueError(f"{name} must have shape (batch, L) or (L,), got {tuple(timestamps.shape)}")
    if not (isinstance(time_scale, (int, float)) and math.isfinite(time_scale) and time_scale > 0):
        raise ValueError(f"time_scale must be a positive finite number, got {time_scale!r}")
    unbatched = timestamps.dim() == 1
    t = timestamps[None] if unbatched else timestamps
    Bsz, L = t.shape
    mask = None
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=t.device)
        if lengths.dim() == 0:
            lengths = lengths[None]
        if lengths.shape[0] != Bsz:
            raise ValueError(f"lengths has {lengths.shape[0]} entries but {name} has batch {Bsz}")
        mask = length_mask(lengths, L, check_values=check_values)
    if t.dtype.is_floating_point:
        t = t.to(torch.float64)
        finite = torch.isfinite(t) if mask is None else (torch.isfinite(t) | ~mask)
        if check_values and not bool(finite.all()):
            pos = _first_bad(~finite)
            pos = pos[1:] if unbatched else pos
            raise ValueError(f"{name} must be finite; got {timestamps[pos].item()} at position {pos}")
    # Integer times: difference in integers (exact), then float64. Narrow integer types are
    # widened first: a uint8 difference wraps around (3 - 250 = 9) and an int16 one overflows
    # into a false "decreasing" error.
    if not t.dtype.is_floating_point and t.dtype != torch.int64:
        t = t.to(torch.int64)
    gaps = torch.zeros_like(t, dtype=torch.float64)
    if L > 1:
        gaps[:, 1:] = (t[:, 1:] - t[:, :-1]).to(torch.float64)
    if last_time is not None:
        lt = torch.as_tensor(last_time, device=t.device)
        if lt.dim() == 0:
            lt = lt.expand(Bsz)
        if lt.shape != (Bsz,):
            raise ValueError(f"last_time must have shape ({Bsz},), got {tuple(lt.shape)}")
        # t is float64 here unless integer (then the difference is exact in integers)
        gaps[:, 0] = (t[:, 0] - lt.to(t.dtype)).to(torch.float64)
    if mask is not None:
        gaps = gaps.masked_fill(~mask, 0.0)
    neg = gaps < 0
    if check_values and bool(neg.any()):
        pos = _first_bad(neg)
        b, l = pos
        where = f"position {(l,) if unbatched else pos}"
        if l == 0:
            raise ValueError(f"{name} at {where} is earlier than last_time: timestamps must not decrease")
        raise ValueError(
            f"{name} must be non-decreasing; decreases at {where} "
            f"({t[b, l - 1].item()} -> {t[b, l].item()})"
        )
    gaps = gaps * float(time_scale) if time_scale != 1 else gaps
    return gaps[0] if unbatched else gaps
