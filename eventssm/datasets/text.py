"""Byte-level language-modelling data: any text file(s) as a stream of bytes (vocabulary 256)."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .sampling import GlobalBatchSampler, ResumableDataLoader, ShardSampler

__all__ = ["window_offsets", "read_bytes", "ByteWindows", "ByteDataModule"]


def window_offsets(n_tokens: int, window: int, n_windows: int, *, seed: int = 0) -> Iterator[int]:
    """Yield ``n_windows`` seeded random start offsets of training windows.

    A window at offset ``o`` reads tokens ``[o, o + window]`` (``window + 1`` tokens: inputs
    ``[o, o + window)`` and next-token targets ``[o + 1, o + window]``), so offsets lie in
    ``[0, n_tokens - window - 1]``.
    """
    if window < 1 or n_windows < 0:
        raise ValueError(f"need window >= 1 and n_windows >= 0, got {window}, {n_windows}")
    if n_tokens < window + 1:
        raise ValueError(
            f"n_tokens={n_tokens} is too short for one window of {window} tokens plus its "
            f"target (needs {window + 1})"
        )
    g = torch.Generator()
    g.manual_seed(seed)
    high = n_tokens - window  # exclusive
    for o in torch.randint(0, high, (n_windows,), generator=g).tolist():
        yield int(o)


def read_bytes(paths: str | list[str]) -> np.ndarray:
    """The bytes of every file matching the path(s)/glob(s), concatenated in sorted order."""
    pats = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files: list[str] = []
    for p in pats:
        hits = sorted(glob.glob(str(p), recursive=True))
        if not hits:
            raise ValueError(f"paths: no file matches {str(p)!r}")
        files += [h for h in hits if os.path.isfile(h)]
    if not files:
        raise ValueError(f"paths: {pats} match no regular file")
    data = b"".join(open(f, "rb").read() for f in files)
    return np.frombuffer(data, dtype=np.uint8).copy()


class ByteWindows(Dataset):
    """``{"input_ids": (window,), "target": (window,)}`` long tensors at fixed offsets."""

    def __init__(self, tokens: np.ndarray, window: int, offsets: list[int]):
        self.tokens = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
        self.window = window
        self.offsets = list(offsets)
        if self.offsets and max(self.offsets) + window + 1 > len(self.tokens):
            raise ValueError("a window offset runs past the end of the tokens")

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> dict:
        o = self.offsets[i]
        chunk = self.tokens[o:o + self.window + 1]
        return {"input_ids": chunk[:-1], "target": chunk[1:]}


class ByteDataModule(L.LightningDataModule):
    """Byte-level causal LM over text files; the last ``val_fraction`` of bytes is validation.

    Args:
        paths: file path(s) or glob(s) (``**`` allowed), concatenated in sorted order.
        window: tokens per training window.
        train_windows: random training windows per epoch (seeded by ``seed``).
        val_fraction: tail of the byte stream held out (cut into consecutive windows).
        batch_size: global batch size (divided among processes under DDP).
    """

    vocab_size = 256

    def __init__(self, paths: str | list[str] = "eventssm/*.py", window: int = 128,
                 train_windows: int = 2048, val_fraction: float = 0.1, batch_size: int = 32,
                 seed: int = 0, num_workers: int = 0):
        super().__init__()
        if not (0.0 < val_fraction < 1.0):
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.paths = paths
        self.window = window
        self.train_windows = train_windows
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self._built = False

    def build(self) -> None:
        if self._built:
            return
        tokens = read_bytes(self.paths)
        n_val = int(len(tokens) * self.val_fraction)
        train, val = tokens[:-n_val], tokens[-n_val:]
        if len(val) < self.window + 1:
            raise ValueError(
                f"the validation tail has {len(val)} bytes, fewer than one window "
                f"({self.window} + 1); use more text or a shorter window"
            )
        self.train_tokens, self.val_tokens = train, val
        self.train_set = ByteWindows(train, self.window, list(
            window_offsets(len(train), self.window, self.train_windows, seed=self.seed)))
        step = self.window
        self.val_set = ByteWindows(val, self.window, list(range(0, len(val) - step, step)))
        self._built = True

    def setup(self, stage: str | None = None) -> None:
        self.build()

    def _world(self):
        trainer = getattr(self, "trainer", None)
        return (1, 0) if trainer is None else (trainer.world_size, trainer.global_rank)

    def train_dataloader(self) -> DataLoader:
        self.build()
        world, rank = self._world()
        sampler = GlobalBatchSampler(self.train_set, self.batch_size, world, rank,
                                     seed=self.seed, drop_last=True)
        return ResumableDataLoader(self.train_set, batch_size=self.batch_size // world,
                                   sampler=sampler, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        self.build()
        world, rank = self._world()
        return DataLoader(self.val_set, batch_size=max(1, self.batch_size // world),
                          sampler=ShardSampler(self.val_set, world, rank),
                          num_workers=self.num_workers)

    test_dataloader = val_dataloader
    predict_dataloader = val_dataloader
