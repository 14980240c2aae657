"""The recurrent state one :class:`~eventssm.Mamba` block carries between calls."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["InferenceCache"]


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
