"""`vqdraw distill`: train a fast encoder that predicts the greedy codes (paper §6)."""

from __future__ import annotations

import sys

from dataclasses import fields

from .common import add_dataclass_flags, add_model_arg, dataclass_overrides, output_dir


def register(sub) -> None:
    p = sub.add_parser(
        "distill",
        help="distil the greedy encoder into a small network (a faster encoder for the same decoder)",
        description="Train a small network to predict the codes VQ-DRAW's greedy encoder chooses: "
        "autoregressive (a CNN and a GRU over stages: code i from the image and codes < i; the default) "
        "or independent (a CNN predicts all codes at once). It learns from the train images' greedy codes "
        "and from decoded uniformly random codes (exact labels). Writes distilled.safetensors and distilled.json into the model folder "
        "(a run folder's newest checkpoint); load it with vqdraw.training.distill.load_distilled(folder, model) and "
        "pass it as model.encode(x, encoder=...). "
        "Prints the per-stage agreement with the greedy codes and the test MSE/PSNR of both encoders.",
        epilog="example: vqdraw distill --model runs/mnist --dataset mnist-embedded --steps 2000",
    )
    add_model_arg(p)
    p.add_argument("--dataset", default=None,
                   help="dataset to distil on (default: the one the run was trained on, else mnist-embedded)")
    p.add_argument("--data-dir", default=None, help="where datasets live")
    from ..core.config import DistillConfig  # its fields are the flags: one declaration of each range

    add_dataclass_flags(p, DistillConfig, title="distillation",
                        defaults={f.name: str(f.default) for f in fields(DistillConfig) if f.default is not None})
    p.add_argument("-o", "--output", type=output_dir, default=None,
                   help="folder for distilled.* (default: the model folder, where load_distilled looks)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..core.config import DistillConfig
    from ..training.distill import distill
    from ..errors import ConfigError
    from ..pretrained import is_pretrained, output_home
    from ..runs import resolve_model_dir
    from .common import load_model, train_test_splits

    model = load_model(args)
    cfg = DistillConfig(**dataclass_overrides(args, DistillConfig))
    if cfg.segments is not None and cfg.segments > model.stages:
        raise ConfigError(f"--segments {cfg.segments}: the model has only {model.stages} stages")
    out_dir = args.output or (output_home(args.model) if is_pretrained(args.model) else resolve_model_dir(args.model))
    name, train_set, test_set = train_test_splits(args, model, default="mnist-embedded")
    print(f"vqdraw distill: {args.model} (K={model.options} N={model.stages}), dataset {name} "
          f"({len(train_set)} train / {len(test_set)} test), {cfg.kind} encoder, {cfg.steps} steps of batch {cfg.batch}",
          file=sys.stderr)
    res = distill(model, train_set, test_set, cfg, out_dir=out_dir, progress=not args.no_progress)
    acc = " ".join(f"{a:.3f}" for a in res.accuracy)
    print(f"code accuracy per stage (top-1 agreement with greedy, chance {1 / model.options:.3f}): {acc}")
    print(f"mean code accuracy: {res.mean_accuracy:.3f}")
    unit = "normalised MSE" if model.likelihood.name == "mse" else f"{model.likelihood.name} loss, nats per element"
    for label, m in (("greedy   ", res.greedy), ("distilled", res.distilled)):
        print(f"{label} test loss {m['mse']:.4f} ({unit}), MSE {m['mse_pixels']:.5f}, PSNR {m['psnr']:.2f} dB")
    print(f"wrote {Path(res.out_dir) / 'distilled.safetensors'} and distilled.json ({res.seconds:.0f} s)")
    return 0
