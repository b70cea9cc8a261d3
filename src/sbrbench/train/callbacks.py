"""What the Trainer tells the outside world while it runs: a callback, rendered by the caller.

The library never prints. The CLI passes a renderer (`sbrbench.cli.progress.ConsoleProgress`);
tests pass callbacks that record or interrupt. `every` is how many batches apart `on_batch` is
called: each call reads the running loss from the device, i.e. one host synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TrainingStart:
    """What a run is about to do."""

    model: str
    dataset: str
    run_dir: str
    examples: int
    batches_per_epoch: int
    epochs: int
    first_epoch: int
    select_split: str
    metric: str


class TrainingCallback:
    """Hooks called by the Trainer; every method is optional (the default does nothing)."""

    every: int = 0

    def on_start(self, info: TrainingStart) -> None:
        """Before the first epoch (also after a resume)."""

    def on_epoch_start(self, epoch: int, n_batches: int, examples: int) -> None:
        """Before epoch `epoch` (1-based) of `n_batches` batches and `examples` examples."""

    def on_epoch_resumed(self, epoch: int, done: int, examples_done: int) -> None:
        """Epoch `epoch` continues after `done` batches (`examples_done` examples) of an interrupted run."""

    def on_batch(self, epoch: int, done: int, examples_done: int, loss: float) -> None:
        """After `done` batches of the epoch (every `every` batches); `loss`: running mean."""

    def on_epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        """After an epoch's selection evaluation; `row` is its `history.csv` row."""

    def on_message(self, message: str) -> None:
        """A one-off note (e.g. which variant of a study starts)."""

    def on_end(self) -> None:
        """After the last epoch, also when interrupted or failed."""


SILENT = TrainingCallback()
