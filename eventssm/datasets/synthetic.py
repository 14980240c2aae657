"""Seeded synthetic irregularly sampled sequences with known structure, generated on the fly.

* ``sinusoid``: one channel ``sin(2π f t + φ) + noise`` observed at random times. For
  classification the class is the frequency bin (``num_classes`` bins); the sampling is so
  irregular that the frequency is only recoverable with the timestamps. For regression the
  target is ``f`` itself. For forecasting, the last events are to be predicted from the rest.
* ``spiral``: two channels ``(r cos θ, r sin θ)`` of an outward spiral at random times; class 0
  turns counter-clockwise, class 1 clockwise (Kidger et al. 2020 style). Regression target:
  the number of turns.

Every sequence has its own random length in ``[min_len, max_len]`` and its own random times.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .datamodule import EventDataModule
from .table import EventTable

__all__ = ["make_sinusoids", "make_spirals", "SyntheticDataModule"]


def _times(rng: np.random.Generator, n: int, duration: float) -> np.ndarray:
    t = np.sort(rng.uniform(0.0, duration, size=n))
    return t - t[0]


def _lengths(rng, n_sequences, min_len, max_len):
    if not (1 <= min_len <= max_len):
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    return rng.integers(min_len, max_len + 1, size=n_sequences)


def make_sinusoids(n_sequences: int = 512, *, num_classes: int = 3, min_len: int = 20,
                   max_len: int = 60, duration: float = 10.0, noise: float = 0.05,
                   freq_range: tuple[float, float] = (0.1, 0.6),
                   task: Literal["classification", "regression", "none"] = "classification",
                   seed: int = 0) -> EventTable:
    """Irregularly sampled sinusoids; class = frequency bin, regression target = frequency."""
    rng = np.random.default_rng(seed)
    lo, hi = freq_range
    edges = np.linspace(lo, hi, num_classes + 1)
    labels = rng.integers(0, num_classes, size=n_sequences)
    # Keep frequencies away from bin edges so that the classes are well posed.
    width = edges[1] - edges[0]
    freq = edges[labels] + width * rng.uniform(0.15, 0.85, size=n_sequences)
    lengths = _lengths(rng, n_sequences, min_len, max_len)
    times, values = [], []
    for i in range(n_sequences):
        t = _times(rng, int(lengths[i]), duration)
        phase = rng.uniform(0, 2 * np.pi)
        x = np.sin(2 * np.pi * freq[i] * t + phase) + noise * rng.standard_normal(len(t))
        times.append(t)
        values.append(x[:, None].astype(np.float32))
    if task == "classification":
        return EventTable(np.arange(n_sequences), times, values, labels=labels,
                          channels=["x"], classes=list(range(num_classes)), task=task)
    y = freq[:, None].astype(np.float32) if task == "regression" else None
    return EventTable(np.arange(n_sequences), times, values, labels=y, channels=["x"],
                      task=task, target_names=["frequency"] if y is not None else ())


def make_spirals(n_sequences: int = 512, *, min_len: int = 20, max_len: int = 60,
                 duration: float = 10.0, noise: float = 0.05,
                 task: Literal["classification", "regression", "none"] = "classification",
                 seed: int = 0) -> EventTable:
    """Two-channel spirals; class 0 counter-clockwise, 1 clockwise; regression: turns."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n_sequences)
    turns = rng.uniform(0.5, 2.0, size=n_sequences)
    lengths = _lengths(rng, n_sequences, min_len, max_len)
    times, values = [], []
    for i in range(n_sequences):
        t = _times(rng, int(lengths[i]), duration)
        s = t / duration
        theta = (1 if labels[i] == 0 else -1) * 2 * np.pi * turns[i] * s + rng.uniform(0, 2 * np.pi)
        r = 0.2 + s
        xy = np.stack([r * np.cos(theta), r * np.sin(theta)], 1)
        xy += noise * rng.standard_normal(xy.shape)
        times.append(t)
        values.append(xy.astype(np.float32))
    if task == "classification":
        return EventTable(np.arange(n_sequences), times, values, labels=labels,
                          channels=["x", "y"], classes=[0, 1], task=task)
    y = turns[:, None].astype(np.float32) if task == "regression" else None
    return EventTable(np.arange(n_sequences), times, values, labels=y, channels=["x", "y"],
                      task=task, target_names=["turns"] if y is not None else ())


class SyntheticDataModule(EventDataModule):
    """:func:`make_sinusoids` or :func:`make_spirals` data, split 70/15/15 (seeded).

    Args:
        kind: ``"sinusoid"`` or ``"spiral"``.
        n_sequences, num_classes, min_len, max_len, duration, noise: generator settings.
        data_seed: seed of the generator (``seed`` seeds the split).
        task: ``"classification"`` (of the class), ``"regression"`` (of the frequency/turns)
            or ``"none"`` (e.g. with ``target="forecast"``).
        **kwargs: :class:`EventDataModule` options (target, forecast_steps, batch_size, ...).
    """

    def __init__(self, kind: Literal["sinusoid", "spiral"] = "sinusoid", n_sequences: int = 512,
                 num_classes: int = 3, min_len: int = 20, max_len: int = 60,
                 duration: float = 10.0, noise: float = 0.05, data_seed: int = 0,
                 task: Literal["classification", "regression", "none"] = "classification",
                 **kwargs):
        if kind not in ("sinusoid", "spiral"):
            raise ValueError(f"kind must be 'sinusoid' or 'spiral', got {kind!r}")
        super().__init__(None, task=task, **kwargs)
        self.gen = dict(n_sequences=n_sequences, min_len=min_len, max_len=max_len,
                        duration=duration, noise=noise, task=task, seed=data_seed)
        if kind == "sinusoid":
            self.gen["num_classes"] = num_classes
        self.kind = kind

    def load_table(self) -> EventTable:
        make = make_sinusoids if self.kind == "sinusoid" else make_spirals
        return make(**self.gen)
