"""Stage-conditioned building blocks (paper §3.4).

Every block takes ``(x, stage)``; ``stage`` is the index within the segment (a Python int), so
all images in a batch are at the same stage, as they are in Algorithms 1 and 2.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class StageMask(nn.Module):
    """Multiply the channels by a learned per-stage vector: the paper's stage conditioning.

    For stage i and a layer with C channels there is a mask M[i] of length C, broadcast over
    the spatial dimensions. Initialised from N(0, 1) like the reference implementation.
    """

    def __init__(self, stages: int, channels: int):
        super().__init__()
        self.masks = nn.Parameter(torch.randn(stages, channels))

    def forward(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        return x * self.masks[stage].view(1, -1, 1, 1)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with channels/16 groups (at most 32, at least 1)."""
    return nn.GroupNorm(max(1, min(32, channels // 16)), channels)


class ConvUnit(nn.Module):
    """conv -> stage mask -> ReLU [-> GroupNorm]."""

    def __init__(self, conv: nn.Module, channels: int, stages: int, norm: bool):
        super().__init__()
        self.conv = conv
        self.mask = StageMask(stages, channels)
        self.norm = group_norm(channels) if norm else nn.Identity()

    def forward(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        return self.norm(torch.relu(self.mask(self.conv(x), stage)))


class ResidualBlock(nn.Module):
    """x + f(x) with f = [ReLU, GN, 3x3 conv, mask, ReLU, GN, 1x1 expand, mask, ReLU, GN, 1x1, mask]."""

    def __init__(self, channels: int, expand: int, stages: int, norm: bool):
        super().__init__()
        hidden = channels * expand
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.Conv2d(channels, hidden, 1),
                nn.Conv2d(hidden, channels, 1),
            ]
        )
        widths = [channels, channels, hidden]
        self.norms = nn.ModuleList(group_norm(c) if norm else nn.Identity() for c in widths)
        self.masks = nn.ModuleList(StageMask(stages, c.out_channels) for c in self.convs)

    def forward(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        h = x
        for norm, conv, mask in zip(self.norms, self.convs, self.masks):
            h = mask(conv(norm(torch.relu(h))), stage)
        return x + h
