"""`key=value` command-line settings: one parser for `--set`, `--vary`, `--columns` and `--option`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from sbrbench.errors import SbrError

Commas = Literal["keep", "values", "pairs"]

# What each comma style expects, as the one-line error names it.
_FORMS: dict[str, str] = {
    "keep": "key=value",
    "values": "PARAM=v1,v2,...",
    "pairs": "KEY=VALUE[,KEY=VALUE...]",
}


def parse_key_values(items: str | Iterable[str] | None, option: str, commas: Commas = "keep") -> dict[str, Any]:
    """Parse the values of a repeatable `option` (or one string) into a dict; keys and values stripped.

    `commas` says what a comma means:

    * `"keep"` (`--set k=v`): nothing — the value is everything after the first `=`
      (`--set drop=gnn,global` sets `drop` to `"gnn,global"`); a later key wins. Values may be empty.
    * `"values"` (`--vary P=v1,v2`): the value is a list — {P: [v1, v2, ...]}; repeats of P add
      their new values in order, without duplicates. At least one value is required.
    * `"pairs"` (`--columns session=sid,item=iid`, `--option k=v`): commas separate `KEY=VALUE`
      pairs; empty parts are skipped; a later key wins.

    Values stay strings (models and readers type them). A malformed item raises a one-line
    `SbrError`: `{option} expects {form}, got {item!r}`.
    """
    if commas not in _FORMS:
        raise ValueError(f"commas must be one of {', '.join(_FORMS)}, got {commas!r}")
    if items is None:
        items = []
    elif isinstance(items, str):
        items = [items]
    out: dict[str, Any] = {}
    for item in items:
        parts = item.split(",") if commas == "pairs" else [item]
        for part in parts:
            if commas == "pairs" and not part.strip():
                continue
            key, sep, value = part.partition("=")
            key = key.strip()
            values = [v.strip() for v in value.split(",") if v.strip()] if commas == "values" else []
            if not sep or not key or (commas == "values" and not values):
                raise SbrError(f"{option} expects {_FORMS[commas]}, got {part!r}")
            if commas == "values":
                have = out.setdefault(key, [])
                have.extend(v for v in dict.fromkeys(values) if v not in have)
            else:
                out[key] = value.strip()
    return out
