"""The linear-time sampler's futures in distribution, with random streams of their own (the
shared-stream equality is in tests/test_tpp_sampler.py).

Three kinds of check, each at significance ``ALPHA``:

* **absolute, Poisson**: an intensity head set by hand to constant rates ``r`` (a homogeneous
  Poisson process whatever the history): the first three sampled gaps against ``Exp(Σ r)``
  (KS), the marks against ``r / Σ r`` and the events within a horizon ``T`` against
  ``Poisson(T Σ r)`` (chi-square), for both samplers, and the two samplers against each other.
* **two-sample, Hawkes**: a small model trained on the synthetic Hawkes data, futures of three
  events after eight real histories drawn by the step sampler and by the re-encoding sampler
  with different seeds: KS on each gap and on the third event's time, chi-square on the joint
  marks of the three events.
* **absolute, the model's own law**: each sampled event against the distribution the model
  gives it, with the features of the history plus the events sampled before it computed by a
  full parallel encode (not the sampler's recurrent state): the probability integral transform
  ``u = 1 - exp(log S(τ))`` of each gap, and the randomised transform of each mark given its gap,
  ``P(k' < k | τ) + V P(k | τ)`` with ``V ~ U(0, 1)``, are uniform (KS).

A sampler that forgets the events it sampled (every draw from the history's features) fails the
same checks (``test_the_checks_reject_a_sampler_that_forgets_its_events``), so they have power.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from eventssm.tasks import EncoderConfig, EventTPP
from eventssm.tpp_sampler import sample_futures as step_sampler

ALPHA = 1e-3  # every check here passes at p > ALPHA; the broken sampler fails them far below it
N_FUTURES = 500  # futures per history and sampler
CUTS = [6, 10, 14, 18, 8, 12, 16, 20]  # history lengths, one per test sequence
E = 3  # sampled events per future

# seconds of CPU each (training a small model, thousands of futures)
pytestmark = pytest.mark.slow


def _batch(times, marks):
    """Right-padded histories (padding repeats the last time, §5) from lists of arrays."""
    lengths = torch.tensor([len(t) for t in times])
    L = int(lengths.max())
    ts = torch.zeros(len(times), L, dtype=torch.float64)
    mk = torch.zeros(len(times), L, dtype=torch.long)
    for i, (t, m) in enumerate(zip(times, marks)):
        ts[i, : len(t)] = torch.as_tensor(t, dtype=torch.float64)
        ts[i, len(t):] = float(t[-1])
        mk[i, : len(m)] = torch.as_tensor(m)
    return {"timestamps": ts, "marks": mk, "lengths": lengths}


def _repeat(batch, n):
    return {k: v.repeat_interleave(n, 0) for k, v in batch.items()}


def _last_time(batch):
    return batch["timestamps"][torch.arange(len(batch["lengths"])), batch["lengths"] - 1]


def _draw(model, batch, n, seed, method, horizon=float("inf"), max_events=E):
    """``(times (R, E), marks (R, E), mask (R, E))`` of ``n`` futures per history, rows in
    :func:`_repeat`'s order."""
    g = torch.Generator().manual_seed(seed)
    out = model.sample_futures(batch, horizon=horizon, n_samples=n, max_events=max_events,
                               generator=g, method=method)
    return tuple(out[k].reshape(-1, max_events) for k in ("times", "marks", "mask"))


def _gaps(times, t_last):
    return torch.diff(torch.cat([t_last[:, None], times], 1), dim=1)


# ------------------------------------------------------------------------ a homogeneous Poisson model

RATES = (0.5, 1.0, 1.5)


def _poisson_model():
    """An untrained encoder and an intensity head whose rates are ``RATES`` whatever the
    features: ``out.weight = 0`` leaves the bias, ``β = 1`` makes the link a plain softplus,
    ``log_gap_stats = (0, 1)`` the time unit 1, and the bias is softplus⁻¹ of the rates."""
    torch.manual_seed(0)
    model = EventTPP(num_marks=len(RATES), head="intensity", log_gap_stats=(0.0, 1.0), n_quad=4,
                     n_panels=3, time_scale=0.7,
                     backbone=EncoderConfig(d_model=8, n_layers=1, d_state=4, backend="torch"))
    r = torch.tensor(RATES)
    with torch.no_grad():
        model.head.out.weight.zero_()
        model.head.out.bias.copy_(torch.log(torch.expm1(r)))
        model.head.log_beta.zero_()
    return model.double().eval()


def _poisson_histories(n=8, seed=1):
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 16, n)
    times = [np.cumsum(rng.exponential(0.5, k)) for k in lens]
    return _batch(times, [rng.integers(0, len(RATES), k) for k in lens])


def _count_test(counts, mean):
    """Chi-square of event counts against Poisson(mean), bins merged until each expects >= 20."""
    n = len(counts)
    edges, lo = [], 0
    while True:  # [lo, hi) bins from the left, the last one open to infinity
        hi = lo + 1
        while stats.poisson.cdf(hi - 1, mean) - stats.poisson.cdf(lo - 1, mean) < 20 / n:
            hi += 1
        if stats.poisson.sf(hi - 1, mean) < 20 / n:
            break
        edges.append((lo, hi))
        lo = hi
    edges.append((lo, None))
    obs = [int(((counts >= a) & ((counts < b) if b is not None else True)).sum()) for a, b in edges]
    exp = [n * (stats.poisson.sf(a - 1, mean) - (stats.poisson.sf(b - 1, mean) if b else 0.0))
           for a, b in edges]
    return stats.chisquare(obs, exp)


def test_poisson_futures_follow_the_process_with_both_samplers():
    model = _poisson_model()
    batch = _poisson_histories()
    R = sum(RATES)
    t_last = _last_time(_repeat(batch, N_FUTURES))
    gaps = {}
    for method, seed in (("step", 11), ("reencode", 12)):
        times, marks, mask = _draw(model, batch, N_FUTURES, seed, method)
        assert bool(mask.all())
        gaps[method] = _gaps(times, t_last).numpy()
        ks = [stats.kstest(gaps[method][:, j], stats.expon(scale=1 / R).cdf) for j in range(E)]
        freq = np.bincount(marks.flatten().numpy(), minlength=len(RATES))
        chi = stats.chisquare(freq, freq.sum() * np.array(RATES) / R)
        # events within the horizon T: Poisson(T R) (max_events far above its tail)
        T = 2.0
        _, _, mask_T = _draw(model, batch, N_FUTURES // 2, seed + 100, method, horizon=T, max_events=24)
        count = _count_test(mask_T.sum(1).numpy(), T * R)
        print(f"{method}: gaps vs Exp({R}) KS p {[f'{k.pvalue:.3g}' for k in ks]}, marks chi2 p "
              f"{chi.pvalue:.3g} {freq.tolist()}, counts in T={T} vs Poisson({T * R}) chi2 p "
              f"{count.pvalue:.3g} (mean {mask_T.sum(1).double().mean():.3f})")
        assert min(k.pvalue for k in ks) > ALPHA and chi.pvalue > ALPHA and count.pvalue > ALPHA
    two = [stats.ks_2samp(gaps["step"][:, j], gaps["reencode"][:, j]).pvalue for j in range(E)]
    print("step vs reencode, two-sample KS p per gap", [f"{p:.3g}" for p in two])
    assert min(two) > ALPHA


# ------------------------------------------------------------------------ a model trained on Hawkes data

@pytest.fixture(scope="module")
def hawkes_data():
    from eventssm.datasets import SyntheticTPPDataModule

    dm = SyntheticTPPDataModule(process="hawkes", num_marks=2, n_sequences=256, max_events=64,
                                batch_size=32, data_seed=0)
    dm.build()
    test = dm.datasets["test"].table
    assert all(len(test.times[i]) >= c for i, c in enumerate(CUTS))
    hist = _batch([test.times[i][:c] for i, c in enumerate(CUTS)],
                  [test.marks[i][:c] for i, c in enumerate(CUTS)])
    return dm, hist


def _train(dm, head, epochs=20):
    """Maximum likelihood with Adam, a plain loop (no Lightning: seconds on a CPU)."""
    torch.manual_seed(0)
    model = EventTPP(num_marks=dm.num_marks, head=head, log_gap_stats=dm.log_gap_stats,
                     time_scale=dm.time_scale, n_quad=4, n_panels=4,
                     backbone=EncoderConfig(d_model=16, n_layers=1, d_state=4, backend="torch",
                                            dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        for b in dm.train_dataloader():
            time_ll, type_ll, _, _ = model.log_likelihood(b)
            loss = -(time_ll + type_ll).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        ll = torch.cat([sum(model.log_likelihood(b)[:2]) for b in dm.test_dataloader()]).mean()
    print(f"{head}: test LL/event {float(ll):.4f}, true process {dm.true_log_likelihood()['ll']:.4f}")
    return model.double()


class _ForgetfulEncoder:
    """The encoder, except that ``step`` absorbs nothing and returns the history's last features:
    a sampler built on it draws every event of a future from the history alone."""

    def __init__(self, encoder, h_last):
        self.encoder, self.h_last = encoder, h_last
        self.d_input = encoder.d_input

    def allocate_inference_cache(self, B):
        return self.encoder.allocate_inference_cache(B)

    def encode(self, **kw):
        return self.encoder.encode(**kw)

    def step(self, **kw):
        return self.h_last, None


@pytest.fixture(scope="module", params=["mixture", "intensity"])
def hawkes_futures(request, hawkes_data):
    """The trained model, the repeated histories and futures of each sampler:
    ``{"step", "reencode", "forgetful"}`` -> ``(times (R, E), marks (R, E))``."""
    dm, hist = hawkes_data
    model = _train(dm, request.param)
    rep = _repeat(hist, N_FUTURES)
    out = {}
    for method, seed in (("step", 1), ("reencode", 2)):
        times, marks, mask = _draw(model, hist, N_FUTURES, seed, method)
        assert bool(mask.all())
        out[method] = (times, marks)
    with torch.no_grad():
        h_last = model._last_features(rep)
    times, marks, _ = step_sampler(_ForgetfulEncoder(model.encoder, h_last), model.head,
                                   rep["timestamps"], rep["lengths"], rep["marks"],
                                   horizon=float("inf"), max_events=E,
                                   generator=torch.Generator().manual_seed(3))
    out["forgetful"] = (times, marks)
    return request.param, model, rep, out


def _two_sample(a, b, t_last):
    """p-values of step-vs-other checks: KS on each gap and on the last event's time, chi-square
    on the joint marks of the ``E`` events (``K^E`` cells)."""
    (ta, ma), (tb, mb) = a, b
    ga, gb = _gaps(ta, t_last).numpy(), _gaps(tb, t_last).numpy()
    p = {f"gap{j + 1} KS": stats.ks_2samp(ga[:, j], gb[:, j]).pvalue for j in range(E)}
    p[f"t{E} KS"] = stats.ks_2samp((ta[:, -1] - t_last).numpy(), (tb[:, -1] - t_last).numpy()).pvalue
    K = int(max(ma.max(), mb.max())) + 1
    code = lambda m: (m * K ** torch.arange(E)).sum(1).numpy()
    table = np.stack([np.bincount(code(ma), minlength=K**E), np.bincount(code(mb), minlength=K**E)])
    table = table[:, table.sum(0) > 0]
    p["joint marks chi2"] = stats.chi2_contingency(table).pvalue
    return p


@torch.no_grad()
def _pit(model, rep, times, marks, seed=0):
    """Probability integral transforms ``(u_gap, u_mark)``, each ``(R, E)``, of every sampled
    event under the model, with the features of its history (the real one plus the sampled
    events before it) from a full parallel encode."""
    R = len(rep["lengths"])
    rows = torch.arange(R)
    K = model.num_marks
    g = torch.Generator().manual_seed(seed)
    u_gap, u_mark = [], []
    for j in range(E):
        ts = torch.cat([rep["timestamps"], rep["timestamps"].new_zeros(R, j)], 1)
        mk = torch.cat([rep["marks"], rep["marks"].new_zeros(R, j)], 1)
        lengths = rep["lengths"].clone()
        for i in range(j):
            ts[rows, lengths], mk[rows, lengths] = times[:, i], marks[:, i]
            lengths = lengths + 1
        t_last = ts[rows, lengths - 1]
        pad = torch.arange(ts.shape[1])[None] >= lengths[:, None]
        ts = torch.where(pad, t_last[:, None], ts)
        h = model._last_features({"timestamps": ts, "marks": mk, "lengths": lengths})  # (R, d)
        gap = times[:, j] - t_last
        u_gap.append(-torch.expm1(model.head.log_survival(h, gap)))
        # P(type k | gap) for every k: the head's type part of the log-likelihood
        _, type_ll = model.head.log_likelihood(h[:, None].expand(R, K, -1), gap[:, None].expand(R, K),
                                               torch.arange(K).expand(R, K))
        p = type_ll.exp()
        p = p / p.sum(1, keepdim=True)
        below = (p.cumsum(1) - p).gather(1, marks[:, j:j + 1])[:, 0]
        mine = p.gather(1, marks[:, j:j + 1])[:, 0]
        u_mark.append(below + torch.rand(R, generator=g, dtype=p.dtype) * mine)
    return torch.stack(u_gap, 1).numpy(), torch.stack(u_mark, 1).numpy()


def _pit_pvalues(model, rep, fut):
    u_gap, u_mark = _pit(model, rep, *fut)
    p = {f"gap{j + 1} PIT KS": stats.kstest(u_gap[:, j], "uniform").pvalue for j in range(E)}
    p.update({f"mark{j + 1} PIT KS": stats.kstest(u_mark[:, j], "uniform").pvalue for j in range(E)})
    return p


def _show(name, p):
    print(name, ", ".join(f"{k} p={v:.3g}" for k, v in p.items()))


def test_step_and_reencode_futures_agree_in_distribution(hawkes_futures):
    head, model, rep, fut = hawkes_futures
    p = _two_sample(fut["step"], fut["reencode"], _last_time(rep))
    _show(f"{head}: step vs reencode ({len(rep['lengths'])} futures each, other seeds):", p)
    assert min(p.values()) > ALPHA


@pytest.mark.parametrize("method", ["step", "reencode"])
def test_sampled_futures_follow_the_models_own_distribution(hawkes_futures, method):
    head, model, rep, fut = hawkes_futures
    p = _pit_pvalues(model, rep, fut[method])
    _show(f"{head} {method}: against the model's law", p)
    assert min(p.values()) > ALPHA


def test_the_checks_reject_a_sampler_that_forgets_its_events(hawkes_futures):
    """The checks above have power: the step sampler with a step that absorbs nothing draws the
    first event right (its checks pass) and the later ones from a stale history."""
    head, model, rep, fut = hawkes_futures
    two = _two_sample(fut["step"], fut["forgetful"], _last_time(rep))
    pit = _pit_pvalues(model, rep, fut["forgetful"])
    _show(f"{head}: step vs forgetful", two)
    _show(f"{head}: forgetful against the model's law", pit)
    assert pit["gap1 PIT KS"] > ALPHA and pit["mark1 PIT KS"] > ALPHA  # the first event is right
    assert min(two.values()) < 1e-6 and min(pit.values()) < 1e-4
