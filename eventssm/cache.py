"""The recurrent state carried between calls: of one :class:`~eventssm.Mamba` block
(:class:`InferenceCache`) and of a whole :class:`~eventssm.EventEncoder` (:class:`EncoderCache`)."""

from __future__ import annotations

from dataclasses import dataclass

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
