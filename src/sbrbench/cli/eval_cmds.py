"""Evaluation commands: evaluate, leaderboard."""

from __future__ import annotations

from sbrbench.cli import app
from sbrbench.cli.common import not_available


@app.command()
def evaluate() -> None:
    """Re-evaluate a run on a split at any Ks; compare two runs with paired tests."""
    not_available("`sbrbench evaluate`", "metrics issue")


@app.command()
def leaderboard() -> None:
    """Aggregate runs into a leaderboard (mean ± std over seeds) beside published figures."""
    not_available("`sbrbench leaderboard`", "metrics issue")
