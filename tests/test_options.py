"""The one `key=value` parser behind --set, --vary, --columns and --option."""

from __future__ import annotations

import pytest

from sbrbench.errors import SbrError
from sbrbench.options import parse_key_values


def test_set_keeps_commas_in_the_value() -> None:
    assert parse_key_values(["dim=120", " drop = gnn,global ", "dim=64", "note="], "--set") == {
        "dim": "64", "drop": "gnn,global", "note": ""}
    assert parse_key_values(None, "--set") == {}


def test_vary_lists_values_without_repeats() -> None:
    assert parse_key_values(["k=50,100", "k=100,200", "lr=0.1", "k=50,50"], "--vary", "values") == {
        "k": ["50", "100", "200"], "lr": ["0.1"]}


def test_pairs_split_on_commas() -> None:
    assert parse_key_values("session=sid, item=iid,,time=ts", "--columns", "pairs") == {
        "session": "sid", "item": "iid", "time": "ts"}
    assert parse_key_values(["a=1,b=2", "a=3"], "--option", "pairs") == {"a": "3", "b": "2"}


@pytest.mark.parametrize(
    ("items", "option", "commas", "message"),
    [
        (["dim"], "--set", "keep", "--set expects key=value, got 'dim'"),
        (["=3"], "--set", "keep", "--set expects key=value, got '=3'"),
        (["dim"], "--vary", "values", "--vary expects PARAM=v1,v2,..., got 'dim'"),
        (["dim=,"], "--vary", "values", "--vary expects PARAM=v1,v2,..., got 'dim=,'"),
        ("session=sid,item", "--columns", "pairs", "--columns expects KEY=VALUE[,KEY=VALUE...], got 'item'"),
    ],
)
def test_malformed_items_are_one_line_errors(items: object, option: str, commas: str, message: str) -> None:
    with pytest.raises(SbrError) as exc:
        parse_key_values(items, option, commas)  # type: ignore[arg-type]
    assert str(exc.value) == message
