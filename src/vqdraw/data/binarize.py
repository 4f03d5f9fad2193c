"""Binarised data (binarised MNIST): grey levels in [0, 1] -> 0/1, for Bernoulli models.

    threshold    x -> 1 if x >= 0.5 else 0 (fixed; uint8 >= 128)
    stochastic   x -> 1 with probability x, drawn afresh every epoch

The stochastic draw of item i in epoch e is a pure function of (seed, e, i, element), a counter-
based hash (SplitMix64), like the data order (:func:`vqdraw.training.train.batch_indices`): resuming a run
draws the same bits, and so does any number of processes. :class:`BinarizedSet` wraps an
:class:`Dataset` with one fixed draw (epoch 0), for test sets.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from .base import Dataset

BINARIZE = ("none", "threshold", "stochastic")


def check_binarize(how: str) -> str:
    if how not in BINARIZE:
        raise ConfigError(f"binarize must be one of {', '.join(BINARIZE)}; got {how!r}")
    return how


def binarize(x: torch.Tensor, how: str, *, seed: int, index, epoch) -> torch.Tensor:
    """Data x (B, C, *S) in [0, 1] of items `index` (B,) drawn in epochs `epoch` (B,) -> 0/1."""
    check_binarize(how)
    if how == "none":
        return x
    if how == "threshold":
        return (x >= 0.5).to(x.dtype)
    u = uniforms(seed, np.asarray(_cpu(index)), np.asarray(_cpu(epoch)), x[0].numel())
    return (torch.from_numpy(u).to(x.device).view_as(x) < x).to(x.dtype)


def uniforms(seed: int, index: np.ndarray, epoch: np.ndarray, size: int) -> np.ndarray:
    """(B, size) float64 in [0, 1): SplitMix64 of (seed, epoch, index, element)."""
    with np.errstate(over="ignore"):
        key = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
               ^ epoch.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
               ^ index.astype(np.uint64) * np.uint64(0x94D049BB133111EB))
        z = key[:, None] + np.arange(1, size + 1, dtype=np.uint64)[None, :] * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def batch_epochs(step: int, batch: int, n: int) -> torch.Tensor:
    """The epoch of each position of the global batch at `step` (step t holds positions t*B ..)."""
    return torch.div(step * batch + torch.arange(batch), n, rounding_mode="floor")


class BinarizedSet(Dataset):
    """A Dataset binarised once (threshold, or the stochastic draw of epoch 0): uint8 0/255."""

    def __init__(self, base: Dataset, how: str, seed: int = 0):
        check_binarize(how)
        items = base.data
        if how != "none":
            n = len(base)
            flat = np.asarray(items).reshape(n, -1)
            if how == "threshold":
                bits = flat >= 128
            else:
                bits = uniforms(seed, np.arange(n), np.zeros(n, dtype=np.int64), flat.shape[1]) < flat / 255.0
            items = (bits.astype(np.uint8) * 255).reshape(items.shape)
        super().__init__(items, base.labels, f"{base.name} ({how} binarised)" if how != "none" else base.name)


def _cpu(t):
    return t.cpu() if isinstance(t, torch.Tensor) else t
