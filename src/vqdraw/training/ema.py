"""An exponential moving average of a model's weights, for evaluation and checkpoints.

    after optimizer step t (1-based):   d = min(decay, (1 + t) / (10 + t))
                                        average = d * average + (1 - d) * weights

The ramp ``(1 + t) / (10 + t)`` keeps a short run's average from remembering the random
initialisation (with d = 0.999 from the start, 37% of a 1,000-step average would still be the
initial weights). Training continues on the raw weights; :meth:`WeightAverage.applied` swaps the
average in for evaluating, drawing pictures and saving, and swaps the raw weights back.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn


class WeightAverage:
    """The average of `model`'s floating-point parameters (buffers are constants here)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be between 0 and 1 (exclusive), got {decay}")
        self.model = model
        self.decay = float(decay)
        self.average = {name: p.detach().clone() for name, p in self._params()}

    def _params(self):
        return ((n, p) for n, p in self.model.named_parameters() if p.is_floating_point())

    def decay_at(self, t: int) -> float:
        """The decay used by the update after optimizer step `t` (1-based)."""
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, t: int) -> None:
        """Fold the current weights in, after optimizer step `t` (1-based)."""
        d = self.decay_at(t)
        for name, p in self._params():
            self.average[name].lerp_(p.detach(), 1.0 - d)

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Set the average (name -> tensor, as in the model's state dict)."""
        for name, value in self.average.items():
            value.copy_(tensors[name])

    @contextlib.contextmanager
    def applied(self):
        """The model holds the average inside the block and its raw weights again after it."""
        raw = {name: p.detach().clone() for name, p in self._params()}
        try:
            _copy_into(self.model, self.average)
            yield
        finally:
            _copy_into(self.model, raw)


@torch.no_grad()
def _copy_into(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    for name, p in model.named_parameters():
        if name in tensors:
            p.copy_(tensors[name])
