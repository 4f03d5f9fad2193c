"""The refinement network: (canvas, stage) -> K proposed deltas (paper §3.4).

    canvas (B, C, *S)                       S: 1-3 spatial sizes (L | H, W | D, H, W)
      -> stride-2 convs (downsample) -> 3x3 convs -> residual blocks
      -> stride-2 transposed convs (upsample) -> 3x3 convs
      -> head conv with K*C channels, * output_scale          (B, K*C, *S)
      -> viewed as deltas                                      (B, K, C, *S)

One class, configured by :class:`~vqdraw.core.config.RefinerConfig`, builds the paper's MNIST, SVHN,
CIFAR-10 and CelebA refiners, and their 1-D and 3-D counterparts (Conv1d / Conv3d by the data's
rank). A :class:`SegmentedRefiner` holds one of these per segment.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig, RefinerConfig
from .layers import ConvUnit, ResidualBlock, channels_last_format, conv_classes, masked_conv


class Refiner(nn.Module):
    """Proposes K residual refinements of a canvas, conditioned on the stage within its segment.

    ``conditioned=False`` (the paper's "no stage conditioning" ablation): one mask row and one
    head serve every stage.
    """

    def __init__(self, cfg: RefinerConfig, channels: int, options: int, stages: int, rank: int = 2,
                 conditioned: bool = True, in_channels: int | None = None):
        """``channels``: of the canvas and of each delta; ``in_channels``: of what the first conv
        reads, if not the canvas (``RefinerConfig.softmax_input``)."""
        super().__init__()
        self.options = options
        self.channels = channels
        self.conditioned = conditioned
        stages = stages if conditioned else 1
        conv, conv_t = conv_classes(rank)
        norm, groups = cfg.group_norm, cfg.groups
        k, p = cfg.down_kernel, cfg.down_kernel // 2
        units: list[nn.Module] = []
        c = channels if in_channels is None else in_channels
        for out in cfg.down:
            units.append(ConvUnit(conv(c, out, k, stride=2, padding=p), out, stages, norm, groups=groups(out),
                                  masked=cfg.mask_down))
            c = out
        for out in cfg.body:
            units.append(ConvUnit(conv(c, out, 3, padding=1), out, stages, norm, groups=groups(out),
                                  activate=not cfg.raw_body))
            c = out
        units += [ResidualBlock(c, cfg.res_expand, stages, norm, rank, groups) for _ in range(cfg.res_blocks)]
        self.up_start, self.levels = len(units), len(cfg.up)
        level_channels = [c]  # channels at each coarse level: lowest resolution, then after each up
        for out in cfg.up:
            units.append(ConvUnit(conv_t(c, out, 4, stride=2, padding=1), out, stages, norm, groups=groups(out)))
            c = out
            level_channels.append(c)
        for out in cfg.pre_head:
            units.append(ConvUnit(conv(c, out, 3, padding=1), out, stages, norm=False))
            c = out
        self.units = nn.ModuleList(units)

        def head() -> nn.Module:
            return conv(c, options * channels, cfg.head_kernel, padding=cfg.head_kernel // 2)

        self.heads = nn.ModuleList([head() for _ in range(stages if cfg.head_per_stage else 1)])
        if cfg.progressive:  # one head per coarse level (docs/progressive.md); none when off
            self.coarse_heads = nn.ModuleList(
                conv(ch, options * channels, 3, padding=1) for ch in level_channels[:-1])
        self.output_scale = nn.Parameter(torch.tensor(float(cfg.output_scale)))
        self.rank = rank
        self.set_channels_last(True)

    def set_channels_last(self, on: bool) -> None:
        """Keep activations channels-last (faster CPU convolutions; same results up to rounding)."""
        self.memory_format = channels_last_format(self.rank) if on else torch.contiguous_format
        for unit in self.units:
            unit.memory_format = self.memory_format

    def forward(self, canvas: torch.Tensor, stage: int, level: int | None = None) -> torch.Tensor:
        """Deltas (B, K, C, *S) for a canvas (B, C, *S) at `stage` (index within the segment).

        Channels-last, the result is a view of a (B, *S, K, C) tensor in memory. A progressive
        refiner's `level` below ``len(up)`` stops after that many upsampling layers: a coarse
        head proposes deltas at that resolution, upsampled to the canvas's (docs/progressive.md).
        """
        stage = stage if self.conditioned else 0
        h = canvas.contiguous(memory_format=self.memory_format)
        if level is not None and level < self.levels:
            for unit in self.units[: self.up_start + level]:
                h = unit(h, stage)
            out = masked_conv(self.coarse_heads[level], h, self.output_scale, self.memory_format)
            mode = ("linear", "bilinear", "trilinear")[self.rank - 1]
            out = F.interpolate(out, size=canvas.shape[2:], mode=mode, align_corners=False)
            out = out.contiguous(memory_format=self.memory_format)
            return out.unflatten(1, (self.options, self.channels))
        for unit in self.units:
            h = unit(h, stage)
        head = self.heads[stage if len(self.heads) > 1 else 0]
        out = masked_conv(head, h, self.output_scale, self.memory_format)  # head(h) * output_scale
        return out.unflatten(1, (self.options, self.channels))  # (B, K*C, *S) -> (B, K, C, *S)


class TextRefiner(nn.Module):
    """The paper author's character refiner (his TextRefiner in the official release), for
    sequences (B, C, L); ``RefinerConfig.dilations`` selects it:

        canvas -> 1x1 conv to W channels -> ReLU -> + position embedding (W, L)
          -> one residual block per dilation (LayerNorm; dilated 3-wide conv; 1x1 expand; 1x1)
          -> ReLU -> LayerNorm -> 1x1 conv -> ReLU -> 1x1 head with K*C channels, * output_scale

    W = ``body[0]``; the hidden 1x1 width is ``pre_head[0]`` (default W).
    """

    def __init__(self, cfg: RefinerConfig, in_channels: int, channels: int, options: int, stages: int,
                 length: int, conditioned: bool = True):
        super().__init__()
        self.options, self.channels, self.conditioned = options, channels, conditioned
        stages = stages if conditioned else 1
        width = cfg.body[0]
        hidden = cfg.pre_head[0] if cfg.pre_head else width
        self.embed = nn.Conv1d(in_channels, width, 1)
        self.position = nn.Parameter(torch.randn(1, width, length))
        self.blocks = nn.ModuleList(
            ResidualBlock(width, cfg.res_expand, stages, norm=True, rank=1, dilation=d, layer_norm=(length,))
            for d in cfg.dilations)
        self.norm = nn.LayerNorm((width, length))
        self.hidden = nn.Conv1d(width, hidden, 1)
        self.head = nn.Conv1d(hidden, options * channels, cfg.head_kernel, padding=cfg.head_kernel // 2)
        self.output_scale = nn.Parameter(torch.tensor(float(cfg.output_scale)))

    def set_channels_last(self, on: bool) -> None:
        """Sequences have no channels-last layout: nothing to do."""

    def forward(self, canvas: torch.Tensor, stage: int, level: int | None = None) -> torch.Tensor:
        stage = stage if self.conditioned else 0
        h = torch.relu(self.embed(canvas)) + self.position
        for block in self.blocks:
            h = block(h, stage)
        h = torch.relu(self.hidden(self.norm(torch.relu(h))))
        out = self.head(h) * self.output_scale
        return out.unflatten(1, (self.options, self.channels))  # (B, K*C, L) -> (B, K, C, L)


class SegmentedRefiner(nn.Module):
    """Separate refiner parameters for each segment of `segment` stages (paper §3.4, item 2).

    Stage i (0-based) is refined by segment i // segment at local stage i % segment. The first
    stage also adds a learned bias per option (K, C, *S): at stage 0 the canvas is all zeros,
    so these biases are the first stage's K candidates (as in the reference code).

    ``residual`` is False for the paper's "no residual outputs" ablation: a stage's proposals are
    the deltas themselves (the canvas is replaced, not refined).
    """

    def __init__(self, cfg: ModelConfig, canvas_channels: int | None = None, read=None, read_channels: int = 0):
        """``read``: a map the refiner applies to the canvas first (giving ``read_channels``
        channels), e.g. the categorical likelihood's softmax input; None: the canvas itself."""
        super().__init__()
        self.segment = cfg.segment
        self.residual = cfg.residual
        per_segment = min(cfg.segment, cfg.stages)
        # the canvas may hold more channels than the data (likelihood.canvas_channels)
        channels = cfg.data_shape[0] if canvas_channels is None else canvas_channels
        self._read = read
        if cfg.refiner.dilations:
            def make() -> nn.Module:
                return TextRefiner(cfg.refiner, read_channels if read else channels, channels, cfg.options,
                                   per_segment, cfg.data_shape[1], conditioned=cfg.stage_conditioning)
        else:
            def make() -> nn.Module:
                return Refiner(cfg.refiner, channels, cfg.options, per_segment, cfg.rank,
                               conditioned=cfg.stage_conditioning, in_channels=read_channels if read else None)
        self.segments = nn.ModuleList(make() for _ in range(cfg.num_segments))
        self.first_bias = nn.Parameter(torch.zeros(cfg.options, channels, *cfg.data_shape[1:]))
        self.progressive = cfg.refiner.progressive
        self.levels = len(cfg.refiner.up)

    def level(self, stage: int) -> int | None:
        """The resolution level of global stage `stage` in a progressive refiner (0: the lowest,
        ``len(up)``: full): ``stage // progressive``, at most full. None when not progressive."""
        if not self.progressive:
            return None
        return min(self.levels, stage // self.progressive)

    def set_speed(self, *, channels_last: bool | None = None, compile: bool | None = None,
                  compile_mode: str | None = None) -> None:
        """Evaluation options (no effect on parameters or, beyond float rounding, on results):
        channels-last activations, and ``torch.compile`` of each segment's network (one graph
        per stage index: the stage is a Python int)."""
        for seg in self.segments:
            if channels_last is not None:
                seg.set_channels_last(bool(channels_last))
            if compile:
                _allow_recompiles(len(self.segments) * self.segment * 4)
                seg.compile(mode=compile_mode)
            elif compile is not None:
                seg._compiled_call_impl = None  # back to eager (nn.Module.compile's own slot)

    def deltas(self, canvas: torch.Tensor, stage: int) -> torch.Tensor:
        """Proposals minus the canvas, (B, K, C, *S), for global stage index `stage`: the
        refiner's output, plus the learned first-stage candidates at stage 0."""
        level = self.level(stage)
        x = canvas if self._read is None else self._read(canvas)
        if level is None:
            d = self.segments[stage // self.segment](x, stage % self.segment)
        else:
            d = self.segments[stage // self.segment](x, stage % self.segment, level)
        if stage == 0:
            d = d + self.first_bias
        return d

    def forward(self, canvas: torch.Tensor, stage: int) -> torch.Tensor:
        """Proposals (B, K, C, *S) = canvas + deltas for global stage index `stage` (the deltas
        alone without residual outputs)."""
        if not self.residual:
            return self.deltas(canvas, stage)
        return canvas.unsqueeze(1) + self.deltas(canvas, stage)  # residual outputs


def make_refiner(config: ModelConfig, likelihood) -> SegmentedRefiner:
    """The refiner of a model with this config and likelihood: the likelihood says how many
    channels the canvas holds and whether the refiner reads it through a softmax first."""
    c = config.data_shape[0]
    read = likelihood.softmax_input if config.refiner.softmax_input else None
    return SegmentedRefiner(config, likelihood.canvas_channels(c), read, c * config.categories)


def _allow_recompiles(n: int) -> None:
    """Each stage index (and batch size) is its own compiled graph: allow that many."""
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), n))
