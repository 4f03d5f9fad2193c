"""How the ``vqdraw`` command shows progress: a tqdm bar when stderr is a terminal; otherwise (a
log file, a pipe) one plain line every `every` units (about 10 lines per job), so that logs hold
no carriage returns. :func:`install` makes it the reporter of :mod:`vqdraw.progress`."""

from __future__ import annotations

import sys
import time

from .. import progress


class TerminalProgress:
    """One job's display (see the module docstring)."""

    def __init__(self, *, total: int, initial: int = 0, desc: str = "train", unit: str = "step",
                 every: int | None = None, stream=None):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every = every or max(1, (total - initial) // 10)
        self.bar = None
        self.postfix: dict = {}
        self._t0 = time.perf_counter()
        self._next = initial + self.every
        if _is_terminal(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                            file=self.stream)

    def set_total(self, total: int) -> None:
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def update(self, n: int = 1, postfix: dict | None = None) -> None:
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        if self.bar is not None:
            self.bar.update(n)
            if postfix is not None:
                self.bar.set_postfix(postfix, refresh=False)
        elif self.n >= self._next or self.n >= self.total:
            self._next = (self.n // self.every + 1) * self.every
            extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
            print(f"{self.desc}: {self.n}/{self.total} {self.unit}s{extra}, "
                  f"{time.perf_counter() - self._t0:.0f} s", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def install() -> None:
    """Show the library's progress as the command does (on stderr)."""
    progress.set_reporter(TerminalProgress)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
