"""Stage-conditioned building blocks (paper §3.4), for data of rank 1, 2 or 3.

Every block takes ``(x, stage)``; ``stage`` is the index within the segment (a Python int), so
all items in a batch are at the same stage, as they are in Algorithms 1 and 2. The same classes
build Conv1d, Conv2d or Conv3d networks: :func:`conv_classes` picks them by rank.

Two pieces of arithmetic are arranged to be cheap; neither changes a parameter or, beyond float
rounding, a result:

* A stage mask multiplies a convolution's output channels, so it is folded into that
  convolution's weights and bias: ``conv(x; W, b) * m == conv(x; W * m, b * m)``
  (:func:`masked_conv`). The multiply touches the small weight tensor instead of the large
  activation, and its gradient reaches the mask through the folded weights.
* Activations may be kept channels-last (``memory_format``): oneDNN's CPU convolutions are faster on that
  layout (benchmarks/README.md). On the CPU a transposed convolution's weight gradient is
  computed as the weight gradient of its adjoint, a strided convolution
  (:class:`_ConvTransposeCPU`): oneDNN's own is slower, for the same numbers.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_CONV = {1: (nn.Conv1d, nn.ConvTranspose1d), 2: (nn.Conv2d, nn.ConvTranspose2d), 3: (nn.Conv3d, nn.ConvTranspose3d)}
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def conv_classes(rank: int) -> tuple[type, type]:
    """(ConvNd, ConvTransposeNd) for data with `rank` spatial dimensions."""
    return _CONV[rank]


def channels_last_format(rank: int) -> torch.memory_format:
    """The channels-last memory format for activations of this rank (none for sequences)."""
    return {2: torch.channels_last, 3: torch.channels_last_3d}.get(rank, torch.contiguous_format)


class StageMask(nn.Module):
    """Multiply the channels by a learned per-stage vector: the paper's stage conditioning.

    For stage i and a layer with C channels there is a mask M[i] of length C, broadcast over
    the spatial dimensions. Initialised from N(0, 1) like the reference implementation.
    """

    def __init__(self, stages: int, channels: int):
        super().__init__()
        self.masks = nn.Parameter(torch.randn(stages, channels))

    def forward(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        return x * self.masks[stage].view(1, -1, *([1] * (x.dim() - 2)))


def group_norm(channels: int, groups: int | None = None) -> nn.GroupNorm:
    """GroupNorm over `channels` with `groups` groups (None: channels/16, at most 32, at least 1)."""
    return nn.GroupNorm(groups or max(1, min(32, channels // 16)), channels)


def fold_scale(conv: nn.Module, scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of `conv` with its output channels multiplied by `scale` (a vector, or a
    0-dim tensor for one scale for all channels; None: unscaled)."""
    w, b = conv.weight, conv.bias
    if scale is None:
        return w, b
    if scale.dim() == 0:
        return w * scale, None if b is None else b * scale
    shape = [1] * w.dim()
    shape[1 if isinstance(conv, _TRANSPOSED) else 0] = -1  # transposed weights: (in, out, k...)
    return w * scale.view(shape), None if b is None else b * scale


def masked_conv(conv: nn.Module, x: torch.Tensor, scale: torch.Tensor | None,
                memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """``conv(x) * scale`` (a stage mask, or the output scale) as one convolution with the scale
    folded into the weights; the result in `memory_format`."""
    w, b = fold_scale(conv, scale)
    rank = x.dim() - 2
    if isinstance(conv, _TRANSPOSED):
        y = conv_transpose(x, w, b, conv.stride, conv.padding, conv.output_padding)
    else:
        y = _CONV_FN[rank](x, w, b, conv.stride, conv.padding, conv.dilation)
    return y.contiguous(memory_format=memory_format)  # a 1-channel input yields NCHW: keep NHWC


class _ConvTransposeCPU(torch.autograd.Function):
    """``F.conv_transposeNd`` with a faster CPU backward (see the module docstring).

    convT(x; W) is the adjoint of y -> conv(y; W) (same stride and padding), so
    grad_x = conv(grad; W) and grad_W = the weight gradient of conv with input ``grad`` and
    output gradient ``x``.
    """

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, output_padding):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, b is not None)
        return _CONV_T_FN[x.dim() - 2](x, w, b, stride, padding, output_padding)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        stride, padding, has_bias = ctx.conf
        rank = x.dim() - 2
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _CONV_FN[rank](grad, w, None, stride, padding)
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                x, grad, w, None, list(stride), list(padding), [1] * rank, False, [0] * rank, 1,
                [False, True, False])[1]
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum([0, *range(2, grad.dim())])
        return grad_x, grad_w, grad_b, None, None, None


def conv_transpose(x, w, b, stride, padding, output_padding=0) -> torch.Tensor:
    """``F.conv_transposeNd``; on the CPU under autograd with the faster backward."""
    rank = x.dim() - 2
    stride, padding, output_padding = (_tuple(v, rank) for v in (stride, padding, output_padding))
    if (x.device.type == "cpu" and torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and not torch.is_autocast_enabled("cpu")):
        return _ConvTransposeCPU.apply(x, w, b, stride, padding, output_padding)
    return _CONV_T_FN[rank](x, w, b, stride, padding, output_padding)


def _tuple(v, rank: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * rank


class ConvUnit(nn.Module):
    """conv [-> stage mask] [-> ReLU [-> GroupNorm]].

    ``masked=False``: no stage mask (no ``mask`` tensors). ``activate=False``: the masked
    convolution's output goes on raw (no ReLU, no GroupNorm, no ``norm`` tensors).
    ``groups``: GroupNorm's group count (None: channels/16).
    """

    def __init__(self, conv: nn.Module, channels: int, stages: int, norm: bool, *,
                 groups: int | None = None, masked: bool = True, activate: bool = True):
        super().__init__()
        self.conv = conv
        self.mask = StageMask(stages, channels) if masked else None
        self.activate = activate
        self.norm = group_norm(channels, groups) if norm and activate else nn.Identity()
        self.memory_format = torch.contiguous_format  # of the activations (set by the refiner)

    def forward(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        mask = None if self.mask is None else self.mask.masks[stage]
        x = masked_conv(self.conv, x, mask, self.memory_format)  # conv, mask
        if not self.activate:
            return x
        x = torch.relu_(x)  # in place: a convolution's backward needs its input, not its output
        return self.norm(x)


class ResidualBlock(nn.Module):
    """x + f(x) with f = [ReLU, GN, 3x3 conv, mask, ReLU, GN, 1x1 expand, mask, ReLU, GN, 1x1, mask].

    The author's text refiner's block: ``dilation`` for the 3-wide conv and ``layer_norm`` (the
    spatial size) for LayerNorm over (channels, *size) in place of GroupNorm.
    """

    def __init__(self, channels: int, expand: int, stages: int, norm: bool, rank: int = 2, groups=None,
                 dilation: int = 1, layer_norm: tuple[int, ...] | None = None):
        """``groups(channels) -> GroupNorm groups`` (None: channels/16)."""
        super().__init__()
        conv, _ = conv_classes(rank)
        hidden = channels * expand
        self.convs = nn.ModuleList([
            conv(channels, channels, 3, padding=dilation, dilation=dilation),
            conv(channels, hidden, 1),
            conv(hidden, channels, 1),
        ])
        widths = [channels, channels, hidden]

        def make_norm(c: int) -> nn.Module:
            if layer_norm is not None:
                return nn.LayerNorm((c, *layer_norm))
            return group_norm(c, groups(c) if groups else None) if norm else nn.Identity()

        self.norms = nn.ModuleList(make_norm(c) for c in widths)
        self.masks = nn.ModuleList(StageMask(stages, c.out_channels) for c in self.convs)
        self.memory_format = torch.contiguous_format

    def forward(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        h = x
        for norm, conv, mask in zip(self.norms, self.convs, self.masks):
            h = norm(torch.relu(h))  # not in place: h may be x, which the sum below needs
            h = masked_conv(conv, h, mask.masks[stage], self.memory_format)  # conv, mask
        return x + h
