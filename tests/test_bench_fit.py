"""The training-throughput benchmark's dry run trains every row through Lightning on the CPU and
writes one table with a row per model and mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fit_bench_dry_run(tmp_path):
    out = tmp_path / "fit.md"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments/bench/fit.py"), "--dry-run", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=900)
    print(proc.stdout[-4000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    rows = [r for r in out.read_text().splitlines() if r.startswith("| ") and "---" not in r][1:]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    bench = load_script("experiments/bench/fit.py")
    assert [(c[1], c[2]) for c in cells] == [(r.model, r.mode) for r in bench.ROWS]
    for c, row in zip(cells, bench.ROWS):
        size, _, _, median, spread, vs_gru, vs_mamba, note = c
        assert size == "tiny"
        if row.backbone == "mamba-ssm":  # no CUDA here: skipped, and the table says why
            assert median == "-" and note.startswith("skipped")
            continue
        assert float(median.replace(",", "")) > 0 and "–" in spread, c
        assert float(vs_gru) > 0 and vs_mamba == "-"
        if row.compile:
            assert "× eager" in note and "new graphs" in note, note
        assert "failed" not in note
    gru = next(c for c in cells if c[1] == "torch.nn.GRU")
    assert gru[5] == "1.00"
