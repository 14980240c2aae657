"""Online inference: the latency of pushing an event into an ``EventStream``, against the length
of the history the streams already hold.

    python experiments/bench/event_stream.py                   # CPU: 64 streams, 10 .. 10,000 events
    python experiments/bench/event_stream.py --device cuda

An untrained ``EventTPP`` (the task's default encoder: d_model 64, 2 layers, d_state 16; 3 event
types) behind an ``EventStream`` of ``--streams`` streams. The histories are filled up to each
length of ``--history`` (in bulk pushes, which encode the chunk), then, at that length:

* one stream: ``--repeats`` pushes of one event into one stream (the streams in turn), each
  timed alone: the online case, one event in; beside it, ``EventEncoder.step`` alone on a copy of
  that stream's state with the same event (what the push costs without the stream's bookkeeping:
  its checks and moving the stream's row out of the shared state and back);
* all streams: ``--repeats`` pushes of one event into every stream at once, each timed alone
  (per event: the push's time over the number of streams);
* ``--compile``: the same with ``EventStream(compile=True)``; the step-alone column stays the
  eager step;
* next event: ``--repeats`` reads of one stream's next-event prediction after its push (the
  mixture head's predictive median, found by bisection).

On the CPU torch runs one thread by default here (``--threads``): one event's operations are too
small to share out, and on a loaded machine extra threads wait for cores.

Each cell: the median over the repeats, with the minimum and maximum. The histories grow by the
timed pushes themselves (the row's ``history`` is the length before them). Wall clock
(``perf_counter``, after a device synchronisation on CUDA); on a shared machine the numbers move
with the other jobs, mostly the maxima. Beside the one-stream push's wall clock, the CPU time
this process spent in it (``process_time``; with one thread, the wall clock less the time the
other jobs held the core; its resolution is the OS's, a fraction of a millisecond).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from eventssm.tasks import EncoderConfig, EventStream, EventTPP  # noqa: E402


def _timed(device: str, fn, *args, **kwargs) -> tuple[float, float]:
    """``(wall seconds, this process's CPU seconds)`` of ``fn(*args, **kwargs)``."""
    if device == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args, **kwargs)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0


def _cell(ts: list[float], scale: float = 1e3) -> str:
    return f"{statistics.median(ts) * scale:.3f} ({min(ts) * scale:.3f}-{max(ts) * scale:.3f})"


class _Clock:
    """Each stream's next event: Exp(1) gaps after its latest time, random types."""

    def __init__(self, n: int, K: int, seed: int = 0):
        self.g = torch.Generator().manual_seed(seed)
        self.t = torch.zeros(n, dtype=torch.float64)
        self.n, self.K = n, K

    def next(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gaps = torch.empty(len(rows), dtype=torch.float64).exponential_(generator=self.g)
        self.t[rows] += gaps
        return self.t[rows].clone(), torch.randint(0, self.K, (len(rows),), generator=self.g)


def _fill(stream: EventStream, clock: _Clock, events: int, chunk: int) -> None:
    """``events`` more events into every stream, in bulk pushes of ``chunk`` per stream."""
    rows = torch.arange(clock.n)
    while events > 0:
        k = min(chunk, events)
        ts, ms = zip(*(clock.next(rows) for _ in range(k)))  # k events per stream, in time order
        stream.push(rows.repeat(k).tolist(), torch.cat(ts), marks=torch.cat(ms))
        events -= k


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--history", type=int, nargs="+", default=[10, 100, 1000, 10000],
                   help="history lengths to time at (increasing)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--chunk", type=int, default=500, help="events per stream per bulk push")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (an event's ops are too small to split; 0: torch's default)")
    p.add_argument("--compile", action="store_true",
                   help="EventStream(compile=True): the one-event step under torch.compile (the "
                        "warm-up pushes compile it)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    K, n = 3, args.streams
    torch.manual_seed(0)
    model = EventTPP(num_marks=K, log_gap_stats=(0.0, 1.0), backbone=EncoderConfig()).to(args.device)
    stream = EventStream(model, capacity=n, compile=args.compile)
    clock = _Clock(n, K)
    name = torch.cuda.get_device_name() if args.device == "cuda" else (
        f"CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(f"# EventStream push latency: {n} streams, untrained EventTPP (d_model 64, 2 layers, "
          f"d_state 16), {args.repeats} repeats; {name}; torch {torch.__version__}"
          f"{'; compiled step' if args.compile else ''}\n")
    print("| history | one stream: push ms | one stream: push CPU ms | one stream: step alone ms "
          "| all streams: push ms | all streams: per event µs | one stream: next_event ms |")
    print("|---|---|---|---|---|---|---|")
    # untimed warm-up pushes before each column's: a compiled step compiles on its first call and
    # once more when an int it reads first changes (torch's automatic dynamic shapes)
    warm = 3 if args.compile else 1
    held = 0
    for target in args.history:
        _fill(stream, clock, target - held, args.chunk)
        held = target
        one, one_cpu, alone, every, nxt = [], [], [], [], []
        for r in range(args.repeats + warm):
            ids = [r % n]
            t, m = clock.next(torch.tensor(ids))
            copy = stream.cache.select(torch.tensor(ids, device=args.device))  # the state before
            dt, dc = _timed(args.device, stream.push, ids, t, marks=m)
            with torch.no_grad():
                ds, _ = _timed(args.device, model.encoder.step, marks=m.to(args.device), cache=copy,
                               timestamps=t.to(args.device), check_values=False)
            dn, _ = _timed(args.device, stream.next_event, ids)
            if r >= warm:
                one.append(dt)
                one_cpu.append(dc)
                alone.append(ds)
                nxt.append(dn)
        ids = list(range(n))
        for r in range(args.repeats + warm):
            t, m = clock.next(torch.tensor(ids))
            dt, _ = _timed(args.device, stream.push, ids, t, marks=m)
            if r >= warm:
                every.append(dt)
        held = int(stream.count(list(range(n))).min())
        print(f"| {target} | {_cell(one)} | {_cell(one_cpu)} | {_cell(alone)} | {_cell(every)} "
              f"| {_cell([x / n for x in every], 1e6)} | {_cell(nxt)} |")


if __name__ == "__main__":
    main()
