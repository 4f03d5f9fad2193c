"""Progress of a long job on stderr: a tqdm bar on a terminal, else one plain line every tenth of
the job (a log file or a pipe gets no carriage returns). Every trainer, encoder and decoder that
reports progress uses :class:`Progress`; ``enabled=False`` (``--no-progress``) silences it.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """A tqdm bar when stderr is a terminal; otherwise (a log file, a pipe) one plain line every
    `every` units (default: about 10 lines per run), so that logs hold no carriage returns."""

    def __init__(self, total: int, *, initial: int = 0, desc: str = "train", unit: str = "step",
                 enabled: bool = True, every: int | None = None, stream=None):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every = every or max(1, (total - initial) // 10)
        self.enabled = enabled and total > initial
        self.bar = None
        self.postfix: dict = {}
        self._t0 = time.perf_counter()
        self._next = initial + self.every
        if self.enabled and _is_terminal(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                            file=self.stream)

    def set_total(self, total: int) -> None:
        """A new projected total (a run fitted to a time budget learns it as it goes)."""
        if total == self.total:
            return
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def update(self, n: int = 1, postfix: dict | None = None) -> None:
        if not self.enabled:
            return
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
        self.enabled = False


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
