"""Plot one event sequence with its timestamps and a trained model's prediction after each event.

    python experiments/plot_events.py --config experiments/configs/quickstart.yaml \\
        --ckpt runs/quickstart/version_0/checkpoints/last.ckpt --split test --index 0 \\
        -o experiments/results/events.png

Top: the sequence's values (one line per channel, a marker at every event, so irregular gaps
show) or its marks. Bottom: what the model predicts having seen the events up to each one. For
sequence-level tasks the sequence is batched with itself cut after every event (lengths
1..L; padding is inert, so this is exactly the prediction for that prefix); for per-event tasks
(next-event prediction) it is the model's per-event output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from eventssm.datasets import collate_events  # noqa: E402
from eventssm.tasks import EventClassifier, EventRegressor  # noqa: E402
from eventssm.tasks.cli import build_cli  # noqa: E402


def prefix_predictions(model, sample: dict, use_observed: bool) -> torch.Tensor:
    """``(L, K)`` outputs: row ``l`` is the prediction after events ``0..l``."""
    batch = collate_events([sample], use_observed=use_observed)
    L = int(batch["lengths"][0])
    with torch.no_grad():
        if getattr(model, "per_event", False):
            out = model(batch)[0, :L]
        else:
            rep = {k: (v.expand(L, *v.shape[1:]).clone() if torch.is_tensor(v) and v.dim() > 0
                       and k not in ("target", "index") else v) for k, v in batch.items()}
            rep["lengths"] = torch.arange(1, L + 1)
            rep["mask"] = torch.arange(L)[None] < rep["lengths"][:, None]
            out = model(rep)
    if isinstance(model, EventClassifier):
        out = out.float().softmax(-1)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="the run's config (for the data)")
    ap.add_argument("--ckpt", required=True, help="a checkpoint of that run")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--index", type=int, default=0, help="sequence index within the split")
    ap.add_argument("-o", "--out", default="experiments/results/events.png")
    a = ap.parse_args(argv)

    cli = build_cli(["--config", a.config, "--trainer.logger", "false"], run=False)
    dm = cli.datamodule
    dm.build()
    ckpt = torch.load(a.ckpt, map_location="cpu", weights_only=True)
    cls = {"EventClassifier": EventClassifier, "EventRegressor": EventRegressor}[
        ckpt["hyper_parameters"].get("_class_path", "EventClassifier").rsplit(".", 1)[-1]]
    model = cls.load_from_checkpoint(a.ckpt, map_location="cpu").eval()
    ds = dm.datasets[a.split]
    if not 0 <= a.index < len(ds):
        raise SystemExit(f"--index must lie in [0, {len(ds)}) for the {a.split} split")
    s = ds[a.index]
    if "query_times" in s:
        raise SystemExit("forecasting datasets are not supported by this plot")
    pred = prefix_predictions(model, s, dm.use_observed)
    t = s["timestamps"]

    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    if s.get("values") is not None:
        v = s["values"]
        for c in range(v.shape[1]):
            ax0.plot(t, v[:, c], marker="o", ms=3, lw=1, label=dm.table.channels[c])
        if v.shape[1] <= 6:
            ax0.legend(fontsize=7, ncol=3)
        ax0.set_ylabel("value (standardised)" if dm.scaler is not None else "value")
    if s.get("marks") is not None:
        ax0.scatter(t, s["marks"], marker="|", s=200, c="k")
        ax0.set_ylabel("mark")
    for x in t:
        ax0.axvline(x, color="0.85", lw=0.5, zorder=0)
    title = f"{a.split}[{a.index}] ({len(t)} events)"
    tgt = s.get("target")
    if isinstance(model, EventClassifier) and not model.per_event:
        classes = dm.table.classes
        y = int(tgt)
        for k in range(pred.shape[1]):
            ax1.plot(t, pred[:, k], marker="o", ms=3, lw=2.5 if k == y else 0.8,
                     alpha=1.0 if k == y else 0.5, label=f"class {classes[k]}" + (
                         " (true)" if k == y else ""))
        ax1.set_ylabel("P(class | events so far)")
        ax1.set_ylim(-0.02, 1.02)
        title += f", true class {classes[y]}"
        if pred.shape[1] <= 10:
            ax1.legend(fontsize=7, ncol=3)
    elif isinstance(model, EventClassifier):
        nxt = torch.as_tensor(tgt)
        p_true = pred[torch.arange(len(t) - 1), nxt[:-1]]
        ax1.plot(t[:-1], p_true, marker="o", ms=3)
        ax1.set_ylabel("P(next mark = actual next mark)")
        ax1.set_ylim(-0.02, 1.02)
    else:
        for k in range(pred.shape[1]):
            ax1.plot(t, pred[:, k], marker="o", ms=3, label=f"prediction {k}")
            ax1.axhline(float(torch.as_tensor(tgt).reshape(-1)[k]), ls="--", color="k",
                        label="target" if k == 0 else None)
        ax1.legend(fontsize=7)
        ax1.set_ylabel("regression output")
    ax1.set_xlabel("time since the first event")
    ax0.set_title(title)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=120)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
