"""The refinement network: (canvas, stage) -> K proposed deltas (paper §3.4).

    canvas (B, C, H, W)
      -> stride-2 convs (downsample) -> 3x3 convs -> residual blocks
      -> stride-2 transposed convs (upsample) -> 3x3 convs
      -> head conv with K*C channels                          (B, K*C, H, W)
      -> * output_scale, viewed as deltas                     (B, K, C, H, W)

One class, configured by :class:`~vqdraw.config.RefinerConfig`, builds the paper's MNIST,
SVHN, CIFAR-10 and CelebA refiners. A :class:`SegmentedRefiner` holds one of these per segment.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import ModelConfig, RefinerConfig
from .layers import ConvUnit, ResidualBlock


class Refiner(nn.Module):
    """Proposes K residual refinements of a canvas, conditioned on the stage within its segment."""

    def __init__(self, cfg: RefinerConfig, channels: int, options: int, stages: int):
        super().__init__()
        self.options = options
        self.channels = channels
        norm = cfg.group_norm
        k, p = cfg.down_kernel, cfg.down_kernel // 2
        units: list[nn.Module] = []
        c = channels
        for out in cfg.down:
            units.append(ConvUnit(nn.Conv2d(c, out, k, stride=2, padding=p), out, stages, norm))
            c = out
        for out in cfg.body:
            units.append(ConvUnit(nn.Conv2d(c, out, 3, padding=1), out, stages, norm))
            c = out
        units += [ResidualBlock(c, cfg.res_expand, stages, norm) for _ in range(cfg.res_blocks)]
        for out in cfg.up:
            units.append(ConvUnit(nn.ConvTranspose2d(c, out, 4, stride=2, padding=1), out, stages, norm))
            c = out
        for out in cfg.pre_head:
            units.append(ConvUnit(nn.Conv2d(c, out, 3, padding=1), out, stages, norm=False))
            c = out
        self.units = nn.ModuleList(units)

        def head() -> nn.Conv2d:
            return nn.Conv2d(c, options * channels, cfg.head_kernel, padding=cfg.head_kernel // 2)

        self.heads = nn.ModuleList([head() for _ in range(stages if cfg.head_per_stage else 1)])
        self.output_scale = nn.Parameter(torch.tensor(float(cfg.output_scale)))

    def forward(self, canvas: torch.Tensor, stage: int) -> torch.Tensor:
        """Deltas (B, K, C, H, W) for a canvas (B, C, H, W) at `stage` (index within the segment)."""
        h = canvas
        for unit in self.units:
            h = unit(h, stage)
        head = self.heads[stage if len(self.heads) > 1 else 0]
        out = head(h) * self.output_scale  # (B, K*C, H, W)
        b, _, height, width = out.shape
        return out.view(b, self.options, self.channels, height, width)


class SegmentedRefiner(nn.Module):
    """Separate refiner parameters for each segment of `segment` stages (paper §3.4, item 2).

    Stage i (0-based) is refined by segment i // segment at local stage i % segment. The first
    stage also adds a learned bias per option (K, C, H, W): at stage 0 the canvas is all zeros,
    so these biases are the first stage's K candidate images (as in the reference code).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, h, w = cfg.image_shape
        self.segment = cfg.segment
        per_segment = min(cfg.segment, cfg.stages)
        self.segments = nn.ModuleList(
            Refiner(cfg.refiner, c, cfg.options, per_segment) for _ in range(cfg.num_segments)
        )
        self.first_bias = nn.Parameter(torch.zeros(cfg.options, c, h, w))

    def forward(self, canvas: torch.Tensor, stage: int) -> torch.Tensor:
        """Proposals (B, K, C, H, W) = canvas + deltas for global stage index `stage`."""
        deltas = self.segments[stage // self.segment](canvas, stage % self.segment)
        proposals = canvas.unsqueeze(1) + deltas  # residual outputs
        if stage == 0:
            proposals = proposals + self.first_bias
        return proposals
