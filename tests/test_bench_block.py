"""The block benchmark's CPU smoke mode runs end to end and prints one table with a ratio per row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_block_bench_cpu_smoke(tmp_path):
    out = tmp_path / "block.md"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments/bench/block.py"), "--device", "cpu", "--small",
         "--depths", "1", "2", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    rows = [r for r in out.read_text().splitlines() if r.startswith("| ") and "---" not in r][1:]
    sections = {r.split(" | ")[0][2:] for r in rows}
    print(len(rows), "rows", sections)
    assert sections == {"block", "launches", "conv", "scan"}
    # every scheme x coupling: at 2 depths in the block section, forward and fwd+bwd in the scan's
    block = load_script("experiments/bench/block.py")
    cases = len(block.SCHEMES) * len(block.COUPLINGS)
    assert sum(r.startswith("| block") for r in rows) == 2 * cases
    assert sum(r.startswith("| scan") for r in rows) == 2 * cases
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        if cells[0] != "launches":
            float(cells[3]), float(cells[5])  # a time and a ratio in every timed row
