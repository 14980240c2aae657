"""Multi-step evaluation of EventTPP on synthetic Hawkes data: from a history, sample N futures
and score the next k events, beside the true process and two yardsticks.

    python experiments/tpp_multistep.py
    python experiments/tpp_multistep.py --head intensity --out experiments/results/tpp_multistep.md

The data are ``SyntheticTPPDataModule``'s multivariate exponential Hawkes sequences (fixed by
``--data-seed``). Each seed trains a small ``EventTPP`` (``--epochs`` epochs, Lightning, CPU) or
loads ``--ckpt``, then every test sequence is cut after ``--cuts`` evenly spaced history lengths
(:func:`eventssm.tpp_eval.multistep_histories`) and the model's sampler draws ``--samples``
futures of ``--k`` events after each history. The scores (:mod:`eventssm.tpp_eval`): per step
``j``, the RMSE of the ``j``-th event's time after the cut (mean over the futures as the point
prediction), of the ``j``-th gap, the accuracy of the ``j``-th type (the most frequent sampled
type), and the optimal-transport distance (Mei et al. 2019, deletion/insertion cost
``--otd-cost``) of the sampled futures (expected) and of the point prediction to the truth.

Beside the model, on the same histories:

* **true process**: ``--samples`` futures of the Hawkes process that made the data, given the
  history (Ogata thinning from the excitation the history leaves), scored the same way: what a
  perfect model would score with this many samples;
* **last gap**: every future gap is the history's last gap, every type its most frequent one;
* **mean gap**: every future gap is the history's mean gap, every type its most frequent one.

Each cell is the mean over ``--seeds`` (the model's training and sampling; the true process's
sampling) ± their standard deviation; the yardsticks do not depend on the seed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eventssm.datasets import SyntheticTPPDataModule  # noqa: E402
from eventssm.tasks import EncoderConfig, EventTPP  # noqa: E402
from eventssm.tpp_eval import (  # noqa: E402
    YARDSTICKS,
    multistep_histories,
    sample_multistep,
    score_futures,
    yardstick_futures,
)


def hawkes_futures(hist: dict, params: dict, k: int, n_samples: int, rng: np.random.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_samples`` futures of ``k`` events of the true exponential Hawkes process after each
    history: ``(times (M, S, k), marks (M, S, k))``.

    The process starts empty before each sequence's first event (``simulate_tpp``), so the
    history's events alone set the excitation ``E_k(t_c) = Σ_i α[k, m_i] β e^{-β (t_c - t_i)}`` at
    the cut; from there Ogata thinning as in ``simulate_hawkes`` (the intensity only decays
    between events, so its value now bounds it until the next event), all futures at once.
    """
    mu, alpha, beta = (np.asarray(params[k_], dtype=np.float64) for k_ in ("mu", "alpha", "beta"))
    ts, mk, lengths = hist["timestamps"].numpy(), hist["marks"].numpy(), hist["lengths"].numpy()
    M, K = len(lengths), len(mu)
    t_cut = ts[np.arange(M), lengths - 1]
    real = np.arange(ts.shape[1])[None] < lengths[:, None]
    decay = np.where(real, np.exp(-beta * (t_cut[:, None] - ts)), 0.0)  # (M, L)
    excite = np.einsum("kj,mlj,ml->mk", alpha * beta, np.eye(K)[mk], decay)  # (M, K)
    excite = np.repeat(excite, n_samples, 0)
    t = np.repeat(t_cut, n_samples)
    R = len(t)
    out_t, out_m = np.zeros((R, k)), np.zeros((R, k), dtype=np.int64)
    for j in range(k):
        todo = np.arange(R)
        while todo.size:
            bound = mu.sum() + excite[todo].sum(1)
            w = rng.exponential(1.0 / bound)
            t[todo] += w
            excite[todo] *= np.exp(-beta * w)[:, None]
            lam = mu + excite[todo]  # (r, K)
            hit = rng.uniform(size=todo.size) * bound <= lam.sum(1)
            rows, lam = todo[hit], lam[hit]
            u = rng.uniform(size=rows.size)[:, None] * lam.sum(1, keepdims=True)
            mark = np.minimum((lam.cumsum(1) < u).sum(1), K - 1)
            out_t[rows, j], out_m[rows, j] = t[rows], mark
            excite[rows] += (alpha * beta)[:, mark].T
            todo = todo[~hit]
    return (torch.from_numpy(out_t).reshape(M, n_samples, k),
            torch.from_numpy(out_m).reshape(M, n_samples, k))


def train(dm, args, seed: int) -> EventTPP:
    L.seed_everything(seed, verbose=False)
    model = EventTPP(num_marks=dm.num_marks, log_gap_stats=dm.log_gap_stats, head=args.head,
                     time_scale=dm.time_scale, lr=args.lr,
                     backbone=EncoderConfig(d_model=args.d_model, n_layers=args.layers, d_state=8))
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, dm)
    return model


@torch.no_grad()
def test_ll(model: EventTPP, dm) -> float:
    model.eval()
    ll = [sum(model.log_likelihood(b)[:2]) for b in dm.test_dataloader()]
    return float(torch.cat(ll).mean())


def _cell(values, digits=3) -> str:
    v = np.asarray(values, dtype=np.float64)
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.{digits}f}"


def table(results: dict[str, list[dict]], k: int) -> str:
    """Markdown tables of the per-step scores and the OTDs, mean ± sd over the seeds."""
    steps = " | ".join(f"j={j}" for j in range(1, k + 1))
    head = f"| predictor | {steps} |\n|---|{'---|' * k}\n"
    out = []
    for key, title in (("time_rmse", "RMSE of the j-th event's time after the cut"),
                       ("gap_rmse", "RMSE of the j-th gap"),
                       ("type_acc", "accuracy of the j-th type")):
        rows = [f"| {name} | " + " | ".join(_cell([r[key][j] for r in rs]) for j in range(k)) + " |"
                for name, rs in results.items()]
        out.append(f"{title}:\n\n{head}" + "\n".join(rows))
    rows = [f"| {name} | {_cell([r['otd'] for r in rs])} | {_cell([r['otd_point'] for r in rs])} |"
            for name, rs in results.items()]
    out.append("optimal-transport distance of the next k events to the truth:\n\n"
               "| predictor | OTD, sampled futures (mean) | OTD, point prediction |\n|---|---|---|\n"
               + "\n".join(rows))
    return "\n\n".join(out)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--head", default="mixture", choices=["mixture", "intensity"])
    p.add_argument("--ckpt", help="an EventTPP checkpoint to score instead of training one")
    p.add_argument("--sequences", type=int, default=512, help="Hawkes sequences (all splits)")
    p.add_argument("--max-events", type=int, default=64, help="events of the longest sequence")
    p.add_argument("--marks", type=int, default=2, help="event types of the Hawkes process")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--k", type=int, default=5, help="events scored after each cut")
    p.add_argument("--samples", type=int, default=32, help="sampled futures per history")
    p.add_argument("--cuts", type=int, default=4, help="history cuts per test sequence")
    p.add_argument("--otd-cost", type=float, default=1.0, help="OTD deletion/insertion cost (data time)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", help="also write the report (markdown) here")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    dm = SyntheticTPPDataModule(process="hawkes", num_marks=args.marks, n_sequences=args.sequences,
                                max_events=args.max_events, batch_size=args.batch_size,
                                data_seed=args.data_seed)
    dm.build()
    test = dm.datasets["test"].table
    hist = multistep_histories(test.times, test.marks, args.k, args.cuts, min_history=2)
    name = f"eventssm {args.head}"
    results = {name: [], "true process": [], **{y.replace("_", " "): [] for y in YARDSTICKS}}
    lls = []
    for seed in args.seeds:
        model = (EventTPP.load_from_checkpoint(args.ckpt, map_location="cpu") if args.ckpt
                 else train(dm, args, seed))
        lls.append(test_ll(model, dm))
        g = torch.Generator().manual_seed(seed)
        score = lambda t, m: score_futures(t, m, hist, args.otd_cost, dm.num_marks)
        results[name].append(score(*sample_multistep(model, hist, args.samples, generator=g)))
        rng = np.random.default_rng(seed)
        results["true process"].append(score(*hawkes_futures(hist, dm.params, args.k, args.samples, rng)))
        for y in YARDSTICKS:
            results[y.replace("_", " ")].append(score(*yardstick_futures(hist, y)))
    true_ll = dm.true_log_likelihood("test")["ll"]
    lengths = [len(t) for t in test.times]
    report = (
        f"# Multi-step evaluation on synthetic Hawkes data ({args.marks} types)\n\n"
        f"{len(test.times)} test sequences ({min(lengths)}-{max(lengths)} events), {args.cuts} cuts each: "
        f"{results[name][0]['n']} histories; {args.samples} sampled futures of k = {args.k} events "
        f"each; OTD cost C = {args.otd_cost} (data time; median gap "
        f"{float(np.median(np.concatenate([np.diff(t) for t in test.times]))):.3f}).\n"
        f"Model: EventTPP {args.head} head, d_model {args.d_model}, {args.layers} layers, "
        + (f"checkpoint {args.ckpt}" if args.ckpt else f"{args.epochs} epochs on {len(dm.datasets['train'])} "
           f"training sequences")
        + f"; test LL/event {_cell(lls, 4)} (true process {true_ll:.4f}). Seeds {args.seeds}; "
        f"torch {torch.__version__}, CPU {os.cpu_count()} cores, "
        f"{time.perf_counter() - t0:.0f} s in all.\n\n" + table(results, args.k) + "\n")
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return report


if __name__ == "__main__":
    main()
