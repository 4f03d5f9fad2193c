"""`vqdraw import-reference`: turn the paper author's .pt checkpoint into a vqdraw model folder."""

from __future__ import annotations

import argparse

HELP = "import a checkpoint of the paper author's code (unixpickle/vq-draw) as a vqdraw model"
DESCRIPTION = """\
Read a checkpoint written by the paper author's code (unixpickle/vq-draw, branch official-release:
a legacy PyTorch state dict, read with weights_only, so no pickle code runs), map every tensor to
vqdraw's layers and write a model folder (config.json + model.safetensors) usable by every verb.
--download fetches his published checkpoint (MNIST) and checks its pinned sha256. Where vqdraw's
preset layers differ from his, a note says so and whether codes can still match his."""


def register(subparsers) -> None:
    p = subparsers.add_parser("import-reference", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", metavar="FILE.pt", help="his checkpoint (omit with --download)")
    p.add_argument("--preset", required=True, choices=["mnist", "svhn", "cifar10", "celeba"],
                   help="which of his refiners the file holds")
    p.add_argument("-o", "--output", metavar="MODEL_DIR", default=None,
                   help="model folder to write (default: reference-PRESET; missing folders are created)")
    p.add_argument("--download", action="store_true",
                   help="fetch his published checkpoint for --preset (sha256-pinned) instead of FILE")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="where --download keeps the file (DIR/reference/; default: $VQDRAW_DATA "
                        "or ~/.cache/vqdraw)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..baselines.convert import download_reference, import_reference, layer_differences
    from ..errors import InputError

    if args.download == (args.file is not None):
        raise InputError("give either FILE.pt or --download")
    path = args.file
    if args.download:
        path = download_reference(args.preset, args.data_dir)
        print(f"{path}: sha256 ok")
    model = import_reference(path, args.preset)
    out = model.save(args.output or f"reference-{args.preset}")
    params = sum(p.numel() for p in model.parameters())
    print(f"{out}: {args.preset}, K={model.options}, N={model.stages}, {params:,} parameters")
    for d in layer_differences(model, args.preset):
        effect = "exact" if d.exact else "codes will differ from his"
        print(f"note: {d.where}: {d.what} ({effect})")
    return 0
