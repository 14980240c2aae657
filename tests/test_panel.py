"""The panel of issue 22 (experiments/panel.py) and the classical yardsticks on any table
(experiments/yardsticks.py): the irregular versions of the shipped sets, the long table through
the generic EventDataModule, resuming from the results file, and the baselines' outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eventssm.datasets import load_uea
from tests.helpers import load_script

pytest.importorskip("aeon")
pytest.importorskip("sklearn")
yardsticks = load_script("experiments/yardsticks.py")
panel = load_script("experiments/panel.py")  # its own `import yardsticks` finds the module above


@pytest.mark.parametrize("rate", [0.3, 0.6])
def test_irregularize_is_seeded_drops_the_fraction_and_jitters_real_times(rate):
    table = load_uea("UnitTest")
    a = panel.irregularize(table, rate, seed=3)
    b = panel.irregularize(table, rate, seed=3)
    c = panel.irregularize(table, rate, seed=4)
    for ta, tb in zip(a.times, b.times, strict=True):
        np.testing.assert_array_equal(ta, tb)
    for va, vb in zip(a.values, b.values, strict=True):
        np.testing.assert_array_equal(va, vb)
    assert any(not np.array_equal(x, y) for x, y in zip(a.times, c.times, strict=True))
    for t, v, t0 in zip(a.times, a.values, table.times, strict=True):
        L = len(t0)
        assert len(t) == L - int(round(rate * L)) and v.shape == (len(t), table.num_channels)
        assert (np.diff(t) > 0).all()  # strictly increasing
        assert t[0] >= 0 and t[-1] <= L - 1
        assert not np.allclose(t, np.round(t))  # real-valued, not the sample indices
    np.testing.assert_array_equal(a.labels, table.labels)
    np.testing.assert_array_equal(a.split, table.split)


def test_irregularize_values_are_the_series_at_the_jittered_times():
    table = load_uea("UnitTest")
    irr = panel.irregularize(table, 0.3, seed=0)
    for k in (0, 7):
        grid = np.arange(len(table.times[k]))
        expect = np.interp(irr.times[k], grid, table.values[k][:, 0])
        np.testing.assert_allclose(irr.values[k][:, 0], expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("drop", [0.0, 0.6])
def test_long_table_round_trips_through_the_datamodule(drop):
    orig = load_uea("UnitTest")
    df = panel.panel_frame("UnitTest", drop, seed=1)
    assert {"id", "time", "label", "split"} <= set(df.columns)
    dm = panel.panel_datamodule(df, seed=1)
    n_train, n_test = int((orig.split == "train").sum()), int((orig.split == "test").sum())
    n = {s: len(dm.split_index[s]) for s in ("train", "val", "test")}
    assert n["train"] + n["val"] == n_train and n["test"] == n_test and n["val"] > 0
    # every class of the official train split keeps a share of the validation set
    assert set(dm.table.labels[dm.split_index["val"]]) == set(orig.labels)
    name = {sid: str(orig.classes[int(y)]) for sid, y in zip(orig.ids, orig.labels, strict=True)}
    split = dict(zip(orig.ids, orig.split, strict=True))
    for s, idx in dm.split_index.items():
        for i in idx:
            sid = dm.table.ids[i]
            assert dm.table.classes[int(dm.table.labels[i])] == name[sid]
            assert split[sid] == ("test" if s == "test" else "train")
    k = dm.table.ids.index(orig.ids[0])
    rows = df[df["id"] == orig.ids[0]]
    np.testing.assert_allclose(dm.table.times[k], rows["time"].to_numpy() - rows["time"].min())
    if drop == 0:
        np.testing.assert_array_equal(dm.table.times[k], orig.times[0])
    # the split's validation set follows the seed
    other = panel.panel_datamodule(df, seed=2)
    assert not np.array_equal(other.split_index["val"], dm.split_index["val"])


def test_candidates_are_checked():
    assert "readme" in panel.load_candidates()
    with pytest.raises(ValueError, match="unknown keys"):
        panel.load_candidates({"x": {"optimizer": {}}})
    with pytest.raises(ValueError, match="unknown trainer keys"):
        panel.load_candidates({"x": {"trainer": {"epochs": 3}}})


def test_resume_skips_finished_rows(tmp_path):
    out = tmp_path / "results.jsonl"
    kw = dict(datasets=("UnitTest",), drops=(0.6,), max_steps=2, out=out, classical=False,
              accelerator="cpu", log=lambda m: None)
    first = panel.run(seeds=(0,), **kw)
    assert len(first) == 1
    row = json.loads(out.read_text().splitlines()[0])
    assert row["model"] == "eventssm:readme" and row["steps"] == 2 and row["held_out"] is False
    assert 0 <= row["test_acc"] <= 1 and 0 <= row["val_acc"] <= 1 and row["seconds"] > 0
    assert panel.run(seeds=(0,), **kw) == []  # nothing left to do
    with out.open("a") as f:
        f.write('{"dataset": "UnitTest", "dr')  # a write cut short by a kill
    again = panel.run(seeds=(0, 1), **kw)
    assert [r["seed"] for r in again] == [1]
    assert [r["seed"] for r in panel.read_rows(out)] == [0, 1]
    # another step budget is another row; a spent time budget starts none
    assert panel.run(seeds=(0,), **{**kw, "budget_s": 0.0, "max_steps": 3}) == []
    assert len(panel.run(seeds=(0,), **{**kw, "max_steps": 3})) == 1
    text = panel.table(out)
    assert "UnitTest" in text and "eventssm:readme ≤2 steps" in text


def test_table_means_over_seeds(tmp_path):
    out = tmp_path / "r.jsonl"
    rng = np.random.default_rng(0)
    accs = rng.uniform(size=3)
    for seed, acc in enumerate(accs):
        for model in ("eventssm:readme", "MiniRocket"):
            panel.append_row(out, {"dataset": "JapaneseVowels", "drop": 0.3, "seed": seed,
                                   "model": model, "max_steps": None, "val_acc": acc,
                                   "test_acc": acc, "seconds": 1.0})
    text = panel.table(out)
    assert f"{accs.mean():.3f} ± {accs.std():.3f} (3)" in text
    assert "JapaneseVowels (held out)" in text and "30%" in text
    assert text.index("eventssm:readme") < text.index("MiniRocket")


def test_table_keeps_only_the_drops_asked_for(tmp_path):
    """``--table --drops 0.6``: the other rows leave the table and every model's mean."""
    out = tmp_path / "r.jsonl"
    for drop, acc in ((0.0, 0.2), (0.6, 0.9)):
        panel.append_row(out, {"dataset": "UnitTest", "drop": drop, "seed": 0,
                               "model": "MiniRocket", "max_steps": None, "val_acc": acc,
                               "test_acc": acc, "seconds": 1.0})
    everything, only = panel.table(out), panel.table(out, drops=[0.6])
    assert "| UnitTest | 0% |" in everything and "| UnitTest | 0% |" not in only
    assert "0.550 (2 rows)" in everything and "0.900 (1 rows)" in only


@pytest.mark.slow  # aeon's numba kernels compile on their first call
def test_classical_yardsticks_on_a_tiny_split(tmp_path, capsys):
    dm = panel.panel_datamodule(panel.panel_frame("UnitTest", 0.6, seed=0), seed=0)
    res = yardsticks.classical(dm, seed=0)
    assert set(res) == set(yardsticks.CLASSICAL)
    for r in res.values():
        assert 0 <= r["val"]["acc"] <= 1 and 0 <= r["test"]["acc"] <= 1 and r["seconds"] >= 0
    assert "DTW" in res["1-NN"]["detail"]
    euclid = yardsticks.classical(dm, seed=0, dtw_max_len=5, models=("1-NN",))
    assert "Euclidean" in euclid["1-NN"]["detail"]
    # the same from a CSV file, through the README's CSV DataModule
    path = tmp_path / "unit.csv"
    panel.panel_frame("UnitTest", 0.6, seed=0).to_csv(path, index=False)
    yardsticks.main(["--csv", str(path), "--split-col", "split", "--seeds", "0"])
    printed = capsys.readouterr().out
    for name in yardsticks.CLASSICAL:
        assert f"| {name} |" in printed


@pytest.mark.slow  # a short fit, then aeon's numba kernels compile on their first call
def test_eventssm_yardsticks_command_prints_the_model_beside_them(tmp_path, capsys):
    from eventssm.tasks import yardsticks as lib
    from eventssm.tasks.cli import main

    path = tmp_path / "unit.csv"
    panel.panel_frame("UnitTest", 0.6, seed=0).to_csv(path, index=False)
    data = ["--data", "eventssm.datasets.EventDataModule", "--data.source", str(path),
            "--data.split_col", "split", "--model", "eventssm.tasks.EventClassifier",
            "--trainer.max_epochs", "2", "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.enable_progress_bar", "false"]
    main(["fit", *data])
    config = next(tmp_path.glob("eventssm/version_0/config.yaml"))
    with pytest.raises(SystemExit, match="give --ckpt_path"):
        main(["yardsticks", "--config", str(config)])
    out = tmp_path / "y.md"
    main(["yardsticks", "--config", str(config), "--ckpt_path", "best", "--seeds", "0",
          "--out", str(out)])
    printed = capsys.readouterr().out
    for name in lib.CLASSICAL:
        assert f"| {name} |" in printed
    row = next(line for line in printed.splitlines() if "(this model)" in line)
    acc = float(row.split("|")[4])
    assert 0.0 <= acc <= 1.0
    assert "(this model)" in out.read_text()


@pytest.mark.slow  # the README's budget on the CPU (about a minute or two), then the yardsticks
def test_readme_csv_commands_reach_most_of_minirocket_on_a_panel_dataset(tmp_path):
    """The README's CSV commands verbatim (with the defaults they rely on) on BasicMotions with
    60 % of its points dropped (two of its channels as the README's ``hr`` and ``bp``, its
    official train/test split as the ``fold`` column): the trained model must reach at least 80 %
    of MiniRocket's test accuracy on the same split, so that a broken default shows."""
    from tests.test_quickstart import _argv, _readme_block, _run

    df = panel.panel_frame("BasicMotions", 0.6, seed=0)
    channels = [c for c in df.columns if c not in ("id", "time", "label", "split")]
    df = df.rename(columns={"id": "patient", "label": "outcome", "split": "fold",
                            channels[0]: "hr", channels[1]: "bp"})
    df[["patient", "time", "hr", "bp", "outcome", "fold"]].to_csv(tmp_path / "visits.csv",
                                                                  index=False)
    fit, test, yard = _readme_block("## Train on your own pandas table", "visits.csv")
    quiet = ["--trainer.enable_progress_bar", "false"]
    _run(_argv(fit) + ["--data.split_col", "fold", "--seed_everything", "0", *quiet], tmp_path)
    _run(_argv(test) + quiet, tmp_path)
    out = _run(_argv(yard) + quiet, tmp_path).stdout
    print(out[-2500:])
    row = {line.split("|")[1].strip(): line.split("|")[4].strip() for line in out.splitlines()
           if line.startswith("| ") and line.count("|") == 6}
    ours = float(row["EventClassifier (this model)"])
    minirocket = float(row["MiniRocket"].split()[0])
    print(f"eventssm {ours:.3f}, MiniRocket {minirocket:.3f}")
    assert ours >= 0.8 * minirocket
