"""Where and how training runs: the device, the precision, compilation and data parallelism,
resolved once into a :class:`Runtime` that the CLI prints and :func:`vqdraw.fit` uses.

None of these changes what a run computes beyond float rounding, nor the checkpoint format.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from . import distributed as dist_util
from ..errors import ConfigError

PRECISIONS = ("fp32", "bf16")
PRECISION_CHOICES = (*PRECISIONS, "auto")


@dataclass(frozen=True)
class Runtime:
    """A resolved runtime: ``device`` (a torch.device), ``precision`` ("fp32" or "bf16", never
    "auto"), ``compile`` (False, True or a torch.compile mode) and ``dist`` (this process's place
    in a data-parallel group; single-process values outside one)."""

    device: torch.device
    precision: str = "fp32"
    compile: bool | str = False
    dist: dist_util.DistInfo = field(default_factory=dist_util.DistInfo)

    @classmethod
    def resolve(cls, device: torch.device | str | None = None, precision: str = "fp32",
                compile: bool | str = False, distributed: bool | None = None) -> "Runtime":
        """``device`` None: CUDA when available, else the CPU (a rank of a CUDA data-parallel
        run: its local GPU); ``precision`` "auto": bf16 exactly where :func:`native_bf16`;
        ``distributed`` None: whenever a process group of several ranks is initialised."""
        dinfo = dist_util.info() if distributed is not False else dist_util.DistInfo()
        if distributed and not dinfo.enabled and dist_util.env_world_size() > 1:
            raise ConfigError("distributed=True but no process group is initialised "
                              "(call vqdraw.training.distributed.init_from_env() first)")
        if dinfo.enabled:
            dev = dist_util.device_for(dinfo, device)
        else:
            dev = pick_device(str(device) if device is not None else None)
        return cls(dev, resolve_precision(precision, dev), compile, dinfo)

    @property
    def main(self) -> bool:
        """Whether this process evaluates, writes and reports (rank 0, or the only process)."""
        return self.dist.is_main

    def local_slice(self, batch: int) -> slice:
        """This process's share of a global batch of ``batch`` items."""
        return dist_util.local_slice(batch, self.dist) if self.dist.enabled else slice(0, batch)

    def describe(self) -> str:
        """For a banner: ``cpu (fp32)``, ``cuda:0 (bf16), 8 processes (nccl)``."""
        text = f"{self.device} ({self.precision})"
        if self.dist.enabled:
            text += f", {self.dist.world_size} processes ({self.dist.backend})"
        return text


def pick_device(name: str | None = None) -> torch.device:
    """`name` if given, else CUDA when available, else CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags (/proc/cpuinfo) of native bfloat16 arithmetic: AMX tiles, or AVX-512 BF16 dot products."""


def native_bf16(device: torch.device | str, cpu_flags: set[str] | None = None) -> bool:
    """Whether `device` computes bfloat16 natively: a CPU with AMX or AVX-512 BF16
    (:data:`BF16_CPU_FLAGS` among the flags of /proc/cpuinfo, or `cpu_flags` when given), or a CUDA
    GPU that supports bf16 (Ampere and later)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    flags = _cpu_flags() if cpu_flags is None else cpu_flags
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: torch.device | str, cpu_flags: set[str] | None = None) -> str:
    """``"fp32"`` or ``"bf16"``: the name itself, or for ``"auto"`` bf16 exactly where
    :func:`native_bf16` holds (measured: docs/scaling.md, "Precision")."""
    if precision not in PRECISION_CHOICES:
        raise ConfigError(f"precision must be one of {', '.join(PRECISION_CHOICES)}; got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device, cpu_flags) else "fp32"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def autocast(precision: str, device: torch.device | str):
    """The autocast region of a precision: none for fp32, bfloat16 autocast for bf16. Per-option
    losses, the arg-min and the canvas stay float32 (see :func:`vqdraw.core.losses.select_option`)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
