"""Plot a point-process model on one test sequence: the events, the model's intensity over time
(beside the true intensity for the synthetic Hawkes data) and sampled futures after a cut.

::

    python experiments/plot_tpp.py --config experiments/configs/tpp_hawkes.yaml --epochs 10 \\
        -o experiments/results/tpp_hawkes.png
    python experiments/plot_tpp.py --config experiments/configs/tpp_hawkes.yaml \\
        --ckpt runs/tpp_hawkes/version_0/checkpoints/last.ckpt --head intensity

Other arguments go to the ``eventssm`` command line (``--data.n_sequences 64``, ...).

Without ``--ckpt`` the model is trained for ``--epochs`` first. For the mixture head the
"intensity" is its hazard ``p(s) / S(s)`` split by the type probabilities.
"""

from __future__ import annotations

import argparse
import tempfile

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from eventssm.tasks.cli import build_cli  # noqa: E402
from eventssm.tpp import IntensityHead, LogNormalMixtureHead  # noqa: E402


def model_intensity(head, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``(Q, K)`` intensities at ``s (Q,)`` after an event with features ``h (d,)``."""
    if isinstance(head, IntensityHead):
        return head.intensity(h, s)
    assert isinstance(head, LogNormalMixtureHead)
    logw, mu, log_sigma = head.mixture(h)
    s = s.clamp(min=1e-9)
    z = (s.log() - head.log_gap_loc) / head.log_gap_scale  # (Q,)
    sd = log_sigma.exp()
    comp = torch.distributions.Normal(mu, sd)
    logpdf = torch.logsumexp(logw + comp.log_prob(z[:, None]), -1) - head.log_gap_scale.log() - s.log()
    surv = (logw.exp() * (1 - comp.cdf(z[:, None]))).sum(-1).clamp(min=1e-12)
    probs = torch.softmax(head.mark_proj(h).float(), -1)
    return (logpdf.exp() / surv)[:, None] * probs


def true_intensity(params, times, marks, grid):
    """The Hawkes process's own ``(G, K)`` intensity on a grid (synthetic data only)."""
    mu, alpha, beta = params["mu"], params["alpha"], params["beta"]
    out = np.tile(mu, (len(grid), 1))
    for t, m in zip(times, marks):
        after = grid > t
        out[after] += alpha[:, m] * beta * np.exp(-beta * (grid[after, None] - t))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--ckpt", default=None)
    p.add_argument("--head", default=None, choices=["mixture", "intensity"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--index", type=int, default=0, help="test sequence")
    p.add_argument("--cut", type=int, default=24, help="events of history before sampling")
    p.add_argument("--horizon", type=float, default=None, help="default: the sequence's remaining time")
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("-o", "--output", default="experiments/results/tpp.png")
    a, overrides = p.parse_known_args(argv)  # the rest goes to the eventssm CLI (--data.x ...)
    # a throw-away run folder: the CLI would otherwise save config.yaml and checkpoints in the cwd
    tmp = tempfile.mkdtemp(prefix="plot_tpp_")
    extra = ["--trainer.max_epochs", str(a.epochs), "--trainer.logger", "false",
             "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", tmp,
             "--checkpoint.dirpath", tmp]
    if a.head:
        extra += ["--model.head", a.head]
    cli = build_cli(["--config", a.config, *extra, *overrides], run=False)
    model, dm = cli.model, cli.datamodule
    L.seed_everything(0)
    if a.ckpt:
        model = type(model).load_from_checkpoint(a.ckpt)
    else:
        cli.trainer.fit(model, dm)
    model.eval()
    dm.build()
    tb = dm.datasets["test"].table
    t_all, m_all = tb.times[a.index], tb.marks[a.index]
    c = min(a.cut, len(t_all) - 1)
    t, m = t_all[:c], m_all[:c]
    K = tb.num_marks
    batch = {"timestamps": torch.from_numpy(t)[None], "marks": torch.from_numpy(m)[None],
             "lengths": torch.tensor([c])}
    horizon = a.horizon or float(t_all[-1] - t[-1]) or 1.0
    with torch.no_grad():
        h = model(batch)[0]  # (c, d)
        grids, lams = [], []
        ends = np.r_[t[1:], t[-1] + horizon]
        for i in range(c):
            s = torch.linspace(0, float(ends[i] - t[i]), 40, dtype=torch.float64)
            lams.append(model_intensity(model.head, h[i], s.float()).numpy())
            grids.append(t[i] + s.numpy())
        g = torch.Generator().manual_seed(0)
        fut = model.sample_futures(batch, horizon, a.samples, max_events=200, generator=g)
    grid, lam = np.concatenate(grids), np.concatenate(lams)
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(10, 6), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 2]})
    colors = plt.cm.tab10(np.arange(K) % 10)
    for k in range(K):
        ax0.plot(grid, lam[:, k], color=colors[k], lw=1.2, label=f"model λ_{k}")
    params = getattr(dm, "params", None)
    if params is not None and params.get("process") == "hawkes":
        tl = true_intensity(params, t, m, grid)
        for k in range(K):
            ax0.plot(grid, tl[:, k], color=colors[k], lw=0.8, ls="--", label=f"true λ_{k}")
    ax0.axvline(t[-1], color="k", lw=0.8, ls=":")
    ax0.set_ylabel("intensity")
    ax0.set_title(f"{type(model.head).__name__} on test sequence {a.index} (first {c} events as history)")
    ax0.legend(ncol=2, fontsize=7, loc="upper right")
    ax1.scatter(t, np.zeros(c), c=colors[m], marker="|", s=200)
    rest = slice(c, len(t_all))
    ax1.scatter(t_all[rest], np.zeros(len(t_all) - c), c=colors[m_all[rest]], marker="|", s=200, alpha=0.35)
    for j in range(a.samples):
        mk = fut["mask"][0, j].numpy()
        ax1.scatter(fut["times"][0, j].numpy()[mk], np.full(mk.sum(), j + 1),
                    c=colors[fut["marks"][0, j].numpy()[mk]], marker="|", s=120)
    ax1.set_yticks(range(a.samples + 1), ["observed"] + [f"sample {j + 1}" for j in range(a.samples)])
    ax1.axvline(t[-1], color="k", lw=0.8, ls=":")
    ax1.set_xlabel("time since the first event")
    ax1.set_xlim(0, t[-1] + horizon)
    fig.tight_layout()
    fig.savefig(a.output, dpi=120)
    print(f"saved {a.output}: {c} history events, {int(fut['mask'][0].sum())} sampled events in "
          f"{a.samples} futures of horizon {horizon:.3g}; test LL/event not computed here "
          f"(see experiments/bench/tpp.py)")


if __name__ == "__main__":
    main()
