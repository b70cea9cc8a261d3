"""Search spaces for hyper-parameter tuning: typed ranges a model declares next to its `Params`.

A model's `search_space` (a `ClassVar` of `Model`) maps a hyper-parameter or training option to
one of

* `IntRange(low, high, log=False, step=1)`: an integer in [low, high];
* `FloatRange(low, high, log=False)`: a float in [low, high] (log scale: low > 0);
* `Choice(v1, v2, ...)`: one of the values (str, int, float or bool).

`sbrbench tune` turns them into Optuna distributions; this module itself needs no Optuna, so
models can declare their space without the optional `[sweep]` extra. Example::

    search_space: ClassVar[dict[str, Any]] = {
        "k": IntRange(20, 1000, log=True),
        "similarity": Choice("jaccard", "cosine"),
        "lr": FloatRange(1e-4, 1e-2, log=True),
    }
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class IntRange:
    """An integer hyper-parameter in [low, high] (both included), optionally on a log scale."""

    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        if self.low > self.high or self.step < 1 or (self.log and (self.low < 1 or self.step != 1)):
            raise ValueError(f"bad IntRange({self.low}, {self.high}, log={self.log}, step={self.step})")

    def describe(self) -> str:
        step = f" step {self.step}" if self.step != 1 else ""
        return f"int [{self.low}, {self.high}]" + (" log" if self.log else "") + step


@dataclass(frozen=True)
class FloatRange:
    """A float hyper-parameter in [low, high], optionally on a log scale (then low > 0)."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if self.low > self.high or (self.log and self.low <= 0):
            raise ValueError(f"bad FloatRange({self.low}, {self.high}, log={self.log})")

    def describe(self) -> str:
        return f"float [{self.low:g}, {self.high:g}]" + (" log" if self.log else "")


class Choice:
    """A categorical hyper-parameter: one of the given values."""

    __slots__ = ("choices",)

    def __init__(self, *choices: Any) -> None:
        if not choices or len(set(map(repr, choices))) != len(choices):
            raise ValueError(f"Choice needs distinct values, got {choices!r}")
        if not all(isinstance(c, (str, int, float, bool)) for c in choices):
            raise ValueError(f"Choice values must be str, int, float or bool, got {choices!r}")
        self.choices = tuple(choices)

    def __repr__(self) -> str:
        return f"Choice{self.choices!r}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Choice) and other.choices == self.choices

    def __hash__(self) -> int:
        return hash(self.choices)

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))


SearchDim = IntRange | FloatRange | Choice


def describe_space(space: dict[str, Any]) -> dict[str, str]:
    """A human description of each dimension, e.g. {"k": "int [20, 1000] log"}."""
    return {k: v.describe() for k, v in space.items()}


def contains(dim: IntRange | FloatRange | Choice, value: Any) -> bool:
    """Whether `value` is a point of the search-space entry `dim` (e.g. a model's default)."""
    if isinstance(dim, Choice):
        return any(type(c) is type(value) and c == value for c in dim.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(dim, IntRange):
        return float(value).is_integer() and dim.low <= value <= dim.high and (int(value) - dim.low) % dim.step == 0
    return dim.low <= float(value) <= dim.high
