"""Sampled futures of a marked point process in linear time: the history is encoded once into an
:class:`~eventssm.EncoderCache`, then each sampled event is one :meth:`EventEncoder.step`.

Legend: rows ``R`` (histories, each repeated once per sampled future), history steps ``L``,
sampled events ``E``, features ``d``.

Re-encoding the history after every sampled event costs ``O(E · (L + E))``; carrying the
encoder's recurrent state costs ``O(L)`` once and ``O(1)`` per sampled event. Both read the same
features at each step (the recurrent step equals the parallel encode, ``tests/test_encoder_step.py``),
so with the same random stream they draw the same futures (``tests/test_tpp_sampler.py``).

This module is core: it imports torch only (no Lightning).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sample_futures", "sample_after"]


@torch.no_grad()
def sample_futures(encoder, head, timestamps: Tensor, lengths: Tensor, marks: Tensor, *,
                   horizon: float, max_events: int,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One sampled future per row, up to ``horizon`` after the row's last event.

    Args:
        encoder: an :class:`~eventssm.EventEncoder` of marks only (``d_input == 0``).
        head: a :class:`~eventssm.tpp.TPPHead`; its ``sample`` draws the next event from the
            features of the latest one, for every row at every step (finished rows too, so that
            the random stream is consumed as the re-encoding sampler consumes it).
        timestamps: ``(R, L)`` right-padded absolute times of the histories (integer times are
            taken as float64, the clock of the sampled times).
        lengths: ``(R,)`` events per history, each at least 1.
        marks: ``(R, L)`` event types.
        horizon: how far past each row's last event to sample (data time units, ``> 0``).
        max_events: cap on the events of one future.
        generator: the random stream of ``head.sample``.

    Returns:
        ``(times (R, E) float64, marks (R, E) long, mask (R, E) bool)`` with ``E = max_events``:
        absolute times on the histories' clock, 0 where ``mask`` is False (after a row's future
        passed the horizon).

    Raises:
        ValueError: an encoder with values, or a history without events.
    """
    _check_marks_only(encoder)
    R = timestamps.shape[0]
    dev = timestamps.device
    if R and bool((lengths < 1).any()):
        raise ValueError(f"lengths: every history needs at least one event to sample after, got "
                         f"{lengths.tolist()}")
    ts = timestamps.to(torch.float64)
    cache = encoder.allocate_inference_cache(R)
    feats = encoder.encode(marks=marks, timestamps=ts, lengths=lengths, inference_cache=cache)
    rows = torch.arange(R, device=dev)
    h = feats[rows, lengths - 1]  # (R, d): the latest event's features
    return sample_after(encoder, head, cache, h, ts[rows, lengths - 1], horizon=horizon,
                        max_events=max_events, generator=generator)


@torch.no_grad()
def sample_after(encoder, head, cache, h: Tensor, t_last: Tensor, *, horizon: float,
                 max_events: int, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """One sampled future per stream of an encoder's state: what :func:`sample_futures` does
    once the histories are encoded (e.g. from the state an online stream keeps).

    Args:
        encoder: as in :func:`sample_futures`.
        head: as in :func:`sample_futures`.
        cache: an :class:`~eventssm.EncoderCache` of ``R`` streams, each with at least one event
            and float64 latest times; advanced in place by the sampled events (pass a copy,
            :meth:`EncoderCache.select`, to keep the original).
        h: ``(R, d)`` the features of each stream's latest event.
        t_last: ``(R,)`` float64 time of each stream's latest event.
        horizon, max_events, generator: as in :func:`sample_futures`.

    Returns:
        As :func:`sample_futures`.
    """
    _check_marks_only(encoder)
    R, dev = h.shape[0], h.device
    t_end = t_last
    out_t = torch.zeros(R, max_events, dtype=torch.float64, device=dev)
    out_m = torch.zeros(R, max_events, dtype=torch.long, device=dev)
    out_mask = torch.zeros(R, max_events, dtype=torch.bool, device=dev)
    active = torch.ones(R, dtype=torch.bool, device=dev)
    for e in range(max_events):
        gap, mark = head.sample(h, generator=generator)
        t_new = t_last + gap.double()
        active = active & (t_new - t_end <= horizon)
        if not bool(active.any()):
            break
        out_t[:, e] = torch.where(active, t_new, 0.0)
        out_m[:, e] = torch.where(active, mark, 0)
        out_mask[:, e] = active
        if e + 1 == max_events:
            break
        # sampled marks are in range and times increase: nothing to check (no host syncs)
        f, _ = encoder.step(marks=mark, cache=cache, timestamps=t_new, active=active,
                            check_values=False)
        h = torch.where(active[:, None], f, h)
        t_last = torch.where(active, t_new, t_last)
    return out_t, out_m, out_mask


def _check_marks_only(encoder) -> None:
    """The sampler draws times and types: an encoder that also reads values cannot be fed."""
    if encoder.d_input:
        raise ValueError("sample_futures models marks only; an encoder of events with values "
                         f"(d_input={encoder.d_input}) cannot be sampled")
