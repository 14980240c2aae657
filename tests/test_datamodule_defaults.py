"""The generic table path on a first try: train/test split columns, small tables, defaults."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eventssm.datasets import EventDataModule


def frame(n_seq: int, seed: int = 0, split: bool = False) -> pd.DataFrame:
    """``n_seq`` sequences of 5-12 events; class = sign of the mean of ``a`` (an easy task)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_seq):
        y = s % 2
        n = int(rng.integers(5, 13))
        t = np.sort(rng.uniform(0, 100, n))
        a = rng.normal(1.0 if y else -1.0, 0.7, n)
        for i in range(n):
            rows.append({"sid": f"s{s}", "t": t[i], "a": a[i], "b": rng.normal(), "y": y,
                         "fold": "test" if s % 5 == 0 else "train"})
    df = pd.DataFrame(rows)
    return df if split else df.drop(columns="fold")


KW = dict(id_col="sid", time_col="t", value_cols=["a", "b"], label_col="y")


def test_train_test_split_column_gets_a_validation_set():
    df = frame(60, split=True)
    dm = EventDataModule(df, split_col="fold", val_fraction=0.2, seed=3, **KW)
    dm.build()
    tr, va, te = (dm.split_index[k] for k in ("train", "val", "test"))
    ids = lambda idx: {dm.table.ids[i] for i in idx}
    official_test = set(df.loc[df.fold == "test", "sid"])
    assert ids(te) == official_test                    # the given test set is untouched
    assert not (ids(tr) & ids(va)) and len(tr) + len(va) == 48
    assert len(va) == round(0.2 * 24) * 2              # stratified: 20 % of each class
    assert set(dm.table.labels[va]) == {0, 1}
    assert next(iter(dm.val_dataloader()))["values"].shape[0] > 0
    again = EventDataModule(df, split_col="fold", val_fraction=0.2, seed=3, **KW)
    again.build()
    np.testing.assert_array_equal(again.split_index["val"], va)  # seeded
    # val_fraction=0 keeps the column as it is: the missing val split is then an error that
    # says what to do
    dm0 = EventDataModule(df, split_col="fold", val_fraction=0.0, **KW)
    with pytest.raises(ValueError, match="val split is empty.*val_fraction > 0"):
        dm0.val_dataloader()
    only_train = EventDataModule(df.assign(fold="train"), split_col="fold", **KW)
    with pytest.raises(ValueError, match="test split is empty: the split column has no 'test'"):
        only_train.test_dataloader()
    with pytest.raises(ValueError, match="val split is empty: set val_fraction > 0"):
        EventDataModule(df, val_fraction=0.0, **KW).val_dataloader()


def _epoch(dm):
    return [i for b in dm.train_dataloader() for i in b["index"].tolist()]


def test_small_table_adapts_the_batch_and_keeps_every_sequence():
    dm = EventDataModule(frame(40), seed=0, **KW)
    dm.build()
    n = len(dm.split_index["train"])
    assert n == 28
    assert dm.train_batch_size(1) == 4 and not dm.train_drop_last(1)
    seen = _epoch(dm)
    assert sorted(seen) == list(range(n))              # every sequence, every epoch
    assert len(list(dm.train_dataloader())) == 7       # 7 optimisation steps, not 1
    # under 2 processes the global batch stays a multiple of the world size
    assert dm.train_batch_size(3) % 3 == 0


def test_large_table_uses_batch_32_and_drops_only_a_small_remainder():
    dm = EventDataModule(frame(600), seed=0, **KW)
    dm.build()
    n = len(dm.split_index["train"])
    assert dm.train_batch_size(1) == 32 and dm.train_drop_last(1)
    seen = _epoch(dm)
    assert len(seen) == n - n % 32 and n % 32 < 0.1 * n
    # explicit settings win
    dm2 = EventDataModule(frame(40), batch_size=8, drop_last=True, seed=0, **KW)
    dm2.build()
    assert dm2.train_batch_size(1) == 8 and len(_epoch(dm2)) == 24
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        EventDataModule(frame(4), batch_size=0, **KW)


@pytest.mark.slow
def test_defaults_train_on_a_few_dozen_sequences(tmp_path):
    """40 sequences, every default of the DataModule and the classifier, 10 epochs."""
    import lightning as L

    from eventssm.tasks import EventClassifier

    L.seed_everything(0)
    dm = EventDataModule(frame(40, seed=1), **KW)
    model = EventClassifier(num_classes=dm.num_classes, d_input=dm.d_input,
                            use_observed=dm.use_observed)
    trainer = L.Trainer(max_epochs=10, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    steps = trainer.global_step
    acc = trainer.validate(model, dm, verbose=False)[0]["val/acc"]
    print("optimisation steps", steps, "val acc", acc)
    assert steps == 10 * 7
    assert acc >= 0.8
