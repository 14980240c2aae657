"""Validation at the door: the per-step inputs of a model call, checked and converted once.

``Mamba.forward``/``step``, ``MambaBackbone.forward`` and ``EventEncoder.forward`` turn their
``lengths``, ``integration_timesteps`` and ``timestamps`` into one :class:`Steps` with
:func:`validate_steps` (the only place where gaps τ are derived from what the user passed), and
hand it to the layers below, which trust it. The shapes and dtypes are checked here; the value
checks go to the door's :class:`~eventssm.checks.ValueChecks`, which the door runs before the
layers see the steps: one host read per call (a sync, which also splits a ``torch.compile``
graph), not one per input and layer.

Shapes: batch ``B``, steps ``L``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from eventssm.cache import InferenceCache
from eventssm.checks import ValueChecks
from eventssm.time import add_timesteps_check, real_mask, step_mask, timestamp_gaps

__all__ = ["Steps", "validate_steps", "step_column", "tau_dtype", "check_activations", "check_cache",
           "check_count"]


@dataclass(frozen=True)
class Steps:
    """What a model call knows about its steps, validated.

    Attributes:
        tau: ``(B, L)`` integration timesteps in :func:`tau_dtype`, 0 at padding; None when
            neither gaps nor timestamps were given (standard mode).
        lengths: ``(B,)`` integer real steps per right-padded sequence, or None (all real).
        mask: ``(B, L)`` bool, True at real steps; None when ``lengths`` is None.
        last_time: ``(B,)`` time of each sequence's last real step when timestamps were given
            (what a cache carries to the next chunk), in the timestamps' own dtype (int64 for
            integer times, so the next gap is exact; float64 for float times), else None.
        cu_seqlens: ``(n + 1,)`` cumulative lengths of a packed batch (``B == 1``, the ``n``
            sequences one after another along L; see :mod:`eventssm.packing`), else None. Then
            ``lengths`` holds the ``n`` sequence lengths and ``mask`` is None.
    """

    tau: Tensor | None = None
    lengths: Tensor | None = None
    mask: Tensor | None = None
    last_time: Tensor | None = None
    cu_seqlens: Tensor | None = None


def tau_dtype(dtype: torch.dtype) -> torch.dtype:
    """Gaps are formed in float64 and handed to the scan in float32 (its arithmetic), or float64
    for a float64 model so that tests against the float64 oracle stay exact."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _batched(name: str, t, batch: int, L: int, device) -> Tensor:
    t = torch.as_tensor(t, device=device)
    t = t[None] if t.dim() == 1 else t
    if tuple(t.shape) != (batch, L):
        raise ValueError(f"{name} must have shape ({batch}, {L}), got {tuple(t.shape)}")
    return t


def validate_steps(
    batch: int,
    L: int,
    device: torch.device,
    dtype: torch.dtype,
    *,
    checks: ValueChecks,
    integration_timesteps: Tensor | None = None,
    timestamps: Tensor | None = None,
    lengths: Tensor | None = None,
    time_scale: float = 1.0,
    last_time: Tensor | None = None,
) -> Steps:
    """Check and convert the step inputs of a call on ``(batch, L, ·)`` activations.

    Args:
        batch, L, device: of the activations.
        dtype: the activations' dtype (sets :func:`tau_dtype`).
        integration_timesteps: ``(B, L)`` (or ``(L,)`` when ``batch == 1``) gaps τ ≥ 0; any
            value at padding is replaced by 0 before the check.
        timestamps: ``(B, L)`` absolute times (float or integer); gaps are backward differences
            formed in float64 (:func:`~eventssm.time.timesteps_from_timestamps`). Exclusive with
            ``integration_timesteps``.
        lengths: ``(B,)`` real steps per right-padded sequence.
        time_scale: the model's time unit: the one factor applied to every gap, whether formed
            from ``timestamps`` or given as ``integration_timesteps``.
        last_time: ``(B,)`` time of the last step already absorbed (a warm cache): the first
            gap is ``t[0] - last_time`` instead of 0.
        checks: receives the value checks (lengths in ``[0, L]``, times finite and
            non-decreasing, τ finite and ``>= 0``, τ within the scan's dtype), in this order;
            the caller runs them, or skips them for inputs validated already.

    Raises:
        ValueError: both ``integration_timesteps`` and ``timestamps``, a wrong shape or dtype,
        naming the argument.
    """
    if integration_timesteps is not None and timestamps is not None:
        raise ValueError("pass either integration_timesteps or timestamps, not both")
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=device)
        lengths = lengths.reshape(1) if batch == 1 and lengths.dim() == 0 else lengths
        if tuple(lengths.shape) != (batch,):
            raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    tdt = tau_dtype(dtype)
    if timestamps is not None:
        ts = _batched("timestamps", timestamps, batch, L, device)
        # adds the checks of the lengths as well as of the times: the mask below adds none
        tau = timestamp_gaps(ts, checks=checks, time_scale=time_scale, last_time=last_time,
                             lengths=lengths, name="timestamps")
        mask = None if lengths is None else real_mask(lengths, L)
        new_last = _last_times(ts, lengths, last_time, batch, L)
        return Steps(_to_compute(tau, tdt, "timestamps", checks), lengths, mask, new_last)
    mask = None if lengths is None else step_mask(lengths, L, checks)
    if integration_timesteps is None:
        return Steps(None, lengths, mask, None)
    tau = _batched("integration_timesteps", integration_timesteps, batch, L, device)
    if tau.dtype == torch.bool or tau.is_complex():
        raise ValueError(f"integration_timesteps must be a real float or integer tensor, got {tau.dtype}")
    if not tau.dtype.is_floating_point:
        tau = tau.double()
    if time_scale != 1:
        tau = tau * time_scale
    if mask is not None:  # padding may hold anything: zero it, then validate the rest
        tau = tau.masked_fill(~mask, 0.0)
    add_timesteps_check(checks, tau, "integration_timesteps")
    return Steps(_to_compute(tau, tdt, "integration_timesteps", checks), lengths, mask, None)


def step_column(t, name: str, batch: int, device) -> Tensor | None:
    """A one-step input (gap or time per sequence) given as ``(B,)`` or ``(B, 1)`` (a scalar when
    ``B == 1``) as a ``(B, 1)`` tensor; None stays None."""
    if t is None:
        return None
    t = torch.as_tensor(t, device=device)
    if t.dim() == 0 and batch == 1:
        t = t.reshape(1)
    if tuple(t.shape) not in ((batch,), (batch, 1)):
        raise ValueError(f"{name} of one step must have shape ({batch},) or ({batch}, 1) (one value per "
                         f"sequence), got {tuple(t.shape)}")
    return t.reshape(batch, 1)


def _last_times(ts: Tensor, lengths: Tensor | None, last_time, batch: int, L: int) -> Tensor | None:
    """``(B,)`` time of each sequence's last real step, in the timestamps' own dtype (integers
    as int64, floats as float64), so that a cache carrying it gives the next chunk an exact first
    gap: int64 nanoseconds since the epoch do not fit float64's 53 bits. A sequence with no real
    step (length 0, or L = 0) keeps ``last_time`` (None when there is none and L = 0)."""
    ts = ts.to(torch.float64) if ts.dtype.is_floating_point else ts.to(torch.int64)
    prev = None if last_time is None else torch.as_tensor(last_time, device=ts.device).expand(batch)
    if prev is not None:
        prev = prev.to(torch.float64) if prev.dtype.is_floating_point else prev.to(torch.int64)
    if L == 0:
        return prev
    # clamped: lengths are checked at the door after the steps are built, and a bad one must
    # reach that check rather than fault here
    idx = torch.full((batch,), L - 1, device=ts.device) if lengths is None else (lengths - 1).clamp(0, L - 1)
    new = ts.gather(1, idx[:, None].long())[:, 0]
    if lengths is None or prev is None:
        return new
    if prev.dtype != new.dtype and bool((lengths > 0).all()):
        return new  # no empty sequence keeps a time of the other dtype
    if prev.dtype != new.dtype:  # integer and float times mixed: float64 holds both if exact
        exact = lambda t: t.dtype.is_floating_point or not bool((t.abs() > 2**53).any())
        if not (exact(prev) and exact(new)):
            raise ValueError("last_time and timestamps mix integer and float times beyond 2^53, "
                             "where float64 cannot hold both exactly; pass them in one dtype")
        prev, new = prev.to(torch.float64), new.to(torch.float64)
    return torch.where(lengths > 0, new, prev)  # an empty sequence keeps its time


def _to_compute(tau: Tensor, dtype: torch.dtype, name: str, checks: ValueChecks) -> Tensor:
    """τ in the scan's dtype; a gap that is finite in float64 but overflows the compute dtype is
    an error (it would become Inf and silently turn the state into NaN), checked by ``checks``."""
    out = tau.to(dtype)
    if out.dtype != tau.dtype and out.is_floating_point():
        checks.add(f"{name} in {dtype}", lambda: torch.isinf(out).any(),
                   lambda: _check_range(tau, out, dtype, name))
    return out


def _check_range(tau: Tensor, out: Tensor, dtype: torch.dtype, name: str) -> None:
    if bool(torch.isinf(out).any()):
        pos = tuple(int(i) for i in torch.nonzero(torch.isinf(out))[0])
        raise ValueError(
            f"{name}: the gap {tau[pos].item():.3g} at position {pos} exceeds the {dtype} range the "
            f"scan computes in (max {torch.finfo(dtype).max:.3g}); choose a larger time unit "
            "(a smaller time_scale)")


def check_activations(x, name: str, weight: Tensor) -> None:
    """Raise a clear error for activations a layer with parameter ``weight`` cannot take: not a
    tensor, not floating point (integer, bool and complex input would fail deep inside
    ``F.linear``, or lose its imaginary part), another float precision than the parameters
    (outside autocast, which casts on its own) or another device."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating tensor ({weight.dtype}, the parameters' dtype), "
                         f"got {x.dtype}")
    if x.device != weight.device:
        raise ValueError(f"{name} is on {x.device} but the module is on {weight.device}")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(
            f"{name} has dtype {x.dtype} but the module's parameters are {weight.dtype}: cast the "
            f"input (x.to({weight.dtype})) or the module (module.to({x.dtype})), or run under "
            "torch.autocast")


def check_count(value, name: str, allow_none: bool = False, minimum: int = 0) -> None:
    """A count argument (batch size, number of tokens): an int (not a bool) ``>= minimum``."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_cache(cache, batch: int, d_inner: int, d_conv: int, d_state: int, device,
                name: str = "inference_cache") -> None:
    """Raise a clear error for a cache that ``Mamba.forward``/``step`` cannot use: None or not an
    :class:`~eventssm.cache.InferenceCache`, a batch or sizes other than the call's (a cache
    of another block), a non-float state (an integer conv state would truncate) or another
    device."""
    if not isinstance(cache, InferenceCache):
        raise TypeError(f"{name} must be an InferenceCache (from allocate_inference_cache), got "
                        f"{type(cache).__name__}")
    for part, t, shape in (("conv_state", cache.conv_state, (batch, d_inner, d_conv)),
                           ("ssm_state", cache.ssm_state, (batch, d_inner, d_state))):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}.{part} must be a tensor, got {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise ValueError(f"{name}.{part} has shape {tuple(t.shape)} but this call needs {shape} "
                             f"(batch {batch}): allocate a cache for this batch and block")
        if not t.dtype.is_floating_point:
            raise ValueError(f"{name}.{part} must be floating point, got {t.dtype}")
        if t.device != device:
            raise ValueError(f"{name}.{part} is on {t.device} but the input is on {device}")
    if cache.ssm_state.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name}.ssm_state must be float32 or float64 (the scan's arithmetic), "
                         f"got {cache.ssm_state.dtype}")
