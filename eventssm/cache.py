"""The recurrent state carried between calls: of one :class:`~eventssm.Mamba` block
(:class:`InferenceCache`) and of a whole :class:`~eventssm.EventEncoder` (:class:`EncoderCache`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from eventssm.running_pool import RunningPool

__all__ = ["InferenceCache", "EncoderCache"]


@dataclass
class InferenceCache:
    """Recurrent state of one Mamba block between calls.

    Attributes:
        conv_state: ``(B, D, K)`` the most recent conv inputs, oldest first (mamba-ssm's
            layout): ``[..., 1:]`` holds the last K-1, all a conv of width K reads; ``step``
            shifts the window left and appends the new input.
        ssm_state: ``(B, D, N)`` float32 SSM state.
        last_time: ``(B,)`` absolute time of the last absorbed step, when timestamps were used
            (so the next chunk's first gap is ``t[0] - last_time``), else None; in the
            timestamps' own dtype (int64 for integer times: the next gap is exact), float64 for
            float times.
        seqlen_offset: steps absorbed so far.
    """

    conv_state: Tensor
    ssm_state: Tensor
    last_time: Tensor | None = None
    seqlen_offset: int = 0


@dataclass
class EncoderCache:
    """Recurrent state of an :class:`~eventssm.EventEncoder` over ``B`` event streams: what
    ``EventEncoder.step`` and ``encode``/``forward`` with ``inference_cache`` carry from one
    call to the next, so that each new event costs the same whatever the history's length.

    Attributes:
        layers: one :class:`InferenceCache` per block (conv window and SSM state).
        pool: the encoder's pooling as a running state (:class:`~eventssm.running_pool.RunningPool`);
            ``pool.count (B,)`` is the number of events each stream has absorbed.
        last_time: ``(B,)`` time of each stream's latest event when the events came with
            ``timestamps`` (int64 for integer times, float64 for float ones), else None; a
            stream's next gap is its next time minus this.
        time_input: how the events' times came in, fixed by the first call that absorbs events:
            ``"timestamps"``, ``"integration_timesteps"`` or ``"none"`` (standard mode); None
            before that.
    """

    layers: list[InferenceCache]
    pool: RunningPool
    last_time: Tensor | None = None
    time_input: str | None = None

    @property
    def count(self) -> Tensor:
        """``(B,)`` int64: events absorbed per stream."""
        return self.pool.count

    @property
    def batch_size(self) -> int:
        return self.pool.count.shape[0]

    # Row operations: every tensor of the cache (conv windows, SSM states, running pooling,
    # latest times) has the stream along dim 0, so a stream is one row of each. Written out
    # field by field (not a generic walk over dataclasses): an online stream calls select and
    # put at every event, where Python overhead is most of the cost.
    def select(self, index: Tensor) -> EncoderCache:
        """A copy of the streams ``index (n,)`` (long; repeats allowed): a cache of ``n``
        streams, independent of this one (e.g. to sample futures without touching it)."""
        return self._mapped(lambda t: t.index_select(0, index))

    def extended(self, batch: int) -> EncoderCache:
        """A copy with room for ``batch`` streams: this cache's streams first, then streams
        without events."""
        extra = batch - self.batch_size
        if extra < 0:
            raise ValueError(f"batch must be at least the cache's {self.batch_size} streams, got {batch}")
        return self._mapped(lambda t: torch.cat([t, t.new_zeros((extra, *t.shape[1:]))]))

    def put(self, index: Tensor, part: EncoderCache) -> None:
        """Write the streams of ``part`` (a cache of ``n`` streams, e.g. from :meth:`select`,
        then advanced) into rows ``index (n,)`` (long, no repeats) of this one, in place. A
        tensor this cache lacks (the latest times, before its first timed event) is created,
        its other rows 0: streams without events."""
        for dst, src, names in self._parts(part):
            for name in names:
                b = getattr(src, name)
                if b is None:
                    continue
                a = getattr(dst, name)
                if a is None:
                    a = b.new_zeros((self.batch_size, *b.shape[1:]))
                    setattr(dst, name, a)
                a.index_copy_(0, index, b)
        for c, pc in zip(self.layers, part.layers):
            c.seqlen_offset = max(c.seqlen_offset, pc.seqlen_offset)  # the most of any stream
        self.time_input = part.time_input if part.time_input is not None else self.time_input

    def clear(self, index: Tensor) -> None:
        """Forget the events of streams ``index`` (long): they become streams without events."""
        for obj, _, names in self._parts(self):
            for name in names:
                t = getattr(obj, name)
                if t is not None:
                    t.index_fill_(0, index, 0)

    def _mapped(self, fn) -> EncoderCache:
        """A new cache with ``fn`` applied to every per-stream tensor."""
        f = lambda t: None if t is None else fn(t)
        p = self.pool
        return EncoderCache(
            layers=[InferenceCache(f(c.conv_state), f(c.ssm_state), f(c.last_time), c.seqlen_offset)
                    for c in self.layers],
            pool=RunningPool(p.how, **{name: f(getattr(p, name)) for name in _POOL_ROWS}),
            last_time=f(self.last_time), time_input=self.time_input)

    def _parts(self, other: EncoderCache) -> list[tuple]:
        """``(part of self, matching part of other, its per-stream tensor fields)``."""
        return [(self, other, ("last_time",)), (self.pool, other.pool, _POOL_ROWS)] + [
            (c, o, ("conv_state", "ssm_state", "last_time")) for c, o in zip(self.layers, other.layers)]


_POOL_ROWS = ("last", "total", "count", "weighted", "weight")  # RunningPool's per-stream tensors
