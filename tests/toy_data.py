"""Tiny processed datasets for tests: random sessions, and sessions cut into train / valid / test
with every prefix of a split's sessions an example."""

from __future__ import annotations

from typing import Any

import numpy as np

from sbrbench.data.dataset import ProcessedDataset, augment_all_prefixes, from_sequences


def random_sessions(n_sessions: int, n_items: int, seed: int, max_len: int = 8) -> list[list[int]]:
    """`n_sessions` sessions of 2..`max_len` clicks drawn uniformly from items 1..n_items-1 (so
    with repeats and self-loops), from `np.random.default_rng(seed)`."""
    rng = np.random.default_rng(seed)
    return [rng.integers(1, n_items, size=int(rng.integers(2, max_len + 1))).tolist() for _ in range(n_sessions)]


def chain_sessions(n_sessions: int, n_items: int, seed: int, max_len: int = 6) -> list[list[int]]:
    """`n_sessions` runs of 2..`max_len` consecutive items (item i follows i - 1, wrapping after
    `n_items`), so that training improves the metrics; from `np.random.default_rng(seed)`."""
    rng = np.random.default_rng(seed)
    sessions = []
    for _ in range(n_sessions):
        start = int(rng.integers(1, n_items))
        sessions.append([(start + k) % n_items + 1 for k in range(int(rng.integers(2, max_len + 1)))])
    return sessions


def split_dataset(name: str, sessions: list[list[int]], bounds: tuple[int, int] | None = None, *,
                  protocol: str = "t", n_items: int | None = None, **fields: Any) -> ProcessedDataset:
    """Sessions [:a] train, [a:b] valid and [b:] test for `bounds` (a, b), all prefixes augmented;
    without `bounds`, every session in a lone train split. `n_items`: the item space (default: the
    largest id + 1); `fields`: further `ProcessedDataset` fields (item_text, info, ...)."""
    items, offsets, n = from_sequences(name, protocol, sessions, n_items=n_items)
    idx = np.arange(len(sessions))
    if bounds is None:
        splits = {"train": augment_all_prefixes(offsets, idx)}
    else:
        a, b = bounds
        splits = {"train": augment_all_prefixes(offsets, idx[:a]), "valid": augment_all_prefixes(offsets, idx[a:b]),
                  "test": augment_all_prefixes(offsets, idx[b:])}
    return ProcessedDataset(name, protocol, n, items, offsets, splits, **fields)
