"""Samplers that make ``N`` processes see exactly the global batches one process would see.

With ``batch_size`` meaning the *global* batch, process ``r`` of ``W`` takes slice ``r`` of each
global batch: one process with batch ``G`` and ``W`` processes with ``G / W`` each step through
the same sequences in the same order, so (with equal-sized slices, i.e. ``drop_last`` for
training) averaged DDP gradients equal the one-process gradient. Both samplers subclass
``DistributedSampler`` so that Lightning leaves them in place instead of substituting its own.

:class:`ResumableDataLoader` is the training DataLoader that a checkpoint taken in the middle of
an epoch can resume at the exact batch (Lightning's stateful-loader protocol).
"""

from __future__ import annotations

import itertools

import torch
from torch.utils.data import DataLoader, DistributedSampler

__all__ = ["GlobalBatchSampler", "ResumableDataLoader", "ShardSampler"]


class GlobalBatchSampler(DistributedSampler):
    """Training order: a seeded permutation per epoch cut into global batches, sliced by rank.

    Args:
        dataset: anything with ``len``.
        batch_size: the global batch size ``G`` (must be divisible by ``num_replicas``).
        num_replicas, rank: world size and this process's rank.
        shuffle: reshuffle every epoch (``set_epoch``) from ``seed + epoch``.
        drop_last: drop the last incomplete global batch (keeps every step's slices equal).
            Without it, the last batch is cut into ``num_replicas`` contiguous parts whose sizes
            differ by at most one, so every process takes the same number of steps (DDP would
            hang otherwise); a remainder smaller than ``num_replicas`` cannot be cut so and is
            dropped.
        tag_epoch: yield ``(index, epoch)`` pairs instead of indices, for datasets whose items
            depend on the epoch (:class:`~eventssm.datasets.augment.EventDropout`).
    """

    def __init__(self, dataset, batch_size: int, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = True,
                 tag_epoch: bool = False):
        if batch_size % num_replicas:
            raise ValueError(
                f"batch_size={batch_size} is the global batch and must be divisible by the "
                f"number of processes ({num_replicas})"
            )
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=drop_last)
        self.global_batch = batch_size
        self.local_batch = batch_size // num_replicas
        n = len(dataset)
        if drop_last:
            self.num_batches = n // batch_size
            if self.num_batches == 0:
                raise ValueError(
                    f"the training split has {n} sequences, fewer than one global batch "
                    f"({batch_size}) with drop_last; lower batch_size"
                )
        else:
            rest = n % batch_size
            # a remainder that leaves some process without a sequence would make it step less
            self.num_batches = n // batch_size + (rest >= num_replicas)
            if self.num_batches == 0:
                raise ValueError(
                    f"the training split has {n} sequences, fewer than the {num_replicas} "
                    f"processes; lower the number of processes"
                )
        self.num_samples = sum(e - s for s, e in
                               (self._part(b) for b in range(self.num_batches)))
        self.total_size = min(n, self.num_batches * batch_size)  # sequences per epoch, all ranks
        self._skip = 0  # local samples to leave out at the start of the next pass (a resume)
        self.tag_epoch = tag_epoch

    def skip_samples(self, n: int) -> None:
        """Start the next pass ``n`` samples in (this process's share), then go back to full
        passes: :class:`ResumableDataLoader` resumes mid-epoch without loading the skipped data."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        self._skip = n

    def _part(self, b: int) -> tuple[int, int]:
        """This rank's ``[start, end)`` within global batch ``b``."""
        size = min(self.global_batch, len(self.dataset) - b * self.global_batch)
        if size == self.global_batch:
            return self.rank * self.local_batch, (self.rank + 1) * self.local_batch
        q, r = divmod(size, self.num_replicas)  # the last, partial batch: near-equal parts
        start = self.rank * q + min(self.rank, r)
        return start, start + q + (self.rank < r)

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        out = []
        for b in range(self.num_batches):
            chunk = order[b * self.global_batch:(b + 1) * self.global_batch]
            start, end = self._part(b)
            out.extend(chunk[start:end])
        skip, self._skip = self._skip, 0
        out = out[skip:]
        if self.tag_epoch:
            return iter([(i, self.epoch) for i in out])
        return iter(out)

    def __len__(self) -> int:
        return self.num_samples


class ShardSampler(DistributedSampler):
    """Evaluation order: rank ``r`` takes items ``r, r + W, ...`` with no padding duplicates.

    Lightning's default pads the last shard with repeated items, which counts them twice in
    metrics; here shards differ by at most one item and torchmetrics' sync sees each item once.
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """A training DataLoader whose place in the epoch goes into checkpoints.

    Lightning saves ``state_dict()`` (the sampler's epoch and the batches this epoch has handed
    out so far) with every checkpoint and calls ``load_state_dict()`` on a mid-epoch resume; the
    next pass over that epoch then starts at the first batch not yet trained on, so a resumed run
    sees the batches an uninterrupted one would. A sampler with ``skip_samples`` (as
    :class:`GlobalBatchSampler`) skips them without loading; any other sampler's skipped batches
    are loaded and dropped. Without a restored state it is a plain DataLoader.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._epoch = 0  # epoch of the current (or last) pass
        self._served = 0  # batches handed out in that pass
        self._resume: tuple[int, int] | None = None  # (epoch, batches) to skip in that epoch

    def _sampler_epoch(self) -> int:
        for obj in (self.sampler, getattr(self.batch_sampler, "sampler", None)):
            epoch = getattr(obj, "epoch", None)
            if isinstance(epoch, int):
                return epoch
        return self._epoch

    def __iter__(self):
        # A generator, so that the epoch is read at the first batch: Lightning creates the
        # iterator before it calls set_epoch on a resumed run.
        epoch = self._sampler_epoch()
        skip = 0
        if self._resume is not None:
            r_epoch, r_batches = self._resume
            self._resume = None
            if r_epoch == epoch:
                skip = min(r_batches, len(self))
        self._epoch, self._served = epoch, skip
        fast = (skip and self.batch_size is not None
                and callable(getattr(self.sampler, "skip_samples", None)))
        if fast:
            self.sampler.skip_samples(skip * self.batch_size)
        it = super().__iter__()
        if skip and not fast:
            it = itertools.islice(it, skip, None)
        for batch in it:
            self._served += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "batches": self._served}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or not {"epoch", "batches"} <= state.keys():
            raise ValueError(f"not a ResumableDataLoader state: {state!r}")
        self._resume = (int(state["epoch"]), int(state["batches"]))
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(int(state["epoch"]))
