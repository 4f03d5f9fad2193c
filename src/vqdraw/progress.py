"""Progress of long jobs, reported through a callback: the library never prints.

Every trainer, encoder and decoder that reports progress makes a :class:`Progress` and calls
``update``; what a person sees is up to the *reporter* installed with :func:`set_reporter`. The
``vqdraw`` command installs its own (:mod:`vqdraw.cli.progress`: a tqdm bar on a terminal, one plain
line every tenth of the job in a log file or a pipe). With no reporter installed, progress is
silent. A Python program that wants the command's display calls
``vqdraw.cli.progress.install()``; any other reporter is a callable

    reporter(total=, initial=, desc=, unit=, every=) -> an object with
        set_total(total), update(n, postfix), close()
"""

from __future__ import annotations

from typing import Callable

_reporter: Callable | None = None


def set_reporter(reporter: Callable | None) -> Callable | None:
    """Install ``reporter`` (None: silence); returns the one installed before."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


def reporter() -> Callable | None:
    """The reporter installed now (None: progress is silent)."""
    return _reporter


class Progress:
    """A long job's progress: ``total`` units from ``initial``, named ``desc`` (``unit`` per
    step); ``enabled=False`` (``--no-progress``) makes it silent whatever the reporter."""

    def __init__(self, total: int, *, initial: int = 0, desc: str = "train", unit: str = "step",
                 enabled: bool = True, every: int | None = None):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.every = every or max(1, (total - initial) // 10)
        self.enabled = enabled and total > initial
        self.postfix: dict = {}
        self.sink = None
        if self.enabled and _reporter is not None:
            self.sink = _reporter(total=total, initial=initial, desc=desc, unit=unit, every=self.every)

    def set_total(self, total: int) -> None:
        """A new projected total (a run fitted to a time budget learns it as it goes)."""
        if total != self.total:
            self.total = total
            if self.sink is not None:
                self.sink.set_total(total)

    def update(self, n: int = 1, postfix: dict | None = None) -> None:
        if not self.enabled:
            return
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        if self.sink is not None:
            self.sink.update(n, postfix)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        self.enabled = False
