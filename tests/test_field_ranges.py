"""One source of truth for every config field's type and range (vqdraw.core.fields): the `vqdraw train`
flags, the checks of untrusted config.json / train.json (from_dict) and the constructors accept and
refuse the same values. Walks every ranged field at and just beyond its bounds."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from vqdraw.cli import build_parser
from vqdraw.cli.train import MODEL_SKIP, TRAIN_SKIP
from vqdraw.core.config import ModelConfig, RefinerConfig, TrainConfig, get_preset
from vqdraw.errors import ConfigError
from vqdraw.core.fields import Range, range_of
from vqdraw.core.validate import check_fields


def _texts(base: type, rng: Range) -> list[str]:
    """Values (as typed on a command line) at, inside and beyond the bounds of `rng`."""
    if rng.choices:
        return [*rng.choices, "bogus", ""]
    out: list[str] = []
    if base is int:
        for edge in (rng.low, rng.high):
            if edge is not None:
                out += [str(int(edge) - 1), str(int(edge)), str(int(edge) + 1)]
        return out + ["1.5", "1e3", "x"]
    for edge in (rng.low, rng.high, rng.above, rng.below):
        if edge is not None:
            step = max(abs(edge), 1.0) * 1e-3
            out += [repr(float(edge) - step), repr(float(edge)), repr(float(edge) + step)]
    return out + ["0.5", "nan", "inf", "-inf", "x"]


def _value(base: type, text: str):
    """The JSON value a config file would hold for `text` (None: not a number JSON can hold)."""
    if base is str:
        return text
    try:
        return int(text, 10)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text  # a string where a number belongs


def _cases():
    for cls, skip in ((ModelConfig, MODEL_SKIP), (TrainConfig, TRAIN_SKIP)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            rng = range_of(f)
            if f.name in skip or rng is None:
                continue
            tp = hints[f.name]
            is_tuple = typing.get_origin(tp) is tuple
            base = typing.get_args(tp)[0] if is_tuple else next(
                (t for t in typing.get_args(tp) if t is not type(None)), tp)
            for text in _texts(base, rng):
                yield pytest.param(cls, f.name, base, is_tuple, text, id=f"{f.name}={text}")


def test_every_ranged_field_is_walked():
    names = {p.values[1] for p in _cases()}
    assert {"options", "stages", "likelihood", "categories", "steps", "batch", "lr", "ema", "anneal",
            "epsilon", "adam_betas", "time_budget", "data_shape"} <= names
    # every field the CLI offers (bools and free strings aside) declares a range
    for cls, skip in ((ModelConfig, MODEL_SKIP), (TrainConfig, TRAIN_SKIP)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in skip and hints[f.name] is not bool:
                assert range_of(f) is not None, f"{cls.__name__}.{f.name} declares no range"
    assert all(range_of(f) is not None for f in dataclasses.fields(RefinerConfig)
               if f.name in ("down", "body", "up", "pre_head", "down_kernel", "head_kernel", "res_blocks"))


@pytest.fixture(scope="module")
def parser():
    return build_parser("train")


@pytest.mark.parametrize("cls, name, base, is_tuple, text", list(_cases()))
def test_cli_and_config_files_agree(cls, name, base, is_tuple, text, parser, capsys):
    flag = "--" + name.replace("_", "-")
    argv = ["train", flag, *([text, text] if is_tuple else [text])]
    try:
        parser.parse_args(argv)
        cli_ok = True
    except SystemExit as exc:
        assert exc.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "error" in err[0], err  # one line
        cli_ok = False

    value = _value(base, text)
    stored = [value, value] if is_tuple else value
    where = "model" if cls is ModelConfig else "train"
    try:
        check_fields({name: stored}, cls, where)
        file_ok = True
    except ConfigError as exc:
        assert str(exc).startswith(f"{where}.{name}") and "\n" not in str(exc)
        file_ok = False
    assert cli_ok == file_ok, (argv, stored)

    # from_dict and the constructor: a refused value is a typed error in both; an accepted one may
    # still meet a rule between fields, as a ConfigError, never anything else
    if cls is ModelConfig:
        d = get_preset("mnist").model.to_dict()
        d.pop("image_shape" if name == "data_shape" else "__none__", None)
        d[name] = stored
    else:
        d = {name: stored}
    for build in (lambda: cls.from_dict(d), lambda: _construct(cls, name, stored)):
        try:
            build()
        except ConfigError:
            continue
        assert file_ok, (name, stored)


def _construct(cls, name, value):
    value = tuple(value) if isinstance(value, list) else value
    if isinstance(value, float) and math.isnan(value):
        value = float("nan")
    if cls is ModelConfig:
        return dataclasses.replace(get_preset("mnist").model, **{name: value})
    return TrainConfig(**{name: value})


def _distill_cases():
    from vqdraw.core.config import DistillConfig

    hints = typing.get_type_hints(DistillConfig)
    for f in dataclasses.fields(DistillConfig):
        rng = range_of(f)
        assert rng is not None, f"DistillConfig.{f.name} declares no range"
        base = next((t for t in typing.get_args(hints[f.name]) if t is not type(None)), hints[f.name])
        for text in _texts(base, rng):
            yield pytest.param(f.name, base, text, id=f"{f.name}={text}")


@pytest.mark.parametrize("name, base, text", list(_distill_cases()))
def test_distill_flags_and_its_config_agree(name, base, text, capsys):
    """`vqdraw distill --flag` and DistillConfig(field=...) accept and refuse the same values."""
    from vqdraw.core.config import DistillConfig

    try:
        build_parser("distill").parse_args(["distill", "m", "--" + name.replace("_", "-"), text])
        cli_ok = True
    except SystemExit as exc:
        assert exc.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "error" in err[0], err
        cli_ok = False
    try:
        DistillConfig(**{name: _value(base, text)})
        api_ok = True
    except ConfigError as exc:
        assert "\n" not in str(exc) and name in str(exc)
        api_ok = False
    assert cli_ok == api_ok, (name, text)
