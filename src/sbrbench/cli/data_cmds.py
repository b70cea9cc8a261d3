"""Data commands: preprocess, export."""

from __future__ import annotations

from sbrbench.cli import app
from sbrbench.cli.common import not_available


@app.command()
def preprocess() -> None:
    """Turn raw or published data into a processed dataset."""
    not_available("`sbrbench preprocess`", "data foundation")


@app.command()
def export() -> None:
    """Write a processed dataset in another codebase's layout."""
    not_available("`sbrbench export`", "data foundation")
