"""``compile=True`` on a task: its ``forward`` runs under ``torch.compile`` (on the CPU too),
trains to the eager losses and weights, breaks its graphs only where the CPU scan is, and is
accepted by the command line and YAML configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("lightning")

import lightning as L  # noqa: E402

from eventssm import Asymmetric  # noqa: E402
from eventssm.datasets import SyntheticDataModule  # noqa: E402
from eventssm.tasks import EncoderConfig, EventClassifier  # noqa: E402
from eventssm.tasks.cli import build_cli  # noqa: E402
from tests.helpers import rel_err  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(d_model=16, n_layers=2, d_state=4, dropout=0.0, discretization=Asymmetric("zoh"))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Compiled code and counters of one test do not leak into the next."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class _Losses(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def _fit(compile: bool, steps: int = 3):
    """A few training steps on fixed-length batches (one compilation), seeded identically;
    returns the model, its losses and the DataModule."""
    L.seed_everything(0)
    dm = SyntheticDataModule(n_sequences=64, min_len=16, max_len=16, num_classes=3,
                             batch_size=8, pack=False, seed=0, data_seed=0)
    dm.setup("fit")
    model = EventClassifier(num_classes=3, d_input=dm.d_input, use_observed=dm.use_observed,
                            backbone=EncoderConfig(**TINY), time_scale=dm.time_scale,
                            lr=1e-2, scheduler="constant", compile=compile)
    meter = _Losses()
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[meter])
    trainer.fit(model, datamodule=dm)
    return model, meter.losses, dm


@pytest.mark.slow
def test_compiled_training_matches_eager():
    eager, eager_losses, dm = _fit(compile=False)
    # a graph another test of this process compiled for the same code would be reused: start
    # from an empty cache, so that the count below sees this run's compilation
    torch._dynamo.reset()
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled, compiled_losses, _ = _fit(compile=True)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before
    print("eager losses", eager_losses, "\ncompiled losses", compiled_losses, "\ngraphs", graphs)
    # the compiled run did compile (else the comparisons below would hold trivially)
    assert eager._compiled_call_impl is None and compiled._compiled_call_impl is not None
    assert graphs >= 1
    diff = max(abs(a - b) for a, b in zip(eager_losses, compiled_losses))
    print(f"max |loss difference| over {len(eager_losses)} steps: {diff:.3g}")
    assert len(compiled_losses) == len(eager_losses) == 3
    assert diff <= 1e-5
    # Same parameter names: a checkpoint of a compiled run loads into an eager model. Then one
    # more step's gradients from the same weights and batch, compared before the optimiser
    # (AdamW's normalisation magnifies float32 round-off in gradients near zero).
    eager.load_state_dict(compiled.state_dict())
    batch = next(iter(dm.train_dataloader()))
    grads = {}
    for name, model in (("eager", eager), ("compiled", compiled)):
        model.train()
        model.zero_grad()
        # the loss of _step without its logging (the finished Trainer still owns the models)
        F.cross_entropy(model(batch), batch["target"]).backward()
        grads[name] = {n: p.grad for n, p in model.named_parameters()}
    worst = max((rel_err(grads["compiled"][n], g), n) for n, g in grads["eager"].items())
    print(f"max relative gradient error: {worst[0]:.3g} ({worst[1]})")
    assert worst[0] <= 1e-5


def _batch(B=4, L_=12, C=1, seed=0):
    """A padded batch as the collate makes it: float64 gaps (0 at the first event and at
    padding), lengths, and values zero at padding."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([L_, L_ - 3, 5, L_][:B])
    real = torch.arange(L_)[None] < lengths[:, None]
    gaps = torch.rand(B, L_, dtype=torch.float64, generator=g) * real
    gaps[:, 0] = 0
    values = torch.randn(B, L_, C, generator=g) * real[..., None]
    return dict(values=values, integration_timesteps=gaps, lengths=lengths,
                target=torch.zeros(B, dtype=torch.long))


def _break_reasons(model, batch) -> list[str]:
    explained = torch._dynamo.explain(model)(batch)
    return [b.reason.splitlines()[0] for b in explained.break_reasons]


@pytest.mark.slow  # compiles the whole model: about 30 s on 2 cores
def test_graph_breaks_only_at_the_cpu_scan():
    """On the CPU the chunked scan (an autograd.Function that calls torch.autograd.grad) runs
    eagerly between compiled graphs: every break is there, none is a host sync, which the
    value checks of batches from elsewhere would add."""
    model = EventClassifier(num_classes=2, d_input=1, backbone=EncoderConfig(**TINY))
    reasons = _break_reasons(model, _batch())
    print(reasons)
    assert reasons and all("torch.compiler.disable" in r for r in reasons)
    torch._dynamo.reset()
    model.validate_batches = True
    checked = _break_reasons(model, _batch())
    print(checked)
    assert any("torch.compiler.disable" not in r for r in checked)


def test_compile_must_be_a_bool():
    with pytest.raises(TypeError, match="compile must be True or False, got 'yes'"):
        EventClassifier(num_classes=2, d_input=1, compile="yes")


def _cli_model(tmp_path, *extra):
    cli = build_cli(["--config", str(ROOT / "experiments/configs/quickstart.yaml"),
                     "--trainer.default_root_dir", str(tmp_path), *extra], run=False)
    return cli.model


@pytest.mark.parametrize("how", ["flag", "yaml", "default"])
def test_cli_and_yaml_accept_compile(tmp_path, how):
    if how == "flag":
        extra = ["--model.compile", "true"]
    elif how == "yaml":
        cfg = tmp_path / "compile.yaml"
        cfg.write_text("model:\n  init_args:\n    compile: true\n")
        extra = ["--config", str(cfg)]
    else:
        extra = []
    model = _cli_model(tmp_path, *extra)
    want = how != "default"
    assert model.hparams["compile"] is want and model.compile_forward is want
    model.configure_model()  # what a Trainer calls before the first step
    assert (model._compiled_call_impl is not None) is want
    model.configure_model()  # a second fit/test in the same process keeps the same wrapper
