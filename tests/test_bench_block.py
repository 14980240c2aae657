"""The block benchmark's CPU smoke mode runs end to end and prints one table with a ratio per row."""

from __future__ import annotations

import pytest

from tests.helpers import bench_table_rows, load_script


@pytest.mark.slow
def test_block_bench_cpu_smoke(tmp_path):
    rows = bench_table_rows("experiments/bench/block.py", "--device", "cpu", "--small",
                            "--depths", "1", "2", out=tmp_path / "block.md", timeout=600)
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


@pytest.mark.slow
def test_block_host_python_runs_with_the_kernels_stubbed():
    """experiments/bench/block_host_python.py: the fused block's Python with stand-in kernels
    runs forward and backward and prints a time per model and a profile that reaches the node."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    proc = subprocess.run([sys.executable, str(ROOT / "experiments/bench/block_host_python.py"),
                           "--rounds", "1", "--steps", "5", "--top", "5"],
                          capture_output=True, text=True, timeout=300)
    print(proc.stdout[-3000:], proc.stderr[-2000:])
    assert proc.returncode == 0
    rows = [r for r in proc.stdout.splitlines() if r.startswith("| ") and "ms per" not in r]
    assert len(rows) == 2 and all(float(r.split("|")[2].split()[0]) > 0 for r in rows)
    assert "mamba_inner.py" in proc.stdout  # the profile went through the one-node block
