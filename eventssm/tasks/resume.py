"""Exact resume of interrupted training: a killed ``fit`` resumed from its last checkpoint ends with
the weights and the ``metrics.csv`` of an uninterrupted run, bit for bit.

What a Lightning checkpoint lacks, and where it comes from here:

- **Random-number state** (torch CPU, CUDA of every device, numpy's global generator, python's
  ``random``; of every process under DDP): :class:`ResumeCallback` puts it in its checkpoint state.
- **Place in the epoch**: the training DataLoader (:class:`eventssm.datasets.ResumableDataLoader`)
  records how many batches of which epoch it has served; a mid-epoch resume skips exactly those.
- **Epoch-level training metrics** (torchmetrics objects such as ``train_acc``, whose states are not
  in the model's ``state_dict``; of every process under DDP): saved by the callback and restored.
- **The metrics history**: Lightning's CSV logger starts a fresh file (and, by default, a new
  version directory). The callback keeps the rows of the completed steps and drops the rows of
  steps that will run again; ``eventssm fit --ckpt_path last`` logs into the interrupted run's
  version directory (:func:`find_last_checkpoint`, :func:`continue_logging`).

**When the state is taken.** The rows and the random numbers of a step are produced after the
checkpoint callback fires (Lightning logs a step after ``on_train_batch_end``; validation and the
next epoch's data loader draw random numbers before the next step). So checkpoints saved between
the end of one training batch and the start of the next are held in memory and written at the
start of the next batch (or at the end of training), completed with the state the next step starts
from: the random-number state, the metric states and the number of logged steps. A kill before that
write leaves the previous checkpoint, from which the resume is just as exact. Every checkpoint is a
resume point: the epoch ends (the default), and every ``every_n_train_steps`` optimizer steps.

Limits: values logged with ``self.log(..., on_epoch=True)`` as plain tensors during training keep
their epoch aggregate in Lightning's result collection, which no checkpoint holds: after a
mid-epoch resume their epoch value covers only the resumed part (a warning says so; log a
torchmetrics object instead, as the eventssm tasks do). DataLoader worker processes are started
afresh, so a dataset that draws random numbers inside workers is not resumed exactly (eventssm's
are deterministic). Only the CSV logger's history is kept.
"""

from __future__ import annotations

import csv
import glob
import os
import random
import re
import warnings
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from eventssm.tasks.checkpointing import IntegrityCheckpointIO, check_file

__all__ = [
    "ResumeCallback",
    "capture_rng_state",
    "continue_logging",
    "find_last_checkpoint",
    "resolve_ckpt_path",
    "restore_rng_state",
]

_FORMAT = 1
_METRICS_FILE = "metrics.csv"
_ASIDE = "metrics.csv.resume"  # the history while the resumed run's CSV writer starts


# ---------------------------------------------------------------------------------------------- RNG
def capture_rng_state() -> dict:
    """Every global random-number state of this process, as tensors and plain values (loadable
    with ``torch.load(weights_only=True)``): torch CPU, CUDA of every device (when CUDA has been
    initialised), numpy's global generator and python's ``random``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict) -> list[str]:
    """Set the states of :func:`capture_rng_state`; returns what could not be restored."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    problems = []
    cuda = state.get("cuda")
    if cuda is not None:
        if not torch.cuda.is_available():
            problems.append(f"the CUDA generator states of {len(cuda)} device(s) (no CUDA here)")
        else:
            count = torch.cuda.device_count()
            for i, s in enumerate(cuda[:count]):
                torch.cuda.set_rng_state(s, i)
            if count != len(cuda):
                problems.append(f"CUDA generator states of {len(cuda)} devices restored on {count}")
    return problems


def _all_ranks(trainer: pl.Trainer, obj: Any) -> list:
    """``obj`` of every process (a collective under DDP: every rank must call it)."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        out = [None] * trainer.world_size
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


# ---------------------------------------------------------------------------------------------- metrics
def _metric_states(module: torch.nn.Module) -> dict:
    """States of every torchmetrics ``Metric`` in ``module`` (not in its ``state_dict``)."""
    from torchmetrics import Metric

    cpu = lambda v: v.detach().to("cpu", copy=True)
    out = {}
    for name, m in module.named_modules():
        if isinstance(m, Metric):
            states = {k: ([cpu(t) for t in v] if isinstance(v, list) else cpu(v))
                      for k, v in m.metric_state.items()}
            out[name] = {"states": states, "update_count": int(m.update_count)}
    return out


def _load_metric_states(module: torch.nn.Module, saved: dict) -> list[str]:
    from torchmetrics import Metric

    problems = []
    for name, entry in saved.items():
        try:
            m = module.get_submodule(name)
        except AttributeError:
            m = None
        if not isinstance(m, Metric):
            problems.append(f"metric {name!r} (not in this model)")
            continue
        dev = m.device
        for k, v in entry["states"].items():
            setattr(m, k, [t.to(dev) for t in v] if isinstance(v, list) else v.to(dev))
        m._update_count = entry["update_count"]
        m._computed = None
    return problems


def _unsaved_epoch_logs(trainer: pl.Trainer) -> list[str]:
    """Training values logged on_epoch as plain tensors with a partial epoch aggregate."""
    results = getattr(trainer.fit_loop.epoch_loop, "_results", None) or {}
    names = []
    for rm in results.values():
        meta = getattr(rm, "meta", None)
        if getattr(rm, "is_tensor", False) and meta is not None and meta.on_epoch and rm.update_called:
            names.append(meta.name)
    return names


def _log_cut(trainer: pl.Trainer) -> int:
    """The first logging step the resumed run logs again: rows with a smaller ``step`` belong to
    completed steps. Lightning counts a step after ``on_train_batch_end``, and counts it on resume
    when the checkpoint was taken before that."""
    loop = trainer.fit_loop.epoch_loop
    cut = loop._batches_that_stepped
    bp = loop.batch_progress.total
    accumulating = getattr(trainer.fit_loop, "_should_accumulate", lambda: False)()
    if bp.completed < bp.processed and not accumulating:
        cut += 1
    return int(cut)


# ---------------------------------------------------------------------------------------------- CSV
def _csv_logger(trainer: pl.Trainer) -> CSVLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)


def _read_rows(path: str) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _row_step(row: dict, path: str) -> int:
    try:
        return int(float(row["step"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: a row without a valid 'step' value: {row}") from e


def _continue_csv(logger: CSVLogger, state: dict) -> str | None:
    """Put the rows with ``step < state['log_cut']`` of the interrupted run's metrics.csv into
    this run's, and make the CSV writer continue it (rank 0, before anything is logged).
    Returns a problem description or None."""
    old_dir, cut = state.get("log_dir"), state.get("log_cut")
    if old_dir is None or cut is None:
        return None
    new_dir = logger.log_dir
    # resolve_ckpt_path set the file aside: Lightning's CSV writer deletes metrics.csv when the
    # trainer starts, before any callback runs.
    src = next((p for p in (os.path.join(old_dir, _METRICS_FILE), os.path.join(old_dir, _ASIDE))
                if os.path.isfile(p)), None)
    if src is None:
        return (f"no metrics history in {old_dir} (call eventssm.tasks.resume.resolve_ckpt_path(trainer, "
                f"ckpt_path) before trainer.fit so that the CSV logger does not delete it)")
    writer = logger.experiment
    if writer.metrics:
        return f"the CSV logger of {new_dir} has already logged rows"
    fields, rows = _read_rows(src)
    kept = [r for r in rows if _row_step(r, src) < cut]
    used = {k for r in kept for k, v in r.items() if v not in ("", None)}
    header = sorted(set(state.get("csv_header") or []) | used)
    os.makedirs(new_dir, exist_ok=True)
    dst = os.path.join(new_dir, _METRICS_FILE)
    tmp = dst + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        w.writerows(kept)
    os.replace(tmp, dst)
    writer.metrics_keys = header
    if src.endswith(_ASIDE) and os.path.realpath(os.path.dirname(src)) == os.path.realpath(new_dir):
        os.remove(src)
    return None


def _set_history_aside(trainer: pl.Trainer) -> None:
    """Move the CSV logger's metrics.csv to metrics.csv.resume before ``fit`` deletes it."""
    logger = _csv_logger(trainer)
    if logger is None or not trainer.is_global_zero:
        return
    path = os.path.join(logger.log_dir, _METRICS_FILE)
    if os.path.isfile(path):
        os.replace(path, os.path.join(logger.log_dir, _ASIDE))


# ---------------------------------------------------------------------------------------------- last
_VERSION = re.compile(r"^version_(\d+)$")


def _lasts(folder: str) -> list[str]:
    pat = re.compile(r"^last(-v?\d+)?\.ckpt$")
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, f) for f in os.listdir(folder) if pat.match(f)]


def _newest(paths: list[str]) -> str:
    return max(paths, key=lambda p: (os.path.getmtime(p), p))


def find_last_checkpoint(trainer: pl.Trainer, *, continue_version: bool = True) -> str:
    """The checkpoint ``--ckpt_path last`` means: the newest ``last*.ckpt`` of the trainer's
    checkpoint directory. With checkpoints in the logger's folders and an auto-numbered version
    (``<save_dir>/<name>/version_N/checkpoints``), that of the highest ``N`` that has one; with
    ``continue_version`` the logger is then set to version ``N``, so that the resumed run logs
    where the interrupted one did.

    Raises ``FileNotFoundError`` naming the directories searched when there is none: a resume
    that silently trained from scratch would look like a resume.
    """
    cbs = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    searched: list[str] = []
    for cb in cbs:
        if cb.dirpath is not None:
            searched.append(os.path.join(os.fspath(cb.dirpath), "last*.ckpt"))
            found = _lasts(os.fspath(cb.dirpath))
            if found:
                return _newest(found)
    if not cbs or all(cb.dirpath is None for cb in cbs):
        logger = trainer.loggers[0] if trainer.loggers else None
        if logger is None:
            folder = os.path.join(trainer.default_root_dir, "checkpoints")
            searched.append(os.path.join(folder, "last*.ckpt"))
            found = _lasts(folder)
            if found:
                return _newest(found)
        elif getattr(logger, "_version", None) is not None:  # an explicit version
            v = logger.version
            folder = os.path.join(logger.save_dir or trainer.default_root_dir, str(logger.name),
                                  v if isinstance(v, str) else f"version_{v}", "checkpoints")
            searched.append(os.path.join(folder, "last*.ckpt"))
            found = _lasts(folder)
            if found:
                return _newest(found)
        else:
            root = os.path.join(logger.save_dir or trainer.default_root_dir, str(logger.name))
            searched.append(os.path.join(root, "version_*", "checkpoints", "last*.ckpt"))
            versions = []
            for d in glob.glob(os.path.join(glob.escape(root), "version_*")):
                m = _VERSION.match(os.path.basename(d))
                if m and _lasts(os.path.join(d, "checkpoints")):
                    versions.append(int(m.group(1)))
            if versions:
                n = max(versions)
                if continue_version:
                    logger._version = n
                return _newest(_lasts(os.path.join(root, f"version_{n}", "checkpoints")))
    raise FileNotFoundError(
        "ckpt_path='last': there is no last checkpoint to resume from (searched "
        + ", ".join(searched) + "). Run without --ckpt_path to train from scratch, or give the "
        "path of a checkpoint."
    )


def _best_of_latest_run(trainer: pl.Trainer) -> str:
    """``ckpt_path="best"`` in a process that did not train: the best checkpoint recorded by the
    ModelCheckpoint state in the latest run's last checkpoint."""
    last = find_last_checkpoint(trainer, continue_version=False)
    ckpt = torch.load(last, map_location="cpu", mmap=True, weights_only=True)
    best = [st.get("best_model_path") for k, st in ckpt.get("callbacks", {}).items()
            if k.startswith("ModelCheckpoint") and isinstance(st, dict) and st.get("best_model_path")]
    if not best:
        raise FileNotFoundError(f"ckpt_path='best': {last} records no best checkpoint (no "
                                f"ModelCheckpoint with a monitor in that run)")
    if not os.path.isfile(best[0]):
        raise FileNotFoundError(f"ckpt_path='best': the best checkpoint {best[0]} recorded in "
                                f"{last} does not exist")
    return best[0]


def continue_logging(trainer: pl.Trainer, ckpt_path: str) -> None:
    """Point an auto-versioned logger at the version directory of the run that wrote
    ``ckpt_path`` (from the path ``<save_dir>/<name>/version_N/...`` or from the checkpoint's
    :class:`ResumeCallback` state), so that a resumed run continues its logs there."""
    logger = trainer.loggers[0] if trainer.loggers else None
    if logger is None or getattr(logger, "_version", 0) is not None or not hasattr(logger, "_version"):
        return
    root = os.path.realpath(os.path.join(logger.save_dir or trainer.default_root_dir, str(logger.name)))
    candidates = [os.path.dirname(os.path.dirname(os.path.realpath(ckpt_path)))]
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", mmap=True, weights_only=True)
        log_dir = ckpt.get("callbacks", {}).get(ResumeCallback.__qualname__, {}).get("log_dir")
        if log_dir:
            candidates.insert(0, os.path.realpath(log_dir))
    except Exception:  # noqa: BLE001 - unreadable here: the loader reports it with a clear message
        pass
    for d in candidates:
        m = _VERSION.match(os.path.basename(d))
        if m and os.path.dirname(d) == root:
            logger._version = int(m.group(1))
            return


# ---------------------------------------------------------------------------------------------- callback
class ResumeCallback(Callback):
    """Makes every checkpoint an exact resume point and checks checkpoint integrity.

    Registered by default in the ``eventssm`` CLI (``--resume.every_n_train_steps``). It

    - installs :class:`~eventssm.tasks.checkpointing.IntegrityCheckpointIO` (checksums written with and
      checked on every checkpoint, atomic writes) unless the strategy has another CheckpointIO;
    - saves the random-number states of every process, the torchmetrics states and the CSV
      logger's position with each checkpoint, taken when the next training step starts (see the
      module docstring), and restores them when a resumed run starts its first step;
    - keeps the metrics history of the interrupted run in the resumed run's ``metrics.csv``;
    - with ``every_n_train_steps > 0``, refreshes the ``last`` checkpoint of every
      ``ModelCheckpoint(save_last=True)`` every that many optimizer steps (mid-epoch resume
      points), without disturbing their epoch-end and best-model saves.

    Args:
        every_n_train_steps: also write the last checkpoint every that many optimizer steps (0:
            only when the ModelCheckpoint callbacks save, by default at each epoch's end).
    """

    def __init__(self, every_n_train_steps: int = 0):
        if isinstance(every_n_train_steps, bool) or not isinstance(every_n_train_steps, int) \
                or every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be an int >= 0, got {every_n_train_steps!r}")
        self.every_n_train_steps = every_n_train_steps
        self._trainer: pl.Trainer | None = None
        self._module: pl.LightningModule | None = None
        self._io: IntegrityCheckpointIO | None = None
        self._pending = False  # a checkpoint was saved since the last training batch ended
        self._restore: dict | None = None  # loaded state, applied when the first step starts
        self._warned: set[str] = set()
        self._saved_step = -1  # global step of the last every_n_train_steps save

    @property
    def state_key(self) -> str:
        return type(self).__qualname__

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer, self._module = trainer, pl_module
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = IntegrityCheckpointIO()
        io = strategy.checkpoint_io
        self._io = io if isinstance(io, IntegrityCheckpointIO) else None

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(msg, stacklevel=2)

    # ------------------------------------------------------------------ state
    def _snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule, when: str,
                  collective: bool = True) -> dict:
        rng = capture_rng_state()
        logger = _csv_logger(trainer)
        header = None
        if logger is not None and trainer.is_global_zero and logger._experiment is not None:
            header = list(logger.experiment.metrics_keys)
        partial = _unsaved_epoch_logs(trainer) if trainer.training else []
        if partial:
            self._warn_once("partial", (
                f"values logged with on_epoch=True as plain tensors ({', '.join(sorted(partial))}) "
                f"keep their epoch aggregate outside the checkpoint: after a mid-epoch resume "
                f"their epoch value covers only the resumed part. Log a torchmetrics Metric "
                f"instead for an exact resume."))
        # Per process: under DDP each rank has its own generators and its own metric states
        # (synced when an epoch value is computed).
        mine = {"rng": rng, "metrics": _metric_states(pl_module)}
        ranks = _all_ranks(trainer, mine) if collective else [mine]
        return {
            "format": _FORMAT,
            "rng": [r["rng"] for r in ranks],
            "metrics": [r["metrics"] for r in ranks],
            "log_cut": _log_cut(trainer),
            "log_dir": logger.log_dir if logger is not None else None,
            "csv_header": header,
            "taken": when,
        }

    def state_dict(self) -> dict[str, Any]:
        trainer, module = self._trainer, self._module
        if trainer is None or module is None:
            return {}
        if self._io is not None and self._io.defer:
            self._pending = True
        return self._snapshot(trainer, module, "save")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if state_dict.get("format") != _FORMAT:
            raise ValueError(f"ResumeCallback state of an unknown format: {state_dict.get('format')!r}")
        self._restore = state_dict
        trainer = self._trainer
        if trainer is None or not trainer.is_global_zero:
            return
        logger = _csv_logger(trainer)
        if logger is not None:
            problem = _continue_csv(logger, state_dict)
            if problem:
                warnings.warn(f"metrics history not continued: {problem}", stacklevel=2)

    def _apply_restore(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, self._restore = self._restore, None
        problems = []
        rngs, metrics = state["rng"], state["metrics"]
        rank = trainer.global_rank
        if len(rngs) != trainer.world_size:
            problems.append(f"random and metric states of {len(rngs)} process(es) restored on "
                            f"{trainer.world_size}")
        problems += restore_rng_state(rngs[min(rank, len(rngs) - 1)])
        problems += _load_metric_states(pl_module, metrics[min(rank, len(metrics) - 1)])
        if state.get("taken") != "next_step":
            problems.append("the checkpoint's state was taken when it was saved, not when the next "
                            "step started (written without eventssm's deferred save)")
        if problems:
            warnings.warn("the resumed run may differ from an uninterrupted one: "
                          + "; ".join(problems), stacklevel=2)

    # ------------------------------------------------------------------ the save window
    def _flush(self, trainer: pl.Trainer, pl_module: pl.LightningModule, update: bool) -> None:
        if self._io is None:
            self._pending = False
            return
        self._io.defer = False
        if not self._pending and not self._io.pending:
            return
        snap = self._snapshot(trainer, pl_module, "next_step") if update else None

        def patch(ckpt: dict) -> None:
            entry = ckpt.get("callbacks", {}).get(self.state_key)
            if snap is not None and entry is not None:
                entry.update(snap)

        self._io.flush(patch)
        self._pending = False

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning restores a stateful train loader only if it sets the loader up after loading
        # the loop state; `trainer.estimated_stepping_batches` in configure_optimizers (the
        # tasks' LR schedule) sets it up before. Load the states it left waiting.
        loop = trainer.fit_loop
        states = getattr(loop, "_combined_loader_states_to_load", None)
        loader = getattr(loop, "_combined_loader", None)
        if states and loader is not None and loop.restarting:
            loader._load_state_dicts(states)
            loop._combined_loader_states_to_load = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._restore is not None:
            self._apply_restore(trainer, pl_module)
        self._flush(trainer, pl_module, update=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._io is not None:
            self._io.defer = True  # until the next step starts: see the module docstring
        n, step = self.every_n_train_steps, trainer.global_step
        # once per optimizer step, right after it (not between accumulated batches)
        if n and step > 0 and step % n == 0 and step != self._saved_step:
            self._saved_step = step
            self._save_lasts(trainer)

    def _save_lasts(self, trainer: pl.Trainer) -> None:
        metrics = dict(trainer.callback_metrics)
        metrics.update(epoch=torch.tensor(trainer.current_epoch), step=torch.tensor(trainer.global_step))
        for cb in trainer.checkpoint_callbacks:
            if not isinstance(cb, ModelCheckpoint) or not cb.save_last or cb.dirpath is None:
                continue
            path = cb.last_model_path
            if not path:
                path = cb.format_checkpoint_name(metrics, cb.CHECKPOINT_NAME_LAST)
                v = cb.STARTING_VERSION
                while os.path.exists(path):  # another run's last checkpoint: keep it
                    path = cb.format_checkpoint_name(metrics, cb.CHECKPOINT_NAME_LAST, ver=v)
                    v += 1
            cb.last_model_path = path  # before saving: it is part of the ModelCheckpoint's state
            trainer.save_checkpoint(path)

    def on_train_end(self, trainer, pl_module) -> None:
        self._flush(trainer, pl_module, update=True)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # No collective here (the other processes may be elsewhere): write with the state taken
        # at save time.
        self._flush(trainer, pl_module, update=False)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._io is not None and (self._io.pending or self._io.defer):
            self._flush(trainer, pl_module, update=False)
        self._restore = None


def resolve_ckpt_path(trainer: pl.Trainer, ckpt_path: str | None, stage: str = "fit") -> str | None:
    """What to pass to ``trainer.<stage>(ckpt_path=...)``; call it before that (the CLI does).

    ``"last"`` becomes the latest run's last checkpoint (:func:`find_last_checkpoint`; an error
    when there is none); ``"best"`` outside ``fit``, in a process that has not trained, the best
    checkpoint that run's ModelCheckpoint recorded; a path is checked
    (:func:`~eventssm.tasks.checkpointing.check_file`). For ``fit``, an auto-versioned logger
    continues in the checkpoint's version directory (:func:`continue_logging`) and its metrics.csv
    is set aside so that the :class:`ResumeCallback` can carry the history over (Lightning's CSV
    logger deletes the file when the trainer starts).
    """
    if ckpt_path is None:
        return None
    ckpt_path = os.fspath(ckpt_path)
    if ckpt_path == "last":
        ckpt_path = find_last_checkpoint(trainer, continue_version=stage == "fit")
    elif ckpt_path == "best" and stage != "fit" and not any(
            getattr(cb, "best_model_path", "") for cb in trainer.checkpoint_callbacks):
        ckpt_path = _best_of_latest_run(trainer)
    elif ckpt_path in ("best", "hpc", "registry") or ckpt_path.startswith("registry:") or "://" in ckpt_path:
        return ckpt_path
    check_file(ckpt_path)
    if stage == "fit":
        continue_logging(trainer, ckpt_path)
        _set_history_aside(trainer)
    return ckpt_path
