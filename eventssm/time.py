"""Absolute timestamps -> integration timesteps (the gaps τ that drive event-mode discretizations).

Shapes: batch ``B``, steps ``L``.

Rules (DESIGN §3):

* gaps are backward differences ``τ[l] = t[l] - t[l-1]`` computed in float64, so that large
  absolute times (epoch seconds, nanoseconds) do not lose the small differences between them;
* ``τ[0] = 0`` unless a state is carried in from an earlier chunk, then ``τ[0] = t[0] - t_last``;
* ``time_scale`` multiplies the gaps (e.g. ``1/3600`` turns seconds into hours); it is a configured
  number, never a guess;
* padding (positions ``>= lengths[b]``) gets ``τ = 0`` so that the state passes through unchanged;
* sequences packed in one row (``cu_seqlens``) each start at ``τ = 0``: one gaps implementation
  (:func:`timesteps_from_timestamps` for padded rows, :func:`packed_timesteps` for packed ones);
* decreasing timestamps, NaN/Inf and shape mismatches raise ``ValueError`` naming the argument and
  the first bad position.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch

from eventssm.checks import ValueChecks

__all__ = [
    "check_time_scale",
    "timesteps_from_timestamps",
    "packed_timesteps",
    "check_timesteps",
    "add_timesteps_check",
    "timestamp_gaps",
    "int_difference",
    "length_mask",
    "step_mask",
    "real_mask",
]


def check_time_scale(time_scale, name: str = "time_scale") -> float:
    """``time_scale`` as a Python float: any real number (int, float, a numpy or 0-d tensor
    scalar) that is positive and finite.

    Raises:
        ValueError: not a real number (a string, a bool, None, a tensor of several values), or
        zero, negative, NaN or infinite; the message names ``name``.
    """
    if isinstance(time_scale, torch.Tensor) and time_scale.numel() == 1 and not (
            time_scale.dtype == torch.bool or time_scale.is_complex()):
        time_scale = time_scale.item()
    if isinstance(time_scale, (bool, str, bytes)) or not isinstance(time_scale, numbers.Real):
        raise ValueError(f"{name} must be a positive finite real number (the factor applied to every "
                        f"gap), got {type(time_scale).__name__} {time_scale!r}")
    value = float(time_scale)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number (the factor applied to every gap), "
                         f"got {time_scale!r}")
    return value


def _first_bad(bad: torch.Tensor) -> tuple[int, ...]:
    """Index tuple of the first True element of ``bad`` (row-major)."""
    flat = int(torch.nonzero(bad.reshape(-1), as_tuple=False)[0, 0])
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), bad.shape))


def _as_int64(t: torch.Tensor, name: str, checks: ValueChecks) -> torch.Tensor:
    """Integer times as int64 (exact for every integer dtype torch has; uint64 beyond int64's
    range is refused by a check added to ``checks`` rather than wrapped around)."""
    if t.dtype == torch.int64:
        return t
    if t.dtype == torch.uint64:
        s = t.view(torch.int64)  # the same bits; negative exactly where the value is >= 2^63

        def explain() -> None:
            if s.numel() and bool((s < 0).any()):
                raise ValueError(f"{name}: uint64 times of 2^63 or more are not supported; "
                                 "subtract an origin (e.g. the first time) first")

        checks.add(f"{name} below 2^63", lambda: (s < 0).any(), explain)
        return s
    return t.to(torch.int64)


def int_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a - b`` of int64 tensors as float64, rounded once and never wrapped around.

    Each time is split as ``hi·2^32 + lo`` (``lo`` in ``[0, 2^32)``): the differences of the
    halves fit in 33 bits, ``(hi_a - hi_b)·2^32`` is exact in float64, and adding the low
    difference rounds once, so the sign (non-decreasing check) is exact and a gap below 2^53 is
    exact."""
    lo = 0xFFFFFFFF
    return ((a >> 32) - (b >> 32)).to(torch.float64) * 4294967296.0 + ((a & lo) - (b & lo)).to(torch.float64)


def _gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a - b`` as float64 for times ``a`` and ``b`` of any real dtype.

    Both integer: :func:`int_difference`. Integer ``a`` and a float ``b`` (a float ``last_time``
    before integer times): ``b`` is split into its integer part (exact) and its fraction, so
    that neither the fraction nor the digits of a large time are lost."""
    if not a.dtype.is_floating_point and not b.dtype.is_floating_point:
        return int_difference(a, b.to(torch.int64))
    if not a.dtype.is_floating_point:  # integer times, float b: floor(b) exactly, then its fraction
        bf = b.to(torch.float64)
        whole = torch.floor(bf)
        beyond = whole.abs() >= 2.0**63  # beyond int64: halves of a, two roundings
        lo = 0xFFFFFFFF
        far = ((a >> 32).to(torch.float64) * 4294967296.0 - bf) + (a & lo).to(torch.float64)
        near = int_difference(a, torch.where(beyond, 0.0, whole).to(torch.int64)) - (bf - whole)
        return torch.where(beyond, far, near)
    return a.to(torch.float64) - b.to(torch.float64)


def _last_time(last_time, batch: int, device, checks: ValueChecks) -> torch.Tensor:
    """``last_time`` as a ``(batch,)`` real tensor in its own dtype (integers widened to int64);
    its values (finite, below 2^63) are checked by ``checks``."""
    lt = torch.as_tensor(last_time, device=device)
    if lt.dtype == torch.bool or lt.is_complex():
        raise ValueError(f"last_time must be a real float or integer tensor, got {lt.dtype}")
    if lt.dim() == 0:
        lt = lt.expand(batch)
    if lt.shape != (batch,):
        raise ValueError(f"last_time must have shape ({batch},), got {tuple(lt.shape)}")
    if lt.dtype.is_floating_point:
        def explain() -> None:
            if not bool(torch.isfinite(lt).all()):
                raise ValueError(f"last_time must be finite, got {lt.tolist()}")

        checks.add("last_time", lambda: ~torch.isfinite(lt).all(), explain)
        return lt.to(torch.float64)
    return _as_int64(lt, "last_time", checks)


def _as_lengths(lengths, name: str) -> torch.Tensor:
    """``lengths`` as a ``(B,)`` integer tensor (shape and dtype: known on the host)."""
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1:
        raise ValueError(f"{name} must have shape (batch,), got {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {lengths.dtype}")
    return lengths


def _lengths_outside(lengths: torch.Tensor, L: int) -> torch.Tensor:
    if not lengths.numel():
        return torch.zeros((), dtype=torch.bool, device=lengths.device)
    return (lengths.min() < 0) | (lengths.max() > L)


def _check_lengths(lengths: torch.Tensor, L: int, name: str) -> None:
    if bool(_lengths_outside(lengths, L)):
        bad = int(torch.nonzero((lengths < 0) | (lengths > L))[0, 0])
        raise ValueError(
            f"{name}[{bad}] = {int(lengths[bad])} is outside [0, {L}] (sequence length {L})"
        )


def step_mask(lengths, L: int, checks: ValueChecks, name: str = "lengths") -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, L)`` bool mask of real steps. Shape and dtype are checked now;
    the check that every length lies in ``[0, L]`` goes to ``checks`` (see
    :mod:`eventssm.checks`)."""
    lengths = _as_lengths(lengths, name)
    checks.add(name, lambda: _lengths_outside(lengths, L), lambda: _check_lengths(lengths, L, name))
    return real_mask(lengths, L)


def real_mask(lengths: torch.Tensor, L: int) -> torch.Tensor:
    """``(B,)`` integer lengths, checked already -> ``(B, L)`` bool mask of real steps."""
    return torch.arange(L, device=lengths.device)[None, :] < lengths[:, None]


def length_mask(lengths: torch.Tensor, L: int, name: str = "lengths") -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, L)`` bool mask of real steps: the public door, which validates
    the lengths (shape, dtype, values in ``[0, L]``: one host sync). Lengths checked already go
    to :func:`real_mask`."""
    return ValueChecks.at_door(True, lambda checks: step_mask(lengths, L, checks, name))


def _timesteps_bad(tau: torch.Tensor) -> torch.Tensor:
    if not tau.dtype.is_floating_point:  # integer gaps are never NaN or Inf
        return torch.zeros((), dtype=torch.bool, device=tau.device)
    return (~torch.isfinite(tau) | (tau < 0)).any()


def check_timesteps(tau: torch.Tensor, name: str = "integration_timesteps") -> None:
    """Raise ``ValueError`` if ``tau`` holds NaN, Inf or negative values (naming the position)."""
    # One host sync for both checks (each bool() waits for the device: on CUDA a second one
    # showed up as a visible share of a scan call).
    if not bool(_timesteps_bad(tau)):
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


def add_timesteps_check(checks: ValueChecks, tau: torch.Tensor,
                        name: str = "integration_timesteps") -> None:
    """Add :func:`check_timesteps` of ``tau`` to ``checks``."""
    checks.add(name, lambda: _timesteps_bad(tau), lambda: check_timesteps(tau, name))


def _sequence_starts(cu_seqlens: torch.Tensor, T: int) -> torch.Tensor:
    """``(T,)`` bool: True at the first step of each non-empty sequence of a packed row."""
    first = torch.zeros(T + 1, dtype=torch.bool, device=cu_seqlens.device)
    # an empty sequence's start is the next one's (or T); clamped because the door checks the
    # values of cu_seqlens after the gaps are formed, and a bad one must reach that check
    first[cu_seqlens[:-1].long().clamp(0, T)] = True
    return first[:T]


def _where(pos: tuple[int, int], *, unbatched: bool, packed: bool) -> str:
    """The step at index ``pos = (b, l)`` of the batched times as an error names it: in the
    caller's own indexing (``position (l,)`` for unbatched times) or along a packed row."""
    if packed:
        return f"packed position {pos[1]}"
    return f"position {pos[1:] if unbatched else pos}"


def _check_finite_times(t, real, name: str, where) -> None:
    """Float times must be finite at real steps (padding, outside ``real``, may hold anything)."""
    finite = torch.isfinite(t) if real is None else (torch.isfinite(t) | ~real)
    if not bool(finite.all()):
        pos = _first_bad(~finite)
        raise ValueError(f"{name} must be finite; got {t[pos].item()} at {where(pos)}")


def _check_no_decrease(negative, t, name: str, where, cu_seqlens) -> None:
    if not bool(negative.any()):
        return
    pos = _first_bad(negative)
    b, l = pos
    if l == 0:
        raise ValueError(f"{name} at {where(pos)} is earlier than last_time: timestamps must not "
                         "decrease")
    times = f"({t[b, l - 1].item()} -> {t[b, l].item()})"
    if cu_seqlens is None:
        raise ValueError(f"{name} must be non-decreasing; decreases at {where(pos)} {times}")
    seq = int((cu_seqlens[1:] <= l).sum())  # the sequences that end at or before step l
    raise ValueError(f"{name} must be non-decreasing within each packed sequence; sequence {seq} "
                     f"decreases at {where(pos)} {times}")


def _check_finite_gaps(gaps, name: str, where, time_scale: float) -> None:
    """Finite times can still be too far apart for float64 (or for the unit ``time_scale``)."""
    if bool(torch.isfinite(gaps).all()):
        return
    pos = _first_bad(~torch.isfinite(gaps))
    raise ValueError(
        f"{name}: the gap at {where(pos)} overflows float64 (times "
        f"{'from last_time ' if pos[1] == 0 else ''}too far apart, or time_scale {time_scale!r} too "
        "large); subtract an origin or use a larger time unit")


def _times_bad(t, real, negative, gaps) -> torch.Tensor:
    bad = negative.any() | ~torch.isfinite(gaps).all()
    if t.dtype.is_floating_point:
        bad = bad | ~(torch.isfinite(t) if real is None else torch.isfinite(t) | ~real).all()
    return bad


def _check_times(t, real, negative, gaps, *, name: str, where, cu_seqlens, time_scale: float) -> None:
    """Raise for NaN/Inf times at real steps, times that decrease (``negative``: where the
    unscaled gaps are below 0) or scaled gaps that overflow, in this order, naming the first bad
    position. One host read when all is well (each read waits for the device)."""
    if not bool(_times_bad(t, real, negative, gaps)):
        return
    if t.dtype.is_floating_point:
        _check_finite_times(t, real, name, where)
    _check_no_decrease(negative, t, name, where, cu_seqlens)
    _check_finite_gaps(gaps, name, where, time_scale)


def _real_steps(lengths, t: torch.Tensor, name: str, checks: ValueChecks) -> torch.Tensor:
    """``(B, L)`` mask of the real steps of right-padded times ``t (B, L)`` of ``lengths``."""
    lengths = torch.as_tensor(lengths, device=t.device)
    if lengths.dim() == 0:
        lengths = lengths[None]
    if lengths.shape[0] != t.shape[0]:
        raise ValueError(f"lengths has {lengths.shape[0]} entries but {name} has batch {t.shape[0]}")
    return step_mask(lengths, t.shape[1], checks)


def timestamp_gaps(timestamps, *, checks: ValueChecks, time_scale, last_time=None, lengths=None,
                   cu_seqlens=None, name: str = "timestamps") -> torch.Tensor:
    """The one timestamps -> gaps implementation: of right-padded rows
    (:func:`timesteps_from_timestamps`) or of the sequences packed in one row
    (:func:`packed_timesteps`), and of the model doors. The two differ only in where a gap is
    reset to 0: at padding (``lengths``), or at each sequence's first step (``cu_seqlens``),
    where the packed row's times may drop (each sequence has its own clock).

    Shapes and dtypes are checked now; the values (lengths in range, finite times that do not
    decrease, gaps that fit float64) are checked by ``checks``, which the caller runs."""
    if not isinstance(timestamps, torch.Tensor):
        timestamps = torch.as_tensor(timestamps)
    if timestamps.dtype == torch.bool or timestamps.is_complex():
        raise ValueError(f"{name} must be a real float or integer tensor, got {timestamps.dtype}")
    packed = cu_seqlens is not None
    if packed and (timestamps.dim() != 2 or timestamps.shape[0] != 1):
        raise ValueError(f"{name} of a packed batch must have shape (1, T), got "
                         f"{tuple(timestamps.shape)}")
    if timestamps.dim() not in (1, 2):
        raise ValueError(f"{name} must have shape (batch, L) or (L,), got {tuple(timestamps.shape)}")
    time_scale = check_time_scale(time_scale)
    unbatched = timestamps.dim() == 1
    where = functools.partial(_where, unbatched=unbatched, packed=packed)
    t = timestamps[None] if unbatched else timestamps
    real = None if lengths is None else _real_steps(lengths, t, name, checks)
    # Integer times: difference in integers (exact), then float64. Narrow integer types are
    # widened first: a uint8 difference wraps around (3 - 250 = 9) and an int16 one overflows
    # into a false "decreasing" error; int64 differences are split in halves (``int_difference``)
    # so that times near the ends of the range (a gap beyond 2^63) do not wrap around either.
    t = t.to(torch.float64) if t.dtype.is_floating_point else _as_int64(t, name, checks)
    gaps = torch.zeros_like(t, dtype=torch.float64)
    if t.shape[1] > 1:
        gaps[:, 1:] = _gap(t[:, 1:], t[:, :-1])
    if last_time is not None:
        gaps[:, 0] = _gap(t[:, 0], _last_time(last_time, t.shape[0], t.device, checks))
    if packed:
        gaps = gaps.masked_fill(_sequence_starts(cu_seqlens.to(t.device), t.shape[1])[None], 0.0)
    elif real is not None:
        gaps = gaps.masked_fill(~real, 0.0)
    negative = gaps < 0  # before scaling: a tiny negative gap times a small unit rounds to -0
    gaps = gaps * time_scale if time_scale != 1 else gaps
    checks.add(name, lambda: _times_bad(t, real, negative, gaps),
               lambda: _check_times(t, real, negative, gaps, name=name, where=where,
                                    cu_seqlens=cu_seqlens, time_scale=time_scale))
    return gaps[0] if unbatched else gaps


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
            difference is taken in integers first, then rounded once to float64).
        time_scale: positive finite factor applied to every gap (unit conversion).
        last_time: ``(B,)`` time of the last step already absorbed into a carried state; when
            given, ``τ[0] = t[0] - last_time`` instead of 0. Keep it in the timestamps' dtype
            (what the cache does): integer times then give an exact first gap. A float
            ``last_time`` before integer times keeps its fraction.
        lengths: ``(B,)`` real steps per sequence; gaps at padding are set to 0 (and padding may
            hold anything, it is not validated).
        name: argument name used in error messages.
        check_values: check the values (finite times that do not decrease, lengths in
            ``[0, L]``): one host sync. ``False`` only for times validated already, e.g. inside a
            CUDA-graph-captured training step.

    Returns:
        float64 tensor of gaps, same shape as ``timestamps``.

    Raises:
        ValueError: non-tensor or wrong-rank input, NaN/Inf times, decreasing times (at the first
        bad position), a non-positive or non-finite ``time_scale``.
    """
    return ValueChecks.at_door(check_values, lambda checks: timestamp_gaps(
        timestamps, checks=checks, time_scale=time_scale, last_time=last_time, lengths=lengths,
        name=name))


def packed_timesteps(timestamps: torch.Tensor, cu_seqlens: torch.Tensor, *,
                     time_scale: float = 1.0, name: str = "timestamps",
                     check_values: bool = True) -> torch.Tensor:
    """Packed absolute times ``(1, T)`` (or ``(T,)``) -> float64 gaps ``(1, T)``.

    ``cu_seqlens (n + 1,)``: the cumulative lengths of the ``n`` sequences laid one after another
    along the row (see :mod:`eventssm.packing`), trusted here (the model's door checks them with
    :func:`eventssm.packing.check_cu_seqlens`; the collate builds them). Backward differences
    within each sequence, formed as :func:`timesteps_from_timestamps` forms them (float64,
    integer times differenced in int64 first), 0 at each sequence's first step, times
    ``time_scale``. Times may drop from one sequence to the next (each has its own clock);
    within a sequence they must not decrease.

    Raises:
        ValueError: a shape that is not ``(1, T)``, NaN/Inf times, times that decrease within a
        sequence (naming the sequence and the packed position), a gap that overflows float64.
    """
    t = torch.as_tensor(timestamps, device=cu_seqlens.device)
    return ValueChecks.at_door(check_values, lambda checks: timestamp_gaps(
        t[None] if t.dim() == 1 else t, checks=checks, cu_seqlens=cu_seqlens,
        time_scale=time_scale, name=name))
