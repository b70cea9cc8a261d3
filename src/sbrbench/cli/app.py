"""The Typer application that every command module registers its commands on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="sbrbench",
    help="Honest, comparable, fast benchmarks for session-based recommendation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
