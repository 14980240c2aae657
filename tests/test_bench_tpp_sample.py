"""The sampling benchmark runs end to end on a tiny history and prints a row per head and
sampler, both samplers drawing the requested number of events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a subprocess with its imports and a model: about 30 s on 2 cores
def test_tpp_sample_bench_smoke():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments/bench/tpp_sample.py"), "--history", "30",
         "--events", "4", "--repeats", "2"],
        capture_output=True, text=True, timeout=600)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    rows = [[c.strip() for c in r.strip("|").split("|")] for r in proc.stdout.splitlines()
            if r.startswith("| ") and "---" not in r][1:]
    assert [(r[0], r[1]) for r in rows] == [("mixture", "reencode"), ("mixture", "step"),
                                            ("intensity", "reencode"), ("intensity", "step")]
    for r in rows:
        assert float(r[2]) > 0 and r[5] == "4"
    assert all(r[6].endswith("x") for r in rows if r[1] == "step")
