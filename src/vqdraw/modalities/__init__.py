"""The modality registry: one small class per kind of data, asked by the CLI verbs and the trainer.

    modality_for(model.config)       -> the model's Modality (image, volume, sequence, text, audio, speech)
    check_inputs(config, files, ds)  -> one line when files or a dataset hold another kind of data
    path_modality("grid.npy")        -> "volume": what a file or folder given on the command line holds

A :class:`~vqdraw.modalities.base.Modality` reads its inputs (files, or a dataset's test split),
writes its outputs (original/reconstruction pairs, samples, stages, decoded files, a training
run's outputs) and reports on them. A model's modality is its config's ``modality``
(:func:`vqdraw.core.modality.modality_of`); a dataset's by :func:`vqdraw.data.dataset_modality` (from its name).
Adding a kind of data is adding one class here, or, from outside the package, registering one:

    class Heatmap(ImageModality):        # any Modality subclass; `name` is new
        name = "heatmap"
    vqdraw.modalities.register(Heatmap(), stored_as="image")
    ModelConfig((1, 32, 32), modality="heatmap")   # its models; .vqd files laid out as images

A modality whose files must record something no built-in layout holds registers its own layout
instead: ``register(Series(), code=200, dims=2)`` gives its ``.vqd`` files modality byte 200 and
a header block it writes and reads itself (``compress_codes(..., extra=bytes)``, ``VqdFile.extra``),
and its settings live in ``ModelConfig.modality_options``, checked by its ``check_config``
(tests/test_modality_plugin.py defines one outside the package).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .audio import AudioModality
from .base import DecodeOptions, EncodeOptions, Inputs, Modality
from .image import ImageModality
from .sequence import SequenceModality
from .speech import SpeechModality
from .text import TextModality
from .volume import VolumeModality

REGISTRY: dict[str, Modality] = {m.name: m for m in (ImageModality(), VolumeModality(), SequenceModality(),
                                                      TextModality(), AudioModality(), SpeechModality())}
"""Every modality by name."""

_PATH_ORDER = ("text", "volume", "audio", "image")  # what a file or folder given on the command line holds
_BUILT_IN = frozenset(REGISTRY)
_BUILT_IN_CLASSES = frozenset(type(m) for m in REGISTRY.values())


def modality_for(config) -> Modality:
    """The modality of a model config (anything with ``data_shape``; ``likelihood`` and ``modality``
    optional)."""
    from ..core.modality import modality_of

    return REGISTRY[modality_of(config)]


def register(modality: Modality, *, stored_as: str | None = None, code: int | None = None,
             dims: int | None = None) -> Modality:
    """Add a kind of data from outside the package: ``modality`` (a :class:`Modality` instance
    whose ``name`` is new) serves every model whose ``ModelConfig.modality`` names it — training's
    metrics and pictures, the verbs' inputs and outputs, the check of its configs
    (:meth:`Modality.check_config`, which also reads ``ModelConfig.modality_options``).

    Its ``.vqd`` files use the layout of the built-in modality ``stored_as`` ("image", "volume",
    "sequence", "text", "audio" or "speech"), or, with ``code`` (128..255) and ``dims`` (its data's
    dimensions, channels first) instead, a layout of its own with a header block the modality
    writes and reads (:func:`vqdraw.compress.bitstream.register_layout`). Returns ``modality``."""
    from ..compress.bitstream import register_layout
    from ..core.modality import check_new_name, register_name

    if not isinstance(modality, Modality):
        raise InputError(f"register() takes a Modality instance, got {type(modality).__name__}")
    if (stored_as is None) == (code is None) or (code is None) != (dims is None):
        raise InputError("register() takes stored_as= (a built-in layout) or code= and dims= (its own), "
                         "one of the two")
    check_new_name(modality.name)
    if code is not None:
        register_layout(modality.name, code, dims)
    register_name(modality.name, stored_as, check=modality.check_config)
    REGISTRY[modality.name] = modality
    return modality


def by_name(name: str) -> Modality:
    return REGISTRY[name]


def path_modality(path) -> str:
    """What a file or folder given on the command line holds, from its name(s): text files,
    voxel grids, audio files, else images."""
    from ..data.walk import one_walk

    p = Path(path)
    with one_walk():  # each modality asks about the folder's files: list it once
        for name in _PATH_ORDER:
            if REGISTRY[name].holds_path(p):
                return name
    return "image"


def check_inputs(config, paths=(), dataset: str | None = None) -> None:
    """Refuse input files or a dataset name of another modality than the model's (one line)."""
    from ..data import dataset_modality

    ours = modality_for(config)
    for p in paths or ():
        if ours.name not in _BUILT_IN and ours.holds_path(p):
            continue  # a registered modality's own files (say .csv), which no built-in one claims
        check_modality(config, path_modality(p), str(p))
    if dataset:
        check_modality(config, dataset_modality(dataset), f"dataset {dataset}")


def check_modality(config, modality: str, source: str) -> None:
    """Refuse data of ``modality`` (from ``source``, named in the message) for a model of another:
    one line that says what to give instead (the model's :attr:`Modality.give`), e.g.
    ``voxels:runs/grids holds volume data, but this model is an image model (1x28x28 image); give
    it PNG/JPEG images (...)``. A model reads its own modality's data and what its modality
    :attr:`~Modality.reads` (speech: audio files); a plug-in also what its layout's modality reads."""
    from ..core.modality import article, describe_shape, stored_as

    ours = modality_for(config)
    layout = REGISTRY.get(stored_as(config), ours)
    if modality not in {ours.name, ours.reads, layout.name, layout.reads} - {""}:
        raise InputError(f"{source} holds {modality} data, but this model is {article(ours.name)} {ours.name} model "
                         f"({describe_shape(config.data_shape, ours.name)}); give it {_give(ours)}")


def _give(modality: Modality) -> str:
    """What to give a model of ``modality``: its own ``give``; a plug-in that says none (its files
    may differ from the built-in class it extends) is given "<name> data"."""
    if type(modality) not in _BUILT_IN_CLASSES:
        for cls in type(modality).__mro__:  # the plug-in's own classes, up to the built-in one it extends
            if cls in _BUILT_IN_CLASSES:
                return f"{modality.name} data"
            if "give" in vars(cls):
                break
    return modality.give or f"{modality.name} data"


def run_outputs() -> tuple[str, ...]:
    """Every file any modality's training writes into a run folder (cleared by --overwrite)."""
    return tuple(sorted({name for m in REGISTRY.values() for name in m.run_outputs}))


__all__ = ["REGISTRY", "DecodeOptions", "EncodeOptions", "Inputs", "Modality", "by_name", "check_inputs",
           "check_modality", "modality_for", "path_modality",
           "register", "run_outputs"]
