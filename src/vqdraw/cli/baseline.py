"""`vqdraw baseline vqvae`: train the VQ-VAE baseline of the paper's Figure 2."""

from __future__ import annotations

from .common import (MAX_BATCH, MAX_OPTIONS, MAX_SIZE, MAX_STEPS, HelpFormatter, add_device_arg, finite_float,
                     output_dir, positive_int)


def register(sub) -> None:
    p = sub.add_parser(
        "baseline",
        description="Train a baseline to compare VQ-DRAW with. The result is a model folder that "
        "eval-samples, probe and code-stats accept as MODEL.",
    )
    kinds = p.add_subparsers(dest="baseline", required=True, metavar="KIND")
    q = kinds.add_parser(
        "vqvae",
        help="VQ-VAE, grid of H/4 x W/4 codes, codebook of C entries, uniform prior",
        description="VQ-VAE (van den Oord et al. 2017) with an (H/4)x(W/4) grid of codes from a "
        "codebook of C entries: (H/4)(W/4) log2(C) bits per image (MNIST: C=2 -> 49 bits, C=4 -> 98 "
        "bits; VQ-DRAW's MNIST model has 60). EMA codebook, commitment loss 0.25, straight-through "
        "gradients. Samples decode uniformly random code grids. Writes config.json, "
        "model.safetensors, train.json, metrics.jsonl, samples.png, reconstructions.png.",
        epilog="example: vqdraw baseline vqvae --codebook 2 --steps 1000 --run runs/vqvae-c2",
        formatter_class=HelpFormatter,
    )
    q.add_argument("--dataset", default="mnist-embedded", help="dataset name (see `vqdraw datasets`)")
    q.add_argument("--data-dir", default=None, help="where datasets live (default: $VQDRAW_DATA or ~/.cache/vqdraw)")
    q.add_argument("--steps", type=positive_int(max=MAX_STEPS), default=1000, help="optimizer steps")
    q.add_argument("--batch", type=positive_int(max=MAX_BATCH), default=32, help="images per step")
    q.add_argument("--lr", type=finite_float(above=0), default=1e-3, help="Adam step size")
    q.add_argument("--codebook", type=positive_int(min=2, max=MAX_OPTIONS), default=2, help="codebook size C")
    q.add_argument("--latent-dim", type=positive_int(max=MAX_SIZE), default=16, help="dimension D of a codebook vector")
    q.add_argument("--seed", type=positive_int(min=0, max=2**63 - 1), default=0, help="seed for initialisation and the data order")
    q.add_argument("--run", type=output_dir, default=None, help="output folder (default: runs/vqvae-c<C>)")
    add_device_arg(q)
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.add_argument("--overwrite", "--force", dest="overwrite", action="store_true",
                   help="replace a model already in --run")
    q.set_defaults(func=run_vqvae)


def run_vqvae(args) -> int:
    import sys
    import time
    from pathlib import Path

    import torch

    from ..baselines.vqvae import VQVAETrainConfig, build_vqvae, train_vqvae
    from ..data import load_dataset
    from ..errors import CheckpointError, ConfigError
    from ..runs import holds_run
    from ..training.runtime import pick_device

    for name in ("steps", "batch"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be at least 1")
    run_dir = Path(args.run or f"runs/vqvae-c{args.codebook}")
    if holds_run(run_dir) and not args.overwrite:  # checked again under the folder's lock
        raise CheckpointError(f"{run_dir} already holds a model; pass --overwrite to replace it or choose another --run")
    train_set = load_dataset(args.dataset, "train", args.data_dir)
    test_set = load_dataset(args.dataset, "test", args.data_dir)
    torch.manual_seed(args.seed)
    model = build_vqvae(train_set, codebook=args.codebook, latent_dim=args.latent_dim)
    device = pick_device(args.device)
    cfg = VQVAETrainConfig(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, dataset=args.dataset)
    print(f"vqdraw baseline vqvae: dataset {args.dataset} ({len(train_set)} train / {len(test_set)} test), "
          f"{model.config.grid[0]}x{model.config.grid[1]} codes, codebook {args.codebook} "
          f"({model.config.code_bits:g} bits per image), batch {args.batch}, {args.steps} steps, "
          f"device {device}, run folder {run_dir}", file=sys.stderr)
    t0 = time.perf_counter()
    res = train_vqvae(model, train_set, test_set, cfg, run_dir, device=device, progress=not args.no_progress,
                      overwrite=args.overwrite)
    f = res["final"]
    print(f"vqdraw baseline vqvae: done in {time.perf_counter() - t0:.0f} s; test MSE {f['test_mse']:.4f} "
          f"(normalised), {f['test_mse_pixels']:.5f} (pixels in [0, 1]), PSNR {f['test_psnr']:.2f} dB, "
          f"{f['test_codes_used']} of {args.codebook} codes used. Model in {run_dir}/", file=sys.stderr)
    return 0
