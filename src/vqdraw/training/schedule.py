"""The step size as a function of the step, and a run's length fitted to a wall-clock budget.

    lr(step)   warm-up   step < W:        lr * (step + 1) / W              (linear, from lr / W)
               anneal    step >= W:       lr -> lr_final over steps W .. total
                         linear:          lr + (lr_final - lr) * f
                         cosine:          lr_final + (lr - lr_final) * (1 + cos(pi f)) / 2
                         with f = (step + 1 - W) / (total - W)   (the author's: the last
                         step runs at lr_final)
               constant  lr_final unset:  lr after the warm-up (the paper's fixed 1e-3);
                         paper_lr: lr throughout

``total`` is ``TrainConfig.steps``, or, with a time budget, the step count the budget is
projected to allow (:class:`TimeBudget`): the anneal is then fitted to the clock, so that the
step size reaches ``lr_final`` when the time runs out.
"""

from __future__ import annotations

import math
import time
from typing import Callable

def learning_rate(cfg, step: int, total: int | None = None) -> float:
    """The step size at `step` (0-based) of a `total`-step run (default ``cfg.steps``); see the
    module docstring. ``cfg`` is a :class:`~vqdraw.core.config.TrainConfig`."""
    total = cfg.steps if total is None else total
    if cfg.paper_lr:  # the paper's fixed step size throughout
        return cfg.lr
    warmup = cfg.warmup
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.lr_final is None:
        return cfg.lr
    # the paper author's anneal: step s+1 of S runs at lr + (lr_final - lr) (s+1)/S, so the last
    # step runs at lr_final (counted from the end of the warm-up)
    frac = min(1.0, (step + 1 - warmup) / max(1, total - warmup))
    if cfg.anneal == "cosine":
        return cfg.lr_final + (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * frac)) / 2
    return cfg.lr + (cfg.lr_final - cfg.lr) * frac


class TimeBudget:
    """Fits a run to `seconds` of wall-clock time, read from `clock` once per step.

    ``tick()`` after each step returns True when another step would not fit (the run ends then,
    within one step of the budget); ``total(step)`` projects the run's final step from the mean
    time per step so far (evaluations and checkpoints included, amortised), capped at
    `max_steps`. `spent` is the time already used by earlier calls of a resumed run.
    """

    def __init__(self, seconds: float, max_steps: int, *, clock: Callable[[], float] = time.monotonic,
                 spent: float = 0.0):
        self.seconds = float(seconds)
        self.max_steps = int(max_steps)
        self.clock = clock
        self.spent = float(spent)
        self._t0 = clock()
        self._now = 0.0  # seconds of this call, at the last tick
        self._steps = 0  # steps of this call

    @property
    def elapsed(self) -> float:
        """Seconds used: earlier calls' plus this call's up to the last tick."""
        return self.spent + self._now

    @property
    def step_time(self) -> float | None:
        """Mean seconds per step in this call, or None before the first tick."""
        return self._now / self._steps if self._steps else None

    def tick(self) -> bool:
        """Record that a step ended; True if the next one would overrun the budget."""
        self._now = self.clock() - self._t0
        self._steps += 1
        return self.elapsed + self.step_time > self.seconds

    def total(self, step: int) -> int:
        """The projected final step of a run now at `step` (``max_steps`` before any tick)."""
        if not self._steps:
            return self.max_steps
        left = max(0.0, self.seconds - self.elapsed)
        return min(self.max_steps, step + int(left / self.step_time))
