"""Models that ship with vqdraw, so that encoding, decoding and sampling work before any training.

    pretrained:mnist    the `mnist` preset (progressive refiner) trained on the embedded digits;
                        its model card is mnist.md beside this file
    pretrained:fashion  the `fashion` preset trained on Fashion-MNIST (fashion.md)
    pretrained:text     the `text-cpu` preset trained on the embedded English prose (text.md)
    pretrained:speech   the `speech` preset trained on Debian's English prompts (speech.md)

A name ``pretrained:NAME`` is accepted wherever a model folder is (every CLI verb's MODEL,
:meth:`vqdraw.VQDraw.load`), and ``VQDraw.from_pretrained("mnist")`` is the same model.
The folders are package data: read-only, so verbs that write beside their model write beside
the current folder instead (``./pretrained-NAME/``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError, InputError

PREFIX = "pretrained:"
NAMES = ("mnist", "fashion", "text", "speech")
"""The shipped models: each a model folder (config.json, model.safetensors, train.json) named so here."""

_HERE = Path(__file__).resolve().parent


def is_pretrained(name: object) -> bool:
    """Whether `name` is a ``pretrained:NAME`` model name (any NAME; unknown ones are refused on use)."""
    return isinstance(name, str) and name.startswith(PREFIX)


def folder(name: str) -> Path:
    """The model folder of a shipped model, by bare name ("mnist") or full name ("pretrained:mnist")."""
    if not isinstance(name, str):
        raise InputError(f"a pretrained model is named by a string such as 'mnist', got {name!r:.60}")
    bare = name.removeprefix(PREFIX)
    if bare not in NAMES:
        raise CheckpointError(f"no pretrained model {bare!r} (available: {', '.join(PREFIX + n for n in NAMES)})")
    path = _HERE / bare
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{PREFIX}{bare}: its files are missing from this installation ({path})")
    return path


def resolve(path: str | Path) -> Path:
    """A model path as given by a user: ``pretrained:NAME`` becomes its package folder, anything else a Path."""
    return folder(path) if is_pretrained(path) else Path(path)


def output_home(model: str | Path) -> Path:
    """Where a verb writes its default outputs for `model`: the model's own folder, or, for a shipped
    (read-only) model, ``./pretrained-NAME`` in the current folder."""
    if is_pretrained(model):
        return Path("pretrained-" + str(model).removeprefix(PREFIX))
    return Path(model)
