"""Samplers that make ``N`` processes see exactly the global batches one process would see.

With ``batch_size`` meaning the *global* batch, process ``r`` of ``W`` takes slice ``r`` of each
global batch: one process with batch ``G`` and ``W`` processes with ``G / W`` each step through
the same sequences in the same order, so (with equal-sized slices, i.e. ``drop_last`` for
training) averaged DDP gradients equal the one-process gradient. Both samplers subclass
``DistributedSampler`` so that Lightning leaves them in place instead of substituting its own.
"""

from __future__ import annotations

import torch
from torch.utils.data import DistributedSampler

__all__ = ["GlobalBatchSampler", "ShardSampler"]


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
    """

    def __init__(self, dataset, batch_size: int, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = True):
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
