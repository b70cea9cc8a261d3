"""The `comirec` protocol: user-based sequential recommendation as THUDM/ComiRec prepares it.

ComiRec's `preprocess/data.py` and `src/data_iterator.py`, rule for rule (MCLSR follows it):

1. item occurrences are counted over every interaction; items seen fewer than `min_item_support`
   (5) times are dropped, in one pass (not iterated to a k-core);
2. item ids are ranks by descending count, 1 = the most popular (ties: first appearance in the
   input, as Python's stable sort over an insertion-ordered dict);
3. users keep their interactions on kept items; users with fewer than `min_user_length` (5) of
   them are dropped (one pass);
4. the kept users, in input order, are shuffled with `random.Random(split_seed).shuffle`
   (ComiRec: `random.seed(1230)` then `random.shuffle`) and split 80 / 10 / 10 at `int(0.8·n)`
   and `int(0.9·n)` into train / valid / test users;
5. each user's interactions are in time order (stable: ties keep the input order); repeated
   items are kept.

Stored sessions are the users in the shuffled order (session index = ComiRec's user id). The
splits hold one example per user: a training user's example predicts its last item (so its whole
sequence is fitted), a validation or test user's example reads the first `⌊0.8·len⌋` items and
has every remaining item as target (`eval_targets = "remaining"`, duplicates kept). Training
examples are drawn per step (`train_examples = "random-cut"`, `sbrbench.batching.RandomCutSource`):
each training user is cut at k uniform in {4, ..., len-1}; `train_cut` = `last` (k = len-1, one
example per user) or `all` (every k >= 4) are the variants. Histories (training and evaluation)
are the last `history_len` (L = 20, ComiRec's Book setting) items before the cut.

Metrics under this protocol (`info["rank_options"]`): Recall@K counts duplicate targets in its
denominator (ComiRec), and ComiRec's hit-normalised NDCG is reported as `NDCG_comirec@K` beside
the standard NDCG. Model selection defaults to valid Recall@50 (ComiRec's Recall@topN, topN = 50),
and every run reports K = 20 and 50.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from sbrbench.data.dataset import ProcessedDataset, Split
from sbrbench.errors import DataError

TRAIN_CUTS = ("random", "last", "all")
DEFAULTS: dict[str, Any] = {
    "min_item_support": 5, "min_user_length": 5, "split_seed": 1230, "history_len": 20, "train_cut": "random",
}
OPTIONS = tuple(DEFAULTS)
MIN_CUT = 4  # ComiRec: k = random.choice(range(4, len(items)))
EVAL_FRACTION = 0.8  # ComiRec: k = int(len(items) * 0.8)
REPORT_METRICS = ("Recall@20", "NDCG@20", "HR@20", "Recall@50", "NDCG@50", "HR@50")


def protocol_info(history_len: int, train_cut: str) -> dict[str, Any]:
    """The `info` entries that make the rest of sbrbench follow the protocol."""
    return {
        "train_examples": "random-cut", "history_len": int(history_len), "train_cut": train_cut,
        "min_cut": MIN_CUT, "eval_targets": "remaining", "eval_cut": "floor(0.8 * len)",
        "selection_metric": "Recall@50", "ks": [20, 50], "report_metrics": list(REPORT_METRICS),
        "rank_options": {"duplicates": "count", "extra": ["NDCG_comirec"]},
    }


def parse_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """The protocol's options with their defaults, checked (one-line `DataError`s)."""
    opts = {k: (options or {}).get(k, v) for k, v in DEFAULTS.items()}
    opts = {k: (DEFAULTS[k] if v is None else v) for k, v in opts.items()}
    for key in ("min_item_support", "min_user_length", "split_seed", "history_len"):
        try:
            opts[key] = int(opts[key])
        except (TypeError, ValueError):
            raise DataError(f"comirec option {key!r} expects an integer, got {opts[key]!r}") from None
    if opts["min_item_support"] < 1 or opts["history_len"] < 1:
        raise DataError("comirec options min_item_support and history_len must be >= 1")
    if opts["min_user_length"] < 2:
        raise DataError(f"comirec option min_user_length must be >= 2 (a history and a target), got {opts['min_user_length']}")
    if str(opts["train_cut"]) not in TRAIN_CUTS:
        raise DataError(f"comirec option train_cut must be one of {', '.join(TRAIN_CUTS)}, got {opts['train_cut']!r}")
    opts["train_cut"] = str(opts["train_cut"])
    return opts


def user_split(n_users: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ComiRec's user partition: positions 0..n-1 shuffled by `random.Random(seed)`, cut at
    `int(0.8·n)` and `int(0.9·n)`. Returns (train, valid, test) arrays of positions, each in the
    shuffled order."""
    order = list(range(n_users))
    random.Random(seed).shuffle(order)
    a, b = int(n_users * 0.8), int(n_users * 0.9)
    arr = np.asarray(order, dtype=np.int64)
    return arr[:a], arr[a:b], arr[b:]


def eval_cut(lengths: np.ndarray) -> np.ndarray:
    """History length of a validation / test user of each length: `int(len · 0.8)` as ComiRec
    computes it (float64 product, truncated)."""
    return np.floor(np.asarray(lengths, dtype=np.float64) * EVAL_FRACTION).astype(np.int64)


def build_comirec(
    sequences: Sequence[np.ndarray],
    item_keys: Sequence[str],
    user_keys: Sequence[str],
    name: str,
    options: dict[str, Any] | None = None,
    notes: dict[str, Any] | None = None,
) -> ProcessedDataset:
    """Run the protocol on chronological per-user item-code sequences (codes index `item_keys`;
    code 0 is never an item when `item_keys[0] == ""`)."""
    opts = parse_options(options)
    if len(sequences) == 0:
        raise DataError(f"{name}: no user sequences")
    n_keys = len(item_keys)
    lens = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if lens.sum() else np.zeros(0, np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= n_keys):
        raise DataError(f"{name}: item codes outside the item table")
    # 1-2. support over every interaction; ids by descending count, ties by first appearance
    counts = np.bincount(flat, minlength=n_keys)
    first = np.full(n_keys, flat.shape[0], dtype=np.int64)
    np.minimum.at(first, flat, np.arange(flat.shape[0], dtype=np.int64))
    present = np.flatnonzero(counts)
    ranked = present[np.lexsort((first[present], -counts[present]))]
    kept = ranked[counts[ranked] >= opts["min_item_support"]]
    if kept.size == 0:
        raise DataError(f"{name}: no item has {opts['min_item_support']} interactions")
    new_id = np.zeros(n_keys, dtype=np.int64)
    new_id[kept] = np.arange(1, kept.shape[0] + 1)
    # 3. users with enough interactions on kept items (one pass)
    mapped = new_id[flat]
    user_of = np.repeat(np.arange(lens.shape[0]), lens)
    keep_click = mapped > 0
    new_len = np.bincount(user_of[keep_click], minlength=lens.shape[0])
    users = np.flatnonzero(new_len >= opts["min_user_length"])
    if users.shape[0] < 3:
        raise DataError(f"{name}: only {users.shape[0]} users have {opts['min_user_length']} interactions on kept "
                        "items; the protocol needs at least 3 (train / valid / test)")
    # 4. seeded shuffle of the kept users (in input order), 80 / 10 / 10
    tr, va, te = user_split(users.shape[0], opts["split_seed"])
    order = users[np.concatenate([tr, va, te])]
    kept_flat = mapped[keep_click]
    kept_start = np.concatenate([[0], np.cumsum(new_len)])[:-1]
    slen = new_len[order]
    offsets = np.zeros(order.shape[0] + 1, dtype=np.int64)
    np.cumsum(slen, out=offsets[1:])
    idx = np.repeat(kept_start[order] - offsets[:-1], slen) + np.arange(int(offsets[-1]), dtype=np.int64)
    items = kept_flat[idx].astype(np.int32)
    n_tr, n_va = tr.shape[0], va.shape[0]
    splits = comirec_splits(slen, n_tr, n_va)
    info: dict[str, Any] = {
        **protocol_info(opts["history_len"], opts["train_cut"]),
        "users_train": int(n_tr), "users_valid": int(n_va), "users_test": int(order.shape[0] - n_tr - n_va),
        "users_dropped_short": int(lens.shape[0] - users.shape[0]),
        "items_dropped_rare": int(present.shape[0] - kept.shape[0]),
        "min_item_support": opts["min_item_support"], "min_user_length": opts["min_user_length"],
        "split_seed": opts["split_seed"], "item_ids": "descending popularity over all interactions",
        "valid_rule": "10% of users (ComiRec's seeded user split)", **(notes or {}),
    }
    return ProcessedDataset(
        name=name, protocol="comirec", n_items=int(kept.shape[0]) + 1, items=items, offsets=offsets,
        splits=splits, session_user=order.astype(np.int64), user_keys=list(user_keys),
        item_keys=[""] + [str(item_keys[k]) for k in kept.tolist()], info=info,
    )


def comirec_splits(lengths: np.ndarray, n_train: int, n_valid: int) -> dict[str, Split]:
    """One example per user: training users (the first `n_train` sessions) predict their last
    item; validation and test users read `int(0.8·len)` items. Users shorter than 2 are left out."""
    lengths = np.asarray(lengths, dtype=np.int64)
    n = lengths.shape[0]
    ok = lengths >= 2
    sess = np.arange(n, dtype=np.int64)
    pos = np.where(sess < n_train, lengths - 1, eval_cut(lengths))
    out = {}
    for name, lo, hi in (("train", 0, n_train), ("valid", n_train, n_train + n_valid), ("test", n_train + n_valid, n)):
        s = sess[lo:hi][ok[lo:hi]]
        out[name] = Split(s.astype(np.int32), pos[s].astype(np.int32))
    return out


def click_log_sequences(session: np.ndarray, item: np.ndarray, time: np.ndarray) -> list[np.ndarray]:
    """Per-user item sequences of a click log whose `session` column is the user: users in order
    of first appearance, interactions stably sorted by time (ties keep file order)."""
    n_users = int(session.max()) + 1 if session.size else 0
    perm = np.lexsort((np.arange(session.shape[0]), time, session))
    lens = np.bincount(session, minlength=n_users)
    ends = np.cumsum(lens)
    srt = item[perm]
    return [srt[e - n: e] for n, e in zip(lens.tolist(), ends.tolist())]


def resplit_subset(ds: ProcessedDataset, new_len: np.ndarray) -> dict[str, Split]:
    """The protocol's splits again after sessions shrank to `new_len` (a top-items subset): every
    user stays in its split, with its example recomputed from its new length."""
    return comirec_splits(new_len, int(ds.info["users_train"]), int(ds.info["users_valid"]))
