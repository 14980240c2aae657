"""Collate to the DESIGN §5 dict, packing, and the DDP-consistent samplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eventssm.datasets import (
    EventCollator,
    GlobalBatchSampler,
    ShardSampler,
    collate_events,
    pack_batch,
)


def samples():
    big = 1.7e9  # epoch seconds: float32 would round the gaps below to multiples of 128
    return [
        {"timestamps": np.array([0.0, 0.5, 2.0]) + big, "values": np.array(
            [[1.0, np.nan], [2.0, 3.0], [np.nan, np.nan]], np.float32),
         "marks": np.array([1, 0, 2]), "target": np.int64(1), "index": 0},
        {"timestamps": np.array([big]), "values": np.array([[4.0, 5.0]], np.float32),
         "marks": np.array([2]), "target": np.int64(0), "index": 1},
        {"timestamps": np.array([0.0, 1.0, 1.0, 1.25, 3.0]) + big,
         "values": np.ones((5, 2), np.float32), "marks": np.array([0, 1, 1, 2, 0]),
         "target": np.int64(2), "index": 2},
    ]


def test_shapes_dtypes_and_padding():
    b = collate_events(samples())
    assert b["values"].shape == (3, 5, 2) and b["values"].dtype == torch.float32
    assert b["observed"].shape == (3, 5, 2) and b["observed"].dtype == torch.bool
    assert b["marks"].shape == (3, 5) and b["marks"].dtype == torch.long
    assert b["timestamps"].dtype == torch.float64
    assert b["integration_timesteps"].dtype == torch.float64
    assert b["mask"].tolist()[1] == [True, False, False, False, False]
    assert b["lengths"].tolist() == [3, 1, 5]
    assert b["target"].tolist() == [1, 0, 2] and b["index"].tolist() == [0, 1, 2]
    # NaN -> 0 plus observed False; padding is 0 and unobserved
    assert b["values"][0, 0].tolist() == [1.0, 0.0] and b["observed"][0, 0].tolist() == [True, False]
    assert not b["observed"][0, 3:].any() and (b["values"][0, 3:] == 0).all()
    # padding repeats the last time; gaps are exact float64 backward differences, 0 at padding
    assert b["timestamps"][1].tolist() == [1.7e9] * 5
    torch.testing.assert_close(b["integration_timesteps"][0],
                               torch.tensor([0, 0.5, 1.5, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(b["integration_timesteps"][2],
                               torch.tensor([0, 1, 0, 0.25, 1.75], dtype=torch.float64))


def test_observed_only_when_needed_or_asked():
    s = samples()[1:]
    assert "observed" not in collate_events(s)
    assert collate_events(s, use_observed=True)["observed"][:, :1].all()


def test_rejects_empty():
    with pytest.raises(ValueError, match="empty list"):
        collate_events([])
    with pytest.raises(ValueError, match="length 0"):
        collate_events([{"timestamps": np.zeros(0), "values": np.zeros((0, 1), np.float32)}])


def test_pack_batch():
    b = collate_events(samples())
    p = pack_batch(b)
    assert p["cu_seqlens"].tolist() == [0, 3, 4, 9] and p["cu_seqlens"].dtype == torch.int32
    assert p["values"].shape == (1, 9, 2) and p["marks"].shape == (1, 9)
    torch.testing.assert_close(p["values"][0, 4:], b["values"][2])
    # every sequence starts with gap 0: no time (or state) flows across boundaries
    assert p["integration_timesteps"][0, p["cu_seqlens"][:-1].long()].tolist() == [0, 0, 0]
    assert p["target"].tolist() == [1, 0, 2]
    assert EventCollator(pack=True)(samples())["cu_seqlens"].tolist() == [0, 3, 4, 9]
    with pytest.raises(ValueError, match="already packed"):
        pack_batch(p)


def test_forecast_and_next_event_targets():
    fs = [{"timestamps": np.array([0.0, 1.0]), "values": np.ones((2, 1), np.float32),
           "query_times": np.array([2.0, 3.5]), "target": np.array([[1.0], [np.nan]], np.float32)},
          {"timestamps": np.array([0.0]), "values": np.ones((1, 1), np.float32),
           "query_times": np.array([0.5]), "target": np.array([[2.0]], np.float32)}]
    b = collate_events(fs)
    assert b["query_times"].tolist() == [[2.0, 3.5], [0.5, 0.5]]
    assert b["query_mask"].tolist() == [[True, True], [True, False]]
    assert b["target_mask"][..., 0].tolist() == [[True, False], [True, False]]
    assert b["target"][0, 1, 0] == 0
    ns = [{"timestamps": np.array([0.0, 1.0, 3.0]), "marks": np.array([0, 1, 0]),
           "target": np.array([1, 0, -100]), "target_gap": np.array([1.0, 2.0, 0.0], np.float32)},
          {"timestamps": np.array([0.0]), "marks": np.array([1]), "target": np.array([-100]),
           "target_gap": np.zeros(1, np.float32)}]
    b = collate_events(ns)
    assert b["target"].tolist() == [[1, 0, -100], [-100, -100, -100]]
    p = pack_batch(b)
    assert p["target"].tolist() == [[1, 0, -100, -100]]


@pytest.mark.parametrize("world", [1, 2, 4])
@pytest.mark.parametrize("drop_last", [True, False])
def test_global_batches_identical_for_any_world_size(world, drop_last):
    n, G = 23, 8
    ref = list(GlobalBatchSampler(range(n), G, 1, 0, seed=3, drop_last=drop_last))
    ref_batches = [ref[i:i + G] for i in range(0, len(ref), G)]
    per_rank = []
    for r in range(world):
        s = GlobalBatchSampler(range(n), G, world, r, seed=3, drop_last=drop_last)
        idx = list(s)
        assert len(idx) == len(s)
        per_rank.append([idx[i:i + G // world] for i in range(0, len(idx), G // world)])
    # every rank takes the same number of steps (else DDP hangs), with or without drop_last
    assert len({len(p) for p in per_rank}) == 1
    if drop_last:
        assert len({len(b) for p in per_rank for b in p}) == 1
    for k, batch in enumerate(ref_batches):
        merged = [i for p in per_rank if k < len(p) for i in p[k]]
        assert merged == batch
    assert len(ref) == (16 if drop_last else 23)
    # a new epoch reshuffles, the same epoch repeats
    s = GlobalBatchSampler(range(n), G, 1, 0, seed=3, drop_last=drop_last)
    s.set_epoch(1)
    assert list(s) != ref
    with pytest.raises(ValueError, match="divisible"):
        GlobalBatchSampler(range(n), 7, 2, 0)


@pytest.mark.parametrize("n", [17, 18, 20, 24])
def test_partial_last_batch_is_split_so_every_rank_steps(n):
    """16 + a remainder of 1, 2, 4 or 8 sequences on 4 ranks of a global batch 8."""
    world, G = 4, 8
    per_rank = [list(GlobalBatchSampler(range(n), G, world, r, shuffle=False, drop_last=False))
                for r in range(world)]
    steps = [len(range(0, len(p), G // world)) for p in per_rank]
    rest = n % G
    print(n, [len(p) for p in per_rank], steps)
    assert len(set(steps)) == 1
    seen = sorted(i for p in per_rank for i in p)
    # a remainder smaller than the world cannot give every rank a sequence: it waits an epoch
    assert seen == list(range(n if rest >= world or rest == 0 else n - rest))


def test_shard_sampler_covers_once():
    seen = sorted(i for r in range(3) for i in ShardSampler(range(10), 3, r))
    assert seen == list(range(10))
