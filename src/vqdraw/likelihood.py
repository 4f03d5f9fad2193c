"""The likelihood: what the canvas holds, how a proposal is scored, how the canvas becomes data.

    data x in [0, 1] --target(x)--> what proposals are compared with
    proposals R (B, K, C, ...) --option_losses(R, target)--> (B, K)   the encoder keeps the arg-min
    canvas (B, C, ...) --to_data(canvas)--> data again

* ``mse``: the paper's. The canvas holds values in the normalised space (per-channel mean and
  std from the config) and the loss is the squared error there, averaged over the elements: a
  Gaussian of fixed variance, up to constants. Its stage loop takes the fast path of
  :func:`vqdraw.losses.select_option` (norms and dot products, float32 arg-min under bf16).
* ``bernoulli``: the canvas holds logits; the loss is the binary cross-entropy (nats per
  element) of the data under sigmoid(logits); data are 0/1 (or probabilities) and the canvas
  becomes data as sigmoid(canvas). For binary images and voxels.

Any per-element negative log-likelihood fits the generic :meth:`Likelihood.select`: a subclass
gives :meth:`Likelihood.element_losses`, :meth:`target` and :meth:`to_data`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .losses import option_losses as squared_error_losses
from .losses import select_option, widen


class Likelihood(nn.Module):
    """Scores proposals against a target; the base of every likelihood (see the module docstring)."""

    name = ""

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Data (B, C, ...) in [0, 1] -> the target the canvas is compared with."""
        raise NotImplementedError

    def to_data(self, canvas: torch.Tensor) -> torch.Tensor:
        """A canvas (B, C, ...) -> data in [0, 1]."""
        raise NotImplementedError

    def element_losses(self, proposals: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-element loss of proposals (B, K, C, ...) against target (B, C, ...): same shape."""
        raise NotImplementedError

    def option_losses(self, proposals: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """L(R_j, X) for every option, averaged over the elements: (B, K, C, ...) -> (B, K)."""
        return self.element_losses(proposals, target).flatten(2).mean(dim=2)

    def select(
        self,
        deltas: torch.Tensor,
        canvas: torch.Tensor,
        target: torch.Tensor,
        codes: torch.Tensor | None = None,
        group: torch.Tensor | None = None,
        exact_size: bool = True,
        reuse_deltas: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One stage: (losses (B, K) float32, choice (B,), chosen delta (B, C, ...) float32).

        deltas: (B, K, C, ...), or (U, K, C, ...) for U distinct canvases with ``group`` (B,)
        naming each image's; canvas and target: (B, C, ...). ``codes`` (B,): options to follow,
        or None for the arg-min (Algorithm 1). The generic path forms the proposals.
        """
        d = widen(deltas if group is None else deltas[group])  # (B, K, C, ...)
        with torch.autocast(device_type=d.device.type, enabled=False):
            losses = self.option_losses(widen(canvas).unsqueeze(1) + d, widen(target))
        choice = losses.argmin(dim=1) if codes is None else codes
        chosen = d[torch.arange(d.shape[0], device=d.device), choice]
        return losses, choice, chosen


class MSE(Likelihood):
    """Squared error in the normalised space (the paper's loss); the canvas holds normalised values."""

    name = "mse"

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], rank: int):
        super().__init__()
        shape = (1, len(mean)) + (1,) * rank
        self.register_buffer("mean", torch.tensor(mean).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(shape), persistent=False)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def to_data(self, canvas: torch.Tensor) -> torch.Tensor:
        return (canvas * self.std + self.mean).clamp(0.0, 1.0)

    def element_losses(self, proposals: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (proposals - target.unsqueeze(1)).pow(2)

    def option_losses(self, proposals: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return squared_error_losses(proposals, target)

    def select(self, deltas, canvas, target, codes=None, group=None, exact_size=True, reuse_deltas=False):
        # the fast path: no proposals tensor, float32 losses and arg-min (see vqdraw.losses)
        return select_option(deltas, target - canvas, codes, group, reuse_deltas=reuse_deltas,
                             exact_size=exact_size)


class Bernoulli(Likelihood):
    """Independent Bernoulli elements; the canvas holds logits."""

    name = "bernoulli"

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def to_data(self, canvas: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(canvas)

    def element_losses(self, proposals: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(
            proposals, target.unsqueeze(1).expand_as(proposals), reduction="none")


def make_likelihood(config: ModelConfig) -> Likelihood:
    """The likelihood named by ``config.likelihood``."""
    if config.likelihood == "bernoulli":
        return Bernoulli()
    return MSE(config.mean, config.std, config.rank)
