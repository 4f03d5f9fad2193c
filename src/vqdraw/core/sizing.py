"""The size of a model before it is built, measured on PyTorch's meta device (shapes, no memory),
so the figures follow the code that builds and runs the model instead of arithmetic that mirrors it.

    estimate_size(cfg)          -> {"parameters"}: exact, from the model built on the meta device
    estimate_size(cfg, batch)   -> also "activations" (float32 elements of one stage's step for
                                   `batch` inputs, from a meta forward) and "bytes"
    check_size(cfg[, batch])    -> None, or ConfigError past MAX_PARAMETERS / MAX_ACTIVATION_BYTES
    count_parameters(build)     -> parameters of any module ``build()`` makes (a prior, a distilled
                                   encoder), built on the meta device the same way
    check_parameters(what, P)   -> None, or ConfigError past a limit (MAX_PARAMETERS by default)

A model's parameters are affine in the number of stages per segment (a mask row and maybe a head
per stage) and in the number of residual blocks, each term alike, and every segment is built
alike; so a config with thousands of stages or blocks is measured on at most four small builds
of one segment and the count extrapolated exactly (tests compare it with full builds).

Building on the meta device costs milliseconds. The meta *forward* makes PyTorch import its
compiler stack once per process (about a second), so activations are measured only when a batch
size is at stake (the start of training); building or loading a model checks parameters alone.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch.overrides import TorchFunctionMode

from ..errors import ConfigError
from .config import ModelConfig
from .likelihood import make_likelihood
from .refiner import make_refiner
from .stageloop import Greedy, step

MAX_PARAMETERS = 2**28
"""At most this many parameters (1 GiB of float32 weights)."""
MAX_ACTIVATION_BYTES = 2**32
"""At most 4 GiB of float32 activations in one stage's step for one batch."""


def estimate_size(cfg: ModelConfig, batch: int | None = None) -> dict:
    """``{"parameters": P}``, and with ``batch``: ``"activations": A`` (one stage's step for
    ``batch`` inputs) and ``"bytes": 4 * (P + A)``."""
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    out = {"parameters": _parameters(cfg)}
    if batch is not None:
        out["activations"] = _activations(cfg, int(batch))
        out["bytes"] = 4 * (out["parameters"] + out["activations"])
    return out


def check_size(cfg: ModelConfig, batch: int | None = None) -> None:
    """Refuse (one-line ConfigError) a config of more than ``MAX_PARAMETERS`` parameters, or, with
    ``batch``, whose one-stage activations for that batch exceed ``MAX_ACTIVATION_BYTES``."""
    params = _parameters(cfg)
    if params > MAX_PARAMETERS:
        raise ConfigError(f"model config describes {params:,} parameters ({4 * params / 2**30:.1f} GiB); "
                          f"the limit is {MAX_PARAMETERS:,}")
    if batch is not None:
        acts = 4 * _activations(cfg, int(batch))
        if acts > MAX_ACTIVATION_BYTES:
            raise ConfigError(f"model config needs {acts / 2**30:.1f} GiB of activations per stage for a batch "
                              f"of {batch}; the limit is {MAX_ACTIVATION_BYTES / 2**30:g} GiB")


def count_parameters(build) -> int:
    """Parameters of the module ``build()`` returns, built on the meta device (shapes, no memory):
    the way every other network (a prior, a distilled encoder) is measured before it is built."""
    with torch.device("meta"), _ShapesOnly():
        module = build()
    return sum(p.numel() for p in module.parameters())


def check_parameters(what: str, params: int, limit: int = MAX_PARAMETERS) -> None:
    """Refuse (one-line ConfigError) ``params`` parameters of ``what`` past ``limit``."""
    if params > limit:
        raise ConfigError(f"{what} config describes {params:,} parameters ({4 * params / 2**30:.1f} GiB); "
                          f"the limit is {limit:,}")


def _one_segment(cfg: ModelConfig, stages: int, res_blocks: int) -> ModelConfig:
    """``cfg`` cut to a single segment of ``stages`` stages and ``res_blocks`` residual blocks."""
    return replace(cfg, stages=stages, segment=stages, refiner=replace(cfg.refiner, res_blocks=res_blocks))


def _build(cfg: ModelConfig):
    """The refiner and likelihood of ``cfg`` on the meta device (no memory, no values)."""
    with torch.device("meta"), _ShapesOnly():
        likelihood = make_likelihood(cfg)
        return make_refiner(cfg, likelihood), likelihood


def _parameters(cfg: ModelConfig) -> int:
    s, r = min(cfg.segment, cfg.stages), cfg.refiner.res_blocks

    def count(stages: int, blocks: int) -> tuple[int, int]:
        """(one segment's parameters, everything else's) for a one-segment build."""
        refiner, likelihood = _build(_one_segment(cfg, stages, blocks))
        segment = sum(p.numel() for p in refiner.segments[0].parameters())
        total = sum(p.numel() for p in refiner.parameters()) + sum(p.numel() for p in likelihood.parameters())
        return segment, total - segment

    if s <= 2 and r <= 1:
        segment, rest = count(s, r)
    else:  # segment(s, r) = a + b*s + r*(c + d*s): four corners give it exactly
        (p10, rest), (p20, _), (p11, _), (p21, _) = count(1, 0), count(2, 0), count(1, 1), count(2, 1)
        b, d = p20 - p10, (p21 - p11) - (p20 - p10)
        a, c = p10 - b, (p11 - p10) - d
        segment = a + b * s + r * (c + d * s)
    return segment * cfg.num_segments + rest


def _activations(cfg: ModelConfig, batch: int) -> int:
    """Float32 elements made by one stage's greedy step (refiner, proposals, losses, choice) for
    ``batch`` inputs: the same at every stage but the first, and affine in the residual blocks.
    A progressive refiner is measured at full resolution, its largest stage."""
    cfg = replace(cfg, refiner=replace(cfg.refiner, progressive=0))
    r = cfg.refiner.res_blocks
    if r <= 1:
        return _measure_step(_one_segment(cfg, 2, r), batch)
    a0, a1 = _measure_step(_one_segment(cfg, 2, 0), batch), _measure_step(_one_segment(cfg, 2, 1), batch)
    return a0 + r * (a1 - a0)


def _measure_step(cfg: ModelConfig, batch: int) -> int:
    refiner, likelihood = _build(cfg)
    with torch.device("meta"), torch.no_grad():
        target = likelihood.target(torch.zeros(batch, *cfg.data_shape))
        canvas = torch.zeros(batch, likelihood.canvas_channels(cfg.data_shape[0]), *cfg.data_shape[1:])
        with _Count() as counted:
            step(refiner, likelihood, 1, canvas, Greedy(), target=target)
    return canvas.numel() + counted.elements


class _ShapesOnly(TorchFunctionMode):
    """While a model is built on the meta device: random draws and the elementwise arithmetic of
    initialisers give empty tensors of the right shape. (PyTorch computes those on the meta device
    in Python, importing its compiler stack, about a second; the values do not exist anyway.)
    Any other operation runs as usual, so an unlisted one costs time, never a wrong count."""

    RANDOM = {torch.randn, torch.rand}
    ELEMENTWISE = {torch.Tensor.__truediv__, torch.Tensor.__rtruediv__, torch.Tensor.__mul__,
                   torch.Tensor.__rmul__, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__sub__,
                   torch.Tensor.__rsub__, torch.Tensor.log, torch.Tensor.exp, torch.Tensor.sqrt,
                   torch.Tensor.div, torch.Tensor.mul, torch.log, torch.exp, torch.sqrt, torch.div, torch.mul}
    IN_PLACE = {torch.Tensor.normal_, torch.nn.init.normal_, torch.nn.init.uniform_}  # init.* dispatch as themselves

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.RANDOM:
            kwargs.pop("generator", None)
            return torch.empty(*args, **kwargs)
        if func in self.IN_PLACE:
            return args[0] if args else kwargs["tensor"]
        if func in self.ELEMENTWISE:
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.get_default_dtype())
            return torch.empty(_broadcast([t.shape for t in tensors]), dtype=dtype)  # initialisers' floats
        return func(*args, **kwargs)


def _broadcast(shapes: list) -> tuple[int, ...]:
    """The broadcast of ``shapes`` (torch.broadcast_shapes imports the symbolic-shape machinery)."""
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    return tuple(max(dims) if min(dims) != 0 else 0 for dims in zip(*padded))


class _Count(TorchFunctionMode):
    """Sums the elements of every new floating-point tensor a torch function returns (views and
    in-place results are not counted again)."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(a) for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if (isinstance(t, torch.Tensor) and t.is_floating_point() and t._base is None
                    and id(t) not in inputs and not isinstance(t, torch.nn.Parameter)):
                self.elements += t.numel()
        return out
