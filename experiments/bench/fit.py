"""End-to-end training throughput (issue 24): events per second of an ``EventClassifier`` trained
by Lightning's ``Trainer.fit``, eager and compiled, beside a GRU and mamba-ssm's Mamba block.

    python experiments/bench/fit.py --out experiments/results/fit_h100.md   # CUDA, bf16-mixed
    python experiments/bench/fit.py --sizes small medium --rounds 7 --steps 30
    python experiments/bench/fit.py --dry-run                               # CPU smoke test

Sizes (d_model, layers, batch, L): small (64, 2, 64, 256), medium (256, 4, 32, 2048), large
(768, 8, 8, 8192); d_state 16, expand 2, d_conv 4, 4 value channels, 4 classes, last-event
pooling, AdamW. Every sequence of a batch has the full length L (synthetic values and
exponential gaps, a few batches cycled), so events per step = batch × L and compiled rows
compile once. Rows per size:

* ours, standard mode: no timestamps, ``discretization="mamba"``; eager and ``compile=True``;
* ours, event mode: ``Asymmetric("zoh")`` and ``Additive("zoh")`` with the gaps; eager and
  ``compile=True``;
* ``torch.nn.GRU`` (``n_layers`` layers of width d_model, cuDNN on CUDA), no timestamps: the
  yardstick column (a GRU layer has 6·d² weights, a Mamba block about 6.3·d² at expand 2);
* mamba-ssm's ``Mamba`` as the blocks of the same classifier (pre-norm residual, as ours), no
  timestamps, through an adapter defined here: when ``mamba_ssm`` imports (installed, or the
  anchors built per ../shared/ANCHORS.md, see ``--anchors``/``--builds``); otherwise its row
  says why it was skipped. mamba-ssm is never a dependency of eventssm.

Every row wraps the same input embedding, pooling, head, loss, metrics and optimiser (the
``EventClassifier`` task); only the backbone differs.

Protocol: each row's model is built once; a round fits every row in turn (the rows interleaved,
so drifts of clock or neighbours spread over all of them), each fit a fresh ``Trainer``
(``precision="bf16-mixed"`` on CUDA, ``"32-true"`` on the CPU) of ``--warmup`` + ``--steps``
steps. A Callback times the window from the end of the last warm-up step to the end of the last
step, with ``torch.cuda.synchronize()`` at both ends on CUDA; warm-up steps (the first round's
include compiling: Triton autotuning, ``torch.compile``) are outside it. The table gives the
median of ``--rounds`` rounds in events/s, the spread (min-max), and the ratios of the medians to
the GRU row and the mamba-ssm row of the same size; a compiled row's note gives its ratio to the
eager row of its mode and how many graphs and graph breaks ``torch.compile`` made (and whether a
later round recompiled).

Compiled rows: the first compiled call of a process also compiles a second time at its second
step (a guard on the memo of ``eventssm.dispatch.path``, filled by the first call), so
``--warmup`` stays >= 2. Graph counts are those new to a row: rows after the first compiled one
reuse the frames they share with it.

``--dry-run``: tiny sizes on the CPU, two rounds of two steps (a smoke test; numbers meaningless).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import lightning as L  # noqa: E402

from eventssm import Additive, Asymmetric  # noqa: E402
from eventssm.tasks import EncoderConfig, EventClassifier  # noqa: E402


@dataclass(frozen=True)
class Size:
    d_model: int
    layers: int
    batch: int
    L: int


SIZES = {
    "small": Size(64, 2, 64, 256),
    "medium": Size(256, 4, 32, 2048),
    "large": Size(768, 8, 8, 8192),
    "tiny": Size(16, 1, 4, 32),  # --dry-run
}
CHANNELS, CLASSES = 4, 4


@dataclass(frozen=True)
class Row:
    key: str  # --rows name
    model: str
    mode: str
    backbone: str  # "ours" | "gru" | "mamba-ssm"
    discretization: object  # a factory: a fresh Discretization (or lrnnx string) per model
    gaps: bool  # batches carry the gaps (event mode)
    compile: bool = False


ROWS = (
    Row("std", "ours", "standard (mamba, no τ)", "ours", lambda: "mamba", False),
    Row("std-compiled", "ours, compile=True", "standard (mamba, no τ)", "ours", lambda: "mamba",
        False, compile=True),
    Row("asym", "ours", "event: Asymmetric(zoh) + τ", "ours", lambda: Asymmetric("zoh"), True),
    Row("asym-compiled", "ours, compile=True", "event: Asymmetric(zoh) + τ", "ours",
        lambda: Asymmetric("zoh"), True, compile=True),
    Row("add", "ours", "event: Additive(zoh) + τ", "ours", lambda: Additive("zoh"), True),
    Row("add-compiled", "ours, compile=True", "event: Additive(zoh) + τ", "ours",
        lambda: Additive("zoh"), True, compile=True),
    Row("gru", "torch.nn.GRU", "standard (no τ)", "gru", lambda: "mamba", False),
    Row("mamba-ssm", "mamba-ssm Mamba", "standard (no τ)", "mamba-ssm", lambda: "mamba", False),
)
YARDSTICKS = ("gru", "mamba-ssm")


# ------------------------------------------------------------------------------ other backbones

class ForeignBackbone(nn.Module):
    """Another library's sequence layers where an ``EventEncoder`` keeps its ``MambaBackbone``:
    ``_forward(x (B, L, d_model), steps) -> (B, L, d_model)`` and a final ``norm_f`` (whose
    weight's dtype the encoder casts its inputs to). The gaps in ``steps`` are ignored (these
    rows run in standard mode) and so is the padding (every sequence has the full length).

    ``blocks``: each a ``(B, L, d) -> (B, L, d)`` module, applied pre-norm with a residual add
    (``x + block(RMSNorm(x))``, as our ``ResidualBlock``); ``stack``: one module applied as is
    (the multi-layer ``nn.GRU``).
    """

    def __init__(self, d_model: int, blocks: list[nn.Module] | None = None,
                 stack: nn.Module | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks or [])
        self.norms = nn.ModuleList(nn.RMSNorm(d_model) for _ in self.blocks)
        self.stack = stack
        self.norm_f = nn.RMSNorm(d_model)

    def _forward(self, x, steps=None, inference_cache=None):
        for norm, block in zip(self.norms, self.blocks):
            x = x + block(norm(x))
        if self.stack is not None:
            x = self.stack(x)
        return self.norm_f(x)


class _GRU(nn.Module):
    def __init__(self, d_model: int, layers: int):
        super().__init__()
        self.gru = nn.GRU(d_model, d_model, num_layers=layers, batch_first=True)

    def forward(self, x):
        return self.gru(x)[0]


def load_mamba_ssm(args) -> tuple[type | None, str]:
    """mamba-ssm's ``Mamba`` class, installed or from the anchors (block.py's loader), with a
    note; ``(None, why)`` when it does not import (or not on CUDA: its scan has no CPU path)."""
    if args.device != "cuda":
        return None, "skipped: mamba-ssm's scan needs CUDA"
    try:
        from mamba_ssm import Mamba

        return Mamba, "installed mamba_ssm"
    except Exception as e:  # ImportError, or its CUDA extension failing to load
        installed = f"{type(e).__name__}: {e}"
    from block import load_anchors

    got = load_anchors(args.anchors, args.builds, args.device)
    if "Mamba" not in got:
        return None, f"skipped: mamba_ssm not importable ({installed}; {'; '.join(got['notes'])})"
    fast = "causal_conv1d_fn" in got
    return got["Mamba"], "anchors" + ("" if fast else ", no causal-conv1d: not its fast path")


# ------------------------------------------------------------------------------ data, timing

class Batches(torch.utils.data.Dataset):
    """``n`` steps' batches: a few fixed-length batches of the collate's form, cycled."""

    def __init__(self, batches: list[dict], n: int):
        self.batches, self.n = batches, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.batches[i % len(self.batches)]


def make_batches(size: Size, gaps: bool, n: int = 4, seed: int = 0) -> list[dict]:
    """``n`` batches of ``size.batch`` sequences of ``size.L`` events: values ``(B, L, 4)``,
    float64 gaps (0 at each first event; None in standard mode), full lengths, targets."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        B, L_ = size.batch, size.L
        tau = None
        if gaps:
            tau = torch.empty(B, L_, dtype=torch.float64).exponential_(generator=g)
            tau[:, 0] = 0
        out.append(dict(values=torch.randn(B, L_, CHANNELS, generator=g),
                        integration_timesteps=tau,
                        lengths=torch.full((B,), L_, dtype=torch.long),
                        target=torch.randint(0, CLASSES, (B,), generator=g)))
    return out


class WindowTimer(L.Callback):
    """Wall time of the steps after the first ``warmup`` (device synchronised at both ends)."""

    def __init__(self, warmup: int, steps: int, cuda: bool):
        self.warmup, self.steps, self.cuda = warmup, steps, cuda
        self.t0 = self.seconds = None

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.warmup - 1:
            self.t0 = self._now()
        elif batch_idx == self.warmup + self.steps - 1:
            self.seconds = self._now() - self.t0


# ------------------------------------------------------------------------------ rows

def build(row: Row, size: Size, mamba_cls) -> EventClassifier:
    torch.manual_seed(0)
    model = EventClassifier(
        num_classes=CLASSES, d_input=CHANNELS,
        backbone=EncoderConfig(d_model=size.d_model, n_layers=size.layers, d_state=16, d_conv=4,
                               expand=2, discretization=row.discretization(), pooling="last"),
        lr=1e-3, scheduler="constant", compile=row.compile)
    if row.backbone == "gru":
        model.encoder.backbone = ForeignBackbone(size.d_model,
                                                 stack=_GRU(size.d_model, size.layers))
    elif row.backbone == "mamba-ssm":
        blocks = [mamba_cls(size.d_model, d_state=16, d_conv=4, expand=2, layer_idx=i)
                  for i in range(size.layers)]
        model.encoder.backbone = ForeignBackbone(size.d_model, blocks=blocks)
    return model


def fit_round(model, loader, args) -> float:
    """One ``Trainer.fit`` of ``--warmup`` + ``--steps`` steps; returns the window's seconds."""
    timer = WindowTimer(args.warmup, args.steps, args.device == "cuda")
    trainer = L.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
        precision=args.precision, max_steps=args.warmup + args.steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(model, train_dataloaders=loader)
    if timer.seconds is None:
        raise RuntimeError(f"the timing window did not close ({args.warmup} + {args.steps} steps)")
    return timer.seconds


def _compile_counts() -> tuple[int, int]:
    c = torch._dynamo.utils.counters
    return c["stats"]["unique_graphs"], sum(c["graph_break"].values())


def bench_size(name: str, size: Size, rows: list[Row], mamba, args) -> list[tuple]:
    """Every row at one size, ``--rounds`` interleaved rounds; returns the table's rows."""
    mamba_cls, mamba_note = mamba
    state = {}
    for row in rows:
        if row.backbone == "mamba-ssm" and mamba_cls is None:
            state[row.key] = dict(note=mamba_note, rates=[])
            continue
        loader = torch.utils.data.DataLoader(
            Batches(make_batches(size, row.gaps), args.warmup + args.steps), batch_size=None,
            pin_memory=args.device == "cuda")
        note = mamba_note if row.backbone == "mamba-ssm" else ""
        try:
            model = build(row, size, mamba_cls)
        except Exception as e:  # e.g. another library's block refusing these sizes
            state[row.key] = dict(note=f"failed to build: {type(e).__name__}: {str(e)[:200]}",
                                  rates=[])
            continue
        state[row.key] = dict(model=model, loader=loader, rates=[], note=note)
    events = size.batch * size.L * args.steps
    for r in range(args.rounds):
        for row in rows:
            st = state[row.key]
            if "model" not in st:
                continue
            before = _compile_counts()
            try:
                seconds = fit_round(st["model"], st["loader"], args)
            except Exception as e:  # one row failing (memory, a backend) leaves the others
                st["note"] = f"failed in round {r + 1}: {type(e).__name__}: {str(e)[:200]}"
                del st["model"]
                if args.device == "cuda":
                    torch.cuda.empty_cache()
                print(f"  [{name}] {row.model}, {row.mode}: {st['note']}", flush=True)
                continue
            st["rates"].append(events / seconds)
            graphs, breaks = (a - b for a, b in zip(_compile_counts(), before))
            if row.compile and r == 0:
                st["compiled"] = f"round 1 compiled {graphs} new graphs ({breaks} graph breaks)"
            elif row.compile and graphs:
                st["recompiled"] = f"recompiled in round {r + 1}"
            print(f"  [{name}] round {r + 1}: {row.model}, {row.mode}: "
                  f"{events / seconds:,.0f} events/s", flush=True)
    for st in state.values():
        st.pop("model", None)
    torch._dynamo.reset()  # the next size's compiled rows start from an empty cache

    def median(key):
        rates = state.get(key, {}).get("rates")
        return statistics.median(rates) if rates else None

    out = []
    for row in rows:
        st = state[row.key]
        med = median(row.key)
        notes = [st["note"]] if st.get("note") else []
        if row.compile and med and median(row.key.removesuffix("-compiled")):
            notes.append(f"{med / median(row.key.removesuffix('-compiled')):.2f}× eager")
        notes += [st[k] for k in ("compiled", "recompiled") if k in st]
        ratios = []
        for y in YARDSTICKS:
            ym = median(y)
            ratios.append(f"{med / ym:.2f}" if med and ym else "-")
        spread = f"{min(st['rates']):,.0f}–{max(st['rates']):,.0f}" if st["rates"] else "-"
        out.append((name, row.model, row.mode, f"{med:,.0f}" if med else "-", spread, *ratios,
                    "; ".join(notes)))
    return out


HEAD = ("| size | model | mode | events/s (median) | min–max | × GRU | × mamba-ssm | note |\n"
        "|---|---|---|---|---|---|---|---|")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["small", "medium", "large"], choices=list(SIZES))
    ap.add_argument("--rows", nargs="+", default=[r.key for r in ROWS], choices=[r.key for r in ROWS],
                    help="a subset of the rows (a compiled row's ratio to eager needs its eager row)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before them, per round")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    choices=["cuda", "cpu"])
    ap.add_argument("--precision", default=None,
                    help='Lightning precision (default "bf16-mixed" on CUDA, "32-true" on the CPU)')
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny sizes on the CPU, 2 rounds of 2 steps after 2 (a smoke test)")
    ap.add_argument("--anchors", default=str(ROOT / ".anchors"), help="prepared anchors (py/)")
    ap.add_argument("--builds", default="/tmp/anchors", help="built extensions (mamba/, causal/)")
    ap.add_argument("--out", help="also write the report (markdown) here")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.device, args.sizes, args.rounds, args.steps, args.warmup = "cpu", ["tiny"], 2, 2, 2
    for name in ("rounds", "steps", "warmup"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but no CUDA device: pass --device cpu (or --dry-run)")
    args.precision = args.precision or ("bf16-mixed" if args.device == "cuda" else "32-true")
    rows = [r for r in ROWS if r.key in args.rows]
    # a Trainer per row and round: its banner and the note that there is no validation loop,
    # every time, would bury the progress lines
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*val_dataloader.*")

    env = (torch.cuda.get_device_name() if args.device == "cuda" else "CPU") + \
        f", torch {torch.__version__}, lightning {L.__version__}"
    try:
        import triton

        env += f", triton {triton.__version__}"
    except ImportError:
        pass
    mamba = load_mamba_ssm(args) if any(r.backbone == "mamba-ssm" for r in rows) else (None, "")
    header = [
        "# EventClassifier training throughput through Lightning (experiments/bench/fit.py)", "",
        f"{env}; precision {args.precision}; median of {args.rounds} interleaved rounds of "
        f"{args.steps} timed steps (after {args.warmup} warm-up steps each)"
        + ("; DRY RUN (numbers meaningless)" if args.dry_run else ""),
        "sizes (d_model, layers, batch, L): "
        + ", ".join(f"{n} {tuple(vars(SIZES[n]).values())}" for n in args.sizes),
        f"mamba-ssm: {mamba[1]}" if mamba[1] else "", ""]
    print("\n".join(header), flush=True)
    table = []
    for name in args.sizes:
        table += bench_size(name, SIZES[name], rows, mamba, args)
    lines = [HEAD, *("| " + " | ".join(r) + " |" for r in table)]
    print("\n".join(lines), flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(header + lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
