"""`vqdraw train`: train a preset (Table 1) with any field overridden, or resume a run."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from ..core.config import PRESETS, ModelConfig, RefinerConfig, TrainConfig
from ..core.fields import field_range
from .common import (HelpFormatter, add_dataclass_flags, add_device_arg, dataclass_overrides, finite_float, output_dir,
                     ranged_type)

MODEL_SKIP = {"mean", "std", "refiner", "modality", "modality_options"}  # a plug-in modality is Python API
TRAIN_SKIP = {"dataset"}

def preset_values(section: str, cls) -> dict[str, str]:
    """field -> "the preset's: mnist 10, svhn 20, …" (or "the preset's: 0.01" when all agree)."""
    def show(v) -> str:
        if v is None or isinstance(v, bool):
            return {None: "off", True: "yes", False: "no"}[v]
        return f"{v:,}" if isinstance(v, int) else str(v)

    out = {}
    for f in dataclasses.fields(cls):
        shown = {name: show(getattr(getattr(p, section), f.name)) for name, p in PRESETS.items()}
        if len(set(shown.values())) == 1:
            out[f.name] = f"the preset's: {next(iter(shown.values()))}"
        else:
            out[f.name] = "the preset's: " + ", ".join(f"{n} {v}" for n, v in shown.items())
    return out


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        description="Train a VQ-DRAW model. Writes checkpoints, metrics.jsonl, samples.png, "
        "reconstructions.png, stages.png and curves.png into the run folder, which every other "
        "command accepts as MODEL. A --time-budget is each invocation's: `--resume` gets the whole "
        "budget again, and `--resume --steps N` without --time-budget trains to step N with no budget.",
        epilog="example: vqdraw train --preset mnist --dataset mnist-embedded --steps 1000 --run runs/mnist\n"
        "several processes: torchrun --standalone --nproc_per_node=N -m vqdraw.cli train ... "
        "(data-parallel; see docs/scaling.md)",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--preset", default="mnist",
                   help=f"one of {', '.join(PRESETS)} (mnist, svhn, cifar10, celeba: Table 1; "
                   "see `vqdraw presets`)")
    p.add_argument("--dataset", default=None,
                   help="dataset name (default: the preset's); mnist-embedded needs no download")
    p.add_argument("--data-dir", default=None, help="where datasets live (default: $VQDRAW_DATA or ~/.cache/vqdraw)")
    p.add_argument("--download", action="store_true",
                   help="download the dataset's official files first if they are missing")
    p.add_argument("--run", type=output_dir, default=None, help="run folder (default: runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in a --run folder that already holds a run (its checkpoints, metrics "
                   "and pictures are removed)")
    add_device_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tensorboard", nargs="?", const="", default=None, metavar="DIR",
                   help="also log the metrics for TensorBoard, into DIR (default: RUN/tensorboard); "
                   'needs pip install "vqdraw[tensorboard]"')
    p.add_argument("--dist-timeout", type=finite_float(min=1, max=86400), default=600.0, metavar="SECONDS",
                   help="under torchrun: how long a rank waits for the others to join, and for each "
                   "collective, before it stops with one line (default: 600)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="bf16: bfloat16 autocast for the refiner (losses and arg-min stay float32); "
                   "auto: bf16 where the hardware computes it natively (a CPU with AMX or AVX-512 BF16, a "
                   "CUDA GPU that supports it), else fp32 (docs/scaling.md)")
    p.add_argument("--compile", nargs="?", const="default", default=None,
                   choices=["default", "reduce-overhead", "max-autotune"],
                   help="torch.compile the per-stage network; optionally the mode (reduce-overhead: "
                        "CUDA graphs on a GPU, for the launch-bound small batches)")
    add_dataclass_flags(p, ModelConfig, skip=MODEL_SKIP, title="model (overrides the preset)",
                        defaults=preset_values("model", ModelConfig))
    p.add_argument("--progressive", type=ranged_type(int, field_range(RefinerConfig, "progressive")), default=None,
                   metavar="P",
                   help="progressive refiner: the first P stages propose deltas at the lowest resolution, "
                   "the next P one upsampling layer higher, ..., the rest at full resolution "
                   "(docs/progressive.md; default: 0, off)")
    add_dataclass_flags(p, TrainConfig, skip=TRAIN_SKIP, title="training (overrides the preset)",
                        defaults=preset_values("train", TrainConfig))
    p.set_defaults(func=run)


def run(args) -> int:
    from ..core.config import get_preset, override
    from ..core.model import VQDraw
    from ..runs import read_train_json
    from ..training import distributed
    from ..training.runtime import Runtime
    from ..training.train import fit

    launch = distributed.launch_env()  # torchrun's variables, checked before anything is loaded
    run_dir = Path(args.run or f"runs/{args.preset}")
    train_over = dataclass_overrides(args, TrainConfig, TRAIN_SKIP)
    if args.resume and args.overwrite:
        from ..errors import ConfigError

        raise ConfigError("--resume continues a run and --overwrite starts it again: give one of them")
    if args.resume:
        saved = read_train_json(run_dir)
        model_cfg = ModelConfig.from_dict(saved["model"])
        train_cfg = TrainConfig.from_dict(saved["train"])
        model_over = dataclass_overrides(args, ModelConfig, MODEL_SKIP)
        if args.progressive is not None:
            model_over["progressive"] = args.progressive
        if model_over:
            from ..errors import ConfigError

            raise ConfigError(f"cannot change the model when resuming ({', '.join(model_over)})")
    else:
        preset = get_preset(args.preset)
        model_cfg = override(preset.model, **dataclass_overrides(args, ModelConfig, MODEL_SKIP))
        if args.progressive is not None:
            model_cfg = override(model_cfg, refiner=override(model_cfg.refiner, progressive=args.progressive))
        train_cfg = preset.train
    if args.resume and "steps" in train_over and "time_budget" not in train_over:
        train_cfg = dataclasses.replace(train_cfg, time_budget=None)  # --resume --steps N: to step N
    train_cfg = override(train_cfg, dataset=args.dataset, **train_over)

    train_set, test_set = _load_data(train_cfg.dataset, args, model_cfg)
    import torch

    torch.manual_seed(train_cfg.seed)
    model = VQDraw(model_cfg)
    if launch.world_size > 1:
        print(f"vqdraw train: rank {launch.rank} of {launch.world_size}: waiting for the other ranks at "
              f"{launch.master_addr}:{launch.master_port} (at most {args.dist_timeout:g} s; --dist-timeout)",
              file=sys.stderr, flush=True)
    distributed.init_from_env(args.device, timeout_s=args.dist_timeout)  # no-op outside torchrun
    runtime = Runtime.resolve(args.device, args.precision, args.compile or False)
    say = print if runtime.main else (lambda *a, **k: None)
    length = f"{train_cfg.steps} steps"
    if train_cfg.time_budget is not None:
        length = f"{train_cfg.time_budget:g} minutes (at most {train_cfg.steps} steps)"
    say(
        f"vqdraw train: {'resuming the run' if args.resume else f'preset {args.preset}'}, dataset "
        f"{train_cfg.dataset} ({len(train_set)} train / "
        f"{len(test_set)} test), K={model_cfg.options} N={model_cfg.stages} "
        f"({model_cfg.code_bits:g}-bit codes), batch {train_cfg.batch}, {length}, "
        f"device {runtime.describe()}, run folder {run_dir}",
        file=sys.stderr,
    )
    log = None
    if args.tensorboard is not None and runtime.main:
        from ..training.tensorboard import TensorBoardLog

        log = TensorBoardLog(args.tensorboard or Path(run_dir) / "tensorboard")
    t0 = time.perf_counter()
    try:
        result = fit(model, train_set, test_set, train_cfg, run_dir, resume=args.resume, overwrite=args.overwrite,
                     runtime=runtime, progress=not args.no_progress, on_log=log)
        distributed.shutdown(sync=True)  # every rank done: tear the group down together
    finally:
        distributed.shutdown()
        if log is not None:
            log.close()
    from ..modalities import modality_for
    from ..modalities.base import evaluation_loss

    last = next((m for m in reversed(result.metrics) if evaluation_loss(m) is not None), None)
    summary = f"done: step {result.step} in {time.perf_counter() - t0:.0f} s"
    if last:
        summary += "; " + modality_for(model.config).summary(last, model.config)
    say(f"vqdraw train: {summary}. Pictures and checkpoints in {run_dir}/", file=sys.stderr)
    return 0


def _load_data(name: str, args, model_cfg: ModelConfig):
    """Train and test splits. An image folder is fitted to the model's size and channels."""
    from ..data import FOLDER_PREFIX, DatasetError, ensure_downloaded, load_dataset_for
    from ..data.download import CATALOGUE, status
    from ..modalities import check_inputs

    check_inputs(model_cfg, dataset=name)  # an image dataset for a volume model, or the reverse: one line
    if name.startswith(FOLDER_PREFIX):
        from ..data.folder import load_image_folder

        c, h, w = model_cfg.data_shape
        path = name[len(FOLDER_PREFIX):]
        return tuple(load_image_folder(path, size=(h, w), channels=c, resize=True, split=s)
                     for s in ("train", "test"))
    if args.download and name in CATALOGUE:
        ensure_downloaded(name, args.data_dir)
    elif name in CATALOGUE and not CATALOGUE[name].manual and not (st := status(name, args.data_dir)).complete:
        offline = (", or train offline on the 5,000 MNIST digits shipped with vqdraw: --dataset mnist-embedded"
                   if tuple(model_cfg.data_shape) == (1, 28, 28) else "")
        raise DatasetError(f"the {name} dataset is not in {st.folder} (missing {', '.join(st.missing)}): "
                           f"add --download to fetch it{offline}")
    # voxel grids of a whole multiple of the model's size are reduced, text cut to its length
    return tuple(load_dataset_for(model_cfg, name, s, args.data_dir) for s in ("train", "test"))
