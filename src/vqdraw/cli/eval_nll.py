"""`vqdraw eval-nll`: log-likelihood bounds (bits per dimension) for every code prefix."""

from __future__ import annotations

from ._evaluation import add_model_and_data_args
from .common import MAX_BEAM, MAX_COUNT, policy_of, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "eval-nll", help="log-likelihood bounds per code prefix: single code and marginal over beam search",
        description="For every code prefix n = 1..N: the single-code bound -log p(x|c*) + n log K and the "
        "marginal bound -log sum_{c in S} K^-n p(x|c) over the codes S that beam search visits, in nats "
        "per item and bits per dimension (8-bit data: continuous likelihoods integrated over the 256 "
        "bins). Writes OUT_DIR/nll.json and OUT_DIR/nll.png. Definitions: docs/likelihood.md.")
    add_model_and_data_args(p)
    p.add_argument("--count", type=positive_int(max=MAX_COUNT), default=500,
                   help="test items to use (a class-balanced, seeded subset)")
    p.add_argument("--beam", type=positive_int(max=MAX_BEAM), default=1,
                   help="beam width: S holds the codes of the searches of widths B, B/2, ..., 1")
    p.add_argument("--binarize", choices=["none", "threshold", "stochastic"], default=None,
                   help="binarise the test data (bernoulli models; default: as the run was trained)")
    p.add_argument("--prior", action="store_true",
                   help="also the bounds with the learned prior beside the model (`vqdraw prior`) in place of "
                   "the uniform n log K term (both are shown)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    from ..evaluate import nll
    from ..baselines import run_dataset
    from ..data import balanced_subset, load_dataset_for
    from ..data.binarize import BinarizedSet
    from ..errors import InputError
    from ..core.model import VQDraw
    from ..training.runtime import pick_device

    path = args.model  # set by common.resolve_model
    model = VQDraw.load(path, map_location=pick_device(args.device)).eval()
    name = args.dataset or run_dataset(path)
    if name is None:
        raise InputError(f"{path} does not say which dataset it was trained on; pass --dataset")
    how = args.binarize or _run_binarize(path) or "none"
    test = load_dataset_for(model.config, name, "test", args.data_dir)
    if test.data_shape != tuple(model.config.data_shape):
        raise InputError(f"dataset {name} has items of shape {test.data_shape}, the model takes "
                         f"{tuple(model.config.data_shape)}")
    test = BinarizedSet(test, how)
    x = test.batch(balanced_subset(test.labels, args.count, size=len(test)), model.device)
    prior = None
    if args.prior:
        from ..prior import load_prior

        prior = load_prior(path, model)
    rows = nll.nll_bounds(model, x, policy=policy_of(args), prior=prior)
    out = Path(args.output) if args.output else Path(path) / "nll"
    try:
        out.mkdir(parents=True, exist_ok=True)
        report = {"model": str(path), "likelihood": model.config.likelihood, "dataset": name,
                  "binarize": how, "data_shape": list(model.config.data_shape), "rows": rows}
        (out / "nll.json").write_text(json.dumps(report, indent=1) + "\n")
        nll.save_plot(rows, out / "nll.png", title=f"{path}: {model.config.likelihood}, {name}, "
                      f"beam {args.beam}, {len(x)} items")
    except OSError as exc:
        raise InputError(f"{out}: cannot write the results ({exc.strerror or exc})") from None
    print(f"{out / 'nll.json'}: {len(x)} items of {name}{'' if how == 'none' else f' ({how} binarised)'}, "
          f"{model.config.likelihood} likelihood, K={model.options} N={model.stages}, beam {args.beam}")
    print("  stages  bits/dim single  bits/dim marginal  nats single  nats marginal"
          + ("  prior: bits/dim single  bits/dim marginal  nats code (uniform)" if prior else ""))
    for r in rows:
        line = (f"  {r['stages']:6d}  {r['bits_per_dim_single']:15.4f}  {r['bits_per_dim_marginal']:17.4f}  "
                f"{r['nats_single']:11.2f}  {r['nats_marginal']:13.2f}")
        if prior:
            line += (f"  {r['bits_per_dim_single_prior']:22.4f}  {r['bits_per_dim_marginal_prior']:17.4f}  "
                     f"{r['nats_code_prior']:6.2f} ({r['nats_code']:.2f})")
        print(line)
    print(f"  {out / 'nll.png'}")
    return 0


def _run_binarize(path) -> str | None:
    """The binarisation a run was trained with, from its train.json (None if not said)."""
    from pathlib import Path

    from ..errors import VQDrawError
    from ..runs import read_train_json

    for folder in (Path(path), Path(path).parent):
        try:
            return read_train_json(folder)["train"].get("binarize")
        except VQDrawError:
            continue
    return None
