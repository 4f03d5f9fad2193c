"""Untrusted configuration: check a config dict's types and ranges before anything is built.

A ``config.json`` may come from anywhere (a downloaded run folder, a hand edit, a fuzzer). Every
check here is arithmetic on the parsed JSON; nothing is allocated in proportion to the sizes the
file declares, so a hostile file costs milliseconds and fails with one line.

    read_json(path)                      -> the parsed object; bounded size and nesting depth
                                            (CheckpointError on anything that is not sane JSON)
    read_model_config(path, ModelConfig, format, version)
                                         -> a ModelConfig from a model folder's config.json
    check_model_dict(d, ModelConfig)     -> None or ConfigError: field types and ranges
    check_train_dict(d, TrainConfig)     -> None or ConfigError: field types and ranges

The total size of a model a config describes is checked where the model is built
(:mod:`vqdraw.core.sizing`).

Types come from the dataclasses' own annotations (``int``, ``float``, ``bool``, ``str``,
``X | None``, ``tuple[int, ...]``, fixed-length tuples, nested config dataclasses, ``Literal``)
and bounds from the ranges declared on their fields (:mod:`vqdraw.core.fields`), so a new field is
checked without an edit here. This module imports no other vqdraw module but
:mod:`vqdraw.errors`, :mod:`vqdraw.io` (bounded JSON) and :mod:`vqdraw.core.fields`: the config classes are passed in.

Limits (see docs/robustness.md):

* ``MAX_JSON_BYTES`` = 1 MiB and ``MAX_JSON_DEPTH`` = 32 for a JSON file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path

from ..errors import CheckpointError, ConfigError
from ..io import MAX_JSON_BYTES, MAX_JSON_DEPTH, parse_json, read_json  # noqa: F401 (their home is vqdraw.io)
from .fields import Range, range_of

MAX_TUPLE_LENGTH = 64
MAX_STRING_LENGTH = 4096
SHAPE_KEYS = ("image_shape", "data_shape")
"""Names of the model's data shape: (C, L), (C, H, W) or (C, D, H, W)."""
REQUIRED_MODEL_KEYS = ("options", "stages", "segment", "refiner")
"""Besides one of SHAPE_KEYS: what a saved model config must state (``"model": {}`` is refused)."""

_INT_LIMIT = 2**63  # any int field: |value| below this (torch and numpy take int64)


# ---------------------------------------------------------------------------------------------
# JSON


def read_model_config(path: str | Path, model_cls, fmt: str, version: int):
    """The one call a model loader makes for ``config.json``: :func:`read_json`, then the
    envelope ``{"format": fmt, "version": int <= version, "model": {...}}``, then
    ``model_cls.from_dict`` (which runs :func:`check_model_dict`). CheckpointError for a bad file
    or envelope, ConfigError for a bad model config; both one line."""
    meta = read_json(path, "model config")
    return model_cls.from_dict(check_envelope(meta, fmt, version, str(path)))


def check_envelope(meta, fmt: str, version: int, where: str = "config.json") -> dict:
    """``meta["model"]`` after checking ``meta`` is ``{"format": fmt, "version": v, "model": {...}}``
    with an integer ``0 <= v <= version``; one-line CheckpointError otherwise."""
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise CheckpointError(f"{where}: not a {fmt} file")
    v = meta.get("version", 0)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise CheckpointError(f"{where}: format version must be a non-negative integer, got {_short(v)}")
    if v > version:
        raise CheckpointError(f"{where}: written by a newer vqdraw (format {v}; this one reads up to {version})")
    if not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{where}: no model config object in it")
    return meta["model"]


# ---------------------------------------------------------------------------------------------
# Field types and ranges


def check_model_dict(d, model_cls) -> None:
    """Check a model config dict (as stored in config.json) against ``model_cls`` (ModelConfig):
    required keys, no unknown keys, every field's type and range. One-line :class:`ConfigError`;
    nothing is built."""
    if not isinstance(d, dict):
        raise ConfigError(f"model config must be a JSON object, got {_kind(d)}")
    shape_keys = [k for k in SHAPE_KEYS if k in d]
    missing = [k for k in REQUIRED_MODEL_KEYS if k not in d]
    if not shape_keys:
        missing.insert(0, " or ".join(k for k in SHAPE_KEYS if k in _hints(model_cls)) or SHAPE_KEYS[0])
    if missing:
        raise ConfigError(f"model config lacks {', '.join(missing)}")
    if len(shape_keys) > 1:
        raise ConfigError(f"model config has both {' and '.join(shape_keys)}")
    names = _hints(model_cls)
    written = shape_keys[0]
    field = written if written in names else next(k for k in SHAPE_KEYS if k in names)
    d = {(field if k == written else k): v for k, v in d.items()}
    try:  # the shape field under either name (format 1 wrote image_shape); errors say the file's
        check_fields(d, model_cls, "model")
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(f"model.{field}", f"model.{written}")) from None


def check_train_dict(d, train_cls) -> None:
    """Check a training config dict against ``train_cls`` (TrainConfig): types and ranges."""
    if not isinstance(d, dict):
        raise ConfigError(f"train config must be a JSON object, got {_kind(d)}")
    check_fields(d, train_cls, "train")


def check_fields(d: dict, cls, where: str) -> None:
    """Every key of ``d`` is a field of dataclass ``cls`` whose value has the annotated type, is
    finite, and lies in the range declared on its field (:mod:`vqdraw.core.fields`); nested config dataclasses are checked recursively."""
    hints = _hints(cls)
    for key in d:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: field names must be strings, got {_kind(key)}")
    unknown = sorted(k for k in d if k not in hints)
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise ConfigError(f"{where}: unknown field(s) {shown} for {cls.__name__}")
    ranges = {f.name: range_of(f) for f in dataclasses.fields(cls)}
    for key, value in d.items():
        _check_value(value, hints[key], f"{where}.{key}", key, ranges.get(key))


def _hints(cls) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def _check_value(value, tp, where: str, key: str, rng: Range | None = None) -> None:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _check_value(value, options[0], where, key, rng)
        for option in options:  # a true union: accept the first type that fits
            try:
                return _check_value(value, option, where, key, rng)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {_kind(value)} fits none of {tp}")
    if origin is typing.Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise ConfigError(f"{where}: must be one of {', '.join(map(repr, args))}, got {_short(value)}")
        return
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a JSON object, got {_kind(value)}")
        check_fields(value, tp, where)
        return
    if origin is dict:  # a JSON object of scalars (ModelConfig.modality_options)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a JSON object, got {_kind(value)}")
        if len(value) > MAX_TUPLE_LENGTH:
            raise ConfigError(f"{where}: at most {MAX_TUPLE_LENGTH} entries, got {len(value)}")
        key_type, value_type = args or (str, str)
        for name, item in value.items():
            _check_value(name, key_type, f"{where} key", key)
            _check_value(item, value_type, f"{where}.{str(name)[:40]}", key)
        return
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: must be a list, got {_kind(value)}")
        variadic = len(args) == 2 and args[1] is Ellipsis
        limit = rng.length if rng is not None and rng.length is not None else MAX_TUPLE_LENGTH
        if variadic and len(value) > limit:
            raise ConfigError(f"{where}: at most {limit} entries, got {len(value)}")
        if args and not variadic and len(value) != len(args):
            raise ConfigError(f"{where}: must have {len(args)} entries, got {len(value)}")
        if key in SHAPE_KEYS and not 2 <= len(value) <= 4:
            raise ConfigError(f"{where}: must have 2 to 4 entries (channels first), got {len(value)}")
        element = args[0] if args else None
        for i, item in enumerate(value):
            if element is not None:
                _check_value(item, element, f"{where}[{i}]", key, rng)
        return
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, got {_short(value)}")
        return
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: must be an integer, got {_short(value)}")
        if abs(value) >= _INT_LIMIT:
            raise ConfigError(f"{where}: integer out of range")
        _check_range(value, where, rng)
        return
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: must be a number, got {_short(value)}")
        if isinstance(value, int) and abs(value) >= _INT_LIMIT or not math.isfinite(value):
            raise ConfigError(f"{where}: must be a finite number, got {_short(value)}")
        _check_range(value, where, rng)
        return
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string, got {_short(value)}")
        if len(value) > MAX_STRING_LENGTH:
            raise ConfigError(f"{where}: string longer than {MAX_STRING_LENGTH} characters")
        _check_range(value, where, rng)
        return
    # an annotation this module does not know: JSON scalars only, no containers
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{where}: unexpected {_kind(value)}")


def _check_range(value, where: str, rng: Range | None) -> None:
    if rng is not None and (why := rng.problem(value)) is not None:
        raise ConfigError(f"{where}: {why}")


def _kind(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
             int: "an integer", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _short(value) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else _kind(value)
    return text if len(text) <= 40 else text[:37] + "..."
