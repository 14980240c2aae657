"""Construction by keywords: the SSM's Δ initialisation as one keyword-only config, and the
backend set from the task configs (so a YAML config or a flag picks it)."""

import dataclasses

import pytest
import torch

from eventssm import Mamba, SelectiveSSM
from eventssm.ssm import DtInit, ssm_parameters


def test_dt_init_is_keyword_only_and_reaches_the_parameters():
    with pytest.raises(TypeError):
        DtInit(0.01, 0.1)  # positional arguments are refused
    with pytest.raises(TypeError):
        ssm_parameters(8, 4, 1, DtInit(), False)
    lo, hi = 0.01, 0.02
    torch.manual_seed(0)
    m = Mamba(16, d_state=4, dt_min=lo, dt_max=hi)
    step = torch.nn.functional.softplus(m.dt_proj.bias)
    print(step.min().item(), step.max().item())
    assert lo * 0.999 <= step.min() and step.max() <= hi * 1.001
    # the same seed gives the same parameters, in mamba-ssm's registration order
    torch.manual_seed(0)
    again = Mamba(16, d_state=4, dt_min=lo, dt_max=hi)
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in again.named_parameters()]
    for (n, p), (_, q) in zip(m.named_parameters(), again.named_parameters()):
        assert torch.equal(p, q), n
    assert SelectiveSSM(8, d_state=4, dt_init="constant").dt_proj.weight.unique().numel() == 1


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_backend_from_the_task_configs(backend):
    pytest.importorskip("lightning")
    from eventssm.tasks import ByteLM, EncoderConfig, EventClassifier, LMConfig

    task = EventClassifier(num_classes=2, d_input=1, backbone=EncoderConfig(d_model=8, n_layers=2, d_state=4,
                                                                           backend=backend))
    assert {layer.mixer.backend for layer in task.encoder.backbone.layers} == {backend}
    lm = ByteLM(backbone=LMConfig(d_model=8, n_layers=1, d_state=4, backend=backend))
    assert {layer.mixer.backend for layer in lm.lm.backbone.layers} == {backend}
    assert "backend" in {f.name for f in dataclasses.fields(EncoderConfig)}


def test_backend_from_the_command_line():
    pytest.importorskip("jsonargparse")
    from pathlib import Path

    from eventssm.tasks.cli import build_cli

    cfg = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "quickstart.yaml"
    cli = build_cli(["--config", str(cfg), "--model.backbone.backend", "reference",
                     "--trainer.logger", "false"], run=False)
    assert {layer.mixer.backend for layer in cli.model.encoder.backbone.layers} == {"reference"}
    with pytest.raises(SystemExit):  # jsonargparse refuses a value outside the choices
        build_cli(["--config", str(cfg), "--model.backbone.backend", "cuda-fast",
                   "--trainer.logger", "false"], run=False)


def test_selective_ssm_has_no_time_unit():
    """SelectiveSSM takes gaps as they are: it refuses a time_scale (it would be applied to
    nothing) and its state_dict keys are those a saved SelectiveSSM has (the unit was never in
    it); Mamba, which forms gaps from timestamps, keeps its time_scale."""
    with pytest.raises(TypeError, match="time_scale"):
        SelectiveSSM(8, d_state=4, time_scale=2.0)
    ssm = SelectiveSSM(8, d_state=4)
    assert not hasattr(ssm, "time_scale")
    saved = ["A_log", "D", "rho", "x_proj.weight", "dt_proj.weight", "dt_proj.bias"]
    assert list(ssm.state_dict()) == saved
    assert Mamba(8, d_state=4, time_scale=0.5).time_scale == 0.5
