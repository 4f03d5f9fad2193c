"""What kind of data a model makes: its modality, and the rules a config of each kind follows.

Every ``ModelConfig`` names its modality (``config.modality``): "sequence", "image", "volume",
"text", "audio", "speech", or one registered with :func:`vqdraw.modalities.register`. A config
built without one, or read from a file written before configs recorded it, takes the one its
shape implies (:func:`implied_modality`, the only place that guesses):

    data_shape (C, L)        -> "sequence", or "text" with the categorical likelihood
    data_shape (C, H, W)     -> "image"
    data_shape (C, D, H, W)  -> "volume"

and records it (as an :class:`Implied` name, re-derived when the config is copied with another
shape); audio and speech models are always named ("audio": mono clips (1, L) with a sample
rate; "speech": log-mel blocks (1, bands, frames) of mono audio). What data of another kind
given to a model says is the modality's own (:func:`vqdraw.modalities.check_inputs`). No torch
here: plain names and shapes.
"""

from __future__ import annotations

from ..errors import ConfigError, InputError

MODALITIES = ("sequence", "image", "volume", "text", "audio", "speech")
"""The known modalities: by the data's spatial rank 1, 2, 3, text (rank 1, categorical), audio
(rank 1) and speech (rank 2), the last two named by the config's ``modality``."""

_NAMED = ("audio", "speech")
"""The built-in modalities a shape never implies: a config names them."""

_BY_RANK = {1: "sequence", 2: "image", 3: "volume"}

_PLUGINS: dict[str, str] = {}
"""Modalities registered from outside (:func:`vqdraw.modalities.register`): name -> the built-in
modality whose ``.vqd`` layout they use (``stored_as``), or the name itself for one with its own."""

_CONFIG_CHECKS: dict[str, object] = {}
"""A registered modality's check of a config that names it (its shape, its ``modality_options``)."""


def check_new_name(name) -> None:
    """Refuse a name a new modality cannot take: not identifier-like, or taken."""
    if not isinstance(name, str) or not name.isidentifier() or name in MODALITIES or name in _PLUGINS:
        raise InputError(f"a new modality needs a new identifier-like name, got {name!r:.40}")


def register_name(name: str, stored_as: str | None, check=None) -> None:
    """Make ``name`` a modality a ``ModelConfig.modality`` may name; its ``.vqd`` files are laid out
    as ``stored_as``'s (one of :data:`MODALITIES`), or with ``stored_as=None`` in its own layout
    (registered with the bitstream first). ``check(config)``: raises ConfigError for a config of this
    modality it cannot serve. Called by :func:`vqdraw.modalities.register`."""
    check_new_name(name)
    if stored_as is not None and stored_as not in MODALITIES:
        raise InputError(f"stored_as must be one of {', '.join(MODALITIES)}, got {stored_as!r:.40}")
    _PLUGINS[name] = stored_as or name
    if check is not None:
        _CONFIG_CHECKS[name] = check


def _check_audio(config, max_rate: int) -> None:
    shape = tuple(config.data_shape)
    if len(shape) != 2 or shape[0] != 1 or not 1 <= config.sample_rate <= max_rate:
        raise ConfigError(f"an audio model takes mono clips (1, L) at a sample rate of 1..{max_rate} Hz; "
                          f"got data_shape {shape} at {config.sample_rate} Hz")


def _check_speech(config, max_rate: int) -> None:
    shape = tuple(config.data_shape)
    if len(shape) != 3 or shape[0] != 1 or not 1 <= config.sample_rate <= max_rate:
        raise ConfigError(f"a speech model takes log-mel blocks (1, bands, frames) of audio at a sample rate of "
                          f"1..{max_rate} Hz; got data_shape {shape} at {config.sample_rate} Hz")


def _check_rank(config, name: str) -> None:
    shape = tuple(config.data_shape)
    if _BY_RANK.get(len(shape) - 1) != ("sequence" if name == "text" else name):
        raise ConfigError(f"{article(name)} {name} model takes data of shape {_SHAPES[name]}; got data_shape {shape}")
    if name == "text" and config.likelihood != "categorical":
        raise ConfigError(f"a text model scores characters with the categorical likelihood, got {config.likelihood!r}")


_SHAPES = {"sequence": "(C, L)", "text": "(C, L)", "image": "(C, H, W)", "volume": "(C, D, H, W)"}

_BUILT_IN_CHECKS = {"audio": _check_audio, "speech": _check_speech,
                    **{name: (lambda config, _, name=name: _check_rank(config, name)) for name in _SHAPES}}
"""The rules of the built-in modalities: their shape (and likelihood for text, sample rate for
audio and speech)."""


def check_config(config, max_rate: int) -> None:
    """A config's modality rules, in one place: the built-in ones (the shape each takes, the
    categorical likelihood for text, a sample rate in 1..``max_rate`` for audio and speech and for
    no other), ``modality_options`` only for a registered modality, whose own check
    (:meth:`vqdraw.modalities.Modality.check_config`) runs last."""
    name = config.modality
    if name in _BUILT_IN_CHECKS:
        _BUILT_IN_CHECKS[name](config, max_rate)
    if config.sample_rate and name not in _NAMED:
        raise ConfigError("sample_rate is for audio and speech models (modality \"audio\" or \"speech\")")
    if config.modality_options and name not in _PLUGINS:
        raise ConfigError("modality_options are a registered modality's settings; "
                          f"{article(name)} {name} model has none")
    check = _CONFIG_CHECKS.get(name)
    if check is not None:
        check(config)


def known_modalities() -> tuple[str, ...]:
    """What ``ModelConfig.modality`` may name: the built-in modalities and every registered plug-in."""
    return (*MODALITIES, *_PLUGINS)


def stored_as(config) -> str:
    """The modality a model's ``.vqd`` files record: its own, or for a plug-in the built-in one
    whose layout it uses."""
    name = modality_of(config)
    return _PLUGINS.get(name, name)


def modality_of_shape(data_shape) -> str:
    """The modality of data of shape (C, *S): by the number of spatial dimensions."""
    rank = len(tuple(data_shape)) - 1
    if rank not in _BY_RANK:
        raise InputError(f"data of shape {tuple(data_shape)} has no known modality (1-3 spatial dimensions)")
    return _BY_RANK[rank]


class Implied(str):
    """A modality name a config took from its shape, not one its maker named: a config copied
    with another shape or likelihood (``dataclasses.replace``) takes the one those imply, as a
    config that names none does. Compares, hashes and serialises as the plain name. A config file
    records the modality only where it differs from the implied one (so files keep their bytes):
    a named modality equal to the implied one reads back as implied."""

    __slots__ = ()


def implied_modality(data_shape, likelihood: str | None = None) -> str:
    """The modality a shape (and likelihood) implies: what a config that names none takes, and
    what configs written before the modality was recorded meant. Sequence, image or volume by
    the rank; a rank-1 model with the categorical likelihood is a text model."""
    modality = modality_of_shape(data_shape)
    if modality == "sequence" and likelihood == "categorical":
        return "text"
    return modality


def modality_of(config) -> str:
    """The modality of a model config: its ``modality``; for other configs with a ``data_shape``
    (``likelihood`` optional) and none named, the one their shape implies."""
    return getattr(config, "modality", "") or implied_modality(config.data_shape, getattr(config, "likelihood", None))


def describe_shape(data_shape, modality: str | None = None) -> str:
    """``"1x32x32x32 volume"``, ``"3x32x32 image"``: a shape with its modality, for messages."""
    shape = tuple(data_shape)
    return f"{'x'.join(map(str, shape))} {modality or modality_of_shape(shape)}"


def article(word: str) -> str:
    """"a" or "an" before ``word``, for messages ("an image model", "a volume model")."""
    return "an" if word[:1] in "aeiou" else "a"
