"""experiments/stream_csv.py: replays a CSV through an EventStream, one forecast line per event
(its own example CSV, or a given one, with a model trained for two steps)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# each test trains a model for two steps in a subprocess: about 13 s on 2 cores
pytestmark = pytest.mark.slow


def _run(*args) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "experiments/stream_csv.py"), "--steps", "2",
                           *args], capture_output=True, text=True, timeout=600, cwd=ROOT)
    print(proc.stdout[-4000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    return proc.stdout


def test_replays_a_given_csv(tmp_path):
    csv = tmp_path / "ev.csv"
    # rows out of time order across ids: replayed in time order
    csv.write_text("id,time,mark\nb,0.5,1\na,0.2,0\na,1.0,1\nb,1.7,0\na,1.25,0\n")
    out = _run("--csv", str(csv))
    lines = [ln for ln in out.splitlines() if ln.startswith("t=")]
    assert [ln.split()[1] for ln in lines] == ["a", "b", "a", "a", "b"]
    assert [float(ln.split()[0][2:]) for ln in lines] == [0.2, 0.5, 1.0, 1.25, 1.7]
    assert all("next: in" in ln and "P(nothing for 1)" in ln for ln in lines)
    assert "one sampled future per stream" in out and "(last event at 1.700)" in out


def test_writes_its_own_csv(tmp_path):
    out = _run("--out", str(tmp_path))
    assert (tmp_path / "events.csv").exists()
    rows = (tmp_path / "events.csv").read_text().splitlines()[1:]
    lines = [ln for ln in out.splitlines() if ln.startswith("t=")]
    assert len(lines) == len(rows) > 10


def test_bad_csv_names_the_missing_column(tmp_path):
    csv = tmp_path / "ev.csv"
    csv.write_text("id,t,mark\na,0.2,0\n")
    proc = subprocess.run([sys.executable, str(ROOT / "experiments/stream_csv.py"), "--steps", "1",
                           "--csv", str(csv)], capture_output=True, text=True, timeout=600)
    print(proc.stderr[-2000:])
    assert proc.returncode != 0 and "missing ['time']" in proc.stderr
