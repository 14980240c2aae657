"""Temporal point processes: the heads' likelihoods against independent densities and closed
forms, the compensator's quadrature accuracy, sampling (KS), padding, and the EventTPP task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from eventssm.tpp import IntensityHead, LogNormalMixtureHead, gauss_legendre_panels
from eventssm.tpp_heads import make_head
from tests.helpers import load_script, tpp_batch


def _mixture_head(loc=0.3, scale=1.4, M=3, d=5, K=4):
    head = LogNormalMixtureHead(d, K, (loc, scale), n_components=M).double()
    h = torch.randn(d, dtype=torch.float64)
    return head, h


def _scipy_mixture(head, h):
    """The mixture as scipy lognormal components in data time: log τ ~ N(loc + scale μ, scale σ)."""
    logw, mu, log_sigma = (x.detach().numpy() for x in head.mixture(h))
    loc, scale = float(head.log_gap_loc), float(head.log_gap_scale)
    comps = [stats.lognorm(s=scale * math.exp(ls), scale=math.exp(loc + scale * m))
             for m, ls in zip(mu, log_sigma)]
    return np.exp(logw), comps


def test_mixture_log_likelihood_matches_scipy_and_integrates_to_one():
    head, h = _mixture_head()
    w, comps = _scipy_mixture(head, h)
    taus = np.geomspace(1e-3, 1e2, 41)
    time_ll, _ = head.log_likelihood(h.expand(len(taus), -1), torch.from_numpy(taus),
                                     torch.zeros(len(taus), dtype=torch.long))
    ref = np.log(sum(wi * c.pdf(taus) for wi, c in zip(w, comps)))
    err = np.abs(time_ll.detach().numpy() - ref).max()
    print("max |log p - scipy|", err)
    assert err < 1e-10
    head.requires_grad_(False)
    dens = lambda t: math.exp(float(head.log_likelihood(h, torch.tensor(t, dtype=torch.float64),
                                                        torch.tensor(0))[0]))
    # integrate over y = log τ (p(τ) dτ = p(e^y) e^y dy): smooth, so quad is accurate. Gaps below
    # 1e-6 time units are clamped (ties), so the density is exact above that floor only: add the
    # mass below it from scipy's CDF.
    floor = 1e-6 * math.exp(float(head.log_gap_loc))
    below = sum(wi * c.cdf(floor) for wi, c in zip(w, comps))
    total = below + integrate.quad(lambda y: dens(math.exp(y)) * math.exp(y), math.log(floor), 40,
                                   limit=200)[0]
    mean = integrate.quad(lambda y: dens(math.exp(y)) * math.exp(2 * y), -40, 40, limit=200)[0]
    pred_mean, probs = head.predict(h)
    print("∫p =", total, " mean", float(pred_mean), "vs quad", mean)
    assert abs(total - 1) < 1e-9
    assert float(pred_mean) == pytest.approx(mean, rel=1e-6)
    assert float(probs.sum()) == pytest.approx(1.0)
    head.time_prediction = "median"
    med = float(head.predict(h)[0])
    cdf = sum(wi * c.cdf(med) for wi, c in zip(w, comps))
    print("median", med, "CDF there", cdf)
    assert cdf == pytest.approx(0.5, abs=1e-9)
    # the type part is the categorical's log-probability
    _, type_ll = head.log_likelihood(h.expand(4, -1), torch.ones(4, dtype=torch.float64), torch.arange(4))
    torch.testing.assert_close(type_ll, probs.log())


def _decay_head(a, c, delta, loc=0.0, K=1):
    """An intensity head whose total intensity is exactly (a + c exp(-δ s/u)) / u, u = e^loc:
    state coordinate 0 decays from 1 to 0 at rate δ, coordinate 1 is constant 1; the softplus
    sharpness β is tiny, so softplus_β is the identity on the positive pre-activations."""
    head = IntensityHead(1, K, (loc, 1.0), d_hidden=2).double()
    with torch.no_grad():
        head.state_proj.weight.zero_()
        raw = delta + math.log(-math.expm1(-delta))  # softplus^-1(δ)
        head.state_proj.bias.copy_(torch.tensor([1.0, 1.0, 0.0, 1.0, raw, 1.0]))
        head.out.weight.copy_(torch.tensor([[c, a]] * K) / K)
        head.out.bias.zero_()
        head.log_beta.fill_(-30.0)
    return head


@pytest.mark.parametrize("loc", [0.0, 1.7])
def test_intensity_compensator_matches_closed_form(loc):
    a, c, u = 0.3, 2.0, math.exp(loc)
    x = np.geomspace(1e-3, 1e3, 25)  # δτ/u
    worst = 0.0
    for delta in (0.05, 1.0, 20.0):
        head = _decay_head(a, c, delta, loc)
        tau = torch.from_numpy(x / delta * u)
        h = torch.zeros(len(x), 1, dtype=torch.float64)
        got = head.compensator(h, tau)
        ref = (a * tau + c * u * (-torch.expm1(-delta * tau / u)) / delta) / u
        rel = float(((got - ref).abs() / ref).max().detach())
        # the pure decay part alone (a = 0) is the hard case: no constant part to hide errors
        head0 = _decay_head(1e-12, c, delta, loc)
        ref0 = c * (-torch.expm1(-delta * tau / u)) / delta
        rel0 = float(((head0.compensator(h, tau) - ref0).abs() / ref0).max().detach())
        print(f"δ={delta}: max rel error {rel:.2e} (with baseline), {rel0:.2e} (pure decay)")
        worst = max(worst, rel, rel0)
        time_ll, type_ll = head.log_likelihood(h, tau, torch.zeros(len(x), dtype=torch.long))
        lam = (a + c * torch.exp(-delta * tau / u)) / u
        torch.testing.assert_close(time_ll, lam.log() - ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(type_ll, torch.zeros_like(type_ll))  # one type
    assert worst < 1e-6


def test_gauss_legendre_panels_integrate_polynomials_exactly():
    x, w = gauss_legendre_panels(4, 3)
    for p in range(8):  # 4 nodes per panel: exact up to degree 7
        assert float((w * x**p).sum()) == pytest.approx(1 / (p + 1), rel=1e-12)


def test_intensity_predict_matches_quadrature():
    a, c, delta = 0.4, 3.0, 2.0
    head = _decay_head(a, c, delta, K=2)
    h = torch.zeros(1, dtype=torch.float64)
    lam = lambda s: a + c * math.exp(-delta * s)
    Lam = lambda s: a * s + c * (-math.expm1(-delta * s)) / delta
    mean = integrate.quad(lambda s: math.exp(-Lam(s)), 0, np.inf)[0]
    got, probs = head.predict(h)
    print("mean", float(got), "vs", mean)
    assert float(got) == pytest.approx(mean, rel=2e-3)
    torch.testing.assert_close(probs, torch.full((2,), 0.5, dtype=torch.float64))
    from scipy.optimize import brentq

    head.time_prediction = "median"
    med = brentq(lambda s: Lam(s) - math.log(2), 0, 100)
    print("median", float(head.predict(h)[0]), "vs", med)
    assert float(head.predict(h)[0]) == pytest.approx(med, rel=2e-3)
    assert integrate.quad(lambda s: lam(s) * math.exp(-Lam(s)), 0, np.inf)[0] == pytest.approx(1)


def test_intensity_bound_holds():
    head = IntensityHead(6, 3, (0.2, 1.0), d_hidden=8).double()
    h = torch.randn(50, 6, dtype=torch.float64) * 2
    s = torch.cat([torch.zeros(50, 1, dtype=torch.float64),
                   torch.rand(50, 200, dtype=torch.float64).pow(3) * 30], 1)
    lam = head.intensity(h, s)  # (50, 201, 3)
    bound = head.intensity_bound(h)  # (50, 3)
    assert bool((lam <= bound[:, None] * (1 + 1e-12)).all())


# ---------------------------------------------------------------------------- sampling (KS)

def test_thinning_reproduces_a_decaying_intensity():
    """Thinning samples of λ(s) = a + c e^{-δ s} follow F(s) = 1 - exp(-Λ(s)) (KS test)."""
    a, c, delta = 0.5, 4.0, 3.0
    head = _decay_head(a, c, delta, K=2)
    g = torch.Generator().manual_seed(1)
    gaps, marks = head.sample(torch.zeros(4000, 1, dtype=torch.float64), generator=g)
    Lam = lambda s: a * s + c * (-np.expm1(-delta * s)) / delta
    res = stats.kstest(gaps.numpy(), lambda s: -np.expm1(-Lam(s)))
    print("KS", res.statistic, res.pvalue)
    assert res.pvalue > 0.01
    assert abs(float(marks.float().mean()) - 0.5) < 0.04  # two equal types


def test_mixture_sampling_reproduces_its_density():
    head, h = _mixture_head()
    w, comps = _scipy_mixture(head, h)
    g = torch.Generator().manual_seed(2)
    gaps, marks = head.sample(h.expand(4000, -1), generator=g)
    res = stats.kstest(gaps.numpy(), lambda t: sum(wi * c.cdf(t) for wi, c in zip(w, comps)))
    print("KS", res.statistic, res.pvalue)
    assert res.pvalue > 0.01
    probs = head.predict(h)[1].detach().numpy()
    freq = np.bincount(marks.numpy(), minlength=4) / 4000
    assert np.abs(freq - probs).max() < 0.03


# ---------------------------------------------------------------------------- the true processes

def test_hawkes_exact_log_likelihood_matches_brute_force_integral():
    from eventssm.datasets.point_process import simulate_hawkes
    from eventssm.datasets.tpp import hawkes_log_likelihood, hawkes_params, poisson_log_likelihood

    mu, alpha, beta = hawkes_params(3)
    t, m = simulate_hawkes(mu, alpha, beta, 15.0, np.random.default_rng(0), max_events=25)
    assert len(t) > 10

    def lam(s):  # straight from the definition, summing over every earlier event
        past = t < s
        return mu + (alpha[:, m[past]] * beta * np.exp(-beta * (s - t[past]))).sum(1)

    time_ll, type_ll = hawkes_log_likelihood(t, m, mu, alpha, beta)
    ref_t, ref_y = [], []
    for i in range(1, len(t)):
        comp = integrate.quad(lambda s: lam(s).sum(), t[i - 1], t[i], epsabs=1e-13, epsrel=1e-12)[0]
        li = lam(t[i])
        ref_t.append(np.log(li.sum()) - comp)
        ref_y.append(np.log(li[m[i]] / li.sum()))
    err = max(np.abs(time_ll - ref_t).max(), np.abs(type_ll - ref_y).max())
    print("max |exact - brute force|", err)
    assert err < 1e-8
    # Poisson: the same brute force with a constant intensity
    rates = np.array([0.5, 1.0, 1.5])
    pt, py = poisson_log_likelihood(t, m, rates)
    np.testing.assert_allclose(pt, np.log(3.0) - 3.0 * np.diff(t))
    np.testing.assert_allclose(py, np.log(rates[m[1:]] / 3.0))


# ---------------------------------------------------------------------------- the task

def _task(head, K=3, **kw):
    from eventssm.tasks import EncoderConfig, EventTPP

    kw.setdefault("log_gap_stats", (0.0, 1.0))
    return EventTPP(num_marks=K, head=head, backbone=EncoderConfig(d_model=16, n_layers=1, d_state=4),
                    **kw)


def _seq(n, rng, K=3):
    return np.cumsum(rng.exponential(1.0, n)) - 0.1, rng.integers(0, K, n)


@pytest.mark.parametrize("head", ["mixture", "intensity"])
def test_padding_is_inert(head):
    model = _task(head).eval()
    rng = np.random.default_rng(0)
    short, long = _seq(5, rng), _seq(13, rng)
    with torch.no_grad():
        t1, y1, _, _ = model.log_likelihood(tpp_batch([short]))
        tb, yb, _, scored = model.log_likelihood(tpp_batch([short, long]))
    assert int(scored[0].sum()) == 4 and int(scored.sum()) == 4 + 12
    err = max((tb[:4] - t1).abs().max(), (yb[:4] - y1).abs().max())
    print("alone vs batched", float(err))
    assert float(err) < 1e-5



def test_mixture_survival_and_hazard_match_scipy():
    """The mixture's survival is scipy's ``Σ w (1 - F)`` and its hazard ``p(s) P(k) / S(s)``,
    out to the far tail where ``1 - F`` in float64 would round to 0 (log space there)."""
    head, h = _mixture_head()
    w, comps = _scipy_mixture(head, h)
    s = np.geomspace(1e-3, 1e2, 41)
    ref_logS = np.log(sum(wi * c.sf(s) for wi, c in zip(w, comps)))
    logS = head.log_survival(h.expand(len(s), -1), torch.from_numpy(s)).detach().numpy()
    lam = head.intensity(h, torch.from_numpy(s)).detach()  # (Q, K)
    pdf = sum(wi * c.pdf(s) for wi, c in zip(w, comps))
    probs = torch.softmax(head.mark_proj(h), -1).detach().numpy()
    ref_lam = (pdf / np.exp(ref_logS))[:, None] * probs
    err_s, err_l = np.abs(logS - ref_logS).max(), np.abs(lam.numpy() / ref_lam - 1).max()
    print("max |log S - scipy|", err_s, " max relative error of the hazard", err_l)
    assert err_s < 1e-10 and err_l < 1e-9
    far = head.log_survival(h, torch.tensor(1e30, dtype=torch.float64)).detach()
    print("log S at 1e30 time units", float(far))
    assert torch.isfinite(far) and float(far) < -100


def test_intensity_head_survival_is_minus_the_compensator_and_its_derivative():
    """``-d/ds log S(s)`` (central differences) is the total intensity."""
    torch.manual_seed(0)
    head = IntensityHead(5, 3, (0.2, 1.0)).double()
    h = torch.randn(5, dtype=torch.float64)
    s = torch.tensor([0.01, 0.3, 2.0, 9.0], dtype=torch.float64)
    eps = 1e-6
    hs = h.expand(len(s), -1)
    num = -(head.log_survival(hs, s + eps) - head.log_survival(hs, s - eps)) / (2 * eps)
    tot = head.intensity(h, s).sum(-1)
    err = float(((num - tot).abs() / tot).max())
    print("max relative |-dlogS/ds - Σλ|", err)
    assert err < 1e-6
    assert torch.equal(head.log_survival(hs, s), -head.compensator(hs, s))


@pytest.mark.parametrize("head", ["mixture", "intensity"])
def test_task_trains_and_predicts(head, tmp_path):
    import lightning as L

    from eventssm.datasets import SyntheticTPPDataModule

    L.seed_everything(0)
    dm = SyntheticTPPDataModule(n_sequences=48, max_events=24, batch_size=8)
    model = _task(head, K=dm.num_marks, lr=1e-2, predict_horizon=3.0, n_samples=2,
                  max_future_events=8)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(model, dm)
    res = trainer.test(model, dm, verbose=False)[0]
    print(res)
    for k in ("test/ll", "test/time_ll", "test/type_ll", "test/rmse", "test/acc"):
        assert math.isfinite(res[k])
    assert res["test/ll"] == pytest.approx(res["test/time_ll"] + res["test/type_ll"], abs=1e-4)
    out = trainer.predict(model, dm)
    f = out[0]["futures"]
    B = out[0]["gap_pred"].shape[0]
    assert f["times"].shape == (B, 2, 8) and out[0]["type_probs"].shape == (B, dm.num_marks)
    batch = next(iter(dm.predict_dataloader()))
    t_end = batch["timestamps"][torch.arange(B), batch["lengths"] - 1]
    for b in range(B):
        for s in range(2):
            tt = f["times"][b, s][f["mask"][b, s]]
            assert bool((tt.diff() >= 0).all()) and bool((tt > t_end[b]).all())
            assert bool((tt <= t_end[b] + 3.0).all())


def test_bad_arguments():
    with pytest.raises(ValueError, match="head"):
        make_head("rnn", 4, 2)
    with pytest.raises(ValueError, match="log_gap_stats"):
        make_head("mixture", 4, 2, (0.0, -1.0))
    with pytest.raises(ValueError, match="num_marks"):
        make_head("intensity", 4, 0)
    model = _task("mixture")
    with pytest.raises(ValueError, match="target_gap"):
        model.log_likelihood({"timestamps": torch.zeros(1, 3, dtype=torch.float64),
                              "marks": torch.zeros(1, 3, dtype=torch.long),
                              "lengths": torch.tensor([3]), "target": torch.zeros(1, 3)})


@pytest.mark.slow
@pytest.mark.parametrize("head", ["mixture", "intensity"])
def test_sampled_gaps_reproduce_poisson_data(head):
    """Trained on Poisson data (total rate R = 3), the model's sampled next gaps follow Exp(R)
    whatever the history (KS statistic over samples at every test event)."""
    import lightning as L

    from eventssm.datasets import SyntheticTPPDataModule

    L.seed_everything(0)
    dm = SyntheticTPPDataModule(process="poisson", num_marks=3, n_sequences=256, max_events=48,
                                batch_size=32)
    dm.build()
    model = _task(head, K=3, lr=1e-2, log_gap_stats=dm.log_gap_stats)
    L.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False).fit(model, dm)
    model.eval()
    gaps = []
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for batch in dm.test_dataloader():
            _, _, hs, _ = model.log_likelihood(batch)
            gaps.append(model.head.sample(hs, generator=g)[0])
    gaps = torch.cat(gaps).numpy()
    R = 3 * 1.0  # rates linspace(0.5, 1.5, 3)
    res = stats.kstest(gaps, stats.expon(scale=1 / R).cdf)
    print(head, "KS statistic", res.statistic, "n", len(gaps), "true LL", dm.true_log_likelihood())
    assert res.statistic < 0.05


def test_cli_smoke_fit_and_test(tmp_path):
    """``eventssm fit`` / ``test`` on the Hawkes config, tiny, 1 epoch: the data's gap statistics
    and number of types are linked into the model and the TPP metrics are reported."""
    from pathlib import Path

    from eventssm.tasks import EventTPP
    from eventssm.tasks.cli import build_cli, main

    cfg = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "tpp_hawkes.yaml"
    args = ["--config", str(cfg), "--model.backbone.d_model", "8", "--model.backbone.n_layers", "1",
            "--model.backbone.d_state", "4", "--model.head", "intensity", "--data.n_sequences", "40",
            "--data.max_events", "16", "--data.batch_size", "8", "--trainer.max_epochs", "1",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir",
            str(tmp_path / "runs"), "--checkpoint.dirpath", str(tmp_path / "ckpt"),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    main(["fit", *args])
    cli = build_cli(["test", *args, "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt")])
    got = cli.trainer.callback_metrics
    assert {"test/ll", "test/time_ll", "test/type_ll", "test/rmse", "test/acc"} <= set(got)
    dm = cli.datamodule
    assert cli.model.hparams.log_gap_stats == pytest.approx(dm.log_gap_stats)
    assert cli.model.hparams.num_marks == dm.num_marks == 2
    m = EventTPP.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    assert float(m.head.log_gap_loc) == pytest.approx(dm.log_gap_stats[0])


@pytest.mark.slow
@pytest.mark.parametrize("head", ["mixture", "intensity"])
def test_plot_script(tmp_path, head):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    plot_tpp = load_script("experiments/plot_tpp.py")
    out = tmp_path / "tpp.png"
    plot_tpp.main(["--config", str(root / "experiments" / "configs" / "tpp_hawkes.yaml"), "--head", head,
                   "--epochs", "1", "--cut", "8", "--samples", "2", "-o", str(out),
                   "--data.n_sequences", "48", "--data.max_events", "16", "--data.batch_size", "8",
                   "--checkpoint.dirpath", str(tmp_path / "ckpt"), "--trainer.default_root_dir", str(tmp_path)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
