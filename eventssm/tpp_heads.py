"""The TPP heads by name (``EventTPP(head=...)``): the registry that sees every head module, so
that none of them imports another to build a head (:mod:`eventssm.tpp` holds the heads that read
encoder features, :mod:`eventssm.tpp_state` the one that reads the last block's own state)."""

from __future__ import annotations

from eventssm.tpp import IntensityHead, LogNormalMixtureHead, TPPHead
from eventssm.tpp_state import StateIntensityHead

__all__ = ["HEADS", "make_head"]

HEADS = ("mixture", "intensity", "state")


def make_head(kind: str, d_model: int, num_marks: int, log_gap_stats=None, **kwargs) -> TPPHead:
    """``"mixture"`` -> :class:`~eventssm.tpp.LogNormalMixtureHead`, ``"intensity"`` ->
    :class:`~eventssm.tpp.IntensityHead`, ``"state"`` ->
    :class:`~eventssm.tpp_state.StateIntensityHead` (unbound: call its ``bind`` with the encoder
    it reads).

    Raises:
        ValueError: an unknown ``kind`` (and whatever the head's own checks raise).
    """
    heads = {"mixture": LogNormalMixtureHead, "intensity": IntensityHead, "state": StateIntensityHead}
    if kind not in heads:
        raise ValueError(f"head must be one of {HEADS}, got {kind!r}")
    return heads[kind](d_model, num_marks, log_gap_stats, **kwargs)
