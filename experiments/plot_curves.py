"""Training curves of one or more runs (Lightning CSVLogger ``metrics.csv``) as one PNG.

    python experiments/plot_curves.py runs/quickstart/version_0 -o experiments/results/curves.png
    python experiments/plot_curves.py runs/a/version_0 runs/b/version_0 --labels A B

Each argument is a run folder (holding ``metrics.csv``) or the CSV itself. One panel per metric
name (``train/loss``, ``val/loss``, ``val/acc`` ...), x = optimisation step; train metrics logged
per step are drawn as a thin line with a moving average, epoch metrics as points joined by lines.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

DEFAULT_METRICS = ["train/loss", "val/loss", "val/acc", "val/mae", "val/bpb"]


def load_metrics(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    csv = p if p.suffix == ".csv" else p / "metrics.csv"
    if not csv.exists():
        raise ValueError(f"no metrics.csv at {str(csv)!r} (pass a CSVLogger run folder)")
    return pd.read_csv(csv)


def plot(runs: list[str], labels: list[str] | None, metrics: list[str] | None, out: str,
         smooth: int = 5) -> list[str]:
    frames = [load_metrics(r) for r in runs]
    labels = labels or [Path(r).parent.name + "/" + Path(r).name if Path(r).is_dir()
                        else Path(r).parent.name for r in runs]
    if len(labels) != len(runs):
        raise ValueError(f"got {len(labels)} labels for {len(runs)} runs")
    present = [m for m in (metrics or DEFAULT_METRICS) if any(m in f.columns for f in frames)]
    if not present:
        raise ValueError(f"none of the metrics {metrics or DEFAULT_METRICS} is in the logs")
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.4), squeeze=False)
    for ax, name in zip(axes[0], present, strict=True):
        for df, lab in zip(frames, labels, strict=True):
            if name not in df.columns:
                continue
            d = df.dropna(subset=[name])
            x, y = d["step"].to_numpy(), d[name].to_numpy()
            if name.startswith("train/") and len(y) > smooth:
                line, = ax.plot(x, y, alpha=0.25, lw=0.8)
                ys = pd.Series(y).rolling(smooth, min_periods=1).mean()
                ax.plot(x, ys, color=line.get_color(), label=lab)
            else:
                ax.plot(x, y, marker="o", ms=3, label=lab)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if name.endswith("loss"):
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return present


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="CSVLogger run folders or metrics.csv files")
    ap.add_argument("-o", "--out", default="experiments/results/curves.png")
    ap.add_argument("--labels", nargs="*")
    ap.add_argument("--metrics", nargs="*", help=f"metric columns (default {DEFAULT_METRICS})")
    ap.add_argument("--smooth", type=int, default=5, help="moving-average window for train/*")
    a = ap.parse_args(argv)
    shown = plot(a.runs, a.labels, a.metrics, a.out, a.smooth)
    print(f"wrote {a.out} ({', '.join(shown)})")


if __name__ == "__main__":
    main()
