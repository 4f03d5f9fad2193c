"""Stage-conditioned building blocks (paper §3.4).

Every block takes ``(x, stage)``; ``stage`` is the index within the segment (a Python int), so
all images in a batch are at the same stage, as they are in Algorithms 1 and 2.

How a block is computed (the parameters and their meaning are those of the modules; only the
arithmetic is arranged to be cheap):

* A stage mask multiplies a convolution's output channels, so it is folded into that
  convolution's weights and bias: ``conv(x; W, b) * m == conv(x; W * m, b * m)``. The multiply
  touches the small weight tensor instead of the large activation, and its gradient reaches the
  mask through the folded weights. Equal to the straightforward order up to float rounding.
* Each block describes itself as a static *plan* (a tuple of kinds, strides, paddings, group
  counts) plus, for a given stage, a tuple of tensors (folded weights, norm affines).
  :func:`run_plan` interprets the pair. It is a pure function of tensors, so ``torch.compile``
  builds one graph for every segment and stage of a refiner.
* Activations are kept channels-last (NHWC in memory) when ``channels_last`` is set: oneDNN's
  CPU convolutions run two to three times faster on that layout than on NCHW.
* On the CPU a transposed convolution's weight gradient is computed as the weight gradient of
  its adjoint, the strided convolution ``conv2d(grad_out, W)`` with input ``grad_out`` and output
  gradient ``x`` (:class:`_ConvTranspose2dCPU`): oneDNN's transposed-convolution weight
  gradient is about three times slower than that, for the same numbers.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

Plan = tuple  # a tuple of plan entries; each entry is a tuple of ints/strings/floats


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


def fold_scale(conv: nn.Module, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of `conv` with its output channels multiplied by `scale` (a vector, or a
    0-dim tensor for one scale for all channels)."""
    w, b = conv.weight, conv.bias
    if scale.dim() == 0:
        return w * scale, None if b is None else b * scale
    shape = [1] * w.dim()
    shape[1 if isinstance(conv, nn.ConvTranspose2d) else 0] = -1  # ConvTranspose2d: (in, out, kh, kw)
    return w * scale.view(shape), None if b is None else b * scale


def _conv_entry(conv: nn.Module, norm: nn.Module | None, relu: bool) -> tuple:
    if getattr(conv, "padding_mode", "zeros") != "zeros" or conv.groups != 1 or conv.dilation != (1, 1):
        raise ValueError("run_plan handles zero-padded, ungrouped, undilated convolutions only")
    if conv.stride[0] != conv.stride[1] or conv.padding[0] != conv.padding[1]:
        raise ValueError("run_plan handles square strides and paddings only")
    kind = "convT" if isinstance(conv, nn.ConvTranspose2d) else "conv"
    out_pad = conv.output_padding[0] if kind == "convT" else 0
    groups, eps = (norm.num_groups, float(norm.eps)) if isinstance(norm, nn.GroupNorm) else (0, 0.0)
    return (kind, conv.stride[0], conv.padding[0], out_pad, bool(relu), groups, eps, conv.bias is not None)


def _group_norm_params(norm: nn.Module) -> list:
    return [norm.weight, norm.bias] if isinstance(norm, nn.GroupNorm) else []


class _ConvTranspose2dCPU(torch.autograd.Function):
    """``F.conv_transpose2d`` with a faster CPU backward (see the module docstring).

    convT(x; W) is the adjoint of y -> conv2d(y; W) (same stride and padding), so
    grad_x = conv2d(grad; W) and grad_W = the weight gradient of conv2d with input ``grad`` and
    output gradient ``x``.
    """

    @staticmethod
    def forward(ctx, x, w, b, stride: int, padding: int, output_padding: int):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, b is not None)
        return F.conv_transpose2d(x, w, b, stride, padding, output_padding)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        stride, padding, has_bias = ctx.conf
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, w, None, stride, padding)
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                x, grad, w, None, [stride, stride], [padding, padding], [1, 1], False, [0, 0], 1,
                [False, True, False])[1]
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None


def conv_transpose2d(x, w, b, stride: int, padding: int, output_padding: int = 0) -> torch.Tensor:
    """``F.conv_transpose2d`` (square stride/padding); on the CPU with the faster backward."""
    if (x.device.type == "cpu" and torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and not torch.is_autocast_enabled("cpu")):
        return _ConvTranspose2dCPU.apply(x, w, b, stride, padding, output_padding)
    return F.conv_transpose2d(x, w, b, stride, padding, output_padding)


def run_plan(x: torch.Tensor, plan: Plan, params: tuple, channels_last: bool = False) -> torch.Tensor:
    """Evaluate a plan (see the module docstring) on `x`; `params` are consumed in order.

    Entries: ``("conv"|"convT", stride, padding, output_padding, relu, gn_groups, gn_eps, bias)``
    = convolution [-> ReLU] [-> GroupNorm]; ``("pre", gn_groups, gn_eps)`` = ReLU [-> GroupNorm]
    (not in place); ``("res", inner_plan)`` = x + run_plan(x, inner_plan).
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    p = 0
    x = x.contiguous(memory_format=fmt)
    for entry in plan:
        if entry[0] == "res":
            n = count_params(entry[1])
            x = x + run_plan(x, entry[1], params[p : p + n], channels_last)
            p += n
            continue
        if entry[0] == "pre":
            _, groups, eps = entry
            x = torch.relu(x)
            if groups:
                x = F.group_norm(x, groups, params[p], params[p + 1], eps)
                p += 2
            continue
        kind, stride, pad, out_pad, relu, groups, eps, has_bias = entry
        w = params[p]
        b = params[p + 1] if has_bias else None
        p += 2 if has_bias else 1
        if kind == "conv":
            x = F.conv2d(x, w, b, stride, pad)
        else:
            x = conv_transpose2d(x, w, b, stride, pad, out_pad)
        if channels_last:
            x = x.contiguous(memory_format=fmt)  # a 1-channel input yields NCHW; keep NHWC
        if relu:
            x = torch.relu_(x)  # in place: a convolution's backward needs its input, not its output
        if groups:
            x = F.group_norm(x, groups, params[p], params[p + 1], eps)
            p += 2
    return x


def count_params(plan: Plan) -> int:
    """How many tensors `plan` consumes."""
    n = 0
    for e in plan:
        if e[0] == "res":
            n += count_params(e[1])
        elif e[0] == "pre":
            n += 2 if e[1] else 0
        else:
            n += (2 if e[7] else 1) + (2 if e[5] else 0)
    return n


class ConvUnit(nn.Module):
    """conv -> stage mask -> ReLU [-> GroupNorm]."""

    def __init__(self, conv: nn.Module, channels: int, stages: int, norm: bool):
        super().__init__()
        self.conv = conv
        self.mask = StageMask(stages, channels)
        self.norm = group_norm(channels) if norm else nn.Identity()

    def plan(self) -> Plan:
        return (_conv_entry(self.conv, self.norm, relu=True),)

    def stage_params(self, stage: int) -> list:
        w, b = fold_scale(self.conv, self.mask.masks[stage])
        return ([w] if b is None else [w, b]) + _group_norm_params(self.norm)

    def forward(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        return run_plan(x, self.plan(), tuple(self.stage_params(stage)))


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

    def plan(self) -> Plan:
        inner: list = []
        for norm, conv in zip(self.norms, self.convs):
            groups, eps = (norm.num_groups, float(norm.eps)) if isinstance(norm, nn.GroupNorm) else (0, 0.0)
            inner.append(("pre", groups, eps))
            inner.append(_conv_entry(conv, None, relu=False))
        return (("res", tuple(inner)),)

    def stage_params(self, stage: int) -> list:
        out: list = []
        for norm, conv, mask in zip(self.norms, self.convs, self.masks):
            out += _group_norm_params(norm)
            w, b = fold_scale(conv, mask.masks[stage])
            out += [w, b] if b is not None else [w]
        return out

    def forward(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        return run_plan(x, self.plan(), tuple(self.stage_params(stage)))
