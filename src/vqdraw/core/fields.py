"""Each config field's range, declared once on the dataclass and read by every layer that checks it.

    steps: int = ranged(50_000, low=1, high=10**9)

:func:`ranged` stores a :class:`Range` in the field's metadata. The constructor
(:func:`check_ranges`, from ``__post_init__``), the checks of untrusted JSON
(:mod:`vqdraw.core.validate`, via :func:`range_of`) and the CLI's flags (:mod:`vqdraw.cli.common`)
all read that one declaration, so a value one of them accepts is accepted by the others. Rules
between fields (``micro_batch <= batch``) stay in ``__post_init__``. Imports nothing of vqdraw
but its errors.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass(frozen=True)
class Range:
    """The values a number or string field (or each entry of a tuple field) may take."""

    low: float | None = None
    """Smallest value allowed (inclusive); None: unbounded."""
    high: float | None = None
    """Largest value allowed (inclusive); None: unbounded."""
    above: float | None = None
    """Values must be strictly greater than this."""
    below: float | None = None
    """Values must be strictly less than this."""
    choices: tuple[str, ...] = ()
    """A string field: the names allowed."""
    odd: bool = False
    """An int field: odd values only (kernels padded by k // 2 keep the size only when k is odd)."""
    length: int | None = None
    """A tuple field: at most this many entries."""

    def describe(self) -> str:
        """The bounds as text: "2..65535", "(0..1e+06]", "0..1)"."""
        lo = _num(self.above) if self.above is not None else _num(self.low) if self.low is not None else "-inf"
        hi = _num(self.below) if self.below is not None else _num(self.high) if self.high is not None else "inf"
        return f"{'(' if self.above is not None else ''}{lo}..{hi}{')' if self.below is not None else ''}"

    def problem(self, value, kind: str | None = None) -> str | None:
        """Why `value` (one number or string; not a tuple) is refused, or None. ``kind``: "int"
        or "float" to check the type too (JSON checks types itself, more strictly)."""
        if self.choices:
            if value not in self.choices:
                return f"must be one of {', '.join(self.choices)}, got {_short(value)}"
            return None
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            return f"must be an integer, got {_short(value)}"
        if kind == "float" and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            return f"must be a number, got {_short(value)}"
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not math.isfinite(value):
                return f"must be a finite number, got {value!r}"
            if ((self.low is not None and value < self.low) or (self.high is not None and value > self.high)
                    or (self.above is not None and value <= self.above)
                    or (self.below is not None and value >= self.below)):
                return f"must be in {self.describe()}, got {_short(value)}"
            if self.odd and isinstance(value, numbers.Integral) and value % 2 == 0:
                return f"must be odd (padding k // 2 keeps the size only for odd k), got {value}"
        return None


def ranged(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, **bounds) -> dataclasses.Field:
    """A dataclass field with a :class:`Range` (keyword arguments: its attributes)."""
    return field(default=default, default_factory=default_factory, metadata={"range": Range(**bounds)})


def range_of(f: dataclasses.Field) -> Range | None:
    """The :class:`Range` declared on a dataclass field, or None."""
    return f.metadata.get("range")


def field_range(cls, name: str) -> Range:
    """The :class:`Range` of field `name` of dataclass `cls` (KeyError if it has none)."""
    for f in dataclasses.fields(cls):
        if f.name == name and range_of(f) is not None:
            return range_of(f)
    raise KeyError(f"{cls.__name__}.{name} declares no range")


def check_ranges(obj, where: str = "") -> None:
    """ConfigError (one line) unless every ranged field of dataclass instance `obj` is in range."""
    for f in dataclasses.fields(obj):
        rng = range_of(f)
        if rng is None:
            continue
        value = getattr(obj, f.name)
        name = f"{where}{f.name}"
        kind = _kind(f)
        if isinstance(value, (tuple, list)):
            if rng.length is not None and len(value) > rng.length:
                raise ConfigError(f"{name}: at most {rng.length} entries, got {len(value)}")
            for i, item in enumerate(value):
                if (why := rng.problem(item, kind)) is not None:
                    raise ConfigError(f"{name}[{i}]: {why}")
        elif value is not None and (why := rng.problem(value, kind)) is not None:
            raise ConfigError(f"{name}: {why}")


def _kind(f: dataclasses.Field) -> str | None:
    """"int", "float" or None (other) from a field's annotation (a string under postponed
    evaluation: "int", "float | None", "tuple[int, ...]")."""
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    words = set(text.replace("[", " ").replace("]", " ").replace("|", " ").replace(",", " ").split())
    if "float" in words:
        return "float"
    return "int" if "int" in words else None


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
