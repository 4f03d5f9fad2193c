"""`vqdraw code-stats`: per-stage option usage and entropy over a whole split."""

from __future__ import annotations

from ._evaluation import add_model_and_data_args
from .common import HelpFormatter


def register(sub) -> None:
    p = sub.add_parser(
        "code-stats",
        description="Encode every image of a split and count, for each stage, how often each "
        "option is chosen. Writes code-stats.json (counts, entropy per stage, unused options) and "
        "code-stats.png (heat map stage x option; never-used options in red).",
        epilog="example: vqdraw code-stats runs/mnist",
        formatter_class=HelpFormatter,
    )
    add_model_and_data_args(p)
    p.add_argument("--split", choices=("train", "test"), default="test", help="which split to encode")
    p.set_defaults(func=run)


def run(args) -> int:
    import math

    from ..baselines import model_kind
    from ..evaluate.codestats import code_statistics, distinct_codes, encode_images, save_heatmap
    from ..data import load_dataset_for
    from ..errors import InputError
    from ..io import atomic_write_json
    from ._evaluation import load, output_dir

    model, path, dataset = load(args)
    images = load_dataset_for(model.config, dataset, args.split, args.data_dir)
    if images.data_shape != tuple(model.config.data_shape):
        raise InputError(f"dataset {dataset} has images of shape {images.data_shape}, the model takes "
                         f"{tuple(model.config.data_shape)}")
    codes = encode_images(model, images)
    stats = code_statistics(codes, model.options)
    result = {"model": str(path), "dataset": dataset, "split": args.split, **stats.to_dict(),
              "distinct_codes": distinct_codes(codes)}
    out = output_dir(args, path)
    atomic_write_json(out / "code-stats.json", result)
    label = "latent position (raster order)" if model_kind(model) == "vqvae" else "stage"
    save_heatmap(stats, out / "code-stats.png", title=f"{path}: {dataset} {args.split}, {stats.images} images",
                 stage_label=label)
    print(f"{out / 'code-stats.json'}: {stats.images} images, {stats.stages} stages x {stats.options} options; "
          f"entropy per stage {result['mean_entropy_bits']:.2f} bits on average (max {math.log2(stats.options):g}); "
          f"{result['unused_total']} (stage, option) pairs never used; "
          f"{result['distinct_codes']} distinct codes")
    return 0
