"""Test helper: session-rec's prepared, already split click files (TSV `SessionId ItemId Time`) as a
`ProcessedDataset`, through the registered `session-rec` protocol (`sbrbench.data.protocols`),
without a data directory (`sbrbench preprocess yoochoose-sessionrec-100k` is the user's way).

What the protocol does with these files (one implementation, shared with `sbrbench preprocess`):

* the publisher's train/test split and filtering are kept; clicks of a session are ordered by
  time (ties keep file order), sessions by the time of their first click;
* item ids 1..N by first appearance in the time-ordered training sessions; test clicks on items
  unseen in training are dropped (as session-rec's evaluation requires), then test sessions
  shorter than 2;
* `session_time` = the session's **last** click time (session-rec's `session_time` map, which
  orders "recent" neighbour sampling);
* test examples: every position k >= 1 of each test session (session-rec predicts each next
  click); validation = the examples of the most recent 10% of training sessions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sbrbench.data.dataset import ProcessedDataset

NAME = "yoochoose-sessionrec-100k"
PROTOCOL = "session-rec"
TSV_OPTIONS: dict[str, Any] = {"sep": "\t", "session": "SessionId", "item": "ItemId", "time": "Time"}


def build_sessionrec(
    train_path: str | Path, test_path: str | Path, *, name: str = NAME, valid_fraction: float = 0.1
) -> ProcessedDataset:
    """Build the session-rec protocol dataset from a prepared `*_train_full.txt` and `*_test.txt`."""
    from sbrbench.data.formats import read_click_csv
    from sbrbench.data.protocols import get_protocol

    log = read_click_csv({"train": Path(train_path), "test": Path(test_path)}, dict(TSV_OPTIONS))
    return get_protocol(PROTOCOL).build(log, name, valid_fraction=valid_fraction)


def sample_paths(shared_datasets: str | Path) -> tuple[Path, Path]:
    """The session-rec Yoochoose 100k sample (train_full, test) under a datasets folder."""
    d = Path(shared_datasets) / "yoochoose" / "session-rec"
    return d / "yoochoose-clicks-100k_train_full.txt", d / "yoochoose-clicks-100k_test.txt"
