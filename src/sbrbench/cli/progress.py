"""How the CLI shows training: rich bars on a terminal, plain lines on stderr otherwise.

Both show examples/s and the epoch's ETA; the Trainer reports through `TrainingCallback` and
never prints. Plain lines start with the local time (`HH:MM:SS`): they end up in the logs of long
background runs, where when a line was written is what one looks for.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from sbrbench.train.callbacks import TrainingCallback, TrainingStart


def _plain(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


class ConsoleProgress(TrainingCallback):
    """Renders a run's progress on stderr (rich on a TTY)."""

    def __init__(self, every: int = 20, lines: int = 10) -> None:
        self.every = every
        self.rich = sys.stderr.isatty()
        self._lines = lines
        self._bar: Any = None
        self._epoch_task: Any = None
        self._batch_task: Any = None
        self._n_batches = 0
        self._t0 = 0.0
        self._next_line = 0
        self._base = (0, 0)  # (batches, examples) done before this process resumed the epoch
        self._metric = ""

    def _print(self, msg: str) -> None:
        if self._bar is not None:
            self._bar.console.print(msg, highlight=False, markup=False)
        else:
            _plain(msg)

    def on_start(self, info: TrainingStart) -> None:
        self._metric = f"{info.select_split}_{info.metric}"
        self._print(f"training {info.model} on {info.dataset}: {info.examples} examples, "
                    f"{info.batches_per_epoch} batches/epoch, selecting on {info.select_split} {info.metric}; "
                    f"run dir {info.run_dir}")
        if self.rich:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichBars

            self._bar = RichBars(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}", markup=False), console=Console(stderr=True), transient=False,
            )
            self._bar.start()
            self._epoch_task = self._bar.add_task("epochs", total=info.epochs, completed=info.first_epoch, info="")

    def on_epoch_start(self, epoch: int, n_batches: int, examples: int) -> None:
        self._n_batches = n_batches
        self._t0 = time.perf_counter()
        self._next_line = max(n_batches // self._lines, 1)
        self._base = (0, 0)
        if self._bar is not None:
            if self._batch_task is not None:
                self._bar.remove_task(self._batch_task)
            self._batch_task = self._bar.add_task(f"epoch {epoch}", total=n_batches, info="")

    def on_epoch_resumed(self, epoch: int, done: int, examples_done: int) -> None:
        """Rates and ETA count from here: the skipped batches were not trained in this process."""
        self._t0 = time.perf_counter()
        self._base = (done, examples_done)
        step = max(self._n_batches // self._lines, 1)
        self._next_line = (done // step + 1) * step
        if self._bar is not None:
            self._bar.reset(self._batch_task, completed=done)  # no speed sample spans the skip
        self._print(f"  epoch {epoch}: resumed after batch {done}/{self._n_batches}")

    def on_batch(self, epoch: int, done: int, examples_done: int, loss: float) -> None:
        el = max(time.perf_counter() - self._t0, 1e-9)
        rate = (examples_done - self._base[1]) / el
        if self._bar is not None:
            self._bar.update(self._batch_task, completed=done, info=f"loss {loss:.4f} {rate:.0f} ex/s")
        elif self._n_batches >= 50 and done >= self._next_line:
            self._next_line += max(self._n_batches // self._lines, 1)
            eta = el / max(done - self._base[0], 1) * max(self._n_batches - done, 0)
            _plain(f"  epoch {epoch} batch {done}/{self._n_batches} loss {loss:.4f} {rate:.0f} ex/s eta {eta:.0f}s")

    def on_epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        value = row.get(self._metric, float("nan"))
        msg = (f"epoch {row['epoch']}: loss {row['loss']:.4f} {self._metric} {value:.4f} "
               f"lr {row['lr']:.2g} {row['seconds']:.1f}s {row['examples_per_s']:.0f} ex/s")
        if self._bar is not None:
            self._bar.update(self._epoch_task, advance=1, info=f"{self._metric} {value:.4f}")
        self._print(msg)

    def on_message(self, message: str) -> None:
        self._print(message)

    def on_end(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self._batch_task = None
