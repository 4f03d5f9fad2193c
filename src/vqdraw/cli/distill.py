"""`vqdraw distill`: train a fast encoder that predicts the greedy codes (paper §6)."""

from __future__ import annotations

import sys

from .common import MAX_BATCH, MAX_COUNT, MAX_STEPS, add_model_arg, finite_float, output_dir, positive_int


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
    p.add_argument("--steps", type=positive_int(max=MAX_STEPS), default=2000,
                   help="training steps, cross-entropy on the greedy codes (default: 2000)")
    p.add_argument("--batch", type=positive_int(max=MAX_BATCH), default=64, help="images per step (default: 64)")
    p.add_argument("--lr", type=finite_float(above=0), default=1e-3, help="Adam step size (default: 1e-3)")
    p.add_argument("--seed", type=positive_int(min=0, max=2**63 - 1), default=0, help="initialisation and data order (default: 0)")
    p.add_argument("--kind", choices=("autoregressive", "independent"), default="autoregressive",
                   help="autoregressive: code i from the image and the codes < i (a GRU over stages); "
                   "independent: all codes at once from the image (default: autoregressive)")
    p.add_argument("--prior-fraction", type=finite_float(min=0, max=0.95), default=0.5,
                   help="share of every batch that is decoded uniformly random codes labelled with those "
                   "codes (default: 0.5; 0 = train images only)")
    p.add_argument("--prior-images", type=positive_int(max=MAX_COUNT), default=None,
                   help="random codes decoded once for that pool (default: as many as train images)")
    p.add_argument("--segments", type=positive_int(max=MAX_STEPS), default=None, metavar="S",
                   help="distil segment by segment, S stages each: before each segment the train images are "
                   "labelled again with the encoder's own codes up to it and the greedy continuation "
                   "from there; the steps are split over the segments (default: off, one round)")
    p.add_argument("--finetune-steps", type=positive_int(min=0, max=MAX_STEPS), default=0,
                   help="extra steps on the reconstruction error through the frozen decoder "
                   "(straight-through argmax; default 0 = off)")
    p.add_argument("--train-images", type=positive_int(max=MAX_COUNT), default=None, help="use only the first n training images")
    p.add_argument("--test-images", type=positive_int(max=MAX_COUNT), default=None, help="evaluate on only the first n test images")
    p.add_argument("-o", "--output", type=output_dir, default=None,
                   help="folder for distilled.* (default: the model folder, where load_distilled looks)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..training.distill import distill
    from ..errors import ConfigError
    from ..pretrained import is_pretrained, output_home
    from ..runs import resolve_model_dir
    from .common import load_model, train_test_splits

    model = load_model(args)
    if args.segments is not None and args.segments > model.stages:
        raise ConfigError(f"--segments {args.segments}: the model has only {model.stages} stages")
    out_dir = args.output or (output_home(args.model) if is_pretrained(args.model) else resolve_model_dir(args.model))
    name, train_set, test_set = train_test_splits(args, model, default="mnist-embedded")
    print(f"vqdraw distill: {args.model} (K={model.options} N={model.stages}), dataset {name} "
          f"({len(train_set)} train / {len(test_set)} test), {args.kind} encoder, {args.steps} steps of batch {args.batch}",
          file=sys.stderr)
    res = distill(model, train_set, test_set, steps=args.steps, batch=args.batch, lr=args.lr,
                  out_dir=out_dir, progress=not args.no_progress, seed=args.seed,
                  kind=args.kind, prior_fraction=args.prior_fraction, prior_images=args.prior_images,
                  segments=args.segments, finetune_steps=args.finetune_steps, train_limit=args.train_images,
                  test_limit=args.test_images)
    acc = " ".join(f"{a:.3f}" for a in res.accuracy)
    print(f"code accuracy per stage (top-1 agreement with greedy, chance {1 / model.options:.3f}): {acc}")
    print(f"mean code accuracy: {res.mean_accuracy:.3f}")
    unit = "normalised MSE" if model.likelihood.name == "mse" else f"{model.likelihood.name} loss, nats per element"
    for label, m in (("greedy   ", res.greedy), ("distilled", res.distilled)):
        print(f"{label} test loss {m['mse']:.4f} ({unit}), MSE {m['mse_pixels']:.5f}, PSNR {m['psnr']:.2f} dB")
    print(f"wrote {Path(res.out_dir) / 'distilled.safetensors'} and distilled.json ({res.seconds:.0f} s)")
    return 0
