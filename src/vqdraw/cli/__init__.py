"""The `vqdraw` command: the only place that reads argv or writes to the terminal.

Each verb lives in its own module under ``vqdraw.cli`` and exposes ``register(subparsers)``,
which adds a sub-parser and sets ``func`` to a function ``(args) -> int | None``. Heavy imports
(torch, the model) happen inside those functions so that ``vqdraw --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import VQDrawError

# Order here is the order in `vqdraw --help`.
COMMAND_MODULES = [
    "train",
    "sample",
    "reconstruct",
    "stages",
    "presets",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqdraw",
        description="VQ-DRAW: train discrete auto-encoders, compress images to a few dozen bits, sample.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VQDrawError as exc:
        print(f"vqdraw {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vqdraw {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
