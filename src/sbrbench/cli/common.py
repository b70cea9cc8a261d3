"""Options and output helpers shared by the command modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory (default: $SBRBENCH_DATA_DIR, else the platform cache dir).",
        show_default=False,
    ),
]
ResultsDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--results-dir",
        help="Where run records and leaderboards go (default: $SBRBENCH_RESULTS_DIR, else ./results).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else there.")]


def existing_results_dir(option: Path | None) -> Path:
    """The results directory a reading command aggregates; a one-line error when it does not exist
    (a mistyped --results-dir would otherwise give an empty page written into a new directory)."""
    from sbrbench.errors import SbrError
    from sbrbench.paths import results_dir

    root = results_dir(option)
    if not root.is_dir():
        raise SbrError(f"no results directory at {root}: train a model first or pass --results-dir")
    return root


def emit_json(obj: Any) -> None:
    """Write `obj` as one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def stdout_console(json_mode: bool = False) -> Any:
    """A rich console for human output: stdout normally, stderr when stdout carries JSON. No markup:
    what sbrbench prints holds paths, labels and Markdown, where rich would take `[x]` for a style."""
    from rich.console import Console

    return Console(stderr=json_mode, highlight=False, markup=False)
