"""Checkpoint integrity: a sha256 of every tensor written with each checkpoint and checked on load.

A Lightning checkpoint is a zip archive (``torch.save``): a pickle (``archive/data.pkl``) that
holds the structure and every non-tensor value, plus one stored record per tensor storage. PyTorch
reads tensor records without checking their zip CRC-32, so bytes altered inside a weight or an
optimizer moment load silently; an empty or truncated file fails deep inside the zip reader or the
unpickler. Here:

- :func:`add_checksums` puts ``checkpoint["eventssm_integrity"]``: the sha256 of every tensor
  (its dtype, shape and bytes), keyed by its path in the checkpoint
  (``state_dict/encoder.layers.0.mixer.in_proj.weight``, ``optimizer_states/0/state/3/exp_avg``),
  and one sha256 per top-level entry over its non-tensor values (loop counters, hyperparameters,
  callback states).
- :func:`load_checkpoint` checks the file before unpickling it (empty, not a zip archive,
  truncated, a damaged zip header, a bad CRC-32 of the small records such as the pickle), loads it,
  and checks every checksum; any failure raises :class:`CheckpointError` naming the file and what
  is wrong (which tensor, which entry).
- :class:`IntegrityCheckpointIO` is the Lightning ``CheckpointIO`` that does both, and writes
  each file atomically (a temporary file renamed into place, so a kill during a save leaves the
  previous checkpoint intact). :class:`eventssm.tasks.resume.ResumeCallback` installs it; the tasks'
  ``on_load_checkpoint`` verifies checkpoints loaded without a trainer
  (``EventClassifier.load_from_checkpoint``).

Checkpoints without checksums (older ones, other tools') load with a warning.

This module imports Lightning; it belongs with ``tasks`` and ``cli``, not the core.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import lightning
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO

__all__ = [
    "INTEGRITY_KEY",
    "CheckpointError",
    "IntegrityCheckpointIO",
    "add_checksums",
    "check_file",
    "checkpoint_errors",
    "checksums",
    "load_checkpoint",
    "save_checkpoint",
    "verify_checkpoint",
]

INTEGRITY_KEY = "eventssm_integrity"
_FORMAT = 1
# Lightning rewrites this key when it migrates a checkpoint saved by another version; it is not
# covered (and structure checksums are skipped for checkpoints of another Lightning version).
_VOLATILE = ("pytorch-lightning_version",)


class CheckpointError(ValueError):
    """A checkpoint file that is empty, truncated, not a checkpoint, or altered since it was saved."""


# ---------------------------------------------------------------------------------------------- hashing
def _tensor_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_quantized:
        t = t.int_repr()
    t = t.to("cpu").contiguous().reshape(-1)
    return memoryview(t.view(torch.uint8).numpy())


def _tensor_digest(t: torch.Tensor) -> str:
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _repr(obj: Any) -> str:
    # without memory addresses ("<function f at 0x7f...>"), which differ between processes
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def _walk(obj: Any, path: str, tensors: dict, leaves: list) -> None:
    """Collect tensors by path and (path, type, value) of every other leaf, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj
    elif isinstance(obj, dict):
        if not obj:
            leaves.append((path, type(obj).__name__, "{}"))
        for k, v in obj.items():
            _walk(v, f"{path}/{k}", tensors, leaves)
    elif isinstance(obj, (list, tuple)):
        if not obj:
            leaves.append((path, type(obj).__name__, "[]"))
        for i, v in enumerate(obj):
            _walk(v, f"{path}/{i}", tensors, leaves)
    elif isinstance(obj, np.ndarray):
        leaves.append((path, f"ndarray[{obj.dtype}]{obj.shape}",
                       hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()))
    elif obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, np.generic)):
        leaves.append((path, type(obj).__name__, repr(obj)))
    elif isinstance(obj, (set, frozenset)):  # iteration order varies between processes
        leaves.append((path, type(obj).__name__, repr(sorted(map(_repr, obj)))))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        leaves.append((path, type(obj).__qualname__, ""))
        # Only the fields the instance holds: a field added to the class after a checkpoint was
        # written is missing from the unpickled instance (it reads the class default) and was
        # not in what the writer hashed.
        held = getattr(obj, "__dict__", None)
        for f in dataclasses.fields(obj):
            if held is None or f.name in held:
                _walk(getattr(obj, f.name), f"{path}/{f.name}", tensors, leaves)
    elif type(obj).__repr__ is not object.__repr__:  # a repr of its own
        leaves.append((path, type(obj).__qualname__, _repr(obj)))
    elif hasattr(obj, "__dict__"):
        leaves.append((path, type(obj).__qualname__, ""))
        for k, v in sorted(vars(obj).items()):
            _walk(v, f"{path}/{k}", tensors, leaves)
    else:
        leaves.append((path, type(obj).__qualname__, ""))


def checksums(checkpoint: dict) -> dict:
    """The integrity record of ``checkpoint`` (without its own entry).

    Returns ``{"format", "algorithm", "lightning_version", "tensors": {path: sha256},
    "structure": {top-level key: sha256 of its non-tensor values}}``.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f"checkpoint must be a dict, got {type(checkpoint).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    structure: dict[str, str] = {}
    for key, value in checkpoint.items():
        if key == INTEGRITY_KEY or key in _VOLATILE:
            continue
        leaves: list = []
        _walk(value, str(key), tensors, leaves)
        h = hashlib.sha256()
        for leaf in leaves:
            h.update(repr(leaf).encode())
        structure[str(key)] = h.hexdigest()
    return {
        "format": _FORMAT,
        "algorithm": "sha256",
        "lightning_version": lightning.__version__,
        "tensors": {p: _tensor_digest(t) for p, t in tensors.items()},
        "structure": structure,
    }


def add_checksums(checkpoint: dict) -> dict:
    """Write the integrity record into ``checkpoint`` (in place) and return it."""
    checkpoint.pop(INTEGRITY_KEY, None)
    checkpoint[INTEGRITY_KEY] = checksums(checkpoint)
    return checkpoint


def _few(items: list[str], k: int = 4) -> str:
    return ", ".join(items[:k]) + (f" and {len(items) - k} more" if len(items) > k else "")


def verify_checkpoint(checkpoint: dict, source: str = "checkpoint", *, missing: str = "warn") -> bool:
    """Check the integrity record of a loaded checkpoint.

    Args:
        checkpoint: the loaded dict.
        source: how to name it in messages (the file path).
        missing: what to do when it carries no record: ``"warn"``, ``"ignore"`` or ``"raise"``.

    Returns True when verified (or already verified by :func:`load_checkpoint`), False when there
    was no record. Raises :class:`CheckpointError` naming the tensors or entries that differ.
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{source}: not a checkpoint (loaded a {type(checkpoint).__name__}, "
                              f"expected a dict)")
    saved = checkpoint.get(INTEGRITY_KEY)
    if saved is None:
        msg = (f"{source} carries no checksums (saved without eventssm's checkpoint integrity); "
               f"its contents cannot be verified")
        if missing == "raise":
            raise CheckpointError(msg)
        if missing == "warn":
            warnings.warn(msg, stacklevel=2)
        return False
    if not isinstance(saved, dict) or saved.get("format") != _FORMAT or "tensors" not in saved:
        raise CheckpointError(f"{source}: its integrity record is damaged or of an unknown format")
    if saved.get("verified") is True:
        return True
    now = checksums(checkpoint)
    problems = []
    bad = [p for p, d in saved["tensors"].items() if p in now["tensors"] and now["tensors"][p] != d]
    if bad:
        problems.append(f"checksum mismatch in {len(bad)} tensor(s): {_few(bad)} (their stored "
                        f"bytes differ from those saved)")
    gone = [p for p in saved["tensors"] if p not in now["tensors"]]
    if gone:
        problems.append(f"{len(gone)} tensor(s) missing: {_few(gone)}")
    extra = [p for p in now["tensors"] if p not in saved["tensors"]]
    if extra:
        problems.append(f"{len(extra)} tensor(s) not covered by the checksums: {_few(extra)}")
    if saved.get("lightning_version") == lightning.__version__:
        # Loaded by another Lightning version, the checkpoint may have been migrated in memory.
        changed = [k for k, d in saved.get("structure", {}).items() if now["structure"].get(k) != d]
        changed += [k for k in now["structure"] if k not in saved.get("structure", {})]
        if changed:
            problems.append(f"checksum mismatch in the non-tensor contents of {_few(changed)}")
    if problems:
        raise CheckpointError(f"{source} was altered or damaged since it was saved: "
                              + "; ".join(problems) + ". Refusing to load it.")
    return True


# ---------------------------------------------------------------------------------------------- files
# Tensor storages are the records <archive>/data/<key>: the sha256 checks them (and names the
# tensor); every other record (the pickle, version, byteorder) gets its CRC-32 checked.
_STORAGE = re.compile(r"^[^/]+/data/\d+$")


def check_file(path: str | os.PathLike) -> None:
    """Check a checkpoint file before unpickling it: it exists, is not empty, is a complete zip
    archive (``torch.save`` format) with sound record headers, and its records other than tensor
    storages (the pickle holding everything but the tensor bytes) match their CRC-32. Raises :class:`CheckpointError`
    (or ``FileNotFoundError``) naming the file and what is wrong. Cost: reads the zip directory and
    the pickle, not the tensors."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): not a checkpoint (was the save "
                              f"interrupted, or the disk full?)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise CheckpointError(f"{path} is not a checkpoint: it does not start like a torch.save "
                              f"zip archive (first bytes {magic!r}, size {size} bytes)")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{path} is truncated or damaged: its zip directory cannot be read "
                              f"({e}; size {size} bytes). Was the save interrupted?") from e
    with zf:
        infos = zf.infolist()
        if not any(i.filename.endswith("data.pkl") for i in infos):
            raise CheckpointError(f"{path} is a zip archive but not a torch checkpoint (no data.pkl)")
        for info in infos:
            if info.header_offset + info.compress_size > size:
                raise CheckpointError(f"{path} is truncated: record {info.filename} ends past the "
                                      f"end of the file ({size} bytes)")
            try:
                with zf.open(info) as rec:
                    # Reading checks the CRC-32 at the end; PyTorch itself does not. CRC 0:
                    # written without one (torch's compute_crc32 off).
                    if not _STORAGE.match(info.filename) and info.CRC != 0:
                        while rec.read(1 << 16):
                            pass
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                raise CheckpointError(f"{path} is damaged: record {info.filename} is corrupt "
                                      f"({e})") from e


@contextlib.contextmanager
def checkpoint_errors(path: str | os.PathLike) -> Iterator[None]:
    """Check the file (:func:`check_file`) and name it in any :class:`CheckpointError` raised
    inside the block (e.g. by a LightningModule's ``on_load_checkpoint``)."""
    check_file(path)
    name = os.fspath(path)
    try:
        yield
    except CheckpointError as e:
        if name in str(e):
            raise
        raise CheckpointError(f"{name}: {e}") from e


def load_checkpoint(path: str | os.PathLike, map_location: Any = None,
                    weights_only: bool | None = None, *, missing: str = "warn") -> dict:
    """``torch.load`` a checkpoint after :func:`check_file`, then :func:`verify_checkpoint` it.

    Raises :class:`CheckpointError` naming the file for an empty, truncated, damaged or altered
    one. The returned dict is marked as verified (``LightningModule.on_load_checkpoint`` hooks
    then skip hashing it again).
    """
    check_file(path)
    name = os.fspath(path)
    try:
        ckpt = torch.load(name, map_location=map_location, weights_only=weights_only)
    except Exception as e:  # the zip reader's RuntimeError, pickle.UnpicklingError, EOFError, ...
        if "weights_only" in str(e):
            raise  # torch's own message says which class to allow; not damage
        raise CheckpointError(f"{name} is damaged: it cannot be unpickled ({type(e).__name__}: "
                              f"{e})") from e
    if isinstance(ckpt, dict) and isinstance(ckpt.get(INTEGRITY_KEY), dict):
        ckpt[INTEGRITY_KEY].pop("verified", None)  # a marker in the file proves nothing
    if verify_checkpoint(ckpt, name, missing=missing):
        ckpt[INTEGRITY_KEY]["verified"] = True
    return ckpt


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def save_checkpoint(checkpoint: dict, path: str | os.PathLike) -> None:
    """Add checksums and write atomically: a temporary file in the same folder, flushed to disk,
    then renamed over ``path`` (a kill during the save leaves the previous file intact)."""
    add_checksums(checkpoint)
    path = os.fspath(path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp")  # one per target: no pile-up
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class IntegrityCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO``: checksums written with every checkpoint and checked on every
    load (``fit``/``validate``/``test``/``predict`` with ``ckpt_path``); atomic local writes.

    While :attr:`defer` is True (set by :class:`eventssm.tasks.resume.ResumeCallback` between the end of
    a training batch and the start of the next), saves are held in memory (tensors copied to the
    CPU) and written by :meth:`flush`, after the completed step's metrics are logged; the callback
    first updates them with the state the next step starts from.
    """

    def __init__(self) -> None:
        super().__init__()
        self.defer = False
        self.pending: dict[str, dict] = {}

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = os.fspath(path)
        if self.defer and _is_local(path):
            copy = _map_tensors(checkpoint, lambda t: t.detach().to("cpu", copy=True))
            self.pending[path] = copy
            return
        self._write(checkpoint, path)

    def _write(self, checkpoint: dict, path: str) -> None:
        if _is_local(path):
            save_checkpoint(checkpoint, path)
        else:
            super().save_checkpoint(add_checksums(checkpoint), path)

    def flush(self, update: Callable[[dict], None] | None = None) -> list[str]:
        """Write the held checkpoints (after ``update(checkpoint)`` on each); returns their paths."""
        written = []
        while self.pending:
            path, ckpt = next(iter(self.pending.items()))
            if update is not None:
                update(ckpt)
            self._write(ckpt, path)
            del self.pending[path]
            written.append(path)
        return written

    def load_checkpoint(self, path, map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        path = os.fspath(path)
        if path in self.pending:  # saved in this window, not yet written
            self.flush()
        if not _is_local(path):
            ckpt = super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
            if verify_checkpoint(ckpt, path):
                ckpt[INTEGRITY_KEY]["verified"] = True
            return ckpt
        return load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path) -> None:
        path = os.fspath(path)
        self.pending.pop(path, None)
        if os.path.lexists(path) or not _is_local(path):
            super().remove_checkpoint(path)


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Copy of nested dicts/lists/tuples with ``fn`` applied to every tensor (other leaves shared)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        out = {k: _map_tensors(v, fn) for k, v in obj.items()}
        if type(obj) is dict:
            return out
        try:
            copy = type(obj).__new__(type(obj))
            copy.update(out)
            copy.__dict__.update(getattr(obj, "__dict__", {}))
            return copy
        except Exception:
            return out
    if isinstance(obj, list):
        return [_map_tensors(v, fn) for v in obj]
    if isinstance(obj, tuple):
        items = [_map_tensors(v, fn) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj
