"""`vqdraw train`: train a preset (Table 1) with any field overridden, or resume a run."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..config import ModelConfig, TrainConfig
from .common import add_dataclass_flags, dataclass_overrides

MODEL_SKIP = {"image_shape", "mean", "std", "refiner"}
TRAIN_SKIP = {"dataset"}


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a VQ-DRAW model (a Table 1 preset; every field can be overridden)",
        description="Train a VQ-DRAW model. Writes checkpoints, metrics.jsonl, samples.png, "
        "reconstructions.png, stages.png and curves.png into the run folder, which every other "
        "command accepts as MODEL.",
        epilog="example: vqdraw train --preset mnist --dataset mnist-embedded --steps 1000 --run runs/mnist\n"
        "several processes: torchrun --standalone --nproc_per_node=N -m vqdraw.cli train ... "
        "(data-parallel; see docs/scaling.md)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", default="mnist", help="mnist, svhn, cifar10 or celeba (see `vqdraw presets`)")
    p.add_argument("--dataset", default=None,
                   help="dataset name (default: the preset's); mnist-embedded needs no download")
    p.add_argument("--data-dir", default=None, help="where datasets live (default: $VQDRAW_DATA or ~/.cache/vqdraw)")
    p.add_argument("--download", action="store_true",
                   help="download the dataset's official files first if they are missing")
    p.add_argument("--run", default=None, help="run folder (default: runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run from its newest checkpoint")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: bfloat16 autocast for the refiner (losses and arg-min stay float32)")
    p.add_argument("--compile", nargs="?", const="default", default=None,
                   choices=["default", "reduce-overhead", "max-autotune"],
                   help="torch.compile the per-stage network; optionally the mode (reduce-overhead: "
                        "CUDA graphs on a GPU, for the launch-bound small batches)")
    add_dataclass_flags(p, ModelConfig, skip=MODEL_SKIP, title="model (overrides the preset)")
    add_dataclass_flags(p, TrainConfig, skip=TRAIN_SKIP, title="training (overrides the preset)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config import get_preset, override
    from ..model import VQDraw
    from ..train import fit, pick_device

    run_dir = Path(args.run or f"runs/{args.preset}")
    train_over = dataclass_overrides(args, TrainConfig, TRAIN_SKIP)
    if args.resume:
        saved = _saved_run(run_dir)
        model_cfg = ModelConfig.from_dict(saved["model"])
        train_cfg = TrainConfig.from_dict(saved["train"])
        model_over = dataclass_overrides(args, ModelConfig, MODEL_SKIP)
        if model_over:
            from ..errors import ConfigError

            raise ConfigError(f"cannot change the model when resuming ({', '.join(model_over)})")
    else:
        preset = get_preset(args.preset)
        model_cfg = override(preset.model, **dataclass_overrides(args, ModelConfig, MODEL_SKIP))
        train_cfg = preset.train
    train_cfg = override(train_cfg, dataset=args.dataset, **train_over)

    train_set, test_set = _load_data(train_cfg.dataset, args, model_cfg)
    import torch

    torch.manual_seed(train_cfg.seed)
    model = VQDraw(model_cfg)
    from .. import distributed

    dist_info = distributed.init_from_env(args.device)  # no-op outside torchrun
    device = distributed.device_for(dist_info, args.device) if dist_info.enabled else pick_device(args.device)
    say = print if dist_info.is_main else (lambda *a, **k: None)
    say(
        f"vqdraw train: preset {args.preset}, dataset {train_cfg.dataset} ({len(train_set)} train / "
        f"{len(test_set)} test), K={model_cfg.options} N={model_cfg.stages} "
        f"({model_cfg.code_bits:g}-bit codes), batch {train_cfg.batch}, {train_cfg.steps} steps, "
        f"device {device}, run folder {run_dir}"
        + (f", {dist_info.world_size} processes ({dist_info.backend})" if dist_info.enabled else ""),
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    try:
        result = fit(model, train_set, test_set, train_cfg, run_dir, resume=args.resume, device=device,
                     progress=not args.no_progress, precision=args.precision,
                     compile=args.compile or False)
    finally:
        distributed.shutdown()
    last = next((m for m in reversed(result.metrics) if "test_mse" in m), None)
    summary = f"done: step {result.step} in {time.perf_counter() - t0:.0f} s"
    if last:
        summary += (f"; test MSE {last['test_mse']:.4f} (normalised), {last['test_mse_pixels']:.5f} "
                    f"(pixels in [0, 1]), PSNR {last['test_psnr']:.2f} dB")
    say(f"vqdraw train: {summary}. Pictures and checkpoints in {run_dir}/", file=sys.stderr)
    return 0


def _load_data(name: str, args, model_cfg: ModelConfig):
    """Train and test splits. An image folder is fitted to the model's size and channels."""
    from ..data import FOLDER_PREFIX, VOXELS_PREFIX, ensure_downloaded, load_dataset
    from ..data.download import CATALOGUE
    from ._volumes import check_dataset

    check_dataset(model_cfg, name)  # an image dataset for a volume model, or the reverse: one line
    if name.startswith(VOXELS_PREFIX):  # grids of a whole multiple of the model's size are reduced
        from ..data.voxels import load_voxel_folder

        size = tuple(model_cfg.data_shape[1:])
        return tuple(load_voxel_folder(name[len(VOXELS_PREFIX):], split=s, size=size) for s in ("train", "test"))
    if name.startswith(FOLDER_PREFIX):
        from ..data.folder import load_image_folder

        c, h, w = model_cfg.image_shape
        path = name[len(FOLDER_PREFIX):]
        return tuple(load_image_folder(path, size=(h, w), channels=c, resize=True, split=s)
                     for s in ("train", "test"))
    if args.download and name in CATALOGUE:
        ensure_downloaded(name, args.data_dir)
    return load_dataset(name, "train", args.data_dir), load_dataset(name, "test", args.data_dir)


def _saved_run(run_dir: Path) -> dict:
    from ..errors import CheckpointError

    path = run_dir / "train.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot resume, run description unreadable ({exc})") from exc
