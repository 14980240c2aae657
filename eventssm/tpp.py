"""Temporal point process heads: the next event's time and type, with a log-likelihood.

Legend: leading dims ``...`` (e.g. ``B, L``: one prediction per event), features ``d``
(``d_model``), event types ``K``, mixture components ``M``, decaying state ``H``, quadrature
nodes ``Q``.

A head reads the features ``h_i`` of event ``i`` (a causal encoder's output: everything up to
and including event ``i``) and models the next event, its gap ``τ = t_{i+1} - t_i > 0`` and its
type ``k = m_{i+1}``. The log-likelihood of one event splits into a time part and a type part::

    log p(τ, k | H_i) = log p(τ | H_i) + log p(k | τ, H_i)

Three heads:

* :class:`LogNormalMixtureHead` (intensity-free, Shchur et al. 2020): ``log τ`` is a Gaussian
  mixture (in units normalised by the training gaps' log-mean and log-std), the type a
  categorical independent of the time given the history. Exact likelihood, mean in closed form,
  direct sampling.
* :class:`IntensityHead` (continuous time): type intensities read out of a state that decays in
  closed form from the last event (the continuous-time LSTM of the neural Hawkes process has
  the same shape of decay, here with selective, input-dependent rates)::

      x_i(s) = x̄_i + (x_i - x̄_i) ⊙ exp(-δ_i s / u),     δ_i = softplus(·) > 0   (H,)
      λ_k(t_i + s) = f_k(W x_i(s) + b)_k / u,           f_k(x) = β_k log(1 + exp(x / β_k))

  with ``u`` the time unit (the training gaps' geometric mean). The compensator
  ``Λ(τ) = ∫_0^τ Σ_k λ_k`` is computed by composite Gauss-Legendre quadrature on panels graded
  geometrically towards ``s = 0`` (where the fast decays sit); its accuracy is measured against
  the closed form of an exponential-decay intensity in ``tests/test_tpp.py`` (relative error
  below 1e-6 for ``δτ`` from 1e-3 to 1e3 with the defaults). Sampling is by thinning with an
  exact bound: each state coordinate moves monotonically between ``x_i`` and ``x̄_i``, so
  ``b_k + Σ_j max(W_kj x_j, W_kj x̄_j)`` bounds the pre-activation for all ``s ≥ 0``.
* :class:`eventssm.tpp_state.StateIntensityHead` (continuous time, ``head="state"``): the same
  readout, but from the encoder's last SSM state itself, evolved between events under the
  block's own discretization with no input (see :mod:`eventssm.tpp_state`). Both continuous-time
  heads share :class:`DecayingIntensityHead` (compensator, likelihood, prediction, thinning).

This module is core: it imports torch and numpy only (no Lightning, no pandas).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["TPPHead", "LogNormalMixtureHead", "DecayingIntensityHead", "IntensityHead",
           "gauss_legendre_panels", "softplus_beta"]


def _check_gap_stats(gap_stats) -> tuple[float, float]:
    if gap_stats is None:
        return 0.0, 1.0
    try:
        loc, scale = (float(x) for x in gap_stats)
    except (TypeError, ValueError) as err:
        raise ValueError(f"log_gap_stats must be (mean, std) of log gaps, got {gap_stats!r}") from err
    if not (math.isfinite(loc) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"log_gap_stats must be finite with std > 0, got {gap_stats!r}")
    return loc, scale


class TPPHead(nn.Module, ABC):
    """Base of the next-event heads.

    Args:
        d_model: feature width ``d``.
        num_marks: event types ``K`` (>= 1).
        log_gap_stats: ``(mean, std)`` of ``log τ`` over the training split's positive gaps; sets
            the time unit ``u = exp(mean)`` (default ``(0, 1)``: the data's own unit).
        time_prediction: what :meth:`predict` gives as the next gap, ``"mean"`` (minimises the
            squared error when the model is right) or ``"median"`` (robust to a heavy right tail).
    """

    def __init__(self, d_model: int, num_marks: int, log_gap_stats=None,
                 time_prediction: str = "mean") -> None:
        super().__init__()
        if not isinstance(num_marks, int) or num_marks < 1:
            raise ValueError(f"num_marks must be a positive int, got {num_marks!r}")
        if not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"d_model must be a positive int, got {d_model!r}")
        if time_prediction not in ("mean", "median"):
            raise ValueError(f"time_prediction must be 'mean' or 'median', got {time_prediction!r}")
        loc, scale = _check_gap_stats(log_gap_stats)
        self.d_model, self.num_marks, self.time_prediction = d_model, num_marks, time_prediction
        self.register_buffer("log_gap_loc", torch.tensor(loc, dtype=torch.float32))
        self.register_buffer("log_gap_scale", torch.tensor(scale, dtype=torch.float32))

    @property
    def time_unit(self) -> Tensor:
        return self.log_gap_loc.exp()

    def _clamp_gap(self, gap: Tensor) -> Tensor:
        # Ties (gap 0) have no density: clamp gaps to 1e-6 time units instead of giving -inf.
        return torch.maximum(_f(gap), 1e-6 * self.time_unit)

    @abstractmethod
    def log_likelihood(self, h: Tensor, gap: Tensor, mark: Tensor) -> tuple[Tensor, Tensor]:
        """Per-event ``(time part, type part)``, each ``(...)``, of the next event with gap
        ``gap (...)`` and type ``mark (...)`` (negative marks, e.g. -100 padding, give 0 type
        part) given the features ``h (..., d)``."""

    @abstractmethod
    def predict(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(predicted gap (...), type probabilities (..., K))`` of the next event; the gap is
        the predictive mean or median (``time_prediction``)."""

    @abstractmethod
    def sample(self, h: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """One draw ``(gap (...), mark (...) long)`` of the next event per row of ``h (..., d)``."""

    def intensity(self, h: Tensor, s: Tensor) -> Tensor:
        """Type intensities ``(..., Q, K)`` at times ``s (..., Q) >= 0`` after the event, given
        that no event came before (for the mixture head, its hazard ``p(s, k) / S(s)``)."""
        raise NotImplementedError(f"{type(self).__name__} has no intensity readout")

    def log_survival(self, h: Tensor, gap: Tensor) -> Tensor:
        """``log S(τ) = log P(next gap > τ)`` ``(...)`` for gaps ``gap (...) >= 0``."""
        raise NotImplementedError(f"{type(self).__name__} has no survival readout")


def _f(x: Tensor) -> Tensor:
    """At least float32 (bf16/fp16 features are upcast; float64 stays, for reference tests)."""
    return x if x.dtype == torch.float64 else x.float()


def _mark_ll(logp: Tensor, mark: Tensor) -> Tensor:
    """``logp (..., K)``, ``mark (...)`` (negative = none) -> ``(...)`` with 0 where none."""
    ok = mark >= 0
    out = logp.gather(-1, mark.clamp(min=0).long()[..., None])[..., 0]
    return torch.where(ok, out, torch.zeros((), dtype=out.dtype, device=out.device))


class LogNormalMixtureHead(TPPHead):
    """Intensity-free head: ``log τ ~ Σ_m w_m N(loc + scale μ_m, (scale σ_m)²)``, type ~ Cat.

    Args:
        d_model, num_marks, log_gap_stats: see :class:`TPPHead`.
        n_components: mixture components ``M``.
    """

    def __init__(self, d_model: int, num_marks: int, log_gap_stats=None,
                 n_components: int = 8, time_prediction: str = "mean") -> None:
        super().__init__(d_model, num_marks, log_gap_stats, time_prediction)
        if not isinstance(n_components, int) or n_components < 1:
            raise ValueError(f"n_components must be a positive int, got {n_components!r}")
        self.n_components = n_components
        self.time_proj = nn.Linear(d_model, 3 * n_components)
        self.mark_proj = nn.Linear(d_model, num_marks)

    def mixture(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(log w, μ, log σ)``, each ``(..., M)``, of the normalised log-gap ``z``."""
        logw, mu, log_sigma = _f(self.time_proj(h)).chunk(3, dim=-1)
        # σ bounded: a collapsing component would blow up the density, and components wider than
        # e (z has unit std over the training gaps) only make the mean explode.
        return F.log_softmax(logw, -1), mu, log_sigma.clamp(-5.0, 1.0)

    def log_likelihood(self, h: Tensor, gap: Tensor, mark: Tensor) -> tuple[Tensor, Tensor]:
        logw, mu, log_sigma = self.mixture(h)
        y = self._clamp_gap(gap).log()  # (...)
        z = (y - self.log_gap_loc) / self.log_gap_scale
        # log N(z; μ, σ) per component, then log p(y) = log p(z) - log scale, p(τ) = p(y) / τ
        lognorm = -0.5 * ((z[..., None] - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
        time_ll = torch.logsumexp(logw + lognorm, -1) - self.log_gap_scale.log() - y
        mark_ll = _mark_ll(F.log_softmax(_f(self.mark_proj(h)), -1), mark)
        return time_ll, mark_ll

    def predict(self, h: Tensor) -> tuple[Tensor, Tensor]:
        logw, mu, log_sigma = self.mixture(h)
        a, b = self.log_gap_loc, self.log_gap_scale
        probs = F.softmax(_f(self.mark_proj(h)), -1)
        if self.time_prediction == "median":
            return (a + b * self._median_z(logw.exp(), mu, log_sigma.exp())).exp(), probs
        # E[τ] = Σ w exp(a + b μ + (b σ)² / 2), in log space for range
        mean = torch.logsumexp(logw + a + b * mu + 0.5 * (b * log_sigma.exp()) ** 2, -1).exp()
        return mean, probs

    def log_survival(self, h: Tensor, gap: Tensor) -> Tensor:
        logw, mu, log_sigma = self.mixture(h)
        z = (self._clamp_gap(gap).log() - self.log_gap_loc) / self.log_gap_scale
        # log Σ w P(Z_m > z), in log space: far in the tail 1 - Φ underflows long before log Φ(-x)
        tail = torch.special.log_ndtr(-(z[..., None] - mu) / log_sigma.exp())
        return torch.logsumexp(logw + tail, -1)

    def intensity(self, h: Tensor, s: Tensor) -> Tensor:
        """The hazard ``p(s) P(k) / S(s)`` ``(..., Q, K)`` at ``s (..., Q)`` (the type is
        independent of the time in this head)."""
        s = _f(s)
        hq = h[..., None, :].expand(*s.shape, h.shape[-1])  # (..., Q, d)
        none = torch.full(s.shape, -1, dtype=torch.long, device=s.device)
        time_ll, _ = self.log_likelihood(hq, s, none)  # (..., Q): log p(s)
        log_probs = F.log_softmax(_f(self.mark_proj(h)), -1)[..., None, :]  # (..., 1, K)
        return ((time_ll - self.log_survival(hq, s))[..., None] + log_probs).exp()

    @staticmethod
    def _median_z(w: Tensor, mu: Tensor, sd: Tensor, iters: int = 60) -> Tensor:
        """The median of the Gaussian mixture of ``z`` by bisection (its CDF is monotone)."""
        lo = (mu - 10 * sd).min(-1).values
        hi = (mu + 10 * sd).max(-1).values
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            below = (w * torch.special.ndtr((mid[..., None] - mu) / sd)).sum(-1) < 0.5
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    @torch.no_grad()
    def sample(self, h: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        logw, mu, log_sigma = self.mixture(h)
        lead = logw.shape[:-1]
        comp = torch.multinomial(logw.exp().reshape(-1, self.n_components), 1,
                                 generator=generator).reshape(lead)
        pick = lambda x: x.gather(-1, comp[..., None])[..., 0]
        eps = torch.randn(lead, generator=generator, device=h.device, dtype=mu.dtype)
        z = pick(mu) + pick(log_sigma).exp() * eps
        gap = (self.log_gap_loc + self.log_gap_scale * z).exp()
        probs = F.softmax(_f(self.mark_proj(h)), -1)
        mark = torch.multinomial(probs.reshape(-1, self.num_marks), 1,
                                 generator=generator).reshape(lead)
        return gap, mark


def gauss_legendre_panels(n_nodes: int, n_panels: int, ratio: float = 0.25) -> tuple[Tensor, Tensor]:
    """Nodes and weights on ``[0, 1]`` (float64): Gauss-Legendre with ``n_nodes`` nodes on each of
    ``n_panels`` panels with breakpoints ``0, r^(P-1), ..., r, 1`` (``r = ratio``), so that
    ``∫_0^τ f(s) ds ≈ τ Σ_q w_q f(τ x_q)``. Returns ``(x (Q,), w (Q,))``, ``Q = n_nodes·n_panels``."""
    if n_nodes < 1 or n_panels < 1 or not (0 < ratio < 1):
        raise ValueError(f"need n_nodes >= 1, n_panels >= 1, 0 < ratio < 1; got {n_nodes}, "
                         f"{n_panels}, {ratio}")
    g, gw = np.polynomial.legendre.leggauss(n_nodes)
    edges = np.concatenate([[0.0], ratio ** np.arange(n_panels - 1, -1, -1, dtype=np.float64)])
    xs, ws = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        xs.append(0.5 * (a + b) + 0.5 * (b - a) * g)
        ws.append(0.5 * (b - a) * gw)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ws))


class DecayingIntensityHead(TPPHead):
    """Base of the continuous-time heads: type intensities ``λ_k(t_i + s)`` in closed form in the
    time ``s`` since the event, from a per-event tuple of tensors ``st`` (:meth:`states`, each
    ``(..., X)``: one trailing feature axis, so that rows can be flattened and gathered).

    A subclass gives :meth:`states`, ``_intensity(st, s (..., Q)) -> (..., Q, K)``,
    ``_bound(st) -> (..., K)`` (an upper bound of every ``λ_k(s)``, ``s >= 0``) and
    ``_asymptote(st) -> (..., K)`` (``λ_k(s)`` as ``s -> ∞``); this class gives the compensator
    (composite Gauss-Legendre), the log-likelihood, :meth:`predict` and thinning.

    Args:
        d_model, num_marks, log_gap_stats, time_prediction: see :class:`TPPHead`.
        n_quad, n_panels: Gauss-Legendre nodes per panel and panels of the compensator.
        n_grid: points of the log-spaced grid of :meth:`predict`.
    """

    def __init__(self, d_model: int, num_marks: int, log_gap_stats=None, n_quad: int = 8,
                 n_panels: int = 6, n_grid: int = 128, time_prediction: str = "mean") -> None:
        super().__init__(d_model, num_marks, log_gap_stats, time_prediction)
        self.n_grid = n_grid
        x, w = gauss_legendre_panels(n_quad, n_panels)
        # float64 nodes (cast at use), not moved by .float()/.half(): they are not parameters
        self.quad_x, self.quad_w = x, w

    @abstractmethod
    def states(self, h: Tensor) -> tuple[Tensor, ...]:
        """The per-event tensors the intensity is read from, each ``(..., X)``."""

    @abstractmethod
    def _intensity(self, st, s: Tensor) -> Tensor:
        """``st`` from :meth:`states`, ``s (..., Q)`` in data time -> ``(..., Q, K)``."""

    @abstractmethod
    def _bound(self, st) -> Tensor:
        """``(..., K)``: an upper bound of every ``λ_k(s)``, ``s >= 0``."""

    @abstractmethod
    def _asymptote(self, st) -> Tensor:
        """``(..., K)``: ``λ_k(s)`` as ``s -> ∞``."""

    def intensity(self, h: Tensor, s: Tensor) -> Tensor:
        return self._intensity(self.states(h), _f(s))

    def log_survival(self, h: Tensor, gap: Tensor) -> Tensor:
        return -self.compensator(h, gap)

    def compensator(self, h: Tensor, gap: Tensor) -> Tensor:
        """``Λ(τ) = ∫_0^τ Σ_k λ_k(s) ds`` ``(...)`` by composite Gauss-Legendre quadrature."""
        return self._compensator(self.states(h), _f(gap))

    def _compensator(self, st, gap: Tensor) -> Tensor:
        x, w = self.quad_x.to(gap), self.quad_w.to(gap)
        lam = self._intensity(st, gap[..., None] * x).sum(-1)  # (..., Q)
        return gap * (lam * w).sum(-1)

    def log_likelihood(self, h: Tensor, gap: Tensor, mark: Tensor) -> tuple[Tensor, Tensor]:
        st = self.states(h)
        gap = self._clamp_gap(gap)
        lam = self._intensity(st, gap[..., None])[..., 0, :]  # (..., K) at the event
        total = lam.sum(-1)
        time_ll = total.log() - self._compensator(st, gap)
        mark_ll = _mark_ll(lam.log() - total.log()[..., None], mark)
        return time_ll, mark_ll

    def predict(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Mean gap ``∫_0^∞ S(s) ds`` (or the median, ``Λ(s) = log 2``) and marginal type
        probabilities ``∫_0^∞ λ_k(s) S(s) ds`` (``S = exp(-Λ)``) by the trapezoid rule on a
        log-spaced grid of ``n_grid`` points from 1e-4 to 1e4 time units; beyond it the intensity
        is its asymptote (closed-form tail)."""
        st = self.states(h)
        u = self.time_unit
        kw = dict(dtype=st[0].dtype, device=h.device)
        grid = torch.cat([torch.zeros(1, **kw), torch.logspace(-4, 4, self.n_grid, **kw)]) * u  # (G,)
        lam = self._intensity(st, grid.expand(*st[0].shape[:-1], -1))  # (..., G, K)
        tot = lam.sum(-1)
        ds = grid.diff()
        Lam = torch.cat([torch.zeros_like(tot[..., :1]),
                         torch.cumsum(0.5 * (tot[..., 1:] + tot[..., :-1]) * ds, -1)], -1)
        S = torch.exp(-Lam)  # (..., G)
        mean = (0.5 * (S[..., 1:] + S[..., :-1]) * ds).sum(-1)
        f = lam * S[..., None]  # density of (time, type)
        probs = (0.5 * (f[..., 1:, :] + f[..., :-1, :]) * ds[:, None]).sum(-2)
        lam_inf = self._asymptote(st)  # (..., K), s -> ∞
        tail = S[..., -1]
        mean = mean + tail / lam_inf.sum(-1)
        probs = probs + tail[..., None] * lam_inf / lam_inf.sum(-1, keepdim=True)
        probs = probs / probs.sum(-1, keepdim=True)
        if self.time_prediction == "mean":
            return mean, probs
        # median: Λ(s) = log 2, linear in s between grid points (or past the grid at rate λ(∞))
        half = math.log(2.0)
        j = (Lam < half).sum(-1, keepdim=True).clamp(max=grid.numel() - 1)  # first index >= log 2
        L1, L0 = Lam.gather(-1, j)[..., 0], Lam.gather(-1, j - 1)[..., 0]
        g1, g0 = grid[j[..., 0]], grid[j[..., 0] - 1]
        inside = g0 + (g1 - g0) * (half - L0) / (L1 - L0).clamp(min=1e-30)
        past = grid[-1] + (half - Lam[..., -1]) / lam_inf.sum(-1)
        return torch.where(Lam[..., -1] >= half, inside, past), probs

    def intensity_bound(self, h: Tensor) -> Tensor:
        """``(..., K)``: an upper bound of every ``λ_k(s)``, ``s >= 0``."""
        return self._bound(self.states(h))

    @torch.no_grad()
    def sample(self, h: Tensor, generator: torch.Generator | None = None,
               n_candidates: int = 64, max_rounds: int = 1000) -> tuple[Tensor, Tensor]:
        """Ogata thinning with the bound of :meth:`intensity_bound`, ``n_candidates`` proposals
        per row and round (a row is done at its first accepted proposal)."""
        st = self.states(h)
        lead = st[0].shape[:-1]
        st = tuple(t.reshape(-1, t.shape[-1]) for t in st)
        R = st[0].shape[0]
        dev, dt = h.device, st[0].dtype
        bound = self._bound(st).sum(-1)  # (R,)
        start = torch.zeros(R, device=dev, dtype=dt)
        gap = torch.full((R,), float("nan"), device=dev, dtype=dt)
        mark = torch.zeros(R, dtype=torch.long, device=dev)
        todo = torch.arange(R, device=dev)
        for _ in range(max_rounds):
            if todo.numel() == 0:
                break
            sub = tuple(t[todo] for t in st)
            e = torch.empty(todo.numel(), n_candidates, device=dev, dtype=dt).exponential_(generator=generator)
            s = start[todo, None] + torch.cumsum(e, -1) / bound[todo, None]  # (r, C)
            lam = self._intensity(sub, s)  # (r, C, K)
            tot = lam.sum(-1)
            acc = torch.rand(s.shape, generator=generator, device=dev, dtype=dt) * bound[todo, None] <= tot
            hit = acc.any(-1)
            first = acc.float().argmax(-1)  # first accepted proposal of each row
            done = todo[hit]
            gap[done] = s[hit, first[hit]]
            lam_hit = lam[hit, first[hit]]
            mark[done] = torch.multinomial(lam_hit / lam_hit.sum(-1, keepdim=True), 1,
                                           generator=generator)[:, 0]
            start[todo[~hit]] = s[~hit, -1]
            todo = todo[~hit]
        if todo.numel():
            raise RuntimeError(f"thinning did not accept within {max_rounds} rounds for "
                               f"{todo.numel()} rows (intensity bound too loose?)")
        return gap.reshape(lead), mark.reshape(lead)


class IntensityHead(DecayingIntensityHead):
    """Continuous-time head: intensities from a state decayed in closed form (module docstring).

    Args:
        d_model, num_marks, log_gap_stats: see :class:`TPPHead`.
        d_hidden: size ``H`` of the decaying state.
        n_quad, n_panels: Gauss-Legendre nodes per panel and panels of the compensator.
        decay_range: initial decay rates ``δ`` (per time unit) are log-spaced over this range.
        n_grid: points of the log-spaced grid of :meth:`predict` (mean gap and type
            probabilities integrated to infinity; the tail beyond the grid is closed-form).
    """

    def __init__(self, d_model: int, num_marks: int, log_gap_stats=None, d_hidden: int = 16,
                 n_quad: int = 8, n_panels: int = 6, decay_range: tuple[float, float] = (0.1, 10.0),
                 n_grid: int = 128, time_prediction: str = "mean") -> None:
        super().__init__(d_model, num_marks, log_gap_stats, n_quad, n_panels, n_grid, time_prediction)
        if not isinstance(d_hidden, int) or d_hidden < 1:
            raise ValueError(f"d_hidden must be a positive int, got {d_hidden!r}")
        lo, hi = decay_range
        if not (0 < lo <= hi):
            raise ValueError(f"decay_range must satisfy 0 < low <= high, got {decay_range!r}")
        self.d_hidden = d_hidden
        self.state_proj = nn.Linear(d_model, 3 * d_hidden)
        self.out = nn.Linear(d_hidden, num_marks)
        self.log_beta = nn.Parameter(torch.zeros(num_marks))  # softplus sharpness per type
        with torch.no_grad():  # δ = softplus(bias) log-spaced over decay_range
            rates = torch.exp(torch.linspace(math.log(lo), math.log(hi), d_hidden))
            self.state_proj.bias[2 * d_hidden:] = rates + torch.log(-torch.expm1(-rates))

    def states(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(x, x̄, δ)``, each ``(..., H)``: the state right after the event, its asymptote and
        its decay rates per time unit."""
        x, xbar, d = _f(self.state_proj(h)).chunk(3, dim=-1)
        return x, xbar, F.softplus(d)

    def _act(self, pre: Tensor) -> Tensor:
        return softplus_beta(pre, self.log_beta)

    def _intensity(self, st, s: Tensor) -> Tensor:
        x, xbar, d = st
        u = self.time_unit
        decay = torch.exp(-d[..., None, :] * (s[..., None] / u))  # (..., Q, H)
        state = xbar[..., None, :] + (x - xbar)[..., None, :] * decay
        return self._act(self.out(state)) / u

    def _asymptote(self, st) -> Tensor:
        return self._act(self.out(st[1])) / self.time_unit

    def _bound(self, st) -> Tensor:
        # each state coordinate moves monotonically between x and x̄ (module docstring)
        x, xbar, _ = st
        W = self.out.weight  # (K, H)
        hi = torch.maximum(x[..., None, :] * W, xbar[..., None, :] * W).sum(-1) + self.out.bias
        return self._act(hi) / self.time_unit


def softplus_beta(pre: Tensor, log_beta: Tensor) -> Tensor:
    """``f_k(x) = β_k log(1 + exp(x / β_k))``, ``β = exp(log_beta) (K,)``: positive, increasing."""
    beta = log_beta.exp()
    return beta * F.softplus(pre / beta)

