"""The `sbrbench` command line: a thin Typer shell over the library.

Each command parses options, calls one library function and prints what it returns. Command
modules import heavy libraries (torch, pandas) inside the command bodies so `sbrbench --help`
stays instant. Errors the user can fix (`SbrError`) are printed on one line with a non-zero exit.
"""

from __future__ import annotations

import os
import sys

from sbrbench.cli.app import app
from sbrbench.errors import SbrError

# Importing the command modules registers their commands on `app` (order = help order).
from sbrbench.cli import download_cmds, data_cmds, train_cmds, eval_cmds, report_cmds  # noqa: E402,F401,I001
from sbrbench.cli import sweep_cmds  # noqa: E402,F401,I001
from sbrbench.cli import audit_cmds  # noqa: E402,F401,I001


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning known errors into one-line messages."""
    try:
        app(args=argv, prog_name="sbrbench")
    except SbrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # last resort: never show a traceback unless asked to
        if os.environ.get("SBRBENCH_DEBUG"):
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (set SBRBENCH_DEBUG=1 for details)",
            file=sys.stderr,
        )
        sys.exit(1)
