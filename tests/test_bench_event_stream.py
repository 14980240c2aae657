"""The EventStream latency benchmark runs end to end on a few streams and short histories and
prints a row per history length with positive times."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a subprocess with its imports and a model: about 30 s on 2 cores
def test_event_stream_bench_smoke():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments/bench/event_stream.py"), "--streams", "3",
         "--history", "2", "12", "--repeats", "2", "--chunk", "4"],
        capture_output=True, text=True, timeout=600)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    rows = [[c.strip() for c in r.strip("|").split("|")] for r in proc.stdout.splitlines()
            if r.startswith("| ") and "---" not in r][1:]
    assert [r[0] for r in rows] == ["2", "12"]
    for r in rows:
        assert all(float(c.split()[0]) > 0 for c in r[1:] if c.split()[0] != "0.000"), r
        assert float(r[1].split()[0]) > 0 and float(r[6].split()[0]) > 0
