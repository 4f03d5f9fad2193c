"""`vqdraw probe`: linear and MLP classifiers on the codes (per prefix) and on raw pixels (§6)."""

from __future__ import annotations

from ._evaluation import add_model_and_data_args
from .common import MAX_COUNT, MAX_STAGES, MAX_STEPS, HelpFormatter, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "probe",
        description="Encode the training and test splits, then train a linear classifier and a "
        "one-hidden-layer MLP on the one-hot codes of the first n stages (for each prefix n) and "
        "on raw pixels; report test accuracies. Writes probe.json and probe.png.",
        epilog="example: vqdraw probe runs/mnist",
        formatter_class=HelpFormatter,
    )
    add_model_and_data_args(p)
    p.add_argument("--prefixes", type=positive_int(max=MAX_STAGES), nargs="+", default=None,
                   help="code prefixes (stage counts) to probe (default: all up to 16, else powers of 2 and N)")
    p.add_argument("--epochs", type=positive_int(max=MAX_STEPS), default=20, help="training epochs of each classifier")
    p.add_argument("--train-count", type=positive_int(max=MAX_COUNT), default=None, help="use only this many training images")
    p.add_argument("--seed", type=positive_int(min=0, max=2**63 - 1), default=0, help="seed of the classifiers")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import load_dataset_for
    from ..errors import InputError
    from ..io import atomic_write_json
    from ..evaluate.probe import ProbeRecipe, probe_model, save_probe_plot
    from ._evaluation import load, output_dir

    if args.epochs < 1:
        raise InputError("--epochs must be at least 1")
    model, path, dataset = load(args)
    train = load_dataset_for(model.config, dataset, "train", args.data_dir)
    test = load_dataset_for(model.config, dataset, "test", args.data_dir)
    if test.data_shape != tuple(model.config.data_shape):
        raise InputError(f"dataset {dataset} has images of shape {test.data_shape}, the model takes "
                         f"{tuple(model.config.data_shape)}")
    result = probe_model(model, train, test, args.prefixes,
                         recipe=ProbeRecipe(epochs=args.epochs, seed=args.seed), train_limit=args.train_count)
    result.update({"model": str(path), "dataset": dataset})
    out = output_dir(args, path)
    atomic_write_json(out / "probe.json", result)
    save_probe_plot(result, out / "probe.png", title=f"{path} on {dataset}")
    print(f"{out / 'probe.json'}: test accuracy (chance {result['chance']:.3f})")
    print(f"  {'stages':>6} {'bits':>6} {'linear':>7} {'mlp':>7}")
    for r in result["prefixes"]:
        print(f"  {r['stages']:>6} {r['bits']:>6g} {r['linear']['test']:>7.3f} {r['mlp']['test']:>7.3f}")
    px = result["pixels"]
    print(f"  {'pixels':>6} {'':>6} {px['linear']['test']:>7.3f} {px['mlp']['test']:>7.3f}")
    return 0
