"""Checks at the model's boundary: data, stage counts and codes, each refused with an InputError
that says what was expected. Every public entry point (encode, decode, loss, beam search, a
distilled encoder) checks its inputs here, once."""

from __future__ import annotations

import math
import warnings

import torch

from .config import MAX_BEAM, MAX_OUTPUT_BYTES, ModelConfig
from .stageloop import Beam, Policy
from ..errors import InputError

_CODE_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8)


def check_data(config: ModelConfig, x, device: torch.device | str) -> torch.Tensor:
    """Data (B, *data_shape), a float tensor of any precision with values in [0, 1] -> float32,
    contiguous, on `device`. A float tensor outside [0, 1] (say 0..255) is refused, not guessed at."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"data must be a torch.Tensor, got {type(x).__name__}")
    shape = tuple(config.data_shape)
    if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        dims = ", ".join(map(str, shape))
        raise InputError(f"this model takes data of shape (B, {dims}); got {tuple(x.shape)}")
    if x.layout != torch.strided or x.device.type == "meta":
        raise InputError(f"data must be a dense tensor holding values, got layout {x.layout} on {x.device}")
    if x.dtype not in _DATA_DTYPES:
        raise InputError(f"data must be float in [0, 1] (float16, bfloat16, float32 or float64), got dtype "
                         f"{x.dtype} (divide integers by their maximum)")
    if x.numel():
        lo, hi = torch.aminmax(x.detach())
        if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))) or bool(torch.isnan(x).any()):
            raise InputError("data must be finite (found NaN or infinity)")
        if lo < 0 or hi > 1:
            hint = " (it looks like 0..255: divide by 255)" if hi > 1.5 else ""
            raise InputError(f"data must be in [0, 1]; got values in [{lo.item():.4g}, {hi.item():.4g}]{hint}")
    # float32 and contiguous: a channels-last input would make the convolutions pick other
    # kernels, and encode's reconstruction must equal decode's bit for bit
    return x.to(device=device, dtype=torch.float32).clone(memory_format=torch.contiguous_format)


_DATA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_count(n, what: str = "count") -> int:
    """A whole number >= 0 (a Python or numpy integer; bool refused)."""
    import numbers

    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise InputError(f"{what} must be a whole number >= 0, got {n!r:.40}")
    return int(n)


def check_beam(beam) -> int:
    """A beam width: a whole number in 1..MAX_BEAM (bool refused), checked before any canvas is made."""
    import numbers

    if isinstance(beam, bool) or not isinstance(beam, numbers.Integral) or not 1 <= beam <= MAX_BEAM:
        raise InputError(f"beam width must be a whole number in 1..{MAX_BEAM}, got {beam!r:.40}")
    return int(beam)


def check_policy(policy, beam=None, where: str = "encode", stacklevel: int = 3) -> Policy | None:
    """How stages choose, from a public call's ``policy=`` (a :class:`~vqdraw.core.stageloop.Policy`,
    or None for greedy) and its deprecated ``beam=W`` (a warning, then ``Beam(W)``); both at once, or
    a policy that is not a Policy, is refused. A beam width is checked here, before any canvas."""
    if beam is not None:
        warnings.warn(f"{where}(beam=W) is deprecated: pass policy=Beam(W)", DeprecationWarning,
                      stacklevel=stacklevel)
        if policy is not None:
            raise InputError("give policy= or beam=, not both")
        policy = Beam(check_beam(beam))
    if policy is not None and not isinstance(policy, Policy):
        raise InputError(f"policy must be a vqdraw Policy (Greedy(), Beam(width), Follow(codes), ...), "
                         f"got {type(policy).__name__:.40}")
    if isinstance(policy, Beam):
        check_beam(policy.width)
    return policy


def check_batch(batch) -> int:
    """A batch size: a whole number >= 1 (a Python or numpy integer; bool refused)."""
    import numbers

    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
        raise InputError(f"batch size must be a whole number >= 1, got {batch!r:.40}")
    return int(batch)


def check_output(config: ModelConfig, n: int, what: str = "items") -> int:
    """``n`` items of ``config``'s data (float32) must fit :data:`MAX_OUTPUT_BYTES`: refused before
    anything is allocated."""
    per_item = 4 * math.prod(config.data_shape) + 8 * config.stages
    if n * per_item > MAX_OUTPUT_BYTES:
        raise InputError(f"{n:,} {what} of shape {tuple(config.data_shape)} would take "
                         f"{n * per_item / 2**30:.1f} GiB; the limit is {MAX_OUTPUT_BYTES / 2**30:g} GiB at once "
                         f"(at most {MAX_OUTPUT_BYTES // per_item:,}; ask in parts)")
    return n


def check_stages(config: ModelConfig, stages, low: int = 0) -> int:
    """A number of stages in [low, N] (``low`` is 1 where codes are written: a .vqd file holds at
    least one stage); None means all N. The one check of a stage count against a model: the
    library's public functions call it, and so does the CLI once the model is loaded."""
    if stages is None:
        return config.stages
    try:
        n = int(stages)
        ok = n == stages and not isinstance(stages, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok or not low <= n <= config.stages:
        raise InputError(f"this model has {config.stages} stages; asked for {stages!r:.40}"
                         + (f" (at least {low})" if ok and n < low else ""))
    return n


def check_codes(config: ModelConfig, codes) -> torch.Tensor:
    """Codes (B, n), n <= N, integers in [0, K) -> int64."""
    try:
        codes = torch.as_tensor(codes)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"codes must be an integer tensor of shape (B, n); got {type(codes).__name__}") from exc
    if codes.layout != torch.strided or codes.device.type == "meta":
        raise InputError(f"codes must be a dense tensor, got layout {codes.layout} on {codes.device}")
    if codes.dim() != 2 or codes.dtype not in _CODE_DTYPES:
        raise InputError(f"codes must be an integer tensor of shape (B, n); got {codes.dtype} {tuple(codes.shape)}")
    if codes.shape[1] > config.stages:
        raise InputError(f"this model has {config.stages} stages; codes have {codes.shape[1]}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= config.options):
        raise InputError(f"code values must be in [0, {config.options})")
    return codes.long()
