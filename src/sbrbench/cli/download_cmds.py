"""Registry and download commands: datasets, download."""

from __future__ import annotations

from sbrbench.cli import app
from sbrbench.cli.common import not_available


@app.command()
def datasets() -> None:
    """List the dataset registry with status (downloaded / processed)."""
    not_available("`sbrbench datasets`", "data foundation")


@app.command()
def download() -> None:
    """Download a dataset's files with checksum verification."""
    not_available("`sbrbench download`", "data foundation")
