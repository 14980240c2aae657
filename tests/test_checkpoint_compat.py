"""Checkpoints written by an earlier layout still load.

``tests/data/classifier_b521d8c.ckpt`` is the ``last.ckpt`` of a one-epoch ``eventssm fit`` of a
tiny ``EventClassifier`` (``Asymmetric(zoh)``, sinusoid data), written by main at b521d8c, when
the Lightning layer was ``eventssm/tasks.py`` and ``eventssm/cli.py``. Its hyperparameters name
``eventssm.tasks.EventClassifier`` and carry the backbone config as a dict.

``tests/data/classifier_object_hparams_48dec14.ckpt`` comes from the same layout without the CLI
(``EventClassifier(backbone=EncoderConfig(..., discretization=Scaled("bilinear")))``, one step of
``Trainer.fit``): its pickle names ``eventssm.tasks.EncoderConfig``, which must still load under
``torch.load(weights_only=True)``, Lightning's default.
"""

from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")

from eventssm import Asymmetric, Scaled  # noqa: E402
from eventssm.tasks import EventClassifier  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


@pytest.mark.parametrize("name, kind, scheme", [
    ("classifier_b521d8c.ckpt", Asymmetric, "zoh"),
    ("classifier_object_hparams_48dec14.ckpt", Scaled, "bilinear"),
])
def test_checkpoint_saved_before_the_move_loads(name, kind, scheme):
    OLD = DATA / name
    raw = torch.load(OLD, map_location="cpu", weights_only=False)
    model = EventClassifier.load_from_checkpoint(OLD, map_location="cpu").eval()
    disc = model.encoder.backbone.layers[0].mixer.discretization
    print(type(disc).__name__, disc.scheme)
    assert isinstance(disc, kind) and disc.scheme == scheme
    # written before the compile option: the missing hyperparameter means eager
    assert "compile" not in raw["hyper_parameters"] and model.compile_forward is False
    loaded = model.state_dict()
    assert set(loaded) == set(raw["state_dict"])
    for name, t in raw["state_dict"].items():
        assert torch.equal(loaded[name], t), name
    # the restored model runs on a batch of the shape it was trained on
    values = torch.randn(2, 9, raw["hyper_parameters"]["d_input"])
    gaps = torch.rand(2, 9, dtype=torch.float64)
    gaps[:, 0] = 0
    with torch.no_grad():
        logits = model(dict(values=values, integration_timesteps=gaps, lengths=torch.tensor([9, 5])))
    assert logits.shape == (2, raw["hyper_parameters"]["num_classes"]) and torch.isfinite(logits).all()
