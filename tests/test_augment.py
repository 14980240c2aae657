"""Event dropping as training-time augmentation (``EventDataModule(event_dropout=...)``)."""

from __future__ import annotations

import numpy as np
import pytest

from eventssm.datasets import EventDataModule, EventDropout
from eventssm.datasets.sampling import GlobalBatchSampler

from .test_datamodule_defaults import KW, frame


def _samples(dm, epoch):
    """The training split's samples of one epoch, as the training loader draws them."""
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    keys = list(loader.sampler)
    return {k[0]: loader.dataset[k] for k in keys}


def test_event_dropout_keeps_a_random_subset_with_its_own_times_and_values():
    dm = EventDataModule(frame(40), event_dropout=0.4, seed=1, **KW)
    dm.build()
    whole = dm.datasets["train"]
    first = _samples(dm, 0)
    assert sorted(first) == list(range(len(whole)))  # every sequence, every epoch
    for i, s in first.items():
        full = whole[i]
        n = len(full["timestamps"])
        assert len(s["timestamps"]) == max(1, n - int(round(0.4 * n)))
        # the kept events are events of the sequence, in order, each with its own values
        pos = np.searchsorted(full["timestamps"], s["timestamps"])
        np.testing.assert_array_equal(full["timestamps"][pos], s["timestamps"])
        assert np.all(np.diff(pos) > 0)
        np.testing.assert_array_equal(full["values"][pos], s["values"])
        assert s["target"] == full["target"] and s["index"] == i


def test_event_dropout_draws_are_fixed_by_seed_epoch_and_index():
    dm = EventDataModule(frame(40), event_dropout=0.5, seed=2, **KW)
    dm.build()
    a0, again, a1 = _samples(dm, 0), _samples(dm, 0), _samples(dm, 1)
    same = [np.array_equal(a0[i]["timestamps"], again[i]["timestamps"]) for i in a0]
    changed = [not np.array_equal(a0[i]["timestamps"], a1[i]["timestamps"]) for i in a0]
    assert all(same)           # a resumed epoch draws what the uninterrupted one drew
    assert sum(changed) > len(a0) // 2  # a new epoch, other events
    # validation and test sequences are never cut
    val = dm.datasets["val"]
    batch = next(iter(dm.val_dataloader()))
    lengths = [len(val[i]["timestamps"]) for i in batch["index"].tolist()]
    assert batch["timestamps"].shape[1] == max(lengths)


def test_event_dropout_off_by_default_and_epoch_tags_only_when_asked():
    dm = EventDataModule(frame(40), **KW)
    assert dm.event_dropout == 0.0 and not isinstance(dm.train_dataloader().dataset, EventDropout)
    s = GlobalBatchSampler(range(6), 3, tag_epoch=True, seed=0)
    s.set_epoch(4)
    assert all(isinstance(k, tuple) and k[1] == 4 for k in s)


@pytest.mark.parametrize("bad", [1.0, -0.1, True, "0.2"])
def test_event_dropout_bad_values_name_the_argument(bad):
    with pytest.raises(ValueError, match="event_dropout must be a fraction in \\[0, 1\\)"):
        EventDataModule(frame(10), event_dropout=bad, **KW)


def test_event_dropout_refuses_targets_tied_to_the_events():
    with pytest.raises(ValueError, match="event_dropout needs target='label'"):
        EventDataModule(frame(10), event_dropout=0.2, target="forecast", forecast_steps=1, **KW)
