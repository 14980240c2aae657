"""Checkpoint integrity: checksums written with every checkpoint and checked on every load; an
empty, truncated or altered file is refused with a message naming the file and what is wrong."""

from __future__ import annotations

import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from eventssm.tasks import EventClassifier
from eventssm.tasks.checkpointing import (
    INTEGRITY_KEY,
    CheckpointError,
    IntegrityCheckpointIO,
    add_checksums,
    check_file,
    load_checkpoint,
    verify_checkpoint,
)
from eventssm.tasks.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "sinusoid_classification.yaml"
# in_proj.weight is (2 * expand * d_model, d_model) = 128 x 32 float32: 16 KiB, room for a 4 KiB hit
TINY = ["--config", str(CONFIG), "--model.backbone.d_model", "32", "--model.backbone.n_layers", "1",
        "--model.backbone.d_state", "4", "--data.n_sequences", "48", "--data.min_len", "8", "--data.max_len", "16",
        "--data.batch_size", "8", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false"]
WEIGHT = "encoder.backbone.layers.0.mixer.in_proj.weight"


def _fit_args(tmp: Path) -> list[str]:
    return [*TINY, "--trainer.logger.init_args.save_dir", str(tmp / "runs"),
            "--checkpoint.dirpath", str(tmp / "ckpt")]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """last.ckpt of a one-epoch `eventssm fit` (written by the CLI's ResumeCallback/IO)."""
    tmp = tmp_path_factory.mktemp("integrity")
    main(["fit", *_fit_args(tmp)])
    return tmp / "ckpt" / "last.ckpt"


def _copy(good: Path, tmp: Path, name: str = "bad.ckpt") -> Path:
    dst = tmp / name
    shutil.copy(good, dst)
    return dst


def _offset_of(path: Path, t: torch.Tensor) -> int:
    """Byte offset of tensor ``t``'s data inside the file (its bytes are unique: random weights)."""
    data = path.read_bytes()
    raw = t.detach().contiguous().numpy().tobytes()
    at = data.find(raw)
    assert at > 0 and data.find(raw, at + 1) == -1
    return at


def _overwrite(path: Path, offset: int, n: int = 4096, seed: int = 0) -> None:
    junk = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(junk)


def _all_loaders(path: Path):
    """Every way eventssm loads a checkpoint file."""
    yield "load_checkpoint", lambda: load_checkpoint(path)
    yield "IntegrityCheckpointIO", lambda: IntegrityCheckpointIO().load_checkpoint(path)
    yield "load_from_checkpoint", lambda: EventClassifier.load_from_checkpoint(path)


def test_good_checkpoint_covers_every_tensor_and_loads_silently(good):
    ckpt = torch.load(good, weights_only=True)
    rec = ckpt[INTEGRITY_KEY]
    sd_paths = {f"state_dict/{k}" for k in ckpt["state_dict"]}
    assert sd_paths <= set(rec["tensors"])
    assert any(p.startswith("optimizer_states/0/state/") and p.endswith("exp_avg") for p in rec["tensors"])
    assert any(p.startswith("callbacks/ResumeCallback/rng/") for p in rec["tensors"])
    assert {"loops", "hyper_parameters", "callbacks"} <= set(rec["structure"])
    print(len(rec["tensors"]), "tensors covered")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "carries no checksums" warning
        for _, load in _all_loaders(good):
            load()
    check_file(good)


def test_empty_file_is_refused(good, tmp_path):
    bad = tmp_path / "empty.ckpt"
    bad.write_bytes(b"")
    for name, load in _all_loaders(bad):
        with pytest.raises(CheckpointError, match="empty") as e:
            load()
        print(name, "->", e.value)
        assert str(bad) in str(e.value)


def test_not_a_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "notes.ckpt"
    bad.write_text("these are my notes, not a checkpoint\n")
    for _, load in _all_loaders(bad):
        with pytest.raises(CheckpointError, match="not a checkpoint") as e:
            load()
        assert str(bad) in str(e.value)


@pytest.mark.parametrize("keep", [0.5, 0.999, 100], ids=["half", "last-bytes", "100-bytes"])
def test_truncated_file_is_refused(good, tmp_path, keep):
    bad = _copy(good, tmp_path)
    size = bad.stat().st_size
    n = int(size * keep) if keep < 1 else int(keep)
    os.truncate(bad, n)
    for name, load in _all_loaders(bad):
        with pytest.raises(CheckpointError, match="truncated") as e:
            load()
        print(name, "->", e.value)
        assert str(bad) in str(e.value)


@pytest.mark.parametrize("which", ["weight", "optimizer"])
def test_4kib_overwritten_inside_a_tensor_is_caught_by_the_checksum(good, tmp_path, which):
    ckpt = torch.load(good, weights_only=True)
    if which == "weight":
        t, name = ckpt["state_dict"][WEIGHT], f"state_dict/{WEIGHT}"
    else:  # the AdamW first moment of the same weight (the only tensor of its shape)
        (name, t), = [(p, v) for p, v in _optimizer_tensors(ckpt).items()
                      if v.shape == ckpt["state_dict"][WEIGHT].shape and p.endswith("exp_avg")]
    assert t.numel() * t.element_size() >= 3 * 4096
    bad = _copy(good, tmp_path)
    _overwrite(bad, _offset_of(bad, t) + 4096)  # strictly inside the tensor's stored bytes
    check_file(bad)  # the zip structure is intact: only the checksum can tell
    for loader, load in _all_loaders(bad):
        with pytest.raises(CheckpointError, match="checksum mismatch") as e:
            load()
        print(loader, "->", e.value)
        assert str(bad) in str(e.value) and name in str(e.value)


def _optimizer_tensors(ckpt: dict) -> dict:
    out = {}
    for pid, st in ckpt["optimizer_states"][0]["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                out[f"optimizer_states/0/state/{pid}/{k}"] = v
    return out


def test_4kib_overwritten_in_the_pickle_is_refused_by_the_loader(good, tmp_path):
    bad = _copy(good, tmp_path)
    with zipfile.ZipFile(bad) as zf:
        (info,) = [i for i in zf.infolist() if i.filename.endswith("data.pkl")]
    # data starts after the 30-byte local header, the name and the extra field
    with open(bad, "rb") as f:
        f.seek(info.header_offset + 26)
        n_name, n_extra = np.frombuffer(f.read(4), dtype="<u2")
    start = info.header_offset + 30 + int(n_name) + int(n_extra)
    n = min(4096, info.compress_size - 16)
    _overwrite(bad, start + 8, n)
    for loader, load in _all_loaders(bad):
        with pytest.raises(CheckpointError, match="data.pkl is corrupt") as e:
            load()
        print(loader, "->", e.value)
        assert str(bad) in str(e.value)


def test_overwritten_record_header_is_refused(good, tmp_path):
    bad = _copy(good, tmp_path)
    with zipfile.ZipFile(bad) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    _overwrite(bad, info.header_offset, 64)  # the local header of the largest tensor record
    for _, load in _all_loaders(bad):
        with pytest.raises(CheckpointError, match="corrupt|damaged") as e:
            load()
        assert str(bad) in str(e.value)


def test_in_memory_changes_are_named():
    sd = {"w": torch.randn(3, 4), "b": torch.zeros(3)}
    ckpt = add_checksums({"state_dict": dict(sd), "global_step": 7, "loops": {"x": [1, 2.5, None]}})
    assert verify_checkpoint(ckpt, "c.ckpt")
    cases = {
        "tensor": (lambda c: c["state_dict"]["w"].__setitem__((0, 0), 1e9), "state_dict/w"),
        "missing": (lambda c: c["state_dict"].pop("b"), "missing: state_dict/b"),
        "extra": (lambda c: c["state_dict"].__setitem__("z", torch.ones(1)), "not covered"),
        "counter": (lambda c: c.__setitem__("global_step", 8), "non-tensor contents of global_step"),
        "nested": (lambda c: c["loops"]["x"].__setitem__(1, 2.25), "non-tensor contents of loops"),
        "dtype": (lambda c: c["state_dict"].__setitem__("b", c["state_dict"]["b"].double()),
                  "state_dict/b"),
    }
    for name, (change, want) in cases.items():
        c = add_checksums({"state_dict": {k: v.clone() for k, v in sd.items()}, "global_step": 7,
                           "loops": {"x": [1, 2.5, None]}})
        change(c)
        with pytest.raises(CheckpointError, match="c.ckpt") as e:
            verify_checkpoint(c, "c.ckpt")
        print(name, "->", e.value)
        assert want in str(e.value), name


def test_checkpoint_without_checksums_warns_or_raises(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    with pytest.warns(UserWarning, match="carries no checksums"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="carries no checksums"):
        load_checkpoint(path, missing="raise")
    # a "verified" marker written into a file proves nothing: the loader checks again
    c = add_checksums({"state_dict": {"w": torch.ones(2)}})
    c[INTEGRITY_KEY]["verified"] = True
    c["state_dict"]["w"] += 1
    torch.save(c, path)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


def test_io_writes_atomically_and_defers(tmp_path):
    io = IntegrityCheckpointIO()
    path = tmp_path / "x.ckpt"
    w = torch.randn(4)
    io.save_checkpoint({"state_dict": {"w": w}}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.ckpt"]  # no temporary file left
    io.defer = True
    io.save_checkpoint({"state_dict": {"w": w}, "n": 1}, path)
    w += 1  # the held copy does not change with the live tensor
    assert load_checkpoint(path).get("n") is None  # not yet written
    seen = []
    assert io.flush(lambda c: seen.append(c["n"])) == [str(path)] and seen == [1]
    back = load_checkpoint(path)
    assert back["n"] == 1 and torch.equal(back["state_dict"]["w"], w - 1)
    io.defer = True
    io.save_checkpoint({"state_dict": {}}, tmp_path / "y.ckpt")
    io.remove_checkpoint(tmp_path / "y.ckpt")  # removing a held save cancels it
    assert io.flush() == [] and not (tmp_path / "y.ckpt").exists()


def test_cli_refuses_to_resume_from_a_damaged_checkpoint(good, tmp_path):
    """The issue: a resumed run exited 0 with NaN weights after 4 KiB were overwritten."""
    ckpt = torch.load(good, weights_only=True)
    bad = _copy(good, tmp_path, "last.ckpt")
    _overwrite(bad, _offset_of(bad, ckpt["state_dict"][WEIGHT]) + 4096)
    with pytest.raises(CheckpointError, match="checksum mismatch") as e:
        main(["fit", *_fit_args(tmp_path), "--trainer.max_epochs", "2", "--ckpt_path", str(bad)])
    assert str(bad) in str(e.value) and WEIGHT in str(e.value)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        main(["test", *_fit_args(tmp_path), "--ckpt_path", str(empty)])
