"""Collate event sequences into the padded batch dict of DESIGN §5, and pack it (cu_seqlens).

Batch keys (``B`` sequences, ``L`` = longest, ``C`` channels):

============================  =================  ===========================================
key                           shape              meaning
============================  =================  ===========================================
``values``                    (B, L, C) float32  observations, 0 at padding and where missing
``observed``                  (B, L, C) bool     which channels were measured (optional)
``marks``                     (B, L) long        event type ids, 0 at padding (optional)
``timestamps``                (B, L) float64     time since the first event; padding repeats
                                                 the last time
``integration_timesteps``     (B, L) float64     backward gaps, 0 at step 0 and at padding
``mask``                      (B, L) bool        real events
``lengths``                   (B,) long          real events per sequence
``target``                    task-specific      class id (B,), values (B, k), next marks
                                                 (B, L) with -100 at no-target steps, or
                                                 future values (B, Q, C)
``index``                     (B,) long          position of each sequence in its dataset
============================  =================  ===========================================

Forecasting batches also hold ``query_times`` (B, Q) float64 (time since the first event,
after the history), ``query_mask`` (B, Q) bool and ``target_mask`` (B, Q, C) bool; next-event
batches hold ``target_gap`` (B, L) float32 (time to the next event, 0 where there is none).

Times stay float64 (gaps are differenced in float64 by :func:`eventssm.time
.timesteps_from_timestamps`); the model casts them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from eventssm.packing import cu_seqlens_from_lengths, pack_sequences, unpack_sequences
from eventssm.time import real_mask, timesteps_from_timestamps

__all__ = ["collate_events", "pack_batch", "unpack_batch", "padding_share", "EventCollator",
           "AUTO_PACK_PADDING"]

# pack="auto" packs a batch when at least this share of its padded form would be padding. On the
# CPU path packing costs 1.15-1.25x on equal lengths and breaks even at 15-25 % of padding
# (experiments/bench/packed.py, experiments/results/packed_cpu.md).
AUTO_PACK_PADDING = 0.25


def _pad(arrays: Sequence[np.ndarray], L: int, fill, dtype) -> torch.Tensor:
    first = np.asarray(arrays[0])
    out = np.full((len(arrays), L, *first.shape[1:]), fill, dtype=dtype)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return torch.from_numpy(out)


def collate_events(samples: Sequence[dict], *, use_observed: bool | None = None) -> dict:
    """Pad a list of per-sequence sample dicts into one batch dict (see the module docstring).

    Args:
        samples: dicts with ``timestamps`` ``(L_i,)`` and ``values`` ``(L_i, C)`` (NaN =
            missing) and/or ``marks`` ``(L_i,)``; optional ``target``, ``query_times``,
            ``target_gap`` and ``index``.
        use_observed: add the ``observed`` mask (``None``: only when some value is NaN).
    """
    if len(samples) == 0:
        raise ValueError("collate_events got an empty list of samples")
    lengths = torch.tensor([len(s["timestamps"]) for s in samples], dtype=torch.long)
    if int(lengths.min()) == 0:
        raise ValueError("collate_events got an empty sequence (length 0)")
    L = int(lengths.max())
    B = len(samples)
    batch: dict = {}
    # Padding repeats the last time, so that gaps at padding are 0 whatever the model does.
    ts = np.zeros((B, L), dtype=np.float64)
    for i, s in enumerate(samples):
        t = np.asarray(s["timestamps"], dtype=np.float64)
        ts[i, : len(t)] = t
        ts[i, len(t):] = t[-1]
    timestamps = torch.from_numpy(ts)
    batch["timestamps"] = timestamps
    batch["integration_timesteps"] = timesteps_from_timestamps(timestamps, lengths=lengths)
    mask = real_mask(lengths, L)
    batch["mask"] = mask
    batch["lengths"] = lengths
    if samples[0].get("values") is not None:
        v = _pad([s["values"] for s in samples], L, np.nan, np.float32)
        observed = ~torch.isnan(v)
        observed &= mask[..., None]
        batch["values"] = torch.where(observed, v, torch.zeros((), dtype=v.dtype))
        if use_observed is None:
            use_observed = bool((~observed & mask[..., None]).any())
        if use_observed:
            batch["observed"] = observed
    if samples[0].get("marks") is not None:
        batch["marks"] = _pad([s["marks"] for s in samples], L, 0, np.int64)
    if "index" in samples[0]:
        batch["index"] = torch.tensor([int(s["index"]) for s in samples], dtype=torch.long)
    if "query_times" in samples[0]:
        Q = max(len(s["query_times"]) for s in samples)
        qt = np.zeros((B, Q), dtype=np.float64)
        for i, s in enumerate(samples):
            q = np.asarray(s["query_times"], dtype=np.float64)
            qt[i, : len(q)] = q
            qt[i, len(q):] = q[-1] if len(q) else ts[i, lengths[i] - 1]
        batch["query_times"] = torch.from_numpy(qt)
        batch["query_mask"] = real_mask(torch.tensor([len(s["query_times"]) for s in samples]), Q)
        tgt = _pad([s["target"] for s in samples], Q, np.nan, np.float32)
        tmask = ~torch.isnan(tgt) & batch["query_mask"][..., None]
        batch["target"] = torch.where(tmask, tgt, torch.zeros((), dtype=tgt.dtype))
        batch["target_mask"] = tmask
    elif "target_gap" in samples[0]:
        batch["target"] = _pad([s["target"] for s in samples], L, -100, np.int64)
        batch["target_gap"] = _pad([s["target_gap"] for s in samples], L, 0.0, np.float32)
    elif "target" in samples[0]:
        t0 = np.asarray(samples[0]["target"])
        if t0.dtype.kind in "iu":
            batch["target"] = torch.tensor([int(s["target"]) for s in samples], dtype=torch.long)
        else:
            batch["target"] = torch.from_numpy(
                np.stack([np.atleast_1d(np.asarray(s["target"], dtype=np.float32))
                          for s in samples]))
    return batch


def padding_share(lengths) -> float:
    """Share of padding in the right-padded batch of sequences of ``lengths``:
    ``1 - Σ lengths / (B · max lengths)``."""
    lengths = torch.as_tensor(lengths)
    if lengths.numel() == 0 or int(lengths.max()) == 0:
        return 0.0
    return 1.0 - float(lengths.sum()) / (lengths.numel() * int(lengths.max()))


class EventCollator:
    """Picklable collate callable (``DataLoader(collate_fn=EventCollator(...))``) for workers.

    Args:
        use_observed: passed to :func:`collate_events`.
        pack: ``True``: return the packed ``cu_seqlens`` form of :func:`pack_batch`;
            ``False``: the padded batch; ``"auto"``: packed when at least ``min_padding`` of the
            padded batch would be padding (:func:`padding_share`), else padded. Every task takes
            both forms and gives the same losses on them.
        min_padding: the threshold of ``"auto"`` (default :data:`AUTO_PACK_PADDING`).
    """

    def __init__(self, use_observed: bool | None = None, pack: bool | str = False,
                 min_padding: float = AUTO_PACK_PADDING):
        if pack not in (True, False, "auto"):
            raise ValueError(f"pack must be True, False or 'auto', got {pack!r}")
        if not 0.0 <= min_padding <= 1.0:
            raise ValueError(f"min_padding must lie in [0, 1], got {min_padding!r}")
        self.use_observed = use_observed
        self.pack = pack
        self.min_padding = min_padding

    def __call__(self, samples: Sequence[dict]) -> dict:
        batch = collate_events(samples, use_observed=self.use_observed)
        pack = self.pack
        if pack == "auto":
            pack = padding_share(batch["lengths"]) >= self.min_padding
        return pack_batch(batch) if pack else batch


_PER_STEP = ("values", "observed", "marks", "timestamps", "integration_timesteps", "mask")


def _per_step_keys(batch: dict) -> set[str]:
    """Keys of ``batch`` with one entry per step: the inputs, and the targets of next-event
    batches (``target_gap`` marks them; other targets are one per sequence or per query)."""
    targets = {"target", "target_gap"} if "target_gap" in batch else set()
    return (set(_PER_STEP) | targets) & set(batch)


def pack_batch(batch: dict) -> dict:
    """Padded batch -> packed variable-length form (``batch == 1`` plus ``cu_seqlens``).

    Real events of all sequences are concatenated along time (the ``mask``, which holds no
    padding any more, is kept all True for code that reads it): per-step tensors become
    ``(1, T, ...)`` with ``T = lengths.sum()``, and ``cu_seqlens`` ``(B + 1,)`` int32 holds the
    cumulative lengths (sequence ``i`` is ``[cu_seqlens[i], cu_seqlens[i+1])``). Each sequence's
    first gap stays 0, so no state leaks from one sequence into the next through the time
    coupling; the scan restarts the state at every boundary. Per-sequence keys (``lengths``,
    ``target`` of classification/regression, ``index``) are kept as they are; per-step targets
    (next-event batches) are packed like the inputs. The tensors are packed by
    :func:`eventssm.packing.pack_sequences`.
    """
    if "cu_seqlens" in batch:
        raise ValueError("pack_batch: the batch is already packed")
    lengths = batch["lengths"]
    per_step = _per_step_keys(batch)
    out = {k: pack_sequences(v, lengths) if k in per_step else v for k, v in batch.items()}
    out["cu_seqlens"] = cu_seqlens_from_lengths(lengths)
    return out


def unpack_batch(batch: dict) -> dict:
    """Packed batch (:func:`pack_batch`) -> the right-padded batch of §5 it came from.

    Per-step tensors ``(1, T, ...)`` go back to ``(B, L, ...)`` with ``L`` the longest length
    (:func:`eventssm.packing.unpack_sequences`); padding is filled as :func:`collate_events`
    fills it (0, False, ``-100`` for per-step targets, the last time for ``timestamps``);
    ``cu_seqlens`` is dropped and ``lengths`` and ``mask`` rebuilt from it."""
    if "cu_seqlens" not in batch:
        raise ValueError("unpack_batch: the batch is not packed (no cu_seqlens)")
    cu = batch["cu_seqlens"].long()
    lengths = cu[1:] - cu[:-1]
    mask = real_mask(lengths, int(lengths.max()) if lengths.numel() else 0)
    per_step = _per_step_keys(batch) - {"mask"}
    out = {}
    for k, v in batch.items():
        if k == "cu_seqlens":
            continue
        if k in per_step:
            fill = -100 if (k == "target" and "target_gap" in batch) else 0
            full = unpack_sequences(v, cu, fill)
            if k == "timestamps":  # padding repeats the last time
                last = full.gather(1, (lengths - 1).clamp(min=0)[:, None])
                full = torch.where(mask, full, last)
            out[k] = full
        else:
            out[k] = v
    out["mask"] = mask
    out["lengths"] = lengths
    return out
