"""Untrusted configuration: check a config dict's types, ranges and total size before anything is built.

A ``config.json`` may come from anywhere (a downloaded run folder, a hand edit, a fuzzer). Every
check here is arithmetic on the parsed JSON; nothing is allocated in proportion to the sizes the
file declares, so a hostile file costs milliseconds and fails with one line.

    read_json(path)                      -> the parsed object; bounded size and nesting depth
                                            (CheckpointError on anything that is not sane JSON)
    read_model_config(path, ModelConfig, format, version)
                                         -> a ModelConfig from a model folder's config.json
    check_model_dict(d, ModelConfig)     -> None or ConfigError: field types and ranges, then
                                            estimate_size(d) against MAX_PARAMETERS and
                                            MAX_ACTIVATION_BYTES
    check_train_dict(d, TrainConfig)     -> None or ConfigError: field types and ranges
    check_size(model, batch)             -> None or ConfigError: the size limits for a batch size
    estimate_size(model, batch)          -> {"parameters", "activations", "bytes"}

Types come from the dataclasses' own annotations (``int``, ``float``, ``bool``, ``str``,
``X | None``, ``tuple[int, ...]``, fixed-length tuples, nested config dataclasses, ``Literal``)
and bounds from the ranges declared on their fields (:mod:`vqdraw.core.fields`), so a new field is
checked without an edit here. This module imports no other vqdraw module but
:mod:`vqdraw.errors` and :mod:`vqdraw.core.fields`: the config classes are passed in.

Limits (see docs/robustness.md):

* ``MAX_PARAMETERS`` = 2**28 parameters (1 GiB of float32 weights).
* ``MAX_ACTIVATION_BYTES`` = 2**32 bytes (4 GiB): the float32 outputs of every layer of one
  stage's refiner, plus the K proposals, for one batch (one image when only loading a model,
  the micro-batch when training).
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
from .fields import Range, range_of

MAX_PARAMETERS = 2**28
MAX_ACTIVATION_BYTES = 2**32
MAX_JSON_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
MAX_TUPLE_LENGTH = 64
MAX_STRING_LENGTH = 4096
SHAPE_KEYS = ("image_shape", "data_shape")
"""Names of the model's data shape: (C, L), (C, H, W) or (C, D, H, W)."""
REQUIRED_MODEL_KEYS = ("options", "stages", "segment", "refiner")
"""Besides one of SHAPE_KEYS: what a saved model config must state (``"model": {}`` is refused)."""

_INT_LIMIT = 2**63  # any int field: |value| below this (torch and numpy take int64)


# ---------------------------------------------------------------------------------------------
# JSON


def read_json(path: str | Path, what: str = "config", max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_JSON_DEPTH):
    """The JSON object in file ``path``, refusing with one-line :class:`CheckpointError` a file
    that is missing, not a regular file, over ``max_bytes``, not UTF-8, not JSON, nested deeper
    than ``max_depth``, or holding NaN/Infinity."""
    p = Path(path)
    try:
        if not p.is_file():
            raise CheckpointError(f"{p}: {what} file is missing or not a regular file")
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot read the {what} file ({exc.strerror or exc})") from None
    return parse_json(data, f"{p}", what, max_bytes=max_bytes, max_depth=max_depth)


def parse_json(data: bytes | str, where: str = "JSON", what: str = "config",
               max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH):
    """:func:`json.loads` for untrusted bytes, with the bounds and errors of :func:`read_json`."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        raise CheckpointError(f"{where}: {what} file is larger than {max_bytes} bytes; not a vqdraw {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{where}: {what} file is not UTF-8 text (byte {exc.start})") from None

    def refuse_constant(name: str):
        raise ValueError(f"non-finite number {name}")

    try:
        obj = json.loads(text, parse_constant=refuse_constant)
    except RecursionError:
        raise CheckpointError(f"{where}: {what} file is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, huge integers, NaN/Infinity
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{where}: {what} file is not valid JSON ({first})") from None
    if _depth_exceeds(obj, max_depth):
        raise CheckpointError(f"{where}: {what} file is nested deeper than {max_depth} levels")
    return obj


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


def _depth_exceeds(obj, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children)
    return False


# ---------------------------------------------------------------------------------------------
# Field types and ranges


def check_model_dict(d, model_cls) -> None:
    """Check a model config dict (as stored in config.json) against ``model_cls`` (ModelConfig):
    required keys, no unknown keys, every field's type and range, then the size limits with one
    image per batch. One-line :class:`ConfigError`; nothing is built."""
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
    check_size(with_defaults(d, model_cls), 1)


def with_defaults(d: dict, cls) -> dict:
    """``d`` with the missing fields of dataclass ``cls`` (and of nested config dataclasses) filled
    in from the class's defaults, as the constructor would; for sizing a checked dict."""
    hints = _hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in d:
            value = d[f.name]
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        tp = hints.get(f.name)
        if dataclasses.is_dataclass(tp):
            value = with_defaults(value if isinstance(value, dict) else dataclasses.asdict(value), tp)
        out[f.name] = value
    return out


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


# ---------------------------------------------------------------------------------------------
# Size


def _get(cfg, name: str, default=None):
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def estimate_size(cfg, batch: int = 1) -> dict:
    """Parameter count and one stage's activations for ``batch`` inputs, computed arithmetically.

    ``cfg`` is a ModelConfig or a complete model config dict whose types :func:`check_fields`
    accepted (see :func:`with_defaults`).
    Returns ``{"parameters": P, "activations": A, "bytes": 4 * (P + A)}``, where ``A`` counts
    the float32 outputs of every layer of one stage's refiner plus the ``(K, C, ...)`` deltas and
    proposals, for ``batch`` inputs. Mirrors :class:`vqdraw.core.refiner.Refiner`: a stride-2 conv per
    ``down`` entry, 3-wide convs for ``body`` and ``pre_head``, bottleneck residual blocks, a
    4-wide stride-2 transposed conv per ``up`` entry, one head (or one per stage), a stage mask
    per conv, GroupNorm affines when ``group_norm``, and the first stage's (K, C, ...) bias.
    """
    shape = None
    for key in SHAPE_KEYS:
        shape = _get(cfg, key)
        if shape is not None:
            break
    data_channels, *spatial = (int(s) for s in shape)
    # the canvas may hold more channels than the data (vqdraw.core.likelihood: canvas_channels)
    likelihood = _get(cfg, "likelihood", "mse")
    categories = int(_get(cfg, "categories", 256) or 256)
    channels = {"gaussian": 2, "discretized-logistic": 2,
                "categorical": min(categories, 16)}.get(likelihood, 1) * data_channels
    dims = len(spatial)
    pixels = math.prod(spatial)
    K = int(_get(cfg, "options"))
    stages = int(_get(cfg, "stages"))
    segment = int(_get(cfg, "segment"))
    per_segment = min(segment, stages)
    segments = -(-stages // segment)
    r = _get(cfg, "refiner")
    down, body, up, pre_head = ([int(c) for c in _get(r, name)] for name in ("down", "body", "up", "pre_head"))
    down_k, head_k = int(_get(r, "down_kernel")), int(_get(r, "head_kernel"))
    res_blocks, expand = int(_get(r, "res_blocks")), int(_get(r, "res_expand"))
    norm = bool(_get(r, "group_norm"))
    mask_down = bool(_get(r, "mask_down", True))
    raw_body = bool(_get(r, "raw_body", False))
    if not bool(_get(cfg, "stage_conditioning", True)):
        per_segment = 1  # one mask row and one head serve every stage
    heads = per_segment if _get(r, "head_per_stage") else 1

    dilations = [int(d) for d in _get(r, "dilations", ()) or ()]
    read = categories * data_channels if bool(_get(r, "softmax_input", False)) else channels
    if dilations:  # the author's text refiner (refiner.TextRefiner)
        width, length = body[0], pixels
        hidden = pre_head[0] if pre_head else width
        ln = 2 * length  # LayerNorm's affine per channel: weight and bias over (channels, length)
        block = (width * width * 3 + width + per_segment * width + ln * width
                 + width * width * expand + width * expand + per_segment * width * expand + ln * width
                 + width * expand * width + width + per_segment * width + ln * width * expand)
        params = (read * width + width + width * length + len(dilations) * block + ln * width
                  + width * hidden + hidden + hidden * K * channels * head_k + K * channels + 1)
        factorised = categories * min(categories, 16) if likelihood == "categorical" else 0  # the class map
        params = params * segments + K * channels * pixels + factorised
        acts = (read + width * (2 + len(dilations) * (3 + expand) + 1) + hidden + 3 * K * channels) * length
        acts *= int(batch)
        return {"parameters": params, "activations": acts, "bytes": 4 * (params + acts)}

    params = 0
    acts = channels * pixels  # the canvas
    grid = list(spatial)  # the current resolution
    size = pixels

    def conv(c_in: int, c_out: int, kernel: int, normed: bool, masked: bool = True) -> int:
        return c_in * c_out * kernel**dims + c_out + (per_segment * c_out if masked else 0) + (2 * c_out if normed else 0)

    c = read
    for out in down:
        params += conv(c, out, down_k, norm, masked=mask_down)
        grid = [-(-s // 2) for s in grid]
        size = math.prod(grid)
        acts += out * size
        c = out
    for out in body:
        params += conv(c, out, 3, norm and not raw_body)
        acts += out * size
        c = out
    hidden = c * expand
    block = conv(c, c, 3, norm) + conv(c, hidden, 1, norm) + conv(hidden, c, 1, norm)
    params += res_blocks * block
    acts += res_blocks * (3 * c + hidden) * size
    level_channels = [c]  # a progressive refiner's coarse heads read these (refiner.py)
    for out in up:
        level_channels.append(out)
        params += conv(c, out, 4, norm)
        grid = [2 * s for s in grid]
        size = math.prod(grid)
        acts += out * size
        c = out
    for out in pre_head:
        params += conv(c, out, 3, False)
        acts += out * size
        c = out
    params += heads * (c * K * channels * head_k**dims + K * channels)
    if int(_get(r, "progressive", 0) or 0):
        params += sum(ch * K * channels * 3**dims + K * channels for ch in level_channels[:-1])
    params += 1  # output_scale
    params *= segments
    params += K * channels * pixels  # the first stage's candidates
    if likelihood == "categorical":
        params += categories * min(categories, 16)  # the factorised head's class embedding
    acts += 3 * K * channels * pixels  # head output, deltas, proposals
    acts *= int(batch)
    return {"parameters": params, "activations": acts, "bytes": 4 * (params + acts)}


def check_size(cfg, batch: int = 1) -> None:
    """Refuse a config whose :func:`estimate_size` exceeds ``MAX_PARAMETERS`` or whose one-stage
    activations for ``batch`` inputs exceed ``MAX_ACTIVATION_BYTES``."""
    est = estimate_size(cfg, batch)
    if est["parameters"] > MAX_PARAMETERS:
        raise ConfigError(
            f"model config describes {est['parameters']:,} parameters ({4 * est['parameters'] / 2**30:.1f} GiB); "
            f"the limit is {MAX_PARAMETERS:,}"
        )
    if 4 * est["activations"] > MAX_ACTIVATION_BYTES:
        raise ConfigError(
            f"model config needs {4 * est['activations'] / 2**30:.1f} GiB of activations per stage for a batch "
            f"of {batch}; the limit is {MAX_ACTIVATION_BYTES / 2**30:g} GiB"
        )
