"""Training VQ-DRAW: ``train_step``, ``evaluate``, ``fit``; a run folder with metrics, checkpoints, pictures.

    run/
      LATEST                 name of the newest checkpoint folder
      ckpt-00001000/         config.json, model.safetensors, optimizer.safetensors, state.json
      train.json             the train and model configs
      metrics.jsonl          one JSON object per logged step
      samples.png reconstructions.png stages.png curves.png

The run folder's layout and its lock are :mod:`vqdraw.runs`'s; the loop itself (data order as a
pure function of (seed, step), logging, progress, checkpoints) is :mod:`vqdraw.loop`'s. A run
resumed from a checkpoint reaches the same parameters as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from . import distributed as dist_util
from .. import runs
from ..core.config import TrainConfig
from ..data import Dataset
from ..data.binarize import BinarizedSet, batch_epochs, binarize
from .ema import WeightAverage
from ..errors import CheckpointError, ConfigError, TrainingDiverged
from ..loop import Cadence, DataOrder, Hooks, Progress, adam, batch_indices, micro_batches, run_steps
from ..core.losses import code_usage
from ..core.model import VQDraw
from .runtime import Runtime, autocast, native_bf16, pick_device, resolve_precision
from .schedule import TimeBudget, learning_rate
from ..core.sizing import check_size

METRICS_FILE = runs.METRICS_FILE
PICTURES = ("samples.png", "reconstructions.png", "stages.png", "curves.png")
_TERMS = ("loss", "chosen", "all", "final")

__all__ = ["batch_indices", "train_step", "evaluate", "fit", "FitOptions", "learning_rate", "pick_device", "RunResult",
           "resolve_precision", "native_bf16", "Runtime"]


class LossModule(nn.Module):
    """``forward(images) -> model.loss(images, ...)``: what DistributedDataParallel wraps (DDP
    reduces gradients of a module's forward). Holds no parameters of its own."""

    def __init__(self, model: VQDraw, alpha: float, grad_checkpoint: bool, options: dict | None = None):
        super().__init__()
        self.model = model
        self.alpha = alpha
        self.grad_checkpoint = grad_checkpoint
        self.options = options or {}  # TrainConfig.loss_options(): the paper's training alternatives

    def forward(self, images: torch.Tensor) -> dict:
        return self.model.loss(images, alpha=self.alpha, grad_checkpoint=self.grad_checkpoint, **self.options)


def train_step(
    model: VQDraw,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    cfg: TrainConfig,
    *,
    precision: str = "fp32",
    ddp: nn.Module | None = None,
    dist_info: dist_util.DistInfo | None = None,
) -> dict[str, float]:
    """One optimizer step on a global batch, accumulating gradients over micro-batches.

    Each micro-batch's eq. 3 loss is weighted by its share of the batch, so the step equals a
    single pass over the whole batch (up to float rounding).

    Data-parallel: ``images`` is this rank's slice of the global batch and ``ddp`` the
    DistributedDataParallel-wrapped :class:`LossModule` of ``model``; gradients are averaged
    across ranks once per step (not per micro-batch), the logged terms are averaged and the codes
    gathered, so the returned numbers are those of the global batch.
    """
    optimizer.zero_grad(set_to_none=True)
    if ddp is None:
        def run(x):
            return model.loss(x, alpha=cfg.alpha, grad_checkpoint=cfg.grad_checkpoint, **cfg.loss_options())
    else:
        run = ddp
    totals = None
    codes = []
    for chunk, weight, last in micro_batches(images, cfg.micro):
        sync = contextlib.nullcontext() if ddp is None or last else ddp.no_sync()
        with sync:
            with autocast(precision, images.device):
                terms = run(chunk)
            (terms["loss"] * weight).backward()
        names = _TERMS + (("contrastive",) if "contrastive" in terms else ())
        step_terms = torch.stack([terms[k].detach().float() for k in names]) * weight
        totals = step_terms if totals is None else totals + step_terms
        codes.append(terms["codes"])
    optimizer.step()
    codes = torch.cat(codes)
    if dist_info is not None and dist_info.enabled:
        totals = dist_util.all_reduce_mean(totals, dist_info)
        codes = dist_util.all_gather_cat(codes, dist_info)
    entropy, used = code_usage(codes, model.options)
    values = torch.cat([totals, entropy.view(1), used.view(1).to(totals.dtype)]).tolist()  # one sync
    out = dict(zip(names, values[:len(names)]))
    out["entropy"], out["used"] = values[len(names)], int(values[len(names) + 1])
    return out


@torch.no_grad()
def evaluate(model: VQDraw, images: torch.Tensor, batch: int = 250) -> dict[str, float]:
    """Test metrics of the full code: ``test_loss``, the likelihood's loss of the final canvas per
    element (the paper's normalised MSE for the mse likelihood, which also logs it as
    ``test_mse``), then what the model's modality measures (:meth:`Modality.test_metrics`: PSNR for
    images, character accuracy for text, IoU for volumes, SNR for audio)."""
    from ..modalities import modality_for

    total, recons = 0.0, []
    for chunk in images.split(batch):
        res = model.encode(chunk, return_reconstruction=True)
        total += res.losses[:, -1].gather(1, res.codes[:, -1:]).sum().item()
        recons.append(res.reconstruction)
    loss = total / images.shape[0]
    out = {"test_loss": loss}
    if model.config.likelihood == "mse":
        out["test_mse"] = loss
    recon = torch.cat(recons) if recons else images
    out.update(modality_for(model.config).test_metrics(model, images, recon))
    return out


@dataclass
class RunResult:
    run_dir: Path
    step: int
    metrics: list[dict]


@dataclass
class FitOptions:
    """How one :func:`fit` call runs, beside what it trains (each field is also a keyword of ``fit``)."""

    resume: bool = False
    """Continue the run in the folder from its newest checkpoint."""
    overwrite: bool = False
    """Start again in a folder that holds a run (what the earlier run wrote is removed first)."""
    progress: bool = True
    """Report progress (:mod:`vqdraw.progress`; the ``vqdraw`` command shows it)."""
    pictures: bool = True
    """Draw the modality's pictures and curves.png with each checkpoint."""
    on_log: Callable[[dict], None] | None = None
    """Called with each logged record (e.g. :class:`vqdraw.training.tensorboard.TensorBoardLog`)."""
    stop_after: int | None = None
    """End this call after that many steps (a checkpoint is written first)."""
    clock: Callable[[], float] = time.monotonic
    """What the time budget reads."""


_RUNTIME_KEYWORDS = {"device": None, "precision": "fp32", "compile": False, "distributed": None}


def fit(
    model: VQDraw,
    train_set: Dataset,
    test_set: Dataset,
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    runtime: Runtime | None = None,
    options: FitOptions | None = None,
    **keywords,
) -> RunResult:
    """Train `model` for `cfg.steps` steps, writing everything into `run_dir`.

    How the call runs is ``options`` (:class:`FitOptions`), or its fields as keywords
    (``fit(..., resume=True, progress=False)``). ``resume=True`` continues from the run's newest
    checkpoint (same data order, same optimizer state). A folder that already holds a run is
    refused unless ``resume`` or ``overwrite`` (which first removes what the earlier run wrote).
    The folder is locked for the duration of the call (:class:`vqdraw.runs.RunLock`): a second
    writer gets an error naming this process. ``stop_after`` ends the call after that many steps
    of this call (a checkpoint is written first), which is how tests simulate an interrupted run.

    Speed and scale options (none changes the parameters' meaning or the checkpoint format):
    ``precision="bf16"`` runs the refiner under bfloat16 autocast (losses, arg-min and canvas in
    float32); ``compile=True`` compiles the per-stage network with ``torch.compile`` (a string
    is the compile mode: ``"reduce-overhead"`` adds CUDA graphs on a GPU, ``"max-autotune"``);
    ``distributed`` (default: whenever a process group of several ranks is initialised, see
    :mod:`vqdraw.training.distributed`) trains data-parallel, each rank on its slice of the global batch,
    with rank 0 alone evaluating and writing (and locking) the run folder.
    ``precision="auto"`` is bf16 where the hardware computes bfloat16 natively (a CPU with AMX or
    AVX-512 BF16, a CUDA GPU that supports it) and fp32 elsewhere
    (:func:`resolve_precision`); the library's default stays fp32. The four come resolved as one
    ``runtime=Runtime.resolve(device, precision, compile, distributed)``
    (:class:`vqdraw.training.runtime.Runtime`), as the CLI does; as keywords of ``fit`` they
    still work for this release and warn (DeprecationWarning).

    Quality per minute (fields of `cfg`, see :mod:`vqdraw.training.schedule` and :mod:`vqdraw.training.ema`):
    ``warmup``/``lr_final``/``anneal`` shape the step size; ``ema`` evaluates, draws and saves
    an average of the weights (the checkpoint's model is the average, its
    ``training.safetensors`` the raw weights training resumes from); ``time_budget`` (minutes,
    read from `clock`) ends the run within one step of the budget and fits the anneal to the
    steps it allows. The budget is this call's: it starts once the model and the optimizer are
    ready (a resumed run gets all of it again) and covers the steps with their periodic evaluations
    and checkpoints; the final evaluation and checkpoint come after it.
    """
    run_dir = Path(run_dir)
    options, runtime = _fit_arguments(options, runtime, keywords)
    main = runtime.main
    if cfg.time_budget is not None and runtime.dist.enabled:
        raise ConfigError("time_budget is for one process: a data-parallel run would need its ranks "
                          "to agree on the clock; give --steps instead")
    _check_data(model, train_set, test_set)
    check_size(model.config, cfg.micro)  # one stage on the meta device: an absurd batch is refused first
    if cfg.binarize != "none":
        test_set = BinarizedSet(test_set, cfg.binarize, cfg.seed)  # one fixed draw
    created = not run_dir.exists()
    with contextlib.ExitStack() as stack:
        if main:
            stack.enter_context(runs.RunLock(run_dir))
            if created:  # runs after the lock is released: a failed first start leaves no folder
                stack.callback(_remove_if_empty, run_dir)
            _start_run(run_dir, options.resume, options.overwrite)
        dist_util.barrier(runtime.dist)  # the other ranks resume from the checkpoint rank 0 settled on
        try:
            return _fit_locked(model, train_set, test_set, cfg, run_dir, runtime, options)
        except BaseException:
            if main and not options.resume and runs.read_latest(run_dir) is None:
                runs.clear_run(run_dir, extra=PICTURES)  # no checkpoint yet: nothing to resume, retry freely
            raise


def _fit_arguments(options: FitOptions | None, runtime: Runtime | None, keywords: dict):
    """fit's options and runtime from its arguments: FitOptions fields as keywords, and the four
    runtime parts as deprecated keywords (never beside ``runtime=``)."""
    unknown = set(keywords) - set(_RUNTIME_KEYWORDS) - {f.name for f in dataclasses.fields(FitOptions)}
    if unknown:
        raise TypeError(f"fit() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    parts = {k: keywords.pop(k) for k in list(keywords) if k in _RUNTIME_KEYWORDS}
    if options is not None and keywords:
        raise ConfigError("give fit's options either as options=FitOptions(...) or as keywords, not both")
    options = options or FitOptions(**keywords)
    if parts:
        if runtime is not None:
            raise ConfigError("give the runtime either as runtime=Runtime(...) or as device/precision/compile/"
                              "distributed, not both")
        warnings.warn("fit(device=, precision=, compile=, distributed=) is deprecated: pass "
                      "runtime=Runtime.resolve(...)", DeprecationWarning, stacklevel=3)
        runtime = Runtime.resolve(**{**_RUNTIME_KEYWORDS, **parts})
    return options, runtime or Runtime.resolve()


def _remove_if_empty(run_dir: Path) -> None:
    """Remove a run folder this call created that holds nothing but its lock file."""
    try:
        if {p.name for p in run_dir.iterdir()} <= {runs.LOCK_FILE}:
            (run_dir / runs.LOCK_FILE).unlink(missing_ok=True)
            run_dir.rmdir()
    except OSError:
        pass


def _start_run(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Tidy crash debris, then check that the folder holds a run exactly when resuming."""
    runs.clean_debris(run_dir, verify=VQDraw.load)
    if resume:
        if runs.read_latest(run_dir) is None:
            raise CheckpointError(f"{run_dir}: nothing to resume (no checkpoint in this folder)")
    elif runs.holds_run(run_dir):
        if not overwrite:
            raise CheckpointError(f"{run_dir} already holds a run; pass --resume to continue it, "
                                  "--overwrite to start it again, or choose another folder")
        runs.clear_run(run_dir, extra=_run_outputs())


def _fit_locked(model, train_set, test_set, cfg, run_dir, runtime: Runtime, options: FitOptions) -> RunResult:
    main, device, dinfo, compile = runtime.main, runtime.device, runtime.dist, runtime.compile
    resume, pictures, stop_after, on_log = options.resume, options.pictures, options.stop_after, options.on_log
    progress = options.progress and main
    local = runtime.local_slice(cfg.batch)  # cfg.micro_batch is per rank
    model.to(device)
    if compile:
        model.refiner.set_speed(compile=True, compile_mode=None if compile is True else str(compile))
    optimizer = adam(model.parameters(), cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps)
    step, saved_average, _ = _resume(model, optimizer, run_dir, device) if resume else (0, None, 0.0)
    average = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    if average is not None and saved_average is not None:
        average.load(saved_average)
    budget = None
    if cfg.time_budget is not None:  # this call's: a resumed run gets the whole budget again
        budget = TimeBudget(cfg.time_budget * 60, cfg.steps, clock=options.clock)
    ddp = None
    if dinfo.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(
            LossModule(model, cfg.alpha, cfg.grad_checkpoint, cfg.loss_options()),
            device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False,  # mean/std buffers are constants of the config
            find_unused_parameters=_has_unused_parameters(model),
        )
    metrics: list[dict] = []
    eval_images = None
    if main:
        metrics = runs.read_metrics(run_dir, upto=step)  # first: a bad history leaves train.json as it was
        runs.write_train_json(run_dir, cfg.to_dict(), model.config.to_dict())
        eval_images = test_set.batch(range(min(cfg.eval_size, len(test_set))), device)
    last = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    done = [step]

    def one_step(step: int, index: torch.Tensor) -> dict:
        lr = learning_rate(cfg, step, budget.total(step) if budget is not None else None)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images = train_set.batch(index, device)
        if cfg.binarize != "none":  # binarised data: a pure function of (seed, epoch, item)
            images = binarize(images, cfg.binarize, seed=cfg.seed, index=index,
                              epoch=batch_epochs(step, cfg.batch, len(train_set))[local])
        model.train()
        terms = train_step(model, optimizer, images, cfg, precision=runtime.precision,
                           ddp=ddp, dist_info=dinfo)
        if not math.isfinite(terms["loss"]):
            raise_diverged(run_dir, step + 1, terms["loss"])
        if average is not None:
            average.update(step + 1)
        done[0] = step + 1
        return {**terms, "lr": lr}

    def evaluate_now(step: int) -> dict:
        with _averaged(average):
            model.eval()
            return evaluate(model, eval_images)

    def checkpoint(step: int, history: list[dict]) -> None:
        _save(model, optimizer, cfg, run_dir, step, history, eval_images, pictures, average, budget)

    bar = Progress(cfg.steps, initial=step, desc="train", enabled=progress)
    run_steps(one_step, DataOrder(len(train_set), cfg.batch, cfg.seed, local), start=step, stop=last,
              total=cfg.steps, cadence=Cadence(cfg.log_every, cfg.eval_every, cfg.save_every),
              hooks=Hooks(evaluate=evaluate_now, checkpoint=checkpoint, progress=bar,
                          postfix=functools.partial(_postfix, model=model), on_log=on_log, metrics_dir=run_dir),
              history=metrics, writer=main, budget=budget)
    step = done[0]
    if main and (step == 0 or runs.read_latest(run_dir) is None):
        _save(model, optimizer, cfg, run_dir, step, metrics, eval_images, pictures, average, budget)
    dist_util.barrier(dinfo)  # every rank returns once the run folder is complete
    return RunResult(run_dir, step, metrics)


def raise_diverged(run_dir: Path, step: int, loss: float):
    """Stop a run whose loss became NaN or infinite: one line naming the step and the checkpoint
    left as it was (the weights of this step are not saved)."""
    last = runs.read_latest(run_dir)
    kept = (f"the newest good checkpoint, {last}, is kept; resume from it with a lower --lr"
            if last is not None and last.is_dir() else "no checkpoint was written; start again with a lower --lr")
    raise TrainingDiverged(f"the training loss became {loss} at step {step}; {kept} (or a smaller --alpha)")


def _has_unused_parameters(model: VQDraw) -> bool:
    """Per-stage heads of a last segment shorter than the others are never used; a progressive
    refiner's heads are each used by some stages only."""
    c = model.config
    if c.refiner.progressive:  # each stage uses one head: the full one or a coarse one
        return True
    return c.refiner.head_per_stage and c.stages > c.segment and c.stages % c.segment != 0


# ---------------------------------------------------------------------- helpers
def _check_data(model: VQDraw, *sets: Dataset) -> None:
    for s in sets:
        if s.data_shape != tuple(model.config.data_shape):
            raise ConfigError(
                f"dataset {s.name!r} has data of shape {s.data_shape} (channels first) but the model "
                f"expects {tuple(model.config.data_shape)}"
            )
        if len(s) == 0:
            raise ConfigError(f"dataset {s.name!r} is empty")


def _run_outputs() -> tuple[str, ...]:
    """Every file training writes beside the checkpoints, for any modality."""
    from ..modalities import run_outputs

    return tuple(sorted({*PICTURES, *run_outputs()}))


def _averaged(average: WeightAverage | None):
    return contextlib.nullcontext() if average is None else average.applied()


def _resume(model: VQDraw, optimizer, run_dir: Path, device) -> tuple[int, dict | None, float]:
    """Load the newest checkpoint into `model` and `optimizer`: (step, the average of the weights
    if the checkpoint's model is one, else None, seconds the saving call spent of its time budget:
    a record only, each call gets the whole budget)."""
    ckpt, state, tensors = runs.load_checkpoint_state(run_dir)
    loaded = VQDraw.load(ckpt, map_location=device)
    if loaded.config != model.config:
        raise CheckpointError(f"{ckpt}: the checkpoint's model config differs from the requested one")
    saved = loaded.state_dict()
    raw = runs.load_training_weights(ckpt)
    average = None
    if raw is not None:
        if set(raw) - set(saved):
            raise CheckpointError(f"{ckpt}: its raw weights do not fit the model")
        average = {k: v for k, v in saved.items() if k in raw}
        saved = {**saved, **{k: v.to(device) for k, v in raw.items()}}
    model.load_state_dict(saved)
    runs.check_optimizer_tensors(tensors, list(model.parameters()), ckpt / runs.OPTIMIZER_FILE)
    try:
        runs.restore_optimizer(optimizer, {k: v.to(device) for k, v in tensors.items()}, state["optimizer"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{ckpt}: cannot resume, optimizer state does not fit ({exc})") from exc
    return state["step"], average, float(state.get("time_spent", 0.0))


def _save(model, optimizer, cfg, run_dir, step, metrics, eval_images, pictures, average=None,
          budget=None) -> None:
    """A checkpoint (and pictures). With an average of the weights, the checkpoint's model and
    the pictures are the average's and the raw weights go beside them."""
    state = {"step": step, "train": cfg.to_dict()}
    if budget is not None:
        state["time_spent"] = budget.elapsed
    raw = None
    if average is not None:
        raw = {name: p.detach().clone() for name, p in model.named_parameters()}
    with _averaged(average):
        runs.save_checkpoint(run_dir, model, optimizer, state, training_weights=raw)
        if pictures:
            write_pictures(model, run_dir, metrics, eval_images, dataset=cfg.dataset)


def write_pictures(model: VQDraw, run_dir: Path, metrics: list[dict], test_images: torch.Tensor,
                   dataset: str | None = None) -> None:
    """The modality's outputs (images: samples.png, reconstructions.png, stages.png; text and
    audio their own files) and curves.png in the run folder."""
    from ..evaluate import plots
    from ..modalities import modality_for

    model.eval()
    title = plots.describe_model(model.config, dataset)
    modality = modality_for(model.config)
    modality.write_run_outputs(model, run_dir, test_images, title=title)
    if metrics:
        plots.save_curves(metrics, run_dir / "curves.png", title=title, loss_name=modality.loss_name(model.config))


def _postfix(record: dict, metrics: list[dict], *, model: VQDraw) -> dict:
    from ..modalities import modality_for
    from ..modalities.base import evaluation_loss

    out = {"loss": f"{record['loss']:.4f}", "ent": f"{record['entropy']:.2f}", "used": record["used"]}
    last = next((m for m in reversed(metrics) if evaluation_loss(m) is not None), None)
    if last is not None:
        out.update(modality_for(model.config).progress_fields(last))
    return out
