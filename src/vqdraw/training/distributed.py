"""Data-parallel training across processes: process-group setup and the few collectives used.

Launch with torchrun, which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT:

    torchrun --standalone --nproc_per_node=8 -m vqdraw.cli train --preset cifar10 --run runs/c10

:func:`init_from_env` joins the process group those variables describe (NCCL when the process
has a CUDA device, gloo otherwise), binds the process to the GPU of its ``LOCAL_RANK`` and
returns a :class:`DistInfo`. Without those variables (a plain ``python`` or ``vqdraw`` process)
it returns the single-process info and starts nothing, so the same code path serves both.

How training uses it (see :func:`vqdraw.training.train.fit`):

* The data order is a pure function of (seed, step) (:func:`vqdraw.training.train.batch_indices`): every
  rank computes the same global batch and takes its contiguous slice :func:`local_slice`. This
  plays the role of a ``DistributedSampler`` with no sampler state to save or restore, so a run
  resumes at any step with any world size.
* Gradients are averaged by DistributedDataParallel; the logged terms are averaged and the codes
  gathered across ranks, so the metrics are those of the global batch.
* Only rank 0 writes (metrics, checkpoints, pictures) and evaluates, on the unwrapped model: no
  collective is ever called from a code path that only some ranks run. Checkpoints hold the
  full, unsharded model and optimizer state.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class LaunchEnv:
    """torchrun's variables, checked (:func:`launch_env`). ``world_size`` 1: a single process."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None


MAX_WORLD_SIZE = 1 << 20
"""A sanity bound on WORLD_SIZE (a typo, not a plan)."""


def launch_env(environ=None) -> LaunchEnv:
    """WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, validated in this one place:
    each a one-line ConfigError naming the variable, before any process group is joined (which
    would raise untyped, or wait for peers that cannot come). Without WORLD_SIZE, or with
    WORLD_SIZE=1: a single process, whatever the others say."""
    env = os.environ if environ is None else environ
    world = _whole(env, "WORLD_SIZE", 1, 1, MAX_WORLD_SIZE)
    if world == 1:
        return LaunchEnv()
    needed = f"WORLD_SIZE={world} needs it: launch with torchrun"
    rank = _whole(env, "RANK", needed, 0, MAX_WORLD_SIZE)
    if rank >= world:
        raise ConfigError(f"RANK={rank} must be below WORLD_SIZE={world}")
    local_rank = _whole(env, "LOCAL_RANK", 0, 0, MAX_WORLD_SIZE)
    addr = env.get("MASTER_ADDR", "").strip()
    if not addr:
        raise ConfigError(f"MASTER_ADDR is not set ({needed})")
    port = _whole(env, "MASTER_PORT", needed, 1, 65535)
    return LaunchEnv(world, rank, local_rank, addr, port)


def _whole(env, name: str, default: int | str, low: int, high: int) -> int:
    """The whole number in ``env[name]``, in low..high; ``default`` when unset (a string: the
    reason it must be set)."""
    text = env.get(name)
    if text is None or text.strip() == "":
        if isinstance(default, str):
            raise ConfigError(f"{name} is not set ({default})")
        return default
    try:
        value = int(text.strip())
    except ValueError:
        raise ConfigError(f"{name}={text!r:.40} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} must be in {low}..{high}")
    return value


def env_world_size() -> int:
    """WORLD_SIZE alone, checked (1 when unset)."""
    return _whole(os.environ, "WORLD_SIZE", 1, 1, MAX_WORLD_SIZE)


DEFAULT_TIMEOUT_S = 600.0
"""How long a rank waits for the others to join (and for any collective) by default."""


def init_from_env(device: str | torch.device | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistInfo:
    """Join the process group described by torchrun's environment variables (no-op without them).

    ``device``: the device type to use ("cuda" or "cpu"); default CUDA when available. The
    backend is NCCL for CUDA, gloo for CPU. Returns the process's :class:`DistInfo`. The
    variables are checked first (:func:`launch_env`); a peer that does not join within
    ``timeout_s`` seconds is a one-line ConfigError.
    """
    if dist.is_available() and dist.is_initialized():
        return info()
    launch = launch_env()
    if launch.world_size <= 1:
        return DistInfo()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    dev_type = torch.device(device).type if device is not None else (
        "cuda" if torch.cuda.is_available() else "cpu")
    local_rank = launch.local_rank
    if dev_type == "cuda":
        torch.cuda.set_device(local_rank)
    backend = "nccl" if dev_type == "cuda" else "gloo"
    kwargs = {}
    if dev_type == "cuda":
        kwargs["device_id"] = torch.device("cuda", local_rank)
    try:
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    except (RuntimeError, ValueError) as exc:  # DistStoreError (a peer never came) is a RuntimeError
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"rank {launch.rank} of WORLD_SIZE={launch.world_size} could not join the process group "
                          f"at MASTER_ADDR={launch.master_addr} MASTER_PORT={launch.master_port} within "
                          f"{timeout_s:g} s ({first})") from None
    return info()


def info() -> DistInfo:
    """The current process's place in the process group (single-process values when none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=dist.get_backend(),
    )


def device_for(d: DistInfo, requested: str | torch.device | None = None) -> torch.device:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` for a CUDA run, else the request/CPU."""
    if requested is not None:
        req = torch.device(requested)
        if req.type == "cuda" and d.enabled:
            return torch.device("cuda", d.local_rank)
        return req
    if d.enabled:
        return torch.device("cuda", d.local_rank) if d.backend == "nccl" else torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def local_slice(global_batch: int, d: DistInfo) -> slice:
    """This rank's contiguous share of a global batch (the batch must divide evenly)."""
    if global_batch % d.world_size:
        raise ValueError(f"the global batch ({global_batch}) must be divisible by the number of "
                         f"processes ({d.world_size})")
    per = global_batch // d.world_size
    return slice(d.rank * per, (d.rank + 1) * per)


def all_reduce_mean(t: torch.Tensor, d: DistInfo) -> torch.Tensor:
    """Mean over ranks (every rank must call it)."""
    if not d.enabled:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / d.world_size


def all_gather_cat(t: torch.Tensor, d: DistInfo) -> torch.Tensor:
    """Concatenate equal-shaped tensors from all ranks along dim 0, in rank order."""
    if not d.enabled:
        return t
    parts = [torch.empty_like(t) for _ in range(d.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def barrier(d: DistInfo) -> None:
    if d.enabled:
        dist.barrier()


def shutdown(sync: bool = False) -> None:
    """Destroy the process group (a no-op outside torchrun). ``sync``: after a barrier, so that no
    rank tears its connections down while another still uses them (only on the success path: a
    rank that failed may never reach it)."""
    if dist.is_available() and dist.is_initialized():
        if sync:
            dist.barrier()
        dist.destroy_process_group()
