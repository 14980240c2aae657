"""The training-throughput benchmark's dry run trains every row through Lightning on the CPU and
writes one table with a row per model and mode."""

from __future__ import annotations

import pytest

from tests.helpers import bench_table_rows, load_script


@pytest.mark.slow
def test_fit_bench_dry_run(tmp_path):
    rows = bench_table_rows("experiments/bench/fit.py", "--dry-run", out=tmp_path / "fit.md",
                            timeout=900)
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
