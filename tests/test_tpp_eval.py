"""Multi-step evaluation (eventssm.tpp_eval): scores on inputs whose answer is known by their
construction (a sampler that returns the true future, the truth shifted by δ, futures whose mean
and mode are the truth), the optimal-transport distance against brute force over every matching,
the histories against the sequences they are cut from, and a small run of the script."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from eventssm.tpp_eval import (
    evaluate_multistep,
    multistep_histories,
    otd,
    sample_multistep,
    score_futures,
    yardstick_futures,
)
from tests.helpers import load_script

K = 3


def _sequences(n=6, seed=0):
    """Sequences whose events follow a rule a fake sampler can continue from any prefix: event
    ``i`` of sequence ``s`` at ``s + (i + 1)^1.3``, of type ``(i + s) % K``; lengths 6 to 14."""
    lens = [6 + (3 * s) % 9 for s in range(n)]
    times = [s + np.arange(1, n_ + 1) ** 1.3 for s, n_ in enumerate(lens)]
    marks = [(np.arange(n_) + s) % K for s, n_ in enumerate(lens)]
    return times, marks


class _RuleSampler:
    """A sampler that continues :func:`_sequences`' rule after each history (after checking that
    the history is the sequence's prefix), plus ``shift`` on every sampled time, ``jitter`` on
    alternate futures (``+jitter`` on even, ``-jitter`` on odd) and ``wrong`` futures of the last
    ones with every type replaced by ``(type + 1) % K``."""

    def __init__(self, shift=0.0, jitter=0.0, wrong=0):
        self.shift, self.jitter, self.wrong = shift, jitter, wrong
        self.training, self.calls = True, []

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode

    def sample_futures(self, batch, horizon, n_samples, max_events, generator=None):
        assert horizon == math.inf and not self.training
        self.calls.append(len(batch["lengths"]))
        ts, mk, lengths = batch["timestamps"], batch["marks"], batch["lengths"]
        B, E = len(lengths), max_events
        s = ts[:, 0] - 1.0  # the rule's offset: the first event is at s + 1
        for b in range(B):
            c = int(lengths[b])
            i = torch.arange(c, dtype=torch.float64)
            torch.testing.assert_close(ts[b, :c], s[b] + (i + 1) ** 1.3)
            assert torch.equal(mk[b, :c], ((i.long() + s[b].round().long()) % K))
            assert bool((ts[b, c:] == ts[b, c - 1]).all())  # padding repeats the last time
        i = lengths[:, None].double() + torch.arange(E, dtype=torch.float64)  # (B, E) next indices
        times = (s[:, None] + (i + 1) ** 1.3)[:, None].expand(B, n_samples, E).clone() + self.shift
        sign = torch.tensor([1.0 if j % 2 == 0 else -1.0 for j in range(n_samples)], dtype=torch.float64)
        times = times + self.jitter * sign[None, :, None]
        marks = ((i.long() + s.round().long()[:, None]) % K)[:, None].expand(B, n_samples, E).clone()
        if self.wrong:
            marks[:, n_samples - self.wrong:] = (marks[:, n_samples - self.wrong:] + 1) % K
        return {"times": times, "marks": marks, "mask": torch.ones(B, n_samples, E, dtype=torch.bool)}


@pytest.mark.parametrize("n_cuts", [1, 3])
def test_a_sampler_of_the_true_future_scores_perfectly(n_cuts):
    times, marks = _sequences()
    model = _RuleSampler()
    k = 4
    res = evaluate_multistep(model, times, marks, k=k, n_samples=5, n_cuts=n_cuts, batch_size=4)
    print(res)
    assert res["n"] == (6 if n_cuts == 1 else sum(len(np.unique(np.round(np.linspace(2, len(t) - k, 3))))
                                                   for t in times))
    assert model.calls[0] == 4 and sum(model.calls) == res["n"] and model.training  # mode restored
    # the fake computes the rule's times in torch, the sequences in numpy: equal to rounding
    np.testing.assert_allclose(res["time_rmse"], np.zeros(k), atol=1e-12)
    np.testing.assert_allclose(res["gap_rmse"], np.zeros(k), atol=1e-12)
    np.testing.assert_array_equal(res["type_acc"], np.ones(k))
    assert res["otd"] == pytest.approx(0.0, abs=1e-12) and res["otd_point"] == pytest.approx(0.0, abs=1e-12)


def test_a_shifted_future_scores_its_shift():
    """Every sampled time ``δ`` late: the j-th time's RMSE is δ, the first gap's δ and the later
    gaps' 0; the types are right; each of the k events moves by δ < 2C, so the OTD is kδ."""
    times, marks = _sequences()
    k, delta = 3, 0.25
    res = evaluate_multistep(_RuleSampler(shift=delta), times, marks, k=k, n_samples=4, n_cuts=2)
    print(res)
    np.testing.assert_allclose(res["time_rmse"], np.full(k, delta), rtol=1e-12)
    np.testing.assert_allclose(res["gap_rmse"], [delta, 0.0, 0.0], atol=1e-12)
    np.testing.assert_array_equal(res["type_acc"], np.ones(k))
    assert res["otd"] == pytest.approx(k * delta) and res["otd_point"] == pytest.approx(k * delta)
    # a shift beyond 2C: deleting and inserting each event is cheaper than moving it
    far = evaluate_multistep(_RuleSampler(shift=3.0), times, marks, k=k, n_samples=2, otd_cost=1.0)
    assert far["otd"] == pytest.approx(2 * k * 1.0)


def test_mean_and_mode_over_the_futures_are_the_point_prediction():
    """Futures ±δ around the truth (their mean is the truth) and one future in four with every
    type wrong (the mode is the truth): the point prediction is perfect, while the expected OTD
    is the futures' mean distance: (3 kδ + 2 k C) / 4 (a wrong-type event is deleted and the
    true one inserted: 2C)."""
    times, marks = _sequences()
    k, delta, C = 3, 0.1, 0.5
    res = evaluate_multistep(_RuleSampler(jitter=delta, wrong=1), times, marks, k=k, n_samples=4,
                             otd_cost=C)
    print(res)
    np.testing.assert_allclose(res["time_rmse"], np.zeros(k), atol=1e-12)
    np.testing.assert_array_equal(res["type_acc"], np.ones(k))
    assert res["otd_point"] == pytest.approx(0.0, abs=1e-12)
    assert res["otd"] == pytest.approx((3 * k * delta + 2 * k * C) / 4)


def test_histories_are_prefixes_and_futures_the_next_events():
    times, marks = _sequences()
    k = 3
    for n_cuts in (1, 2, 5):
        hist = multistep_histories(times, marks, k, n_cuts, min_history=2)
        for r in range(len(hist["lengths"])):
            s, c = int(hist["seq"][r]), int(hist["cut"][r])
            assert 2 <= c <= len(times[s]) - k
            np.testing.assert_array_equal(hist["timestamps"][r, :c].numpy(), times[s][:c])
            np.testing.assert_array_equal(hist["marks"][r, :c].numpy(), marks[s][:c])
            np.testing.assert_array_equal(hist["future_times"][r].numpy(), times[s][c:c + k])
            np.testing.assert_array_equal(hist["future_marks"][r].numpy(), marks[s][c:c + k])
            assert float(hist["t_cut"][r]) == times[s][c - 1]
        cuts = {}
        for s, c in zip(hist["seq"].tolist(), hist["cut"].tolist()):
            cuts.setdefault(s, []).append(c)
        for s, cs in cuts.items():
            hi = len(times[s]) - k
            # one cut: the last k events are the future (EasyTPP's); several: both ends, distinct
            assert cs == [hi] if n_cuts == 1 else (cs[0] == 2 and cs[-1] == hi and len(set(cs)) == len(cs)
                                                   and len(cs) <= n_cuts)
    # too short for min_history + k: left out
    hist = multistep_histories([np.arange(4.0), np.arange(9.0)], [np.zeros(4, int), np.zeros(9, int)], 3)
    assert hist["seq"].tolist() == [1]


def test_yardsticks_on_a_known_history():
    """History at 0, 1, 3, 4 (types 1, 0, 1, 1), future at 5, 6: the last gap (1) predicts 5, 6
    exactly; the mean gap (4/3) is 1/3 and 2/3 late; both predict type 1."""
    hist = multistep_histories([np.array([0.0, 1.0, 3.0, 4.0, 5.0, 6.0])], [np.array([1, 0, 1, 1, 1, 0])],
                               k=2, min_history=2)
    res = {y: score_futures(*yardstick_futures(hist, y), hist, otd_cost=1.0) for y in ("last_gap", "mean_gap")}
    print(res)
    np.testing.assert_allclose(res["last_gap"]["time_rmse"], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(res["mean_gap"]["time_rmse"], [1 / 3, 2 / 3], rtol=1e-12)
    np.testing.assert_allclose(res["mean_gap"]["gap_rmse"], [1 / 3, 1 / 3], rtol=1e-12)
    for r in res.values():
        np.testing.assert_array_equal(r["type_acc"], [1.0, 0.0])
    # the mean gap's OTD: its first event moves by 1/3 onto the type-1 one, its second (type 1)
    # is deleted and the type-0 one inserted
    assert res["mean_gap"]["otd"] == pytest.approx(1 / 3 + 2.0)


def _brute_otd(ta, ma, tb, mb, C):
    """Every partial matching of same-type events (crossing ones too), the cheapest."""
    best = 0.0
    for typ in set(ma) | set(mb):
        a = [t for t, m in zip(ta, ma) if m == typ]
        b = [t for t, m in zip(tb, mb) if m == typ]
        cost = C * (len(a) + len(b))
        for r in range(1, min(len(a), len(b)) + 1):
            for ia in itertools.combinations(range(len(a)), r):
                for ib in itertools.permutations(range(len(b)), r):
                    moved = sum(abs(a[i] - b[j]) for i, j in zip(ia, ib))
                    cost = min(cost, moved + C * (len(a) + len(b) - 2 * r))
        best += cost
    return best


def test_otd_matches_brute_force_over_every_matching():
    rng = np.random.default_rng(0)
    n, m, trials = 5, 4, 200
    ta, tb = rng.uniform(0, 3, (trials, n)), rng.uniform(0, 3, (trials, m))
    ma, mb = rng.integers(0, 2, (trials, n)), rng.integers(0, 2, (trials, m))
    ka, kb = rng.random((trials, n)) < 0.8, rng.random((trials, m)) < 0.8  # some events absent
    for C in (0.2, 1.0):
        got = otd(torch.from_numpy(ta), torch.from_numpy(ma), torch.from_numpy(tb), torch.from_numpy(mb),
                  C, torch.from_numpy(ka), torch.from_numpy(kb))
        ref = np.array([_brute_otd(ta[i][ka[i]], ma[i][ka[i]], tb[i][kb[i]], mb[i][kb[i]], C)
                        for i in range(trials)])
        err = np.abs(got.numpy() - ref).max()
        print(f"C={C}: max |DP - brute force| over {trials} pairs {err:.2e}, mean OTD {ref.mean():.3f}")
        assert err < 1e-12
    # by hand: empty against three events; one of another type
    z = torch.zeros(1, 0)
    assert float(otd(z, z.long(), torch.tensor([[1.0, 2.0, 3.0]]), torch.zeros(1, 3, dtype=torch.long), 0.5)) == 1.5
    assert float(otd(torch.tensor([[1.0]]), torch.tensor([[0]]), torch.tensor([[1.0]]), torch.tensor([[1]]), 0.7)) \
        == pytest.approx(1.4)


def test_bad_arguments():
    times, marks = _sequences()
    for kw, match in ((dict(k=0), "k must be"), (dict(k=2, n_cuts=0), "n_cuts must be"),
                      (dict(k=2, min_history=0), "min_history must be"), (dict(k=20), "no sequence has")):
        with pytest.raises(ValueError, match=match):
            multistep_histories(times, marks, **kw)
    with pytest.raises(ValueError, match="times and marks must hold"):
        multistep_histories(times, marks[:-1], 2)
    hist = multistep_histories(times, marks, 2)
    with pytest.raises(ValueError, match="n_samples and batch_size"):
        sample_multistep(_RuleSampler(), hist, 0)
    with pytest.raises(ValueError, match="kind must be"):
        yardstick_futures(hist, "median")
    with pytest.raises(ValueError, match="cost must be"):
        otd(torch.zeros(1, 1), torch.zeros(1, 1).long(), torch.zeros(1, 1), torch.zeros(1, 1).long(), 0.0)
    with pytest.raises(ValueError, match="times and marks must be"):
        score_futures(torch.zeros(3, 1, 2), torch.zeros(3, 1, 2).long(), hist)

    class Stops(_RuleSampler):
        def sample_futures(self, batch, horizon, n_samples, max_events, generator=None):
            out = super().sample_futures(batch, horizon, n_samples, max_events, generator)
            out["mask"][0, 0, -1] = False
            return out

    with pytest.raises(RuntimeError, match="before k events"):
        sample_multistep(Stops(), hist, 2)


@pytest.mark.slow
def test_script_on_a_small_hawkes_run(tmp_path):
    """The script end to end, tiny: one epoch, one seed, a few futures; its tables name every
    predictor and the true process's futures are scored like the model's."""
    script = load_script("experiments/tpp_multistep.py")
    out = tmp_path / "multistep.md"
    report = script.main(["--sequences", "48", "--max-events", "24", "--epochs", "1", "--d-model", "8",
                          "--layers", "1", "--k", "3", "--samples", "4", "--cuts", "2", "--seeds", "0",
                          "--out", str(out)])
    assert out.read_text() == report
    for row in ("| eventssm mixture |", "| true process |", "| last gap |", "| mean gap |"):
        assert report.count(row) == 4  # three per-step tables and the OTD table
    assert "nan" not in report


def test_true_process_futures_follow_the_hawkes_intensity():
    """The script's true-process sampler against the process's own law: the first gap's PIT
    ``1 - exp(-Λ(τ))`` (closed-form compensator of the excitation the history leaves) is uniform
    and the first type's frequencies are ``λ_k / λ`` at the sampled time, on average."""
    from scipy import stats

    from eventssm.datasets.tpp import hawkes_params

    script = load_script("experiments/tpp_multistep.py")
    mu, alpha, beta = hawkes_params(2)
    times, marks = [np.array([0.0, 0.3, 0.5, 2.0]), np.array([0.0, 0.05])], [np.array([0, 1, 1, 0]), np.array([1, 0])]
    fut = [(t, m) for t, m in zip(times, marks)]
    hist = multistep_histories([np.r_[t, t[-1] + 1, t[-1] + 2] for t, _ in fut],
                               [np.r_[m, 0, 0] for _, m in fut], k=2)
    S = 4000
    t, m = script.hawkes_futures(hist, {"mu": mu, "alpha": alpha, "beta": beta}, 2, S, np.random.default_rng(0))
    for r, (th, mh) in enumerate(fut):
        t_c = th[-1]
        excite = (alpha[:, mh] * beta * np.exp(-beta * (t_c - th))).sum(1)  # (K,) at the cut
        tau = t[r, :, 0].numpy() - t_c
        Lam = mu.sum() * tau + excite.sum() * (-np.expm1(-beta * tau)) / beta
        ks = stats.kstest(-np.expm1(-Lam), "uniform")
        lam = mu + excite[None] * np.exp(-beta * tau)[:, None]  # (S, K) at each sampled time
        p1 = (lam[:, 1] / lam.sum(1)).mean()
        f1 = float((m[r, :, 0] == 1).double().mean())
        print(f"history {r}: first gap PIT KS p {ks.pvalue:.3g}; type 1 freq {f1:.3f} vs {p1:.3f}")
        assert ks.pvalue > 1e-3 and abs(f1 - p1) < 4 * math.sqrt(p1 * (1 - p1) / S)
