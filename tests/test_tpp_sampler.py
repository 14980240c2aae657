"""Sampling futures with the encoder's recurrent step (eventssm.tpp_sampler) against the sampler
that re-encodes the whole history at every sampled event."""

import pytest
import torch

from eventssm import Additive, Asymmetric, Scaled
from eventssm.tasks import EncoderConfig, EventTPP
from tests.helpers import rel_err

LENS = [7, 3, 12]


def _model(head, disc, K=3):
    torch.manual_seed(0)
    return EventTPP(num_marks=K, head=head, n_quad=4, n_panels=3, log_gap_stats=(0.0, 1.0),
                    time_scale=0.6,
                    backbone=EncoderConfig(d_model=16, n_layers=2, d_state=4, discretization=disc,
                                           backend="torch")).double().eval()


def _histories(K=3, seed=1):
    """Right-padded histories whose padding repeats the last time (§5) and holds mark 0."""
    g = torch.Generator().manual_seed(seed)
    B, L = len(LENS), max(LENS)
    lengths = torch.tensor(LENS)
    pad = torch.arange(L)[None] >= lengths[:, None]
    ts = torch.cumsum(torch.rand(B, L, generator=g, dtype=torch.float64) * 1.5, 1)
    last = ts.gather(1, (lengths - 1)[:, None])
    return {"timestamps": torch.where(pad, last, ts), "lengths": lengths,
            "marks": torch.randint(0, K, (B, L), generator=g).masked_fill(pad, 0)}


@pytest.mark.parametrize("horizon", [float("inf"), 6.0], ids=["20-events", "horizon-6"])
@pytest.mark.parametrize("disc", [Asymmetric("zoh"), Scaled("mamba"), Additive("bilinear"), "mamba"],
                         ids=["asymmetric-zoh", "scaled-mamba", "additive-bilinear", "str-mamba"])
@pytest.mark.parametrize("head", ["mixture", "intensity"])
def test_step_sampler_draws_the_reencoding_samplers_futures(head, disc, horizon):
    model = _model(head, disc)
    batch = _histories()
    outs = {}
    for method in ("reencode", "step"):
        g = torch.Generator().manual_seed(7)
        outs[method] = model.sample_futures(batch, horizon=horizon, n_samples=2, max_events=20,
                                            generator=g, method=method)
    a, b = outs["reencode"], outs["step"]
    n = int(a["mask"].sum())
    err = rel_err(b["times"], a["times"])
    print(f"{head} {disc} horizon {horizon}: {n} sampled events, times' relative error {err:.2e}, "
          f"marks equal {torch.equal(a['marks'], b['marks'])}, masks equal "
          f"{torch.equal(a['mask'], b['mask'])}")
    assert n > 0 and (n == 2 * len(LENS) * 20) == (horizon == float("inf"))
    assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["marks"], b["marks"])
    assert err < 1e-10


@pytest.mark.parametrize("head", ["mixture", "intensity"])
def test_step_sampler_encodes_the_history_once(head, monkeypatch):
    """The cost of a sampled event does not grow with the history: one ``encode`` of the history
    (its length), then one ``step`` per sampled event; the re-encoding sampler encodes a
    growing history at every event."""
    model = _model(head, Asymmetric("zoh"))
    batch = _histories()
    for method in ("step", "reencode"):
        seen = {"encode": [], "step": 0}
        encode, step = model.encoder.encode, model.encoder.step

        def spy_encode(*a, _f=encode, seen=seen, **k):
            seen["encode"].append(k["marks"].shape[1])
            return _f(*a, **k)

        def spy_step(*a, _f=step, seen=seen, **k):
            seen["step"] += 1
            return _f(*a, **k)

        monkeypatch.setattr(model.encoder, "encode", spy_encode)
        monkeypatch.setattr(model.encoder, "step", spy_step)
        model.sample_futures(batch, horizon=float("inf"), max_events=10,
                             generator=torch.Generator().manual_seed(0), method=method)
        print(method, "encode lengths", seen["encode"], "steps", seen["step"])
        if method == "step":
            assert seen["encode"] == [max(LENS)] and seen["step"] == 9  # no step after the last draw
        else:
            assert seen["encode"] == [max(LENS) + e for e in range(10)] and seen["step"] == 0
        monkeypatch.undo()


def test_predict_samples_with_the_step_sampler(monkeypatch):
    model = _model("mixture", Asymmetric("zoh"))
    model.predict_horizon, model.n_samples, model.max_future_events = 3.0, 2, 5
    calls = []
    real = model.sample_futures
    monkeypatch.setattr(model, "sample_futures", lambda *a, **k: calls.append(k) or real(*a, **k))
    out = model.predict_step(_histories(), 0)
    assert out["futures"]["times"].shape == (len(LENS), 2, 5) and calls == [{}]
    assert "method" not in calls[0]  # the default, method="step"


def test_sampler_errors():
    model = _model("mixture", Asymmetric("zoh"))
    batch = _histories()
    with pytest.raises(ValueError, match="method must be"):
        model.sample_futures(batch, horizon=1.0, method="fast")
    empty = {**batch, "lengths": torch.tensor([7, 0, 12])}
    with pytest.raises(ValueError, match="lengths: every history needs at least one event"):
        model.sample_futures(empty, horizon=1.0)
