"""The `vqdraw` command: the only place that reads argv or writes to the terminal.

Each verb lives in its own module under ``vqdraw.cli`` (found automatically: every module with a
``register`` function) and exposes ``register(subparsers)``,
which adds a sub-parser and sets ``func`` to a function ``(args) -> int | None``. Heavy imports
(torch, the model) happen inside those functions so that ``vqdraw --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import VQDrawError

# Order in `vqdraw --help`; verbs not listed here follow in alphabetical order.
ORDER = ["train", "sample", "reconstruct", "stages", "encode", "decode", "eval", "presets", "datasets"]


def command_modules() -> list[str]:
    import pkgutil

    names = [m.name for m in pkgutil.iter_modules(__path__) if m.name != "common"]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqdraw",
        description="VQ-DRAW: train discrete auto-encoders, compress images to a few dozen bits, sample.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in command_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        if hasattr(module, "register"):
            module.register(sub)
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
