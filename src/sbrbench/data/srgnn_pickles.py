"""Datasets published as SR-GNN/GCE-GNN pickles: `all_train_seq.txt` + `test.txt`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sbrbench.data.dataset import ProcessedDataset, Split, augment_all_prefixes, from_sequences
from sbrbench.data.pickles import safe_load_pickle
from sbrbench.errors import DataError


def _check_int_seqs(obj: Any, what: str, path: Path) -> list[list[int]]:
    if not isinstance(obj, (list, tuple)):
        raise DataError(f"{path}: {what} must be a list of sequences, got {type(obj).__name__}")
    for i, seq in enumerate(obj):
        if not isinstance(seq, (list, tuple)) or not all(type(x) is int for x in seq):
            raise DataError(f"{path}: {what}[{i}] is not a list of integer item ids")
    return obj  # type: ignore[return-value]


def read_train_sessions(path: str | Path) -> list[list[int]]:
    """`all_train_seq.txt`: a pickled list of training sessions (lists of item ids)."""
    path = Path(path)
    obj = safe_load_pickle(path)
    return _check_int_seqs(obj, "training sessions", path)


def read_pairs(path: str | Path) -> tuple[list[list[int]], list[int]]:
    """`test.txt`/`train.txt`: a pickled (prefixes, targets) pair (extra fields are ignored)."""
    path = Path(path)
    obj = safe_load_pickle(path)
    if not isinstance(obj, (list, tuple)) or len(obj) < 2:
        raise DataError(f"{path}: expected a (prefixes, targets) pair")
    if (len(obj) == 4 and isinstance(obj[1], (list, tuple)) and isinstance(obj[2], (list, tuple))
            and len(obj[1]) == len(obj[2]) and obj[1] and isinstance(obj[1][0], list)):
        obj = (obj[1], obj[2])  # CCGNN layout: (session_ids, prefixes, targets, timestamps)
    prefixes = _check_int_seqs(obj[0], "prefixes", path)
    targets = obj[1]
    if not isinstance(targets, (list, tuple)) or not all(type(t) is int for t in targets):
        raise DataError(f"{path}: targets must be a list of integer item ids")
    if len(prefixes) != len(targets):
        raise DataError(f"{path}: {len(prefixes)} prefixes but {len(targets)} targets")
    for i, p in enumerate(prefixes):
        if not p:
            raise DataError(f"{path}: example {i} has an empty session prefix")
    return prefixes, list(targets)


def group_pairs_into_sessions(
    prefixes: list[list[int]], targets: list[int]
) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    """Recover sessions from augmented (prefix, target) pairs, keeping every example exactly.

    Consecutive examples that are prefixes of one session (any order, as SR-GNN's longest-first
    or DGTN's shortest-first augmentation emits them) share one stored session; an example that
    fits no running session starts a new one. Returns (sessions, example session index, pos).
    """
    sessions: list[list[int]] = []
    sess_idx = np.empty(len(targets), dtype=np.int32)
    pos = np.empty(len(targets), dtype=np.int32)
    cur: list[int] | None = None
    for i, (p, t) in enumerate(zip(prefixes, targets)):
        n = len(p)
        if not (cur is not None and n < len(cur) and cur[n] == t and cur[:n] == p):
            cur = list(p) + [t]
            sessions.append(cur)
        sess_idx[i] = len(sessions) - 1
        pos[i] = n
    return sessions, sess_idx, pos


def build_from_srgnn_pickles(
    name: str,
    protocol: str,
    train_sessions: list[list[int]],
    test_prefixes: list[list[int]],
    test_targets: list[int],
    *,
    n_items: int | None = None,
    valid_fraction: float = 0.1,
    longest_first: bool = True,
) -> ProcessedDataset:
    """Build the processed dataset from published SR-GNN-format data.

    Training examples are the longest-first prefix augmentation of `train_sessions` (exactly the
    published `train.txt`); the test examples are kept one for one, in their published order.
    The most recent `valid_fraction` of training sessions (the file is date-sorted) becomes the
    validation split, so model selection never needs the test set.
    """
    test_sessions, t_sess, t_pos = group_pairs_into_sessions(test_prefixes, test_targets)
    all_sessions = [s for s in train_sessions] + test_sessions
    items, offsets, n_items = from_sequences(name, protocol, all_sessions, n_items=n_items)
    n_train = len(train_sessions)
    train_idx, valid_idx = split_recent(np.arange(n_train), valid_fraction)
    splits = {
        "train": augment_all_prefixes(offsets, train_idx, longest_first),
        "valid": augment_all_prefixes(offsets, valid_idx, longest_first),
        "test": Split((t_sess + n_train).astype(np.int32), t_pos),
    }
    ds = ProcessedDataset(
        name=name,
        protocol=protocol,
        n_items=n_items,
        items=items,
        offsets=offsets,
        splits=splits,
        info={"valid_fraction": valid_fraction, "valid_rule": "most recent training sessions"},
    )
    return ds


def split_recent(ordered_sessions: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split date-ordered session indices into (older, most recent `fraction`)."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1), got {fraction}")
    n = ordered_sessions.shape[0]
    n_valid = int(round(n * fraction))
    return ordered_sessions[: n - n_valid], ordered_sessions[n - n_valid :]


def build_from_pairs(
    name: str,
    protocol: str,
    train_prefixes: list[list[int]],
    train_targets: list[int],
    test_prefixes: list[list[int]],
    test_targets: list[int],
    *,
    n_items: int | None = None,
    valid_fraction: float = 0.1,
) -> ProcessedDataset:
    """Build from published (prefix, target) pairs for both splits (`train.txt` + `test.txt`).

    Every example is kept one for one in its published order; consecutive prefixes of one
    session share a stored session. The most recent `valid_fraction` of training sessions (the
    tail of the file) becomes the validation split.
    """
    tr_sessions, tr_sess, tr_pos = group_pairs_into_sessions(train_prefixes, train_targets)
    te_sessions, te_sess, te_pos = group_pairs_into_sessions(test_prefixes, test_targets)
    all_sessions = tr_sessions + te_sessions
    items, offsets, n_items = from_sequences(name, protocol, all_sessions, n_items=n_items)
    _, valid_idx = split_recent(np.arange(len(tr_sessions)), valid_fraction)
    is_valid = np.isin(tr_sess, valid_idx)
    train_all = Split(tr_sess, tr_pos)
    return ProcessedDataset(
        name=name,
        protocol=protocol,
        n_items=n_items,
        items=items,
        offsets=offsets,
        splits={
            "train": train_all.take(np.flatnonzero(~is_valid)),
            "valid": train_all.take(np.flatnonzero(is_valid)),
            "test": Split((te_sess + len(tr_sessions)).astype(np.int32), te_pos),
        },
        info={"valid_fraction": valid_fraction, "valid_rule": "most recent training sessions"},
    )
