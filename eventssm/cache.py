"""The recurrent state carried between calls: of one :class:`~eventssm.Mamba` block
(:class:`InferenceCache`) and of a whole :class:`~eventssm.EventEncoder` (:class:`EncoderCache`)."""

from __future__ import annotations

import dataclasses
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
    # latest times) has the stream along dim 0, so a stream is one row of each.
    def select(self, index: Tensor) -> EncoderCache:
        """A copy of the streams ``index (n,)`` (long; repeats allowed): a cache of ``n``
        streams, independent of this one (e.g. to sample futures without touching it)."""
        return _map_tensors(self, lambda t: t.index_select(0, index))

    def extended(self, batch: int) -> EncoderCache:
        """A copy with room for ``batch`` streams: this cache's streams first, then streams
        without events."""
        extra = batch - self.batch_size
        if extra < 0:
            raise ValueError(f"batch must be at least the cache's {self.batch_size} streams, got {batch}")
        return _map_tensors(self, lambda t: torch.cat([t, t.new_zeros((extra, *t.shape[1:]))]))

    def put(self, index: Tensor, part: EncoderCache) -> None:
        """Write the streams of ``part`` (a cache of ``n`` streams, e.g. from :meth:`select`,
        then advanced) into rows ``index (n,)`` (long, no repeats) of this one, in place."""
        _put_rows(self, part, index, self.batch_size)
        self.time_input = part.time_input if part.time_input is not None else self.time_input

    def clear(self, index: Tensor) -> None:
        """Forget the events of streams ``index`` (long): they become streams without events."""
        _map_tensors(self, lambda t: t.index_fill_(0, index, 0))


def _map_tensors(obj, fn):
    """``obj`` (a cache dataclass, a list of them, a tensor, or a plain value kept as it is) with
    ``fn`` applied to each of its tensors."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, list):
        return [_map_tensors(o, fn) for o in obj]
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{f.name: _map_tensors(getattr(obj, f.name), fn)
                                           for f in dataclasses.fields(obj)})
    return obj


def _put_rows(dst, src, index: Tensor, batch: int) -> None:
    """Copy every tensor of ``src`` into rows ``index`` of the matching tensor of ``dst`` (same
    structure), in place. A tensor that ``dst`` lacks (a latest time, before the first timed
    event) is created with zero rows elsewhere, which :class:`EncoderCache` reads as streams
    without events."""
    for f in dataclasses.fields(dst):
        a, b = getattr(dst, f.name), getattr(src, f.name)
        if isinstance(b, Tensor):
            if a is None:
                a = b.new_zeros((batch, *b.shape[1:]))
                setattr(dst, f.name, a)
            a.index_copy_(0, index, b)
        elif isinstance(b, list):
            for x, y in zip(a, b):
                _put_rows(x, y, index, batch)
        elif dataclasses.is_dataclass(b):
            _put_rows(a, b, index, batch)
        elif isinstance(b, int) and isinstance(a, int):  # steps absorbed: the most of any stream
            setattr(dst, f.name, max(a, b))
