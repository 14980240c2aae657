"""The ``eventssm`` command line: LightningCLI over the tasks and DataModules.

::

    eventssm fit --config experiments/configs/quickstart.yaml
    eventssm fit --config experiments/configs/quickstart.yaml \\
        --model.backbone.discretization Scaled --trainer.max_epochs 5
    eventssm test --config experiments/configs/quickstart.yaml --ckpt_path runs/.../last.ckpt
    eventssm fit --config experiments/configs/quickstart.yaml --print_config

Any :class:`eventssm.tasks.EventTask` is a model (``class_path: eventssm.tasks.EventClassifier``,
``eventssm.tasks.EventRegressor``, ``eventssm.tasks.ByteLM``) and any LightningDataModule is a data module.
Sizes the model takes from the data (value channels, event types, classes, targets, whether an
``observed`` mask comes with the values, per-event targets) are linked, so configs never repeat
them. By default runs log to CSV under ``runs/`` and keep the last and the best checkpoint; a
:class:`~eventssm.tasks.resume.ResumeCallback` makes every checkpoint an exact resume point and checks
checkpoints on load, and ``--ckpt_path last`` resumes the latest run (or fails when there is none).
"""

from __future__ import annotations

import os
import sys

from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.cli import LightningCLI

from eventssm.tasks.base import EventTask
from eventssm.tasks.checkpointing import check_file
from eventssm.tasks.resume import ResumeCallback, resolve_ckpt_path

__all__ = ["EventCLI", "build_cli", "main"]

# (data attribute, model init argument): applied after the DataModule is instantiated; a model
# class without that argument (ByteLM has no num_classes) simply does not receive it.
LINKS = (
    ("num_classes", "num_classes"),
    ("d_input", "d_input"),
    ("num_marks", "num_marks"),
    ("use_observed", "use_observed"),
    ("per_event", "per_event"),
    ("d_target", "d_target"),
    ("vocab_size", "vocab_size"),
    ("time_scale", "time_scale"),  # the model's time unit, from the training split's gaps
    ("log_gap_stats", "log_gap_stats"),  # point processes: the training gaps set the time unit
)

# The training budget and early stopping of every run unless its config or flags say otherwise,
# chosen on the panel of docs/panel.md: a budget in optimisation steps (a small table and a large
# one get the same number of updates; the adaptive batch size gives a table of a few dozen
# sequences about 8 steps an epoch), stopped once the validation loss has not improved for
# ``patience`` validations; `eventssm test --ckpt_path best` then takes the best of them.
TRAINER_DEFAULTS = {"max_steps": 1500}
# Checked after each validation (not at the end of a training epoch, which a step budget can end
# before any validation ran), and quiet when a run has no validation at all.
EARLY_STOPPING = {"monitor": "val/loss", "mode": "min", "patience": 25,
                  "check_on_train_epoch_end": False, "strict": False}


class _WholeVersion:
    """Progress-bar mixin: ``v_num`` is the logger's whole version as text (Lightning shows an
    int version through the metric format, ``0.000``, and only the last 4 characters of a string
    version)."""

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        if "v_num" in items and trainer.logger is not None:
            items["v_num"] = str(trainer.logger.version)
        return items


class _RichBar(_WholeVersion, RichProgressBar):
    pass


class _TQDMBar(_WholeVersion, TQDMProgressBar):
    pass


class EventCLI(LightningCLI):
    """LightningCLI with eventssm's links and defaults (CSV logger, checkpoints, LR monitor)."""

    def add_arguments_to_parser(self, parser) -> None:
        for src, dst in LINKS:
            parser.link_arguments(f"data.{src}", f"model.init_args.{dst}", apply_on="instantiate")
        parser.set_defaults({
            "trainer.logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": "runs", "name": "eventssm"},
            },
        })
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.save_last": True,
            "checkpoint.save_top_k": 1,
            "checkpoint.monitor": "val/loss",
            "checkpoint.mode": "min",
            "checkpoint.filename": "best-{epoch}",
            "checkpoint.auto_insert_metric_name": False,
        })
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({f"early_stopping.{k}": v for k, v in EARLY_STOPPING.items()})
        parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})
        parser.add_lightning_class_args(ResumeCallback, "resume")

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        # LightningCLI reads a --ckpt_path file's hyperparameters right after parsing: check the
        # file first, so that an empty or damaged one is named instead of failing in torch.load.
        sub = self.config.get("subcommand")
        path = self.config[sub].get("ckpt_path") if sub else None
        if isinstance(path, str) and os.path.isfile(path):
            check_file(path)

    def _resolve_ckpt_path(self) -> None:
        # "last" means the latest run's last checkpoint (error when none); fit continues its logs.
        cfg = self.config_init[self.subcommand]
        if cfg.get("ckpt_path") is not None:
            cfg["ckpt_path"] = resolve_ckpt_path(self.trainer, cfg["ckpt_path"], self.subcommand)

    before_fit = before_validate = before_test = before_predict = _resolve_ckpt_path

    def instantiate_trainer(self, **kwargs):
        # The LR monitor is added here rather than through trainer.callbacks, so that a config
        # with its own callbacks list does not lose it.
        trainer = super().instantiate_trainer(**kwargs)
        # Swap the class of Lightning's own bars in place (their settings are kept); a user's
        # subclass is left alone.
        bar = trainer.progress_bar_callback
        for base, readable in ((RichProgressBar, _RichBar), (TQDMProgressBar, _TQDMBar)):
            if type(bar) is base:
                bar.__class__ = readable
        if trainer.loggers and not any(isinstance(c, LearningRateMonitor)
                                       for c in trainer.callbacks):
            trainer.callbacks.append(LearningRateMonitor(logging_interval="step"))
        return trainer


def build_cli(args: list[str] | None = None, run: bool = True) -> EventCLI:
    """Parse ``args`` (as on the command line; default ``sys.argv[1:]``), instantiate the model,
    data and trainer, run the subcommand when ``run``, and return the LightningCLI object (its
    ``trainer``, ``model`` and ``datamodule``)."""
    return EventCLI(
        EventTask,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``eventssm`` console script: ``eventssm fit|validate|test|predict``,
    and ``eventssm yardsticks`` (the test, then the classical yardsticks on the same split:
    :mod:`eventssm.tasks.yardsticks`).

    Returns None (a console script's return value becomes its exit status); use
    :func:`build_cli` to get the trainer and model back in Python.
    """
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["yardsticks"]:
        # imported here: aeon and scikit-learn are optional, and only this subcommand needs them
        from eventssm.tasks import yardsticks

        ours, rest = yardsticks.parse_args(argv[1:])
        yardsticks.report(build_cli(["test", *rest]), ours, argv[1:])
        return
    build_cli(argv)


if __name__ == "__main__":  # pragma: no cover
    main()
