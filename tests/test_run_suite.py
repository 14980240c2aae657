"""The results suite's command lines (experiments/run_suite.py): the "-resplit" datasets draw
the data split with the run's seed; the others keep one split for every seed."""

from __future__ import annotations

import pytest

from tests.helpers import load_script

run_suite = load_script("experiments/run_suite.py")


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


def test_paired_differences_from_a_log(tmp_path, capsys):
    """``--from-log ... --paired REF``: per-seed differences to REF (same split and seed), their
    mean ± std and how often the model is ahead, computed from the log's values."""
    import numpy as np

    a = {0: 0.90, 1: 0.80, 2: 0.85}
    b = {0: 0.88, 1: 0.84, 2: 0.80}
    log = tmp_path / "log.txt"
    log.write_text("".join(
        f"done ('pbcseq', '{m}', {s}) {{'auroc': {v[s]}}}  1 s\n"
        for m, v in (("standard-mamba", a), ("gbt", b)) for s in a))
    run_suite.main(["--from-log", str(log), "--datasets", "pbcseq", "--discs", "standard-mamba",
                    "--baselines", "gbt", "--paired", "gbt"])
    out = capsys.readouterr().out
    print(out)
    diffs = [100 * (a[s] - b[s]) for s in a]
    ahead = sum(d > 0 for d in diffs)
    want = (f"| pbcseq | standard-mamba | {np.mean(diffs):+.1f} ± {np.std(diffs):.1f} | "
            f"{ahead} of {len(diffs)} |")
    assert want in out
    assert f"| pbcseq | standard-mamba | auroc | {100 * np.mean(list(a.values())):.1f} ± " in out
