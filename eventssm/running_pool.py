"""The pooling of :func:`eventssm.models.pool` kept as a running state, one event (or one chunk of
events) at a time, for :class:`~eventssm.EventEncoder`'s recurrent ``step``.

Legend: streams ``B``, steps of a chunk ``L``, features ``d``.

The three rules and their running form, for a stream whose events so far are ``h_0 .. h_{n-1}``
with gaps ``τ_0 .. τ_{n-1}`` (``τ_l`` the gap before event ``l``):

* ``last``: ``h_{n-1}``;
* ``mean``: ``Σ h_l / n``;
* ``time``: ``Σ w_l h_l / Σ w_l`` with ``w_l = (τ_l + τ_{l+1}) / 2`` and ``τ_n = 0`` (the last
  event has no gap after it yet), uniform (the mean) when every ``w_l`` is 0. A new event ``n``
  with gap ``τ_n`` adds ``τ_n / 2`` to the weight of ``h_{n-1}`` and ``τ_n / 2`` to its own:
  ``Σ w h += τ_n (h_{n-1} + h_n) / 2`` and ``Σ w += τ_n`` (``τ_0 / 2`` for the first event, which
  has no predecessor).

A stream without events pools to 0 under every rule, as :func:`~eventssm.models.pool` gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["RunningPool"]


@dataclass
class RunningPool:
    """Running sums of one pooling rule over ``B`` streams.

    Attributes:
        how: ``"last" | "mean" | "time"``.
        last: ``(B, d)`` the feature of each stream's latest event (0 before the first).
        total: ``(B, d)`` ``Σ h`` over the stream's events.
        count: ``(B,)`` int64, events absorbed per stream.
        weighted: ``(B, d)`` ``Σ w h`` of the ``time`` rule (the latest event's second half-gap
            not yet known, so not in it).
        weight: ``(B,)`` ``Σ w``, in the features' dtype.
    """

    how: str
    last: Tensor
    total: Tensor
    count: Tensor
    weighted: Tensor
    weight: Tensor

    @classmethod
    def zeros(cls, how: str, batch: int, d: int, device, dtype) -> RunningPool:
        """The state of ``batch`` streams without events."""
        z = lambda *s: torch.zeros(*s, device=device, dtype=dtype)
        return cls(how, last=z(batch, d), total=z(batch, d),
                   count=torch.zeros(batch, dtype=torch.long, device=device),
                   weighted=z(batch, d), weight=z(batch))

    def value(self) -> Tensor:
        """The pooled features ``(B, d)`` of every stream's events so far."""
        if self.how == "last":
            return self.last
        n = self.count.clamp(min=1).to(self.total.dtype)[:, None]
        mean = self.total / n
        if self.how == "mean":
            return mean
        w = self.weight[:, None]
        return torch.where(w > 0, self.weighted / w.clamp(min=1e-30), mean)

    def add_step(self, h: Tensor, tau: Tensor | None, active: Tensor | None) -> None:
        """Absorb one event per active stream: ``h (B, d)`` its feature (0 where inactive),
        ``tau (B,)`` its gap (0 where inactive; None: no times, the ``time`` rule is the mean),
        ``active (B,)`` bool or None (all)."""
        h = h.to(self.total.dtype)
        self.total += h
        if tau is not None:
            t = tau.to(self.total.dtype)
            started = (self.count > 0).to(t.dtype)
            self.weighted += 0.5 * t[:, None] * (self.last + h)  # last is 0 before the first event
            self.weight += 0.5 * t * (1.0 + started)
        if active is None:
            self.count += 1
            self.last = h
        else:
            self.count += active.long()
            self.last = torch.where(active[:, None], h, self.last)

    def add_chunk(self, h: Tensor, mask: Tensor | None, tau: Tensor | None) -> None:
        """Absorb a right-padded chunk of events: ``h (B, L, d)``, ``mask (B, L)`` bool of real
        events or None (all real), ``tau (B, L)`` gaps, 0 at padding (None: no times)."""
        B, L, _ = h.shape
        if L == 0:
            return
        h = h.to(self.total.dtype)
        m = (torch.ones(B, L, dtype=torch.bool, device=h.device) if mask is None else mask)
        mf = m.to(h.dtype)
        h = h * mf[..., None]
        self.total += h.sum(1)
        if tau is not None:
            t = tau.to(h.dtype) * mf
            nxt = torch.cat([t[:, 1:], torch.zeros_like(t[:, :1])], dim=1)
            w = 0.5 * (t + nxt) * mf  # the chunk's own half-gaps, as pool() weighs them
            started = (self.count > 0).to(h.dtype)
            # the first event's gap also reaches back to the stream's previous event
            self.weighted += (h * w[..., None]).sum(1) + 0.5 * t[:, :1] * self.last
            self.weight += w.sum(1) + 0.5 * t[:, 0] * started
        n = m.long().sum(1)
        self.count += n
        last = h[torch.arange(B, device=h.device), (n - 1).clamp(min=0)]
        self.last = torch.where((n > 0)[:, None], last, self.last)
