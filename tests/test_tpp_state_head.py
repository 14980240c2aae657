"""The state head (``EventTPP(head="state")``, :mod:`eventssm.tpp_state`): the closed-form
evolution between events against the reference recurrence, the per-event states against the
reference step, the readout at the event against the encoder, the compensator against a fine
trapezoid sum, the thinning bound and sampler, gradients, training, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from eventssm import Additive, Asymmetric, EventEncoder, Mamba, Scaled, Standard
from eventssm.reference import selective_state_update_ref
from eventssm.ssm import PAD_DELTA, scan_constants
from eventssm.tpp import softplus_beta
from eventssm.tpp_state import StateIntensityHead, block_states, evolve_state, last_block_input
from tests.helpers import tpp_batch

COUPLINGS = [Asymmetric("mamba"), Additive("zoh")]


def _events(B=2, L=9, K=3, seed=0):
    """Right-padded float64 event batch: marks, gaps (> 0, data units), lengths."""
    g = torch.Generator().manual_seed(seed)
    marks = torch.randint(0, K, (B, L), generator=g)
    gaps = torch.rand(B, L, generator=g, dtype=torch.float64) * 2 + 0.05
    gaps[:, 0] = 0.0
    lengths = torch.tensor([L] + [L - 3] * (B - 1))
    return dict(marks=marks, integration_timesteps=gaps, lengths=lengths)


def _encoder_and_head(disc, K=3, d=8, n_layers=2, d_state=4, time_scale=1.7, seed=0,
                      rate=None, loc=0.2):
    """A float64 encoder (reference backend) and a state head bound to it. ``rate``: set every
    channel's rate r = softplus(ρ) of the last block (decays visible within a few time units)."""
    torch.manual_seed(seed)
    enc = EventEncoder(d_model=d, n_layers=n_layers, num_marks=K, d_state=d_state,
                       discretization=disc, time_scale=time_scale, backend="reference").double()
    head = StateIntensityHead(d, K, (loc, 1.0)).double().bind(enc)
    mixer = enc.backbone.layers[-1].mixer
    with torch.no_grad():
        if rate is not None:
            mixer.rho.copy_(torch.log(torch.expm1(torch.full_like(mixer.rho, rate))))
        # Δ ~ 1 (not Mamba's 0.001-0.1 init), larger B, C and out_proj: the state's share of the
        # intensity becomes visible (at Mamba's init C·h is ~1e-3 and λ moves by < 1 %)
        mixer.dt_proj.bias.fill_(math.log(math.expm1(1.0)))
        mixer.x_proj.weight.mul_(4.0)
        mixer.out_proj.weight.mul_(4.0)
    return enc, head


# ---------------------------------------------------------------------------- (1) the evolution

@pytest.mark.parametrize("disc", COUPLINGS, ids=repr)
def test_closed_form_evolution_matches_the_reference_recurrence_without_input(disc):
    """``exp(A r s τ_unit) ⊙ h`` against :func:`selective_state_update_ref` run over the same
    gap cut into three unequal steps with ``B̄u = 0`` (``u = 0``) and no selective step
    (``Δ = softplus(PAD_DELTA) = 0``, so the Additive coupling keeps only its clock part ``τ r``):
    the reference's discretization and the semigroup property, in float64."""
    torch.manual_seed(0)
    m = Mamba(8, d_state=5, discretization=disc, backend="reference").double()
    with torch.no_grad():
        m.rho.copy_(torch.randn_like(m.rho))  # rates from ~0.1 to ~3
    A, _, dt_bias, rate = scan_constants(m.A_log, m.D, m.dt_proj.bias, m.rho, event=True)
    Dm, N = A.shape
    b, time_scale = 3, 0.7
    h0 = torch.randn(b, Dm, N, dtype=torch.float64)
    s = torch.tensor([0.03, 1.1, 4.0], dtype=torch.float64)
    closed = evolve_state(h0, s, A, rate, time_scale)
    state = h0.clone()
    zeros = torch.zeros(b, Dm, dtype=torch.float64)
    for frac in (0.2, 0.5, 0.3):
        selective_state_update_ref(
            state, zeros, torch.full((b, Dm), PAD_DELTA, dtype=torch.float64), A,
            torch.randn(b, N, dtype=torch.float64), torch.randn(b, N, dtype=torch.float64),
            dt_bias=torch.zeros_like(dt_bias), dt_softplus=True,
            integration_timesteps=s * frac * time_scale, rate=rate, discretization=disc)
    err = float((closed - state).abs().max().detach())
    shrink = float((closed.abs() / h0.abs()).min().detach())
    print(f"{disc!r}: max |closed form - reference steps| {err:.3e} (smallest factor {shrink:.3e})")
    assert err <= 1e-10
    assert shrink < 0.5  # the decay is not trivial


@pytest.mark.parametrize("disc", COUPLINGS, ids=repr)
def test_block_states_match_the_reference_step(disc):
    """Every state of :func:`block_states` (one scan, states as channels) equals the state of
    the block's own recurrent ``step`` (reference backend, float64) after each event."""
    torch.manual_seed(1)
    m = Mamba(6, d_state=3, discretization=disc, backend="reference").double()
    B, L = 2, 7
    x = torch.randn(B, L, 6, dtype=torch.float64)
    tau = torch.rand(B, L, dtype=torch.float64) + 0.1
    enc = EventEncoder(d_model=6, n_layers=1, num_marks=2, discretization=disc).double()
    _, steps, _ = last_block_input(enc, marks=torch.zeros(B, L, dtype=torch.long),
                                   integration_timesteps=tau)
    st = block_states(m, x, steps)
    cache = m.allocate_inference_cache(B)
    cache.ssm_state = cache.ssm_state.double()
    errs = []
    for l in range(L):
        m.step(x[:, l : l + 1], cache, integration_timesteps=tau[:, l])
        errs.append(float((st.h[:, l] - cache.ssm_state).abs().max().detach()))
    print(f"{disc!r}: max |block_states - step state| per event", [f"{e:.1e}" for e in errs])
    assert max(errs) <= 1e-12
    assert st.h.shape == (B, L, m.d_inner, m.d_state)


# ---------------------------------------------------------------------------- (2) at the event

@pytest.mark.parametrize("disc", COUPLINGS, ids=repr)
def test_intensity_at_zero_reads_the_encoder_at_the_event(disc):
    """At ``s = 0`` the head reads the encoder's own feature of the event (the full stack through
    the block's scan, ``out_proj``, residual and ``norm_f``) with the last block's skip ``D``
    set to 0 (no input between events); in float64."""
    enc, head = _encoder_and_head(disc, rate=0.8)
    ev = _events()
    feats = head.encode(**ev)  # (B, L, F)
    mixer = enc.backbone.layers[-1].mixer
    with torch.no_grad():
        mixer.D.zero_()
    ref = softplus_beta(head.out(enc.encode(**ev)), head.log_beta) / head.time_unit  # (B, L, K)
    lam0 = head.intensity(feats, torch.zeros(*feats.shape[:-1], 1, dtype=torch.float64))[..., 0, :]
    mask = torch.arange(ev["marks"].shape[1])[None] < ev["lengths"][:, None]
    err = float((lam0 - ref)[mask].abs().max().detach())
    later = head.intensity(feats, torch.full((*feats.shape[:-1], 1), 2.0, dtype=torch.float64))[..., 0, :]
    moved = float(((later - lam0)[mask].abs() / lam0[mask]).max().detach())
    print(f"{disc!r}: max |λ(0) - encoder readout| {err:.3e}; λ moves by up to {moved:.2f} "
          f"(relative) by s = 2")
    assert err <= 1e-10
    assert moved > 0.02  # the state's evolution does change the intensity


# ---------------------------------------------------------------------------- (3) the compensator

@pytest.mark.parametrize("disc", COUPLINGS, ids=repr)
def test_compensator_matches_a_fine_trapezoid_sum(disc):
    """Composite Gauss-Legendre ``Λ(τ)`` against the trapezoid rule on 40001 points graded
    towards ``s = 0`` (``s = τ x²``), for gaps from 0.01 to 30 time units; float64."""
    enc, head = _encoder_and_head(disc, rate=1.5)
    feats = head.encode(**_events(B=1, L=6))[0, :6]  # (6, F)
    gaps = torch.tensor([0.01, 0.3, 1.0, 3.0, 10.0, 30.0], dtype=torch.float64)
    comp = head.compensator(feats, gaps)
    x = torch.linspace(0, 1, 40001, dtype=torch.float64) ** 2
    with torch.no_grad():
        s = gaps[:, None] * x  # (6, S)
        lam = head.intensity(feats, s).sum(-1)
        ref = torch.trapezoid(lam, s, dim=-1)
    rel = ((comp - ref).abs() / ref).detach()
    print(f"{disc!r}: Λ", comp.detach().numpy().round(4), "relative error",
          [f"{e:.1e}" for e in rel.numpy()])
    assert float(rel.max()) <= 1e-5
    assert torch.equal(head.log_survival(feats, gaps), -comp)


# ---------------------------------------------------------------------------- (4) gradients

def test_log_likelihood_gradient_reaches_the_last_block_decay():
    """The log-likelihood's gradient with respect to the last block's ``A_log`` and ``rho`` is
    nonzero and equals a central finite difference along a random direction (float64)."""
    enc, head = _encoder_and_head(Asymmetric("zoh"), rate=0.9)
    ev = _events()
    scored = torch.arange(9)[None] < ev["lengths"][:, None] - 1
    nxt_gap = ev["integration_timesteps"][:, 1:]
    nxt_mark = ev["marks"][:, 1:]

    def ll():
        feats = head.encode(**ev)[:, :-1][scored[:, :-1]]
        t, y = head.log_likelihood(feats, nxt_gap[scored[:, :-1]], nxt_mark[scored[:, :-1]])
        return (t + y).sum()

    mixer = enc.backbone.layers[-1].mixer
    ll().backward()
    for name in ("A_log", "rho"):
        p = getattr(mixer, name)
        grad = p.grad.clone()
        v = torch.randn_like(p)
        eps = 1e-6
        with torch.no_grad():
            p.add_(eps * v)
            up = float(ll())
            p.sub_(2 * eps * v)
            down = float(ll())
            p.add_(eps * v)
        fd = (up - down) / (2 * eps)
        an = float((grad * v).sum())
        print(f"{name}: |grad| {float(grad.norm()):.3e}, directional autograd {an:.8e} vs "
              f"finite difference {fd:.8e}")
        assert float(grad.norm()) > 1e-4
        assert an == pytest.approx(fd, rel=1e-6)


# ---------------------------------------------------------------------------- sampling

def test_thinning_bound_holds_and_sampled_gaps_follow_the_compensator():
    """The bound of :meth:`intensity_bound` is above every intensity on a grid of ``s``, and by
    the time-rescaling theorem ``Λ(sampled gap) ~ Exp(1)`` (KS test on 1500 draws)."""
    enc, head = _encoder_and_head(Asymmetric("mamba"), rate=1.2)
    feats = head.encode(**_events())[0, :4].detach()  # (4, F)
    with torch.no_grad():
        s = torch.cat([torch.zeros(1), torch.logspace(-3, 2, 400)]).double().expand(4, -1)
        lam = head.intensity(feats, s)  # (4, S, K)
        bound = head.intensity_bound(feats)  # (4, K)
        slack = float((bound[:, None, :] / lam).min())
        row = feats[2].expand(1500, -1)
        gap, mark = head.sample(row, generator=torch.Generator().manual_seed(0))
        comp = head.compensator(row, gap).numpy()
    ks = stats.kstest(comp, "expon")
    print(f"min bound/λ {slack:.3f}; KS of Λ(gap) vs Exp(1): p = {ks.pvalue:.3f}; "
          f"marks {np.bincount(mark.numpy(), minlength=3)}")
    assert slack >= 1.0
    assert ks.pvalue > 0.01


# ---------------------------------------------------------------------------- (5) the task

def test_task_padding_is_inert():
    from eventssm.tasks import EncoderConfig, EventTPP

    torch.manual_seed(0)
    model = EventTPP(num_marks=3, head="state", log_gap_stats=(0.0, 1.0),
                     backbone=EncoderConfig(d_model=16, n_layers=1, d_state=4)).eval()
    rng = np.random.default_rng(0)
    seq = lambda n: (np.cumsum(rng.exponential(1.0, n)), rng.integers(0, 3, n))
    short, long = seq(5), seq(13)
    with torch.no_grad():
        t1, y1, _, _ = model.log_likelihood(tpp_batch([short]))
        tb, yb, _, _ = model.log_likelihood(tpp_batch([short, long]))
    err = float(max((tb[:4] - t1).abs().max(), (yb[:4] - y1).abs().max()))
    print("alone vs batched", err)
    assert err < 1e-5


def test_task_trains_tests_and_predicts(tmp_path):
    """``EventTPP(head="state")`` on the synthetic Hawkes set: the training loss falls over a few
    epochs, test metrics are finite, predict samples futures (by re-encoding)."""
    import lightning as L

    from eventssm.datasets import SyntheticTPPDataModule
    from eventssm.tasks import EncoderConfig, EventTPP

    L.seed_everything(0)
    dm = SyntheticTPPDataModule(n_sequences=48, max_events=24, batch_size=8)
    model = EventTPP(num_marks=dm.num_marks, head="state", log_gap_stats=dm.log_gap_stats,
                     time_scale=dm.time_scale, lr=1e-2, predict_horizon=3.0, n_samples=2,
                     max_future_events=6,
                     backbone=EncoderConfig(d_model=16, n_layers=1, d_state=4,
                                            discretization=Additive()))
    dm.setup("fit")

    def train_nll():
        with torch.no_grad():
            lls = [model.log_likelihood(b)[:2] for b in dm.train_dataloader()]
        return -float(torch.cat([t + y for t, y in lls]).mean())

    before = train_nll()
    trainer = L.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(model, dm)
    after = train_nll()
    res = trainer.test(model, dm, verbose=False)[0]
    print(f"train NLL/event {before:.4f} -> {after:.4f}; test {res}")
    assert after < before - 0.05
    for k in ("test/ll", "test/time_ll", "test/type_ll", "test/rmse", "test/acc"):
        assert math.isfinite(res[k])
    out = trainer.predict(model, dm)
    B = out[0]["gap_pred"].shape[0]
    assert out[0]["futures"]["times"].shape == (B, 2, 6)
    assert bool((out[0]["sampled_gap"] > 0).all())


# ---------------------------------------------------------------------------- (6) bad input

@pytest.mark.parametrize("disc", [Scaled(), Standard(), Asymmetric("bilinear")], ids=repr)
def test_unsupported_discretization_is_refused_naming_the_argument(disc):
    from eventssm.tasks import EncoderConfig, EventTPP

    with pytest.raises(ValueError, match="discretization") as err:
        EventTPP(num_marks=2, head="state", backbone=EncoderConfig(d_model=8, n_layers=1,
                                                                   discretization=disc))
    print(err.value)


def test_other_misuse_is_refused():
    from eventssm.tasks import EncoderConfig, EventTPP

    head = StateIntensityHead(8, 2)
    with pytest.raises(RuntimeError, match="bind"):
        head.intensity(torch.zeros(3, 10), torch.zeros(3, 1))
    enc = EventEncoder(d_model=8, n_layers=1, num_marks=2, discretization=Asymmetric())
    with pytest.raises(ValueError, match="d_model"):
        StateIntensityHead(4, 2).bind(enc)
    head.bind(enc)
    with pytest.raises(ValueError, match="features"):
        head.intensity(torch.zeros(3, 10), torch.zeros(3, 1))
    model = EventTPP(num_marks=2, head="state", backbone=EncoderConfig(d_model=8, n_layers=1))
    batch = {"timestamps": torch.tensor([[0.0, 1.0, 2.5]], dtype=torch.float64),
             "marks": torch.zeros(1, 3, dtype=torch.long), "lengths": torch.tensor([3])}
    with pytest.raises(NotImplementedError, match="reencode"):
        model.sample_futures(batch, horizon=1.0, method="step")
    f = model.sample_futures(batch, horizon=1.0, max_events=4)  # re-encoding by default
    assert f["times"].shape == (1, 1, 4)
