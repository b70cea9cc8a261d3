"""Smaller versions of a processed dataset, for quick experiments and CI budgets.

`top_items_subset` keeps the most frequent training items: every other click is removed from
every session (as the SR-GNN recipe removes rare items), sessions left shorter than two clicks are
dropped, item ids are renumbered 1..n by training frequency, and each split is prefix-augmented
again (longest prefix first) from the sessions it read (under the `comirec` protocol: each
user's one example is recomputed from its new length). The split of sessions into
train / valid / test is kept, so no test session ever enters training.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sbrbench.data.dataset import ProcessedDataset, Split, augment_all_prefixes
from sbrbench.errors import DataError


def top_items_subset(ds: ProcessedDataset, n_items: int) -> ProcessedDataset:
    """The dataset restricted to its `n_items` most frequent training items (see module doc)."""
    if n_items < 2:
        raise DataError(f"a subset needs at least 2 items, got {n_items}")
    train_items = ds.fit_sessions(("train", "valid")).items
    freq = np.bincount(train_items, minlength=ds.n_items)
    freq[0] = 0
    order = np.argsort(-freq, kind="stable")[:n_items]
    order = order[freq[order] > 0]
    new_id = np.zeros(ds.n_items, dtype=np.int64)
    new_id[order] = np.arange(1, order.shape[0] + 1)

    mapped = new_id[ds.items]
    keep = mapped > 0
    sess_of_click = np.repeat(np.arange(ds.n_sessions), np.diff(ds.offsets))
    new_len = np.bincount(sess_of_click[keep], minlength=ds.n_sessions)
    offsets = np.zeros(ds.n_sessions + 1, dtype=np.int64)
    np.cumsum(new_len, out=offsets[1:])
    items = mapped[keep].astype(np.int32)

    splits: dict[str, Split] = {}
    if ds.protocol == "comirec":  # one example per user, recomputed from its new length
        from sbrbench.data.comirec import resplit_subset

        splits = resplit_subset(ds, new_len)
    for name, sp in ds.splits.items():
        if name in splits:
            continue
        _, first = np.unique(sp.session, return_index=True)
        sessions = sp.session[np.sort(first)].astype(np.int64)  # order of first appearance
        sessions = sessions[new_len[sessions] >= 2]
        splits[name] = augment_all_prefixes(offsets, sessions)
    info = dict(ds.info, subset={"top_items": int(n_items), "of": ds.catalogue_size})
    return dataclasses.replace(
        ds,
        name=f"{ds.name}-top{n_items}",
        n_items=int(order.shape[0]) + 1,
        items=items,
        offsets=offsets,
        splits=splits,
        item_keys=None,
        item_text=None,
        info=info,
    )
