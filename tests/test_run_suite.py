"""The results suite's command lines (experiments/run_suite.py): the "-resplit" datasets draw
the data split with the run's seed; the others keep one split for every seed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
run_suite = pytest.importorskip("run_suite")


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


@pytest.mark.parametrize("seed", [0, 7])
def test_resplit_datasets_seed_the_split_with_the_run_seed(seed):
    for base in ("pbcseq", "nafld"):
        args = run_suite._cli_args(f"{base}-resplit", "standard-mamba", seed, "/tmp/r", None)
        print(base, args)
        assert _flag(args, "--data.init_args.seed") == str(seed)
        assert _flag(args, "--seed_everything") == str(seed)
        plain = run_suite._cli_args(base, "standard-mamba", seed, "/tmp/r", None)
        assert "--data.init_args.seed" not in plain
        assert not any("{seed}" in a for a in args + plain)
