"""MACL-style sessions built from user sequences (models-next.md §2.9): the `macl` protocol's
recipe for data that has no published MACL pickles (Amazon Scientific with item text).

MACL's own datasets (MMSBR's recipe, §2.2) are one reviewer-day per session, cut to its first 20
items, split 90/10 in an order unrelated to time, items renumbered by first appearance in the
training sessions, test items unseen in training removed, and one (prefix, target) sample per
session. User sequences carry no timestamps, so a session here is a user's whole sequence:

1. each user's chronological sequence, cut to its first `max_session_length` (20) items
   (`session_cut=first`, MACL's cut) or its last (`session_cut=last`); sequences shorter than 2
   are dropped;
2. a seeded shuffle of the users (`split_seed`, default 0): the first ⌊0.9·n⌋ are training
   sessions, the rest test sessions (MACL's split is by reviewer-id order, i.e. arbitrary);
3. items renumbered 1..N by first appearance in the (shuffled) training sessions; test items
   unseen in training removed, test sessions left shorter than 2 dropped;
4. one example per session: input = session[:-1], target = session[-1];
5. validation: a random `valid_fraction` of the training sessions (same seeded generator), never
   the test sessions.

Item keys and item text follow the renumbering (item id i ↔ `item_text[i]`), so text-based
models (`macl-text`) read the text of exactly the items the dataset ranks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sbrbench.data.dataset import ProcessedDataset, Split
from sbrbench.data.formats import UserSequences
from sbrbench.errors import DataError

SESSION_CUTS = ("first", "last")


def build_macl_sessions(data: UserSequences, name: str, protocol: str, *, valid_fraction: float = 0.1,
                        options: dict[str, Any] | None = None) -> ProcessedDataset:
    """The MACL recipe on user sequences (see the module docstring)."""
    opts = dict(options or {})
    cut = str(opts.get("session_cut", "first"))
    if cut not in SESSION_CUTS:
        raise DataError(f"option session_cut must be one of {', '.join(SESSION_CUTS)}, got {cut!r}")
    max_len = int(opts.get("max_session_length", 20))
    seed = int(opts.get("split_seed", 0))
    test_fraction = float(opts.get("test_fraction", 0.1))
    if max_len < 2:
        raise DataError(f"option max_session_length must be >= 2, got {max_len}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"option test_fraction must be in (0, 1), got {test_fraction}")
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1), got {valid_fraction}")

    seqs = [np.asarray(s, dtype=np.int64) for s in data.sequences]
    seqs = [s[:max_len] if cut == "first" else s[-max_len:] for s in seqs]
    users = np.flatnonzero(np.fromiter((s.shape[0] >= 2 for s in seqs), dtype=bool, count=len(seqs)))
    if users.shape[0] < 2:
        raise DataError(f"{name}: fewer than 2 user sequences of length >= 2")
    rng = np.random.default_rng(seed)
    order = users[rng.permutation(users.shape[0])]
    n_train = int(np.floor((1.0 - test_fraction) * order.shape[0]))
    train_users, test_users = order[:n_train], order[n_train:]

    # items 1..N by first appearance in the training sessions (in their shuffled order)
    old_train = np.concatenate([seqs[u] for u in train_users])
    _, first = np.unique(old_train, return_index=True)
    ranked = old_train[np.sort(first)]
    n_old = max(len(data.item_keys), max((int(s.max()) for s in seqs if s.size), default=0) + 1)
    new_id = np.zeros(n_old, dtype=np.int64)
    new_id[ranked] = np.arange(1, ranked.shape[0] + 1)

    sessions: list[np.ndarray] = [new_id[seqs[u]] for u in train_users]
    kept_test, dropped_clicks = [], 0
    for u in test_users:
        s = new_id[seqs[u]]
        dropped_clicks += int((s == 0).sum())
        s = s[s > 0]
        if s.shape[0] >= 2:
            sessions.append(s)
            kept_test.append(u)
    lens = np.fromiter((s.shape[0] for s in sessions), dtype=np.int64, count=len(sessions))
    offsets = np.zeros(len(sessions) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    items = np.concatenate(sessions).astype(np.int32)
    last = (lens - 1).astype(np.int32)

    n_valid = int(round(n_train * valid_fraction))
    is_valid = np.zeros(n_train, dtype=bool)
    is_valid[rng.choice(n_train, size=n_valid, replace=False)] = True
    train_idx = np.flatnonzero(~is_valid).astype(np.int32)
    valid_idx = np.flatnonzero(is_valid).astype(np.int32)
    test_idx = np.arange(n_train, len(sessions), dtype=np.int32)
    splits = {
        "train": Split(train_idx, last[train_idx]),
        "valid": Split(valid_idx, last[valid_idx]),
        "test": Split(test_idx, last[test_idx]),
    }
    n_items = int(ranked.shape[0]) + 1
    item_keys = [""] + [data.item_keys[i] for i in ranked.tolist()] if len(data.item_keys) == n_old else None
    item_text = ([""] + [data.item_text[i] for i in ranked.tolist()]
                 if data.item_text is not None and len(data.item_text) == n_old else None)
    session_user = np.concatenate([train_users, np.asarray(kept_test, dtype=np.int64)]).astype(np.int64)
    info = {
        "recipe": "MACL sessions from user sequences (models-next.md §2.9)",
        "session": f"the user's sequence cut to its {cut} {max_len} items",
        "split": f"seeded shuffle of users (split_seed={seed}), {1 - test_fraction:.0%} train",
        "valid_rule": f"random {valid_fraction:.0%} of training sessions (split_seed={seed})",
        "examples": "one per session: input = session[:-1], target = session[-1]",
        "test_clicks_on_unseen_items_removed": dropped_clicks,
        "test_sessions_dropped": int(test_users.shape[0] - len(kept_test)),
        "users_too_short": int(len(seqs) - users.shape[0]),
        **data.notes,
    }
    return ProcessedDataset(
        name=name, protocol=protocol, n_items=n_items, items=items, offsets=offsets, splits=splits,
        session_user=session_user, user_keys=list(data.user_keys), item_keys=item_keys, item_text=item_text,
        info=info,
    )
