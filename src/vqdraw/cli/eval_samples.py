"""`vqdraw eval-samples`: FID, KID and precision/recall of uniform-prior samples (and of
reconstructions) in the space of a feature net the project trains on the dataset itself."""

from __future__ import annotations

from ._evaluation import add_model_and_data_args
from .common import MAX_SAMPLES, MAX_STEPS, HelpFormatter, finite_float, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "eval-samples",
        description="Draw --count samples from uniformly random codes, reconstruct --count test "
        "images, and compare both with the test images in the penultimate layer of a small CNN "
        "classifier trained on the dataset (cached under DATA_DIR/features/DATASET/). Works for "
        "VQ-DRAW models and `vqdraw baseline` models. Writes eval-samples.json and "
        "eval-samples.png (a grid of the first 100 samples).",
        epilog="example: vqdraw eval-samples runs/mnist --count 500",
        formatter_class=HelpFormatter,
    )
    add_model_and_data_args(p)
    p.add_argument("--count", type=positive_int(max=MAX_SAMPLES), default=500, help="samples to draw (and test images to compare with)")
    p.add_argument("--seed", type=positive_int(min=0, max=2**63 - 1), default=0, help="seed of the random codes (and KID subsets)")
    p.add_argument("--kid-subsets", type=positive_int(max=100_000), default=100, help="random subsets averaged by KID")
    p.add_argument("--feature-steps", type=positive_int(max=MAX_STEPS), default=1000,
                   help="training steps of the feature net (a cached net is reused only if they match)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while training the feature net")
    p.add_argument("--prior", action="store_true",
                   help="also draw --count samples from the learned prior beside the model (`vqdraw prior`) and "
                   "report them beside the uniform ones")
    p.add_argument("--temperature", type=finite_float(above=0, max=100), default=1.0,
                   help="with --prior: the prior's sampling temperature")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evaluate import plots
    from ..errors import InputError
    from ..io import atomic_write_json
    from ..evaluate.metrics.features import FeatureRecipe
    from ..evaluate.metrics.samples import evaluate_samples
    from ._evaluation import load, output_dir

    if args.feature_steps < 1 or args.kid_subsets < 1:
        raise InputError("--feature-steps and --kid-subsets must be at least 1")
    model, path, dataset = load(args)
    prior = None
    if args.prior:
        from ..core.model import VQDraw
        from ..prior import load_prior

        if not isinstance(model, VQDraw):
            raise InputError("--prior needs a VQ-DRAW model (a baseline has no stage codes)")
        prior = load_prior(path, model)
    result, samples = evaluate_samples(model, dataset, count=args.count, seed=args.seed,
                                       data_dir=args.data_dir, kid_subsets=args.kid_subsets,
                                       features=FeatureRecipe(steps=args.feature_steps),
                                       progress=not args.no_progress, prior=prior, temperature=args.temperature)
    result["model"] = str(path)
    out = output_dir(args, path)
    atomic_write_json(out / "eval-samples.json", result)
    plots.save_png(plots.grid(samples[:100], ncol=10, scale=plots._scale(model)), out / "eval-samples.png")
    r, f = result["reconstruction"], result["real_vs_real"]
    print(f"{out / 'eval-samples.json'}: {result['bits_per_image']:g} bits/image, {args.count} samples: "
          f"FID {result['fid']:.2f}, KID {result['kid_mean']:.4f} ± {result['kid_std']:.4f}, "
          f"precision {result['precision']:.3f}, recall {result['recall']:.3f}, classifier score "
          f"{result['classifier']['score']:.2f}; reconstructions: "
          f"PSNR {r['psnr']:.2f} dB, FID {r['fid']:.2f}; real vs real FID {f['fid']:.2f}; "
          f"feature net test accuracy {result['feature_net_test_accuracy']:.4f}")
    if prior is not None:
        q = result["prior_samples"]
        print(f"  samples        FID      KID     precision  recall  classifier score")
        for label, m in (("uniform codes", result), (f"prior (T={args.temperature:g})", q)):
            print(f"  {label:14s} {m['fid']:7.2f}  {m['kid_mean']:.4f}  {m['precision']:9.3f}  {m['recall']:6.3f}  "
                  f"{m['classifier']['score']:.2f}")
    return 0
