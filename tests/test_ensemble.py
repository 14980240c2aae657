"""EventClassifier(ensemble=k): k members, each trained on its own loss, predicting the mean of
their class probabilities."""

import math

import pytest
import torch

pytest.importorskip("lightning")

from eventssm.tasks import EncoderConfig, EventClassifier, EventStream  # noqa: E402


def _batch(B=5, L=7, C=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    lengths[0] = L
    tau = torch.rand(B, L, generator=g, dtype=torch.float64)
    return {"values": torch.randn(B, L, C, generator=g), "integration_timesteps": tau,
            "lengths": lengths, "target": torch.randint(0, 3, (B,), generator=g)}


def _task(k, **kw):
    torch.manual_seed(0)
    return EventClassifier(num_classes=3, d_input=2, ensemble=k, backbone=EncoderConfig(
        d_model=8, n_layers=1, d_state=4, dropout=0.0), **kw)


def test_prediction_is_the_members_mean_probability_and_each_member_is_a_model():
    task = _task(3).eval()
    batch = _batch()
    with torch.no_grad():
        members = task.member_logits(batch)
        mixed = task(batch).softmax(-1)
    assert len(members) == 3 and len(list(task.members)) == 2
    want = torch.stack([z.double().softmax(-1) for z in members]).mean(0)
    err = (mixed.double() - want).abs().max().item()
    print(f"ensemble probabilities vs members' mean: {err:.1e}")
    assert err < 1e-6
    assert not torch.allclose(members[0], members[1])  # own initialisations
    # a member is the single model with its weights
    single = _task(1).eval()
    single.encoder.load_state_dict(task.members[1]["encoder"].state_dict())
    single.head.load_state_dict(task.members[1]["head"].state_dict())
    with torch.no_grad():
        assert torch.equal(single(batch), members[2])
    # per-event predictions mix the same way
    per_event = _task(2, per_event=True).eval()
    b = dict(batch, target=torch.randint(0, 3, batch["values"].shape[:2]))
    with torch.no_grad():
        z = per_event.member_logits(b)
        got = per_event(b).softmax(-1)
    assert got.shape == (5, 7, 3)
    assert torch.allclose(got, (z[0].softmax(-1) + z[1].softmax(-1)) / 2, atol=1e-6)


def test_training_loss_is_the_members_and_evaluation_loss_the_ensembles(monkeypatch):
    task = _task(2)
    batch = _batch()
    logged = {}
    monkeypatch.setattr(task, "_log_loss", lambda stage, loss, n: logged.__setitem__(stage, loss))
    monkeypatch.setattr(task, "log", lambda *a, **k: None)
    train = task._step(batch, "train")
    val = task._step(batch, "val")
    z = [m.float() for m in task.member_logits(batch)]
    y = batch["target"]
    members = sum(torch.nn.functional.cross_entropy(m, y) for m in z) / 2
    mixed = torch.nn.functional.nll_loss(
        torch.logsumexp(torch.stack([m.log_softmax(-1) for m in z]), 0) - math.log(2), y)
    print(f"train {train.item():.6f} vs members {members.item():.6f}; "
          f"val {val.item():.6f} vs ensemble {mixed.item():.6f}")
    assert train.item() == pytest.approx(members.item(), rel=1e-6)
    assert val.item() == pytest.approx(mixed.item(), rel=1e-6)
    # every member gets a gradient from the training loss
    train.backward()
    for name, p in task.named_parameters():
        if name.endswith("head.weight"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_ensemble_and_streaming_an_ensemble():
    for bad in (0, -1, 2.0, True, "3"):
        with pytest.raises(ValueError, match="ensemble must be a positive integer"):
            _task(bad)
    with pytest.raises(ValueError, match="EventStream streams one encoder.*ensemble of 2"):
        EventStream(_task(2))
    EventStream(_task(1))  # a single model streams
