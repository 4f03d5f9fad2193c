"""The `vqdraw` command: the only place that reads argv or writes to the terminal.

VERBS below is the one table of verbs: name -> (module under ``vqdraw.cli``, one-line help), in
the order of `vqdraw --help`. Each module exposes ``register(subparsers)``, which adds the verb's
sub-parser and sets ``func`` to a function ``(args) -> int | None``. Only the module of the verb
being run is imported (none for `vqdraw --help` / `--version`), and heavy imports (torch, the model)
happen inside ``func``, so those stay fast.

Errors: every argparse error, every :class:`~vqdraw.errors.VQDrawError` and every ``OSError``
(permissions, a full or read-only disk, a name too long: the path and the reason) ends in one
line on stderr and exit code 2, before or after a verb's start banner; Ctrl-C in exit code 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from .. import __version__
from ..errors import InputWarning, VQDrawError

VERBS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a VQ-DRAW model (a Table 1 preset; every field can be overridden)"),
    "sample": ("sample", "draw samples from a trained model (uniform prior, or the learned one: --prior)"),
    "reconstruct": ("reconstruct", "encode and decode images; save originals beside reconstructions"),
    "stages": ("stages", "draw the reconstruction after each stage (paper Figure 6)"),
    "encode": ("encode", "compress images, text, volumes or audio into a .vqd file"),
    "decode": ("decode", "decompress a .vqd file into images (PNG), text, volumes (NPY) or audio (WAV)"),
    "export": ("export", "write a model as ONNX graphs (decoder, greedy encoder) that decode anywhere"),
    "prior": ("prior", "train a learned prior over a model's codes (entropy-coded .vqd files, prior samples)"),
    "eval": ("eval", "rate–distortion curves: VQ-DRAW against JPEG and WebP"),
    "presets": ("presets", "print the Table 1 presets"),
    "datasets": ("datasets", "list datasets and where they are stored; verify checksums or download them"),
    "baseline": ("baseline", "train a baseline model (VQ-VAE with a 7x7 grid and a tiny codebook)"),
    "code-stats": ("code_stats", "per-stage option usage, entropy and never-used options over a whole split"),
    "distill": ("distill", "distil the greedy encoder into a fast network (autoregressive or one-pass)"),
    "eval-samples": ("eval_samples", "FID / KID / precision-recall of samples in a self-trained feature space"),
    "probe": ("probe", "how well do the codes predict the labels? (linear / MLP probes, paper §6)"),
    "eval-nll": ("eval_nll", "log-likelihood bounds (single-code and marginal) in nats and bits/dim, by code prefix"),
    "import-reference": ("import_reference", "import the paper author's published .pt checkpoint as a model folder"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: `vqdraw VERB: error: MESSAGE (see vqdraw VERB --help)`; the
    help of every output (an argument of type common.output_file or output_dir) says that missing
    folders are created, as every verb does."""

    def add_argument(self, *args, **kwargs):
        if getattr(kwargs.get("type"), "__name__", "") in ("output_file", "output_dir") and kwargs.get("help"):
            if "created" not in kwargs["help"]:
                kwargs["help"] += " (missing folders are created)"
        return super().add_argument(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _Subparsers(argparse._SubParsersAction):
    """Gives each verb its one-line help from VERBS, so verb modules do not repeat it."""

    def add_parser(self, name, **kwargs):
        kwargs.setdefault("help", VERBS[name][1] if name in VERBS else None)
        return super().add_parser(name, **kwargs)


def build_parser(verb: str | None = None) -> ArgumentParser:
    """The parser; only `verb`'s module is imported and registered (all of them for verb "*")."""
    parser = ArgumentParser(
        prog="vqdraw",
        description="VQ-DRAW: train discrete auto-encoders, compress images, text, volumes and audio "
        "to a few dozen bits per item, sample.",
        epilog="MODEL (a run or model folder) is the first argument of every verb that takes one, "
        "or -m MODEL. `vqdraw VERB --help` for a verb's options.",
    )
    parser.add_argument("--version", action="version", version=f"vqdraw {__version__}")
    parser.register("action", "parsers", _Subparsers)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, _) in VERBS.items():
        if verb == "*" or name == verb:
            importlib.import_module(f"{__name__}.{module}").register(sub)
        else:
            sub.add_parser(name)  # listed in --help; its module is not imported
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(verb)
    if not argv:  # `vqdraw` alone: the help, not a usage error
        parser.print_help()
        return 0
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a one-line usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 2
    _tune_allocator()
    from .. import progress
    from .progress import TerminalProgress

    previous = progress.set_reporter(TerminalProgress)  # the library reports progress; the command shows it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", InputWarning)
            warnings.showwarning = _one_line_warnings(warnings.showwarning)  # restored on leaving the block
            return _run(args)
    finally:
        progress.set_reporter(previous)


def _one_line_warnings(show):
    """The library's input warnings as one ``warning:`` line each; other warnings as ``show`` shows them."""

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, InputWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def _run(args) -> int:
    try:
        if hasattr(args, "model_rest"):  # the verb takes a MODEL (common.add_model_arg)
            from .common import resolve_model

            resolve_model(args)
        from .common import check_outputs

        check_outputs(args)  # no special files, none of the model's own files, no input as output
        from ..data.walk import one_walk

        with one_walk():  # an input folder is listed once per command, however many readers ask
            return int(args.func(args) or 0)
    except VQDrawError as exc:
        return _one_line(args.command, str(exc))
    except OSError as exc:  # the file system refused: permissions, ENOSPC, EROFS, ENAMETOOLONG …
        from ..io import describe_os_error

        return _one_line(args.command, describe_os_error(exc))
    except MemoryError:
        return _one_line(args.command, "out of memory; use a smaller --batch or --count")
    except RuntimeError as exc:  # torch's allocators say "out of memory" as a RuntimeError
        text = str(exc)
        if not any(s in text for s in ("can't allocate memory", "out of memory", "Cannot allocate memory")):
            raise
        return _one_line(args.command, f"out of memory ({text.strip().splitlines()[-1][:200]}); "
                         "use a smaller model, --batch or --count")
    except KeyboardInterrupt:
        print(f"vqdraw {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not _is_decompression_bomb(exc):
            raise
        print(f"vqdraw {args.command}: error: image too large: {exc}", file=sys.stderr)
        return 2


def _one_line(command: str, message: str) -> int:
    """Print an error as one line on stderr (after ending a progress bar's line) and return 2."""
    text = " ".join(message.split()) or "unknown error"
    print(f"\nvqdraw {command}: error: {text}" if _bar_open() else f"vqdraw {command}: error: {text}",
          file=sys.stderr)
    return 2


def _bar_open() -> bool:
    """Whether a tqdm progress bar is still drawn on the terminal (its line has no newline yet)."""
    tqdm = sys.modules.get("tqdm")
    try:
        return bool(tqdm is not None and sys.stderr.isatty() and any(not b.disable for b in tqdm.tqdm._instances))
    except (AttributeError, TypeError, ValueError):
        return False


def _tune_allocator() -> None:
    """glibc malloc: serve large tensors from the heap instead of fresh mmaps that the kernel must
    zero on first touch (mmap threshold 32 MB, its maximum; trim threshold 1 GB). Encoding and
    decoding on the CPU run faster (benchmarks/README.md); results are unchanged. Best effort:
    nothing happens off Linux/glibc."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _is_decompression_bomb(exc: Exception) -> bool:
    """Pillow's refusal of a huge image (imported only if Pillow already is)."""
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(exc, pil.DecompressionBombError)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
