"""Packed variable-length batches (``cu_seqlens``): validation at the door and segment ops.

A packed batch holds ``n`` sequences one after another along the step axis of a batch of one:
activations ``(1, T, ·)`` with ``T = Σ lengths`` and ``cu_seqlens (n + 1,)`` the cumulative
lengths, sequence ``i`` being steps ``[cu_seqlens[i], cu_seqlens[i + 1])`` (flash-attention's and
fla's contract). Nothing is computed for padding because there is none. The conv and the scan
restart at every sequence start (each sequence from its own zero state), the gaps are formed
within each sequence (``τ = 0`` at its first step), and per-sequence results (pooling, the last
event's features) come from segment ops over the packed axis.

Shapes: sequences ``n``, packed steps ``T``, features ``d``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eventssm.checks import ValueChecks
from eventssm.inputs import Steps, tau_dtype, validate_steps
from eventssm.time import add_timesteps_check, check_time_scale, packed_timesteps, real_mask, timestamp_gaps

__all__ = [
    "check_cu_seqlens",
    "cu_seqlens_from_lengths",
    "seq_index",
    # formed in eventssm.time with the padded batches' gaps (one implementation of both), and
    # importable from here beside the other operations on packed batches
    "packed_timesteps",
    "validate_packed_steps",
    "model_steps",
    "segment_pool",
    "pack_sequences",
    "unpack_sequences",
]


def check_cu_seqlens(cu_seqlens, T: int, batch: int, checks: ValueChecks) -> Tensor:
    """Check ``cu_seqlens`` for activations of ``batch`` rows of ``T`` packed steps.

    Returns it as a tensor (int32 or int64, as given). Its values (starting at 0,
    non-decreasing, ending at ``T``) are checked by ``checks``, which the door runs.

    Raises:
        ValueError: not a 1-D integer tensor of at least 2 entries, or ``batch != 1``.
    """
    if not isinstance(cu_seqlens, Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        got = tuple(cu_seqlens.shape) if isinstance(cu_seqlens, Tensor) else type(cu_seqlens).__name__
        raise ValueError(f"cu_seqlens must be a 1-D integer tensor (n_seq + 1,) of cumulative "
                         f"lengths, got {got}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"cu_seqlens must be int32 or int64, got {cu_seqlens.dtype}")
    if batch != 1:
        raise ValueError(f"cu_seqlens requires batch == 1 (sequences packed along L), got batch "
                         f"{batch}; pack the sequences into one row or pass lengths instead")
    checks.add("cu_seqlens", lambda: _cu_seqlens_bad(cu_seqlens, T),
               lambda: _check_cu_seqlens_values(cu_seqlens, T))
    return cu_seqlens


def _cu_seqlens_bad(cu: Tensor, T: int) -> Tensor:
    return (cu[0] != 0) | (cu[-1] != T) | (cu[1:] < cu[:-1]).any()


def _check_cu_seqlens_values(cu_seqlens: Tensor, T: int) -> None:
    cs = cu_seqlens.tolist()
    bad = next((i for i in range(1, len(cs)) if cs[i] < cs[i - 1]), None)
    if cs[0] != 0 or cs[-1] != T or bad is not None:
        why = (f"decreases at index {bad}" if bad is not None
               else f"starts at {cs[0]}" if cs[0] != 0 else f"ends at {cs[-1]}")
        raise ValueError(f"cu_seqlens must start at 0, be non-decreasing and end at the "
                         f"packed length {T}; it {why} ({cs if len(cs) <= 12 else cs[:12]}...)")


def cu_seqlens_from_lengths(lengths: Tensor) -> Tensor:
    """``(n,)`` lengths -> ``(n + 1,)`` int32 cumulative lengths starting at 0."""
    lengths = torch.as_tensor(lengths)
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=lengths.device)
    cu[1:] = torch.cumsum(lengths, 0)
    return cu


def seq_index(cu_seqlens: Tensor, T: int) -> Tensor:
    """``(T,)`` long: the sequence each packed step belongs to (no host sync: ``T`` is known)."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    n = lengths.numel()
    return torch.repeat_interleave(torch.arange(n, device=cu_seqlens.device), lengths,
                                   output_size=T)


def validate_packed_steps(
    batch: int,
    T: int,
    device: torch.device,
    dtype: torch.dtype,
    cu_seqlens: Tensor,
    *,
    checks: ValueChecks,
    integration_timesteps: Tensor | None = None,
    timestamps: Tensor | None = None,
    lengths: Tensor | None = None,
    time_scale: float = 1.0,
) -> Steps:
    """The packed counterpart of :func:`eventssm.inputs.validate_steps`: one :class:`Steps` for
    ``(1, T, ·)`` activations holding the sequences of ``cu_seqlens``.

    ``integration_timesteps`` / ``timestamps`` are ``(1, T)`` (or ``(T,)``); gaps from timestamps
    are formed within each sequence (:func:`packed_timesteps`). ``lengths`` is refused: the
    lengths are those of ``cu_seqlens`` (pass one or the other). The returned ``Steps`` has
    ``mask = None`` (every step is real), ``lengths`` the ``(n,)`` sequence lengths and
    ``cu_seqlens`` set. The value checks (``cu_seqlens``, then the times or gaps, then the
    gaps' range in the scan's dtype) go to ``checks``, which the caller runs.

    Raises:
        ValueError: see :func:`check_cu_seqlens` and :func:`packed_timesteps`; both gaps and
        timestamps; ``lengths`` with ``cu_seqlens``; a wrong shape or dtype.
    """
    if integration_timesteps is not None and timestamps is not None:
        raise ValueError("pass either integration_timesteps or timestamps, not both")
    if lengths is not None:
        raise ValueError("pass either lengths (right-padded batch) or cu_seqlens (packed batch), "
                         "not both")
    time_scale = check_time_scale(time_scale)
    cu = check_cu_seqlens(torch.as_tensor(cu_seqlens) if not isinstance(cu_seqlens, Tensor)
                          else cu_seqlens, T, batch, checks)
    cu = cu.to(device)
    seq_lengths = (cu[1:] - cu[:-1]).long()
    tdt = tau_dtype(dtype)
    tau = None
    if timestamps is not None:
        t = torch.as_tensor(timestamps, device=device)
        tau = timestamp_gaps(t[None] if t.dim() == 1 else t, checks=checks, cu_seqlens=cu,
                             time_scale=time_scale)
    elif integration_timesteps is not None:
        tau = torch.as_tensor(integration_timesteps, device=device)
        tau = tau[None] if tau.dim() == 1 else tau
        if tuple(tau.shape) != (1, T):
            raise ValueError(f"integration_timesteps of a packed batch must have shape (1, {T}), "
                             f"got {tuple(tau.shape)}")
        if not tau.dtype.is_floating_point:
            tau = tau.double()
        if time_scale != 1:
            tau = tau * time_scale
        add_timesteps_check(checks, tau, "integration_timesteps")
    if tau is not None:
        out = tau.to(tdt)
        if out.dtype != tau.dtype:
            what = "timestamps" if timestamps is not None else "integration_timesteps"
            checks.add(f"{what} in {tdt}", lambda: torch.isinf(out).any(), lambda: _check_range(out))
        tau = out
    return Steps(tau=tau, lengths=seq_lengths, mask=None, last_time=None, cu_seqlens=cu)


def _check_range(out: Tensor) -> None:
    if bool(torch.isinf(out).any()):
        raise ValueError(f"a gap exceeds the {out.dtype} range the scan computes in; choose a larger "
                         "time unit (a smaller time_scale)")


def model_steps(batch: int, L: int, device, dtype, cu_seqlens: Tensor | None, *, checks: ValueChecks,
                cache=None, last_time: Tensor | None = None, **kw) -> Steps:
    """:class:`Steps` of a model call on ``(batch, L, ·)`` activations of ``dtype``, shared by
    the doors of ``Mamba``, ``MambaBackbone``, ``MambaLM`` and ``EventEncoder`` (which run
    ``checks``). Packed (``cu_seqlens`` given): :func:`validate_packed_steps`, and a cache is
    refused (packed batches are for training and scoring, decoding runs on right-padded
    batches). Padded: :func:`validate_steps` with the cache's ``last_time``. ``kw`` go to
    either."""
    if cu_seqlens is None:
        return validate_steps(batch, L, device, dtype, checks=checks, last_time=last_time, **kw)
    if cache is not None:
        raise ValueError("inference_cache is not supported with cu_seqlens (packed sequences); "
                         "run a cache on a right-padded batch")
    return validate_packed_steps(batch, L, device, dtype, cu_seqlens, checks=checks, **kw)


def segment_pool(h: Tensor, how: str, cu_seqlens: Tensor, tau: Tensor | None = None) -> Tensor:
    """Pool packed per-step features ``h (1, T, d)`` (or ``(T, d)``) per sequence -> ``(n, d)``.

    The packed counterpart of :func:`eventssm.models.pool` (same three rules: ``last``,
    ``mean``, ``time``), by segment sums (``index_add``) over the packed axis. An empty sequence
    pools to 0 (callers that cannot use that refuse empty sequences first).
    """
    h2 = h[0] if h.dim() == 3 else h  # (T, d)
    T, d = h2.shape
    n = cu_seqlens.numel() - 1
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    if how == "last":
        idx = (cu_seqlens[1:].long() - 1).clamp(min=0)
        if T == 0:
            return h2.new_zeros(n, d)
        out = h2[idx]
        return torch.where((lengths > 0)[:, None], out, torch.zeros((), dtype=h2.dtype,
                                                                     device=h2.device))
    seq = seq_index(cu_seqlens, T)
    # segment sums accumulate in float32 at least (index_add adds in the tensor's own dtype: a
    # bf16 sum over hundreds of steps would lose what the padded path's ``sum`` keeps), and
    # every operand shares that dtype (autocast may hand over h and τ in different ones)
    acc = torch.promote_types(h2.dtype, torch.float32)
    hf = h2.to(acc)
    if how == "mean" or (how == "time" and tau is None):
        total = hf.new_zeros(n, d).index_add(0, seq, hf)
        return (total / lengths.clamp(min=1)[:, None].to(acc)).to(h2.dtype)
    if how == "time":
        t = (tau[0] if tau.dim() == 2 else tau).to(acc)  # (T,)
        # the gap after each step, within its sequence (0 after a sequence's last step)
        nxt = torch.cat([t[1:], t.new_zeros(1)]).masked_fill(_ends(cu_seqlens, T), 0.0)
        w = 0.5 * (t + nxt)
        total = t.new_zeros(n).index_add(0, seq, w)  # (n,)
        tot = total[seq]
        uniform = 1.0 / lengths.clamp(min=1).to(acc)[seq]
        w = torch.where(tot > 0, w / tot.clamp(min=1e-30), uniform)
        return hf.new_zeros(n, d).index_add(0, seq, hf * w[:, None]).to(h2.dtype)
    raise ValueError(f"pooling must be one of ('last', 'mean', 'time'), got {how!r}")


def _ends(cu_seqlens: Tensor, T: int) -> Tensor:
    """``(T,)`` bool: True at the last step of each non-empty sequence."""
    last = torch.zeros(T + 1, dtype=torch.bool, device=cu_seqlens.device)
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    idx = (cu_seqlens[1:].long() - 1).clamp(min=0)
    last[torch.where(lengths > 0, idx, torch.full_like(idx, T))] = True
    return last[:T]


def pack_sequences(x: Tensor, lengths: Tensor) -> Tensor:
    """Right-padded ``x (B, L, ...)`` -> packed ``(1, Σ lengths, ...)`` (the real steps, in order)."""
    L = x.shape[1]
    return x[real_mask(lengths.to(x.device), L)][None]


def unpack_sequences(x: Tensor, cu_seqlens: Tensor, fill=0) -> Tensor:
    """Packed ``x (1, T, ...)`` -> right-padded ``(n, L_max, ...)`` filled with ``fill`` at
    padding (one host read of the longest length)."""
    if x.dim() < 2 or x.shape[0] != 1:
        raise ValueError(f"packed x must have shape (1, T, ...), got {tuple(x.shape)}")
    x2 = x[0]
    T = x2.shape[0]
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    n = lengths.numel()
    Lmax = int(lengths.max()) if n else 0
    out = x2.new_full((n, Lmax, *x2.shape[1:]), fill)
    out[real_mask(lengths, Lmax)] = x2[:T]
    return out
