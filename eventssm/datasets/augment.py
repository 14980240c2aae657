"""Training-time augmentation for irregular sequences: random event dropping.

An irregular table is one draw of which moments got observed; dropping a random part of each
training sequence's events every time it is drawn shows the model other draws of the same
process (the kept events keep their true timestamps, so the gaps grow as they would in a sparser
recording). Validation, test and prediction always see whole sequences.

The draw is a function of ``(seed, epoch, index)`` only, never of a global random state, so a
resumed run (exact resume, see :class:`~eventssm.datasets.ResumableDataLoader`) and DataLoader
workers draw the same events as an uninterrupted single-process run. The epoch comes with each
index from :class:`~eventssm.datasets.GlobalBatchSampler` (``tag_epoch=True``).
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

__all__ = ["EventDropout", "check_event_dropout"]

# Per-event entries of a sample (EventDataset.__getitem__) that are cut with the events.
_PER_EVENT = ("timestamps", "values", "marks")


def check_event_dropout(rate) -> float:
    """``rate`` as a float in ``[0, 1)``, or a ValueError naming ``event_dropout``."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"event_dropout must be a fraction in [0, 1), got {rate!r}")
    return float(rate)


class EventDropout(Dataset):
    """``dataset`` with ``round(rate * L)`` of each sequence's ``L`` events dropped per draw.

    At least one event is always kept. Only sequence-level targets (``target="label"``) can be
    augmented so: a forecast or next-event target is tied to the events it would lose.

    Args:
        dataset: an :class:`~eventssm.datasets.EventDataset` with ``target="label"``.
        rate: fraction of events dropped, in ``[0, 1)``.
        seed: with the epoch and the index, fixes every draw.

    Items are indexed by ``(index, epoch)`` pairs (what ``GlobalBatchSampler(tag_epoch=True)``
    yields); a plain ``index`` counts as epoch 0.
    """

    def __init__(self, dataset, rate: float, seed: int = 0):
        if getattr(dataset, "target", "label") != "label":
            raise ValueError(
                f"event_dropout needs target='label' (a sequence-level target), got "
                f"target={dataset.target!r}")
        self.dataset = dataset
        self.rate = check_event_dropout(rate)
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> dict:
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        sample = self.dataset[i]
        n = len(sample["timestamps"])
        drop = int(round(self.rate * n))
        keep_n = max(1, n - drop)
        if keep_n == n:
            return sample
        rng = np.random.default_rng((self.seed, int(epoch), int(i)))
        keep = np.sort(rng.choice(n, size=keep_n, replace=False))
        out = dict(sample)
        for k in _PER_EVENT:
            if k in out:
                out[k] = out[k][keep]
        return out
