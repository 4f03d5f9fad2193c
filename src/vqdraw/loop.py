"""The training loop every trainer shares: VQ-DRAW's ``fit``, distillation and its fine-tuning,
the learned prior (:func:`vqdraw.prior.train_prior`), the VQ-VAE baseline and the FID/KID feature
net (:func:`vqdraw.evaluate.metrics.features.train_feature_net`). It sits below all of them in the
package layers (it needs only run folders and progress reporting), so that measuring code may
train through it too.

    for step in start .. stop-1:
        indices = order(step)                  the data order: a pure function of (seed, step)
        terms   = step_fn(step, indices)       one optimizer step (the trainer's own maths)
        record  = {step, **terms, time}        + evaluate(step) every eval_every steps
        log it every log_every steps           metrics.jsonl, history, on_log
        progress                               a bar on a terminal, else a line every few steps
        checkpoint(step, history)              every save_every steps and at the last

Resuming needs no RNG state: step t uses positions t*B .. (t+1)*B-1 of an endless stream of
seeded epoch permutations, so a run resumed from a checkpoint at step t sees the same batches as
one that was never interrupted.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from . import runs
from .progress import Progress  # noqa: F401 (its home is vqdraw.progress; trainers import it from here too)


def batch_indices(step: int, batch: int, n: int, seed: int) -> torch.Tensor:
    """Dataset indices (batch,) of the global batch at `step` (see the module docstring).

    With several processes every rank computes this same global batch and takes its own slice
    (:func:`vqdraw.training.distributed.local_slice`): the role of a distributed sampler, with no state.
    """
    start = step * batch
    out, pos = [], start
    while pos < start + batch:
        epoch, offset = divmod(pos, n)
        perm = _epoch_permutation(n, seed, epoch)
        take = min(n - offset, start + batch - pos)
        out.append(perm[offset : offset + take])
        pos += take
    return torch.cat(out)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


@dataclass(frozen=True)
class DataOrder:
    """``order(step)``: the dataset indices of this process's share of the batch at `step`."""

    n: int
    batch: int
    seed: int
    local: slice = field(default_factory=lambda: slice(None))

    def __call__(self, step: int) -> torch.Tensor:
        return batch_indices(step, self.batch, self.n, self.seed)[self.local]


def adam(parameters: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999),
         eps: float = 1e-8) -> torch.optim.Adam:
    """The optimizer of every trainer here: Adam (PyTorch's default betas and eps unless given;
    VQ-DRAW training passes the TrainConfig's, the paper author's (0.9, 0.99) and 1e-5)."""
    return torch.optim.Adam(parameters, lr=lr, betas=betas, eps=eps)


def micro_batches(x: torch.Tensor, micro: int) -> Iterator[tuple[torch.Tensor, float, bool]]:
    """(chunk, weight, last) for gradient accumulation: summing ``weight * loss(chunk)`` over the
    chunks gives the mean loss of the whole batch."""
    chunks = x.split(micro)
    for i, chunk in enumerate(chunks):
        yield chunk, chunk.shape[0] / x.shape[0], i == len(chunks) - 1


@dataclass(frozen=True)
class Cadence:
    """How often the loop logs, evaluates and checkpoints (in steps; None: never, but always at the
    run's last step when the hook exists)."""

    log_every: int = 50
    eval_every: int | None = None
    save_every: int | None = None


@dataclass
class Hooks:
    """What the loop calls besides the step, all optional: ``evaluate(step) -> dict`` (merged into
    the record), ``checkpoint(step, history)``, a :class:`~vqdraw.progress.Progress` with
    ``postfix(record, history) -> dict`` for its line, ``on_log(record)`` for each logged record,
    ``metrics_dir``, whose metrics.jsonl gets each logged record, and ``stop(record) -> bool``, asked
    after each evaluation: True ends the run there (early stopping)."""

    evaluate: Callable[[int], dict] | None = None
    checkpoint: Callable[[int, list[dict]], None] | None = None
    progress: Progress | None = None
    postfix: Callable[[dict, list[dict]], dict] | None = None
    on_log: Callable[[dict], None] | None = None
    metrics_dir: str | Path | None = None
    stop: Callable[[dict], bool] | None = None


def run_steps(
    step_fn: Callable[[int, torch.Tensor], dict],
    order: DataOrder,
    *,
    start: int = 0,
    stop: int,
    total: int | None = None,
    cadence: Cadence = Cadence(),
    hooks: Hooks | None = None,
    history: list[dict] | None = None,
    writer: bool = True,
    budget=None,
) -> list[dict]:
    """Run steps ``start .. stop-1`` of a `total`-step run (see the module docstring); returns
    the logged records (`history`, extended). ``step_fn(step, indices)`` makes one optimizer step
    on the batch ``indices`` and returns the terms to log (plain floats). A record is logged every
    ``cadence.log_every`` steps, whenever it is evaluated (every ``cadence.eval_every`` steps) and
    at step `total`; ``hooks`` say what else happens (:class:`Hooks`). ``writer=False``
    (data-parallel ranks other than 0) only steps: no evaluation, log, progress or checkpoint.

    `budget` (a :class:`vqdraw.training.schedule.TimeBudget`, one process only) is ticked after each step;
    the step after which another would overrun it is the last: evaluated, logged and saved."""
    hooks = hooks or Hooks()
    total = stop if total is None else total
    history = [] if history is None else history
    progress = hooks.progress
    t0 = time.perf_counter()
    step = start
    try:
        while step < stop:
            terms = step_fn(step, order(step))
            step += 1
            out_of_time = budget is not None and budget.tick()
            if not writer:
                continue
            end = step == total or out_of_time
            record = {"step": step, **terms, "time": round(time.perf_counter() - t0, 3)}
            evaluated = hooks.evaluate is not None and (_due(step, cadence.eval_every) or end)
            if evaluated:
                record.update(hooks.evaluate(step))
            if evaluated or _due(step, cadence.log_every) or end:
                history.append(record)
                if hooks.metrics_dir is not None:
                    runs.append_metrics(hooks.metrics_dir, record)
                if hooks.on_log is not None:
                    hooks.on_log(record)
            if progress is not None:
                if budget is not None:
                    progress.set_total(step if out_of_time else budget.total(step))
                progress.update(1, hooks.postfix(record, history) if hooks.postfix is not None else None)
            stopped = evaluated and hooks.stop is not None and hooks.stop(record)
            if hooks.checkpoint is not None and (_due(step, cadence.save_every) or step == stop or out_of_time
                                                 or stopped):
                hooks.checkpoint(step, history)
            if out_of_time or stopped:
                break
    finally:
        if progress is not None:
            progress.close()
    return history


def _due(step: int, every: int | None) -> bool:
    return every is not None and step % every == 0
