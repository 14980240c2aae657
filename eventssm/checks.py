"""Value checks of a public call's inputs, gathered below the door and run at the door.

A public entry point (``selective_scan``, ``Mamba.forward``, ``EventEncoder.encode``...) calls
:meth:`ValueChecks.at_door`, which hands a :class:`ValueChecks` to the functions that convert its
inputs (lengths into a mask, timestamps into gaps, gaps into the scan's dtype). Those functions
check shapes and dtypes on the spot (the host knows them) and, for each value they rely on, add
a check where they would have run it: they take no ``check_values`` flag and trust what they
were given. The door then runs the checks (``check_values=True``) or skips them
(``check_values=False``, for inputs validated already or a step captured in a CUDA graph).

Reading a value back from the device is a host sync (the host waits for every queued kernel, and
``torch.compile`` splits its graph there): the checks of one call share one read when every value
is fine. Only a failing call reads more, to name the first bad argument and position. Errors
come in the order of the code that raises or adds them: a check added before a shape error was
raised wins over it, as it would if it had read the device on the spot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

__all__ = ["ValueChecks"]

T = TypeVar("T")


class ValueChecks:
    """The value checks of one call, in the order their errors take precedence."""

    def __init__(self) -> None:
        self._checks: list[tuple[str, Callable[[], Tensor], Callable[[], None]]] = []

    @staticmethod
    def at_door(check_values: bool, convert: Callable[[ValueChecks], T]) -> T:
        """What ``convert(checks)`` returns: a public call's conversion of its inputs, which adds
        their value checks to a fresh ``checks``; then the checks run when ``check_values``. If
        ``convert`` raises (a wrong shape, or a fault a bad value caused), the checks it added
        before that run first, and a failing one's error is raised instead.

        A function, not a context manager: ``torch.compile`` splits a graph at a host read in
        a function, where it cannot inside a context manager's exit (it would run the whole
        caller eagerly)."""
        checks = ValueChecks()
        try:
            out = convert(checks)
        except Exception:
            if check_values:
                checks._run_before_error()
            raise
        if check_values:
            checks.run()
        return out

    def _run_before_error(self) -> None:
        try:
            self.run()
        except ValueError as bad_value:
            raise bad_value from None  # the error to report, alone: the other came after it

    def add(self, what: str, flag: Callable[[], Tensor], explain: Callable[[], None]) -> None:
        """Add a check of ``what`` (an argument's name, as errors and tests name it, and what is
        checked of it where one argument has two checks).

        ``flag()`` returns a 0-d bool tensor that is True when a value is bad,
        computed on the device without reading it back; ``explain()`` raises the ``ValueError``
        naming the argument and the first bad position, and returns when the values are fine.
        Both are called only by :meth:`run`, so a call that skips the checks computes nothing.
        """
        self._checks.append((what, flag, explain))

    @property
    def names(self) -> list[str]:
        """What the checks check, in order (one entry per check)."""
        return [what for what, _, _ in self._checks]

    def run(self) -> None:
        """Raise the error of the first failing check, in the order they were added.

        One host read when all is well: the flags are stacked and read together (one read per
        device they live on; every input of a model call is on the model's device)."""
        if not self._checks:
            return
        flags = [flag() for _, flag, _ in self._checks]
        devices = {f.device for f in flags}
        if len(flags) == 1:
            bad = bool(flags[0])
        elif len(devices) == 1:  # outside a loop: torch.compile cannot split a graph inside one
            bad = bool(torch.stack(flags).any())
        else:  # cu_seqlens left on the CPU, say: one read per device
            bad = any([bool(torch.stack([f for f in flags if f.device == d]).any()) for d in devices])
        if not bad:
            return
        for _, _, explain in self._checks:
            explain()
        raise RuntimeError(f"a value check of {self.names} flagged bad input that its explanation did "
                           "not find: this is a bug in eventssm, please report it")

