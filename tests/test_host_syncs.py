"""Host syncs of the hot paths, counted: what reads a value back from the device (``bool()``,
``.item()``, ``int()``, ...). On a GPU each one stops the host from running ahead of the device."""

import pytest
import torch

pytest.importorskip("lightning")

from eventssm import Asymmetric, MambaLM  # noqa: E402
from eventssm.tasks import EncoderConfig, EventClassifier  # noqa: E402
from tests.helpers import count_device_reads  # noqa: E402


def test_classifier_training_step_makes_at_most_one_host_sync(monkeypatch):
    import numpy as np
    import pandas as pd

    from eventssm.datasets import EventDataModule

    rng = np.random.default_rng(0)
    rows = [dict(id=i, time=float(t) + rng.random(), x=rng.normal(), label=i % 3)
            for i in range(24) for t in range(3 + i % 7)]
    dm = EventDataModule(pd.DataFrame(rows), value_cols=["x"], batch_size=8, pack=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["lengths"].min() < batch["lengths"].max()  # a padded batch
    task = EventClassifier(num_classes=3, d_input=1, backbone=EncoderConfig(
        d_model=16, n_layers=2, d_state=4, discretization=Asymmetric("zoh")), time_scale=dm.time_scale)
    reads = count_device_reads(monkeypatch)
    loss = task.training_step(batch, 0)
    loss.backward()
    print("reads in a training step:", reads)
    assert len(reads) <= 1
    # the same batch through the public door is still checked
    reads.clear()
    task.validate_batches = True
    task.training_step(batch, 0)
    print("reads with validate_batches:", reads)
    assert len(reads) == 1  # values, lengths and times checked together at the encoder's door


def test_byte_lm_training_step_reads_nothing_back(monkeypatch):
    from eventssm.tasks import ByteLM, LMConfig

    task = ByteLM(LMConfig(d_model=16, n_layers=2, d_state=4))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (2, 17), generator=g)
    batch = {"input_ids": ids[:, :-1], "target": ids[:, 1:]}
    reads = count_device_reads(monkeypatch)
    task.training_step(batch, 0).backward()
    print("reads in a ByteLM training step:", reads)
    assert reads == []
    task.validate_batches = True  # ids from elsewhere: their range is checked
    task.training_step(batch, 0)
    print("reads with validate_batches:", reads)
    assert len(reads) == 1


def test_generate_reads_nothing_per_token_beyond_sampling(monkeypatch):
    lm = MambaLM(13, 16, d_state=4, n_layers=2).eval()
    ids = torch.randint(0, 13, (2, 5))
    reads = count_device_reads(monkeypatch)
    lm.generate(ids, max_new_tokens=2, temperature=0)
    short = list(reads)
    reads.clear()
    lm.generate(ids, max_new_tokens=12, temperature=0)
    print("reads for 2 tokens:", short, "for 12:", reads)
    assert len(reads) == len(short) == 1  # the prefill's checks only, none per sampled token


@pytest.mark.parametrize("time_dtype", [torch.float64, torch.int64])
def test_steps_with_timestamps_read_nothing_back_unchecked(monkeypatch, time_dtype):
    """A warm step with timestamps (its first gap measured from the cache's last time) reads
    nothing back with ``check_values=False``, what capturing it in a CUDA graph needs, and
    reads once with the checks (last_time and the times together)."""
    from eventssm import EventEncoder, Mamba

    torch.manual_seed(0)
    enc = EventEncoder(d_model=16, n_layers=2, d_input=2, d_state=4, pooling="mean",
                       discretization=Asymmetric("zoh")).eval()
    block = Mamba(16, d_state=4, discretization=Asymmetric("zoh")).eval()
    t = torch.cumsum(torch.randint(1, 5, (3, 7)), 1).to(time_dtype)
    v = torch.randn(3, 7, 2)
    x = torch.randn(3, 7, 16)
    cache, bcache = enc.allocate_inference_cache(3), block.allocate_inference_cache(3)
    with torch.no_grad():
        enc.encode(v[:, :5], timestamps=t[:, :5], inference_cache=cache)
        block(x[:, :5], timestamps=t[:, :5], inference_cache=bcache)
        for i, check in ((5, False), (6, True)):
            reads = count_device_reads(monkeypatch)
            enc.step(v[:, i], cache=cache, timestamps=t[:, i], check_values=check)
            block.step(x[:, i], bcache, timestamps=t[:, i], check_values=check)
            monkeypatch.undo()
            print(f"check_values={check} ({time_dtype}): reads {reads}")
            assert len(reads) == (2 if check else 0)  # one per door with the checks
