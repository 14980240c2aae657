"""Replay a CSV of events as a live stream and print each stream's forecast as it updates.

    python experiments/stream_csv.py                    # a small EventTPP trained here, a CSV written here
    python experiments/stream_csv.py --csv events.csv \\
        --ckpt runs/tpp_hawkes/version_0/checkpoints/last.ckpt

The CSV has one row per event and the columns ``id`` (any stream name), ``time`` (a number, in
the unit the model was trained on) and ``mark`` (an event type in ``[0, num_marks)``). Rows are
replayed in time order, each pushed alone into an :class:`eventssm.tasks.EventStream`; after each
one the script prints, for that stream, the predicted next event (when, and which type) and the
chance that nothing happens within ``--window``. At the end it prints one sampled future per
stream.

Without ``--ckpt`` an :class:`~eventssm.tasks.EventTPP` is trained for ``--steps`` optimisation
steps on synthetic Hawkes data (seconds on a CPU: a demonstration, not a good model). Without
``--csv`` a small CSV of three streams is written to ``--out`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np
import torch

from eventssm.tasks import EncoderConfig, EventStream, EventTPP


def train_small_model(steps: int, num_marks: int, seed: int = 0) -> EventTPP:
    """An EventTPP trained for ``steps`` steps on synthetic Hawkes sequences."""
    import lightning as L

    from eventssm.datasets import SyntheticTPPDataModule

    L.seed_everything(seed, verbose=False)
    dm = SyntheticTPPDataModule(num_marks=num_marks, n_sequences=64, max_events=32, batch_size=16)
    dm.build()
    model = EventTPP(num_marks=dm.num_marks, log_gap_stats=dm.log_gap_stats, lr=1e-2,
                     time_scale=dm.time_scale, backbone=EncoderConfig(d_model=32, dropout=0.0))
    L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False,
              num_sanity_val_steps=0, limit_val_batches=0).fit(model, dm)
    return model


def write_example_csv(path: Path, num_marks: int, seed: int = 0) -> Path:
    """Three streams of 6-10 events each (exponential gaps, random types), rows sorted by time."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, rate in (("pump-1", 1.0), ("pump-2", 0.5), ("valve-7", 2.0)):
        t = np.cumsum(rng.exponential(1 / rate, rng.integers(6, 11)))
        rows += [(name, round(float(x), 4), int(m)) for x, m in zip(t, rng.integers(0, num_marks, len(t)))]
    rows.sort(key=lambda r: r[1])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "time", "mark"])
        w.writerows(rows)
    return path


def read_events(path: Path) -> list[tuple[str, float, int]]:
    """``(id, time, mark)`` rows, in time order (rows of equal time keep the file's order)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"id", "time", "mark"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: the CSV needs the columns id, time, mark; missing "
                             f"{sorted(missing)} (got {reader.fieldnames})")
        rows = [(r["id"], float(r["time"]), int(r["mark"])) for r in reader]
    return sorted(rows, key=lambda r: r[1])


def replay(stream: EventStream, rows, window: float, horizon: float, seed: int = 0) -> None:
    """Push the rows one at a time, printing each stream's updated forecast, then one sampled
    future per stream."""
    for sid, t, mark in rows:
        stream.push([sid], [t], marks=[mark])
        nxt = stream.next_event([sid])
        probs = nxt["type_probs"][0]
        quiet = float(stream.survival([sid], t + window)[0])
        print(f"t={t:<9.4f} {sid:>10} type {mark} | next: in {float(nxt['gap'][0]):.3f} "
              f"(t={float(nxt['time'][0]):.3f}), type {int(probs.argmax())} "
              f"p={float(probs.max()):.2f} | P(nothing for {window:g}) = {quiet:.3f}")
    g = torch.Generator().manual_seed(seed)
    ids = stream.streams
    fut = stream.sample_futures(ids, horizon=horizon, n_samples=1, max_events=8, generator=g)
    print(f"\none sampled future per stream, up to {horizon:g} after its latest event:")
    for i, sid in enumerate(ids):
        m = fut["mask"][i, 0]
        events = ", ".join(f"{float(t):.3f}:{int(k)}" for t, k in
                           zip(fut["times"][i, 0][m], fut["marks"][i, 0][m]))
        print(f"  {sid:>10} (last event at {float(stream.last_time([sid])[0]):.3f}): "
              f"{events or 'nothing'}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", type=Path, help="events to replay (columns id,time,mark)")
    p.add_argument("--ckpt", help="an EventTPP checkpoint (default: train a small model here)")
    p.add_argument("--steps", type=int, default=60, help="training steps without --ckpt")
    p.add_argument("--num-marks", type=int, default=2, help="event types of the model trained here")
    p.add_argument("--window", type=float, default=1.0, help="the 'nothing happens within' window")
    p.add_argument("--horizon", type=float, default=3.0, help="how far to sample futures")
    p.add_argument("--out", type=Path, help="folder for the example CSV (without --csv)")
    args = p.parse_args(argv)
    if args.ckpt:
        model = EventTPP.load_from_checkpoint(args.ckpt, map_location="cpu")
    else:
        model = train_small_model(args.steps, args.num_marks)
    path = args.csv
    if path is None:
        folder = args.out or Path(tempfile.mkdtemp(prefix="stream_csv_"))
        folder.mkdir(parents=True, exist_ok=True)
        path = write_example_csv(folder / "events.csv", model.num_marks)
        print(f"wrote {path}")
    rows = read_events(path)
    print(f"replaying {len(rows)} events of {len({r[0] for r in rows})} streams from {path} "
          f"({model.head.__class__.__name__}, {model.num_marks} types)\n")
    replay(EventStream(model), rows, args.window, args.horizon)


if __name__ == "__main__":
    main()
