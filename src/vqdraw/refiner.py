"""The refinement network: (canvas, stage) -> K proposed deltas (paper §3.4).

    canvas (B, C, H, W)
      -> stride-2 convs (downsample) -> 3x3 convs -> residual blocks
      -> stride-2 transposed convs (upsample) -> 3x3 convs
      -> head conv with K*C channels                          (B, K*C, H, W)
      -> * output_scale, viewed as deltas                     (B, K, C, H, W)

One class, configured by :class:`~vqdraw.config.RefinerConfig`, builds the paper's MNIST,
SVHN, CIFAR-10 and CelebA refiners. A :class:`SegmentedRefiner` holds one of these per segment.

The network is evaluated by :func:`vqdraw.layers.run_plan` from a static plan and the stage's
parameters (stage masks and ``output_scale`` folded into the convolution weights), channels-last
by default, optionally through ``torch.compile`` (:meth:`SegmentedRefiner.set_speed`). None of
this changes a parameter, a state-dict key or a result beyond float rounding.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import ModelConfig, RefinerConfig
from .layers import ConvUnit, ResidualBlock, _conv_entry, fold_scale, run_plan

_COMPILED: dict = {}


def compiled_run_plan(mode: str | None = None):
    """One ``torch.compile``-d :func:`run_plan`, shared by every refiner (the plan is a constant,
    the weights are inputs, so all segments and stages of a model share its graphs)."""
    if mode not in _COMPILED:
        _COMPILED[mode] = torch.compile(run_plan, mode=mode)  # batch sizes vary: dynamic after a recompile
    return _COMPILED[mode]


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
        self.plan = tuple(e for unit in self.units for e in unit.plan()) + (
            _conv_entry(self.heads[0], None, relu=False),
        )
        self.channels_last = True
        self.run_plan = run_plan

    def stage_params(self, stage: int) -> tuple:
        """The tensors :func:`run_plan` consumes at `stage`: masks and output_scale folded in."""
        params: list = []
        for unit in self.units:
            params += unit.stage_params(stage)
        head = self.heads[stage if len(self.heads) > 1 else 0]
        w, b = fold_scale(head, self.output_scale)  # head(h) * output_scale, folded
        params += [w, b]
        return tuple(params)

    def forward(self, canvas: torch.Tensor, stage: int) -> torch.Tensor:
        """Deltas (B, K, C, H, W) for a canvas (B, C, H, W) at `stage` (index within the segment).

        With ``channels_last`` the result is a view of an NHWC tensor (memory order B, H, W, K, C).
        """
        out = self.run_plan(canvas, self.plan, self.stage_params(stage), self.channels_last)
        return out.unflatten(1, (self.options, self.channels))  # (B, K*C, H, W) -> (B, K, C, H, W)


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

    def set_speed(self, *, channels_last: bool | None = None, compile: bool | None = None,
                  compile_mode: str | None = None) -> None:
        """Evaluation options (no effect on parameters or, beyond float rounding, on results):
        NHWC activations, and ``torch.compile`` of the per-stage network."""
        for seg in self.segments:
            if channels_last is not None:
                seg.channels_last = bool(channels_last)
            if compile is not None:
                seg.run_plan = compiled_run_plan(compile_mode) if compile else run_plan

    def deltas(self, canvas: torch.Tensor, stage: int) -> torch.Tensor:
        """Proposals minus the canvas, (B, K, C, H, W), for global stage index `stage`: the
        refiner's output, plus the learned first-stage candidates at stage 0."""
        d = self.segments[stage // self.segment](canvas, stage % self.segment)
        if stage == 0:
            d = d + self.first_bias
        return d

    def forward(self, canvas: torch.Tensor, stage: int) -> torch.Tensor:
        """Proposals (B, K, C, H, W) = canvas + deltas for global stage index `stage`."""
        return canvas.unsqueeze(1) + self.deltas(canvas, stage)  # residual outputs
