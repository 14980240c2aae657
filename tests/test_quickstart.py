"""`make run` and the README commands that follow it, verbatim, on the files the run made; the
README's CSV example on a small table."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _readme_block(after: str, containing: str) -> list[str]:
    """Commands of the first ```bash block after heading ``after`` that mentions ``containing``
    (continuation lines joined, comments dropped)."""
    text = (ROOT / "README.md").read_text()
    text = text[text.index(after):]
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        if containing in block:
            joined = block.replace("\\\n", " ")
            return [ln.split("   #")[0].strip() for ln in joined.splitlines()
                    if ln.strip() and not ln.startswith("#")]
    raise AssertionError(f"no bash block with {containing!r} after {after!r} in README.md")


def _makefile_recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text().replace("\\\n", " ").splitlines()
    i = lines.index(next(ln for ln in lines if ln.startswith(f"{target}:")))
    out = []
    for ln in lines[i + 1:]:
        if not ln.startswith("\t"):
            break
        out.append(ln.strip())
    return out


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (cmd, r.stdout[-2000:], r.stderr[-3000:])
    return r


def _argv(cmd: str) -> list[str]:
    """A README/Makefile command line with this interpreter's console scripts."""
    argv = shlex.split(cmd.replace("$(VENV)/bin/", "").replace("$(PY)", "python"))
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    if argv[0] == "eventssm":
        return [str(BIN / "eventssm"), *argv[1:]]
    return argv


@pytest.mark.slow
def test_make_run_then_the_readme_commands_verbatim(tmp_path):
    """The Makefile's `run` recipe (with the fit shortened: 1 epoch on 192 sequences) in a fresh
    folder, then every command the README gives after it, unchanged."""
    (tmp_path / "experiments").symlink_to(ROOT / "experiments")
    (tmp_path / "runs" / "quickstart" / "version_0").mkdir(parents=True)  # a stale run: replaced
    recipe = _makefile_recipe("run")
    assert recipe[0] == "rm -rf runs/quickstart/version_0"
    shutil.rmtree(tmp_path / "runs" / "quickstart" / "version_0")
    fit, compare = recipe[1], recipe[2]
    _run(_argv(fit) + ["--trainer.max_epochs", "1", "--data.n_sequences", "192",
                       "--trainer.enable_progress_bar", "false"], tmp_path)
    run = tmp_path / "runs" / "quickstart" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").exists() and (run / "metrics.csv").exists()
    out = _run(_argv(compare), tmp_path).stdout
    print(out[-1500:])
    assert "best without the times" in out and "event model" in out
    cmds = _readme_block("## Quickstart", "runs/quickstart/version_0")
    assert cmds[0] == "source .venv/bin/activate"
    for cmd in cmds[1:]:
        _run(_argv(cmd), tmp_path)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_readme_csv_example_on_a_few_dozen_sequences(tmp_path):
    """The README's command-line CSV example, verbatim but for the log folders, on a table of 40
    patients with a train/test split column."""
    rng = np.random.default_rng(0)
    rows = []
    base = pd.Timestamp("2024-03-01")
    for p in range(40):
        y = p % 2
        for _ in range(int(rng.integers(4, 10))):
            rows.append(dict(patient=f"p{p}", time=base + pd.Timedelta(hours=float(rng.uniform(0, 48))),
                             hr=rng.normal(70 + 10 * y, 5), bp=rng.normal(120, 10),
                             outcome=y, fold="test" if p % 5 == 0 else "train"))
    pd.DataFrame(rows).to_csv(tmp_path / "visits.csv", index=False)
    (cmd,) = _readme_block("## Train on your own pandas table", "visits.csv")
    argv = _argv(cmd) + ["--data.split_col", "fold", "--trainer.max_epochs", "2",
                         "--trainer.enable_progress_bar", "false"]
    _run(argv, tmp_path)
    (metrics,) = (tmp_path / "runs").rglob("metrics.csv")
    df = pd.read_csv(metrics)
    steps = df["step"].max()
    print(df.dropna(subset=["val/acc"])[["epoch", "val/acc"]])
    # 28 train sequences after carving 4 for val: batch 4, 7 steps per epoch, nothing dropped
    assert df["val/acc"].notna().sum() == 2 and steps >= 2 * 7 - 1


@pytest.mark.parametrize("bar", ["rich", "tqdm"])
def test_progress_bar_shows_the_whole_version(tmp_path, bar):
    from eventssm.tasks.cli import build_cli

    args = ["--config", str(ROOT / "experiments" / "configs" / "quickstart.yaml"),
            "--data.n_sequences", "40", "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.logger.init_args.version", "0"]
    if bar == "tqdm":
        args += ["--trainer.callbacks+=TQDMProgressBar"]
    cli = build_cli(args, run=False)
    pb = cli.trainer.progress_bar_callback
    assert type(pb).__name__ == ("_RichBar" if bar == "rich" else "_TQDMBar")
    assert pb.get_metrics(cli.trainer, cli.model)["v_num"] == "0"
