"""The plain-line progress of `ConsoleProgress` (stderr is not a terminal under pytest)."""

from __future__ import annotations

import re

import pytest

from sbrbench.cli.progress import ConsoleProgress


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The plain lines without their leading local time."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines), lines
    return [line[9:] for line in lines]


def test_a_resumed_epoch_reports_rates_and_eta_of_the_batches_trained_in_this_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([0.0, 100.0, 110.0, 120.0])
    monkeypatch.setattr("sbrbench.cli.progress.time.perf_counter", lambda: next(clock))
    bar = ConsoleProgress(every=1, lines=10)
    bar.on_epoch_start(2, 100, 1000)  # t = 0
    bar.on_epoch_resumed(2, 65, 650)  # t = 100: the first 65 batches were trained before the stop
    assert _lines(capsys) == ["  epoch 2: resumed after batch 65/100"]
    bar.on_batch(2, 66, 660, 1.0)  # t = 110: below the next line (70)
    assert _lines(capsys) == []
    bar.on_batch(2, 70, 700, 1.0)  # t = 120: 5 batches (50 examples) in 20 s
    (line,) = _lines(capsys)
    rate, eta = re.search(r"(\d+) ex/s eta (\d+)s", line).groups()  # type: ignore[union-attr]
    assert line.startswith("  epoch 2 batch 70/100") and int(rate) == 2 and int(eta) == 120


def test_a_fresh_epoch_prints_one_line_every_tenth_of_it(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ConsoleProgress(every=1, lines=10)
    bar.on_epoch_start(1, 100, 1000)
    for done in range(1, 101):
        bar.on_batch(1, done, 10 * done, 1.0)
    lines = _lines(capsys)
    assert [int(re.search(r"batch (\d+)/", x).group(1)) for x in lines] == list(range(10, 101, 10))  # type: ignore[union-attr]
