"""Model commands: models, train, ablate, reproduce."""

from __future__ import annotations

from sbrbench.cli import app
from sbrbench.cli.common import not_available


@app.command()
def models() -> None:
    """List the model registry."""
    not_available("`sbrbench models`", "training engine")


@app.command()
def train() -> None:
    """Train and evaluate a model on a processed dataset."""
    not_available("`sbrbench train`", "training engine")


@app.command()
def ablate() -> None:
    """Train a model and its variants without named components; report the deltas."""
    not_available("`sbrbench ablate`", "TAGNN / ablation issue")


@app.command()
def reproduce() -> None:
    """Reproduce a paper table next to the published figures."""
    not_available("`sbrbench reproduce`", "training engine")
