"""`vqdraw prior`: train a learned prior over a model's codes (for entropy-coded .vqd files,
prior sampling and the likelihood bound)."""

from __future__ import annotations

import sys

from .common import (MAX_BATCH, MAX_BEAM, MAX_COUNT, MAX_SIZE, MAX_STEPS, add_model_arg, finite_float,
                     output_dir, positive_int)


def register(sub) -> None:
    p = sub.add_parser(
        "prior",
        description="Encode every item of the model's training split (greedy, or beam search with --beam), "
        "train a small autoregressive network (code and stage embeddings, one GRU layer) on the codes, "
        "keeping the weights with the lowest cross-entropy on a held-out share of them, and write "
        "prior.json and prior.safetensors beside the model (a run folder's newest checkpoint, or the "
        "model folder). Then `vqdraw encode MODEL ... --prior` entropy-codes with it and `vqdraw decode` "
        "finds it by itself. Prints the cross-entropy per stage on the test split against N·log2 K.",
        epilog="example: vqdraw prior runs/mnist --time-budget 3",
    )
    add_model_arg(p)
    p.add_argument("--dataset", default=None, help="dataset whose train split is encoded "
                   "(default: the one the model was trained on)")
    p.add_argument("--data-dir", default=None, help="where datasets live")
    p.add_argument("--beam", type=positive_int(max=MAX_BEAM), default=1,
                   help="encode the training codes with beam search of this width (1 = greedy)")
    p.add_argument("--train-items", type=positive_int(min=2, max=MAX_COUNT), default=None,
                   help="use only the first n training items")
    p.add_argument("--test-items", type=positive_int(max=MAX_COUNT), default=None,
                   help="evaluate on only the first n test items")
    p.add_argument("--steps", type=positive_int(max=MAX_STEPS), default=20000, help="most training steps")
    p.add_argument("--time-budget", type=finite_float(above=0), default=None, metavar="MINUTES",
                   help="stop training after this many minutes (the best held-out weights are kept)")
    p.add_argument("--batch", type=positive_int(max=MAX_BATCH), default=256, help="code sequences per step")
    p.add_argument("--lr", type=finite_float(above=0), default=3e-3, help="AdamW step size")
    p.add_argument("--embed", type=positive_int(max=min(MAX_SIZE, 1024)), default=64, help="embedding width")
    p.add_argument("--hidden", type=positive_int(max=min(MAX_SIZE, 1024)), default=128, help="GRU state width")
    p.add_argument("--dropout", type=finite_float(min=0, max=0.9), default=0.1, help="dropout while training")
    p.add_argument("--holdout", type=finite_float(above=0, max=0.5), default=0.1,
                   help="share of the training codes held out for early stopping")
    p.add_argument("--patience", type=positive_int(max=MAX_STEPS), default=10,
                   help="stop after this many evaluations (every 100 steps) without a better held-out loss")
    p.add_argument("--seed", type=positive_int(min=0, max=2**63 - 1), default=0, help="split, initialisation, order")
    p.add_argument("-o", "--output", type=output_dir, default=None,
                   help="folder for prior.* (default: the model folder, where encode and decode look)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..errors import InputError
    from ..pretrained import is_pretrained
    from ..runs import RunLock, owner_folder, resolve_model_dir
    from .common import load_model

    model = load_model(args)
    if is_pretrained(args.model) and not args.output:
        raise InputError(f"{args.model} is read-only package data; pass -o DIR for the prior's files")
    out_dir = Path(args.output) if args.output else resolve_model_dir(args.model)
    # the run's lock, held until the prior is written: a run that is training is refused at once (its
    # checkpoints come and go), and training cannot start on the run before the prior is written
    with RunLock(owner_folder(out_dir)):
        return _train_and_save(args, model, out_dir)


def _train_and_save(args, model, out_dir) -> int:
    import math

    from ..prior import PriorConfig, train_prior
    from .common import policy_of, train_test_splits

    name, train_set, test_set = train_test_splits(args, model)
    progress = not args.no_progress
    print(f"vqdraw prior: {args.model} (K={model.options} N={model.stages}), dataset {name}; encoding "
          f"{args.train_items or len(train_set)} train items ({'greedy' if args.beam == 1 else f'beam {args.beam}'})",
          file=sys.stderr)
    policy = policy_of(args)
    train_codes = split_codes(model, train_set, args.train_items, policy, progress, "train codes")
    test_codes = split_codes(model, test_set, args.test_items, policy, progress, "test codes")
    config = PriorConfig(int(model.options), int(model.stages), args.embed, args.hidden, args.dropout)
    budget = None if args.time_budget is None else args.time_budget * 60
    prior, report = train_prior(train_codes, model.options, config=config, steps=args.steps, batch=args.batch,
                                lr=args.lr, time_budget=budget, holdout=args.holdout, patience=args.patience,
                                seed=args.seed, model_fingerprint=model.fingerprint(), progress=progress)
    bits = -prior.stage_log_probs(test_codes) / math.log(2)  # exact coding probabilities
    per_stage = bits.mean(0).tolist()
    uniform = model.stages * math.log2(model.options)
    prior.meta["test"] = {"dataset": name, "items": int(test_codes.shape[0]), "bits": float(sum(per_stage)),
                          "stage_bits": per_stage, "uniform_bits": uniform, "beam": args.beam}
    prior.save(out_dir)
    print(f"trained {report.steps} steps in {report.seconds:.0f} s (best held-out step {report.best_step}"
          f"{', stopped early' if report.stopped_early else ''}) on {report.train_items} train codes")
    print("test cross-entropy per stage (bits; uniform " f"{math.log2(model.options):.2f}): "
          + " ".join(f"{b:.2f}" for b in per_stage))
    print(f"test cross-entropy {sum(per_stage):.2f} bits per item against N·log2 K = {uniform:.2f} "
          f"({100 * (1 - sum(per_stage) / uniform):.1f}% fewer), {test_codes.shape[0]} test items")
    print(f"wrote {out_dir / 'prior.safetensors'} and prior.json")
    return 0


def split_codes(model, items, limit, policy, progress: bool, desc: str):
    """Codes (M, N) on the CPU of the first ``limit`` items of a split, each stage choosing by
    ``policy`` (greedy or a beam)."""
    import torch

    from ..compress.codec import encode_images
    from ..core.stageloop import Beam
    from ..modalities.base import progress_bar  # a bar on a terminal, plain lines in a log

    n = len(items) if limit is None else min(limit, len(items))
    batch = max(1, 2000 // policy.width) if isinstance(policy, Beam) and policy.width > 1 else 250
    out = []
    bar = progress_bar(n, chunk=batch, desc=desc, unit="item", enabled=progress)
    try:
        with torch.no_grad():
            for start in range(0, n, batch):
                x = items.batch(range(start, min(n, start + batch)), model.device)
                out.append(encode_images(model, x, policy=policy))
                bar.update(len(x))
    finally:
        bar.close()
    return torch.cat(out) if out else torch.zeros((0, model.stages), dtype=torch.long)
