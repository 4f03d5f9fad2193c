"""`vqdraw presets`: the paper's Table 1 as named presets."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("presets",
                       description="Print the named presets (the paper's Table 1) as a table.")
    p.add_argument("--json", action="store_true", help="print the full configurations as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from ..core.config import PRESETS

    if args.json:
        print(json.dumps({n: {"model": p.model.to_dict(), "train": p.train.to_dict()}
                          for n, p in PRESETS.items()}, indent=2))
        return 0
    rows = [
        ("", *PRESETS),
        ("Options (K)", *(p.model.options for p in PRESETS.values())),
        ("Stages (N)", *(p.model.stages for p in PRESETS.values())),
        ("Stages per segment", *(p.model.segment for p in PRESETS.values())),
        ("Unchosen weight (alpha)", *(p.train.alpha for p in PRESETS.values())),
        ("Batch size", *(p.train.batch for p in PRESETS.values())),
        ("Micro-batch", *(p.train.micro for p in PRESETS.values())),
        ("Steps", *(f"{p.train.steps:,}" for p in PRESETS.values())),
        ("Image size", *("x".join(map(str, (*p.model.data_shape[1:], p.model.data_shape[0])))
                         for p in PRESETS.values())),
        ("Code size (bits)", *(f"{p.model.code_bits:g}" for p in PRESETS.values())),
        ("Grad checkpointing", *("yes" if p.train.grad_checkpoint else "no" for p in PRESETS.values())),
        ("Dataset", *(p.train.dataset for p in PRESETS.values())),
    ]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    return 0
