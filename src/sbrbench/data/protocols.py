"""Named preprocessing protocols: how raw or published data becomes train/valid/test examples.

A protocol is a small registered object (`PROTOCOLS`) with a `build(data, ...)` method that
accepts the record types of `sbrbench.data.formats`. Later issues register more protocols.

* `srgnn` — CRIPAC-DIG/SR-GNN `datasets/preprocess.py`, rule for rule: session date = date of the session's last row in file order; Diginetica
  clicks stably sorted by timeframe within a session, Yoochoose in file order; length-1 sessions
  dropped; items with < 5 clicks dropped (counted once, on the whole log, before the split);
  sessions shorter than 2 dropped; test = sessions dated strictly after `maxdate - days`,
  train = strictly before (the boundary day is dropped); ids 1..N by first appearance in the
  date-sorted training sessions (ties in date keep first-appearance order); test clicks on
  unseen items removed; longest-prefix-first augmentation; Yoochoose 1/4 and 1/64 keep the most
  recent `len // fraction` augmented training examples and the full item space.
* `dgtn` — kunwuz/DGTN `preprocess/cikm16_perprocess.py` (the TAGNN++ split): session time =
  latest click; test = sessions with time >= tmax - 7 days (boundary day kept); ids by training
  popularity; sessions ordered by the date of their first remaining click; prefixes shortest
  first. Choices where the script is not deterministic (pandas' unstable quicksort): ties in
  popularity go to the smaller item key (as text), ties in session date keep file order. Like
  the script (which reads `timeframe` as text), clicks are sorted by timeframe as text.
* `gcegnn` — the GCE-GNN Tmall/Nowplaying pickles as published (SR-GNN layout).
* `loo` — leave-one-out on user sequences: valid = second-to-last item, test = last item,
  training examples = every earlier prefix (shortest first); users with < 3 items are skipped.

Every session protocol carves a validation split from training: the most recent
`valid_fraction` of training sessions, so the examples of one session never straddle splits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sbrbench.data.dataset import ProcessedDataset, Split, augment_all_prefixes
from sbrbench.data.formats import ClickLog, PublishedSplits, UserSequences
from sbrbench.data.macl_sessions import build_macl_sessions
from sbrbench.data.srgnn_pickles import build_from_pairs, build_from_srgnn_pickles
from sbrbench.errors import DataError
from sbrbench.registry import Registry

log = logging.getLogger(__name__)

DAY = 86400.0


@dataclass(frozen=True)
class SessionRecipe:
    """The knobs that distinguish the temporal session-split protocols."""

    test_days: dict[str, float] = field(default_factory=lambda: {"diginetica": 7.0, "yoochoose": 1.0, "csv": 7.0})
    boundary_in_test: bool = False  # srgnn: `>` (boundary day dropped); dgtn: `>=`
    session_time: str = "last_row"  # "last_row" (file order) | "max"
    session_order: str = "time"  # "time" (session time) | "first_row" (time of first kept click)
    click_sort: str = "numeric"  # within-session sort by `order` key: "numeric" | "text"
    item_ids: str = "first_appearance"  # | "popularity"
    longest_first: bool = True
    min_item_support: int = 5
    min_session_length: int = 2
    fraction: int | None = None  # keep the most recent 1/fraction of augmented train examples


class Protocol:
    """Base class: a named way to turn input records into a `ProcessedDataset`."""

    name: str = ""
    description: str = ""
    accepts: tuple[type, ...] = ()

    def build(self, data: Any, name: str, *, valid_fraction: float = 0.1,
              options: dict[str, Any] | None = None) -> ProcessedDataset:
        """Build the processed dataset from `data` (a formats record)."""
        raise NotImplementedError

    def check_input(self, data: Any) -> None:
        """Refuse input records this protocol cannot use, with a one-line reason."""
        if not isinstance(data, self.accepts):
            kinds = {ClickLog: "raw click logs", PublishedSplits: "published SR-GNN pickles",
                     UserSequences: "user sequences"}
            wanted = " or ".join(kinds[t] for t in self.accepts)
            raise DataError(f"protocol {self.name!r} needs {wanted}, not {kinds.get(type(data), type(data).__name__)}")


PROTOCOLS: Registry[Protocol] = Registry("protocol")


def get_protocol(name: str) -> Protocol:
    """The registered protocol `name` (with a "did you mean" error)."""
    return PROTOCOLS.get(name)


# ------------------------------------------------------------------------------------------------
# temporal session protocols


class SessionProtocol(Protocol):
    """A temporal split of click sessions (raw logs) or published SR-GNN pickles."""

    accepts = (ClickLog, PublishedSplits)

    def __init__(self, name: str, description: str, recipe: SessionRecipe) -> None:
        self.name, self.description, self.recipe = name, description, recipe

    def build(self, data: Any, name: str, *, valid_fraction: float = 0.1,
              options: dict[str, Any] | None = None) -> ProcessedDataset:
        """Build from a `ClickLog` (full recipe) or `PublishedSplits` (kept as published)."""
        self.check_input(data)
        opts = dict(options or {})
        if isinstance(data, PublishedSplits):
            return build_published(data, name, self.name, valid_fraction=valid_fraction,
                                   n_items=opts.get("n_items"), longest_first=self.recipe.longest_first)
        recipe = self.recipe
        for key in ("fraction", "min_item_support", "min_session_length"):
            if opts.get(key) is not None:
                recipe = replace(recipe, **{key: int(opts[key])})
        days = float(opts["test_days"]) if opts.get("test_days") is not None else recipe.test_days.get(data.kind, 7.0)
        return build_sessions(data, recipe, name, self.name, test_days=days, valid_fraction=valid_fraction)


def _text_rank(values: np.ndarray) -> np.ndarray:
    """Rank of each integer when compared as decimal text ("10" < "9")."""
    uniq, inv = np.unique(values, return_inverse=True)
    order = np.argsort(uniq.astype(str), kind="stable")
    rank = np.empty(uniq.shape[0], dtype=np.int64)
    rank[order] = np.arange(uniq.shape[0])
    return rank[inv]


def _gather(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenated ranges [starts[i], starts[i] + lens[i]) (vectorised)."""
    lens = lens.astype(np.int64)
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    off = np.cumsum(lens) - lens
    return np.repeat(starts.astype(np.int64) - off, lens) + np.arange(total, dtype=np.int64)


def build_sessions(log_: ClickLog, recipe: SessionRecipe, name: str, protocol: str, *,
                   test_days: float, valid_fraction: float = 0.1) -> ProcessedDataset:
    """Run a temporal session recipe on raw clicks (vectorised; tens of millions of rows)."""
    sess, item, time = log_.session, log_.item, log_.time
    n_rows = log_.n_rows
    if n_rows == 0:
        raise DataError(f"{name}: the click log has no rows")
    n_s = int(sess.max()) + 1
    rows = np.arange(n_rows, dtype=np.int64)

    # rows grouped by session, in the protocol's within-session order (stable: ties keep file order)
    if log_.order is not None:
        key = log_.order if recipe.click_sort == "numeric" else _text_rank(log_.order)
        perm = np.lexsort((key, sess))
    else:
        perm = np.argsort(sess, kind="stable")

    # 1-2. drop length-1 sessions, then items with too little support, then short sessions
    length = np.bincount(sess, minlength=n_s)
    alive = length[sess] >= recipe.min_session_length
    support = np.bincount(item[alive], minlength=len(log_.item_keys))
    alive &= support[item] >= recipe.min_item_support
    length = np.bincount(sess[alive], minlength=n_s)
    alive &= length[sess] >= recipe.min_session_length
    keep_s = length >= recipe.min_session_length

    # 3. session time and the split date
    if recipe.session_time == "last_row":
        last = np.full(n_s, -1, dtype=np.int64)
        np.maximum.at(last, sess, rows)
        stime = time[last]
    else:
        stime = np.full(n_s, -np.inf)
        np.maximum.at(stime, sess[alive], time[alive])
    if not keep_s.any():
        raise DataError(f"{name}: no session survives the filters (length >= {recipe.min_session_length}, "
                        f"item support >= {recipe.min_item_support})")
    maxdate = float(stime[keep_s].max())
    split = maxdate - test_days * DAY
    if log_.split is not None:  # published pre-split (session-rec): keep the publisher's split
        s_split = np.zeros(n_s, dtype=np.int8)
        np.maximum.at(s_split, sess, log_.split)
        is_train, is_test = keep_s & (s_split == 0), keep_s & (s_split == 1)
        split = float("nan")
    else:
        is_train = keep_s & (stime < split)
        is_test = keep_s & ((stime >= split) if recipe.boundary_in_test else (stime > split))
    n_dropped_boundary = int((keep_s & ~is_train & ~is_test).sum())

    # grouped alive rows: per-session start/length in `prow`
    prow = perm[alive[perm]]
    p_len = np.bincount(sess[prow], minlength=n_s)
    p_start = np.cumsum(p_len) - p_len

    def ordered(mask: np.ndarray, times: np.ndarray) -> np.ndarray:
        ids = np.flatnonzero(mask)
        return ids[np.argsort(times[ids], kind="stable")]

    if recipe.session_order == "first_row":
        first = np.full(n_s, n_rows, dtype=np.int64)
        np.minimum.at(first, sess[alive], rows[alive])
        first_time = np.where(first < n_rows, time[np.minimum(first, n_rows - 1)], np.inf)
        train_s = ordered(is_train, first_time)
    else:
        train_s = ordered(is_train, stime)
    if train_s.size == 0:
        raise DataError(f"{name}: no training session before the split date ({test_days:g} days before the last)")
    tr_rows = prow[_gather(p_start[train_s], p_len[train_s])]
    tr_items = item[tr_rows]

    # 4. item ids from the training sessions
    n_keys = len(log_.item_keys)
    new_id = np.zeros(n_keys, dtype=np.int64)
    if recipe.item_ids == "first_appearance":
        import pandas as pd

        ranked = np.asarray(pd.unique(tr_items), dtype=np.int64)  # in order of first appearance
    else:
        counts = np.bincount(tr_items, minlength=n_keys)
        present = np.flatnonzero(counts)
        key_rank = np.empty(n_keys, dtype=np.int64)
        key_rank[np.argsort(np.asarray(log_.item_keys, dtype=object).astype(str), kind="stable")] = np.arange(n_keys)
        ranked = present[np.lexsort((key_rank[present], -counts[present]))]
    new_id[ranked] = np.arange(1, ranked.shape[0] + 1)
    n_items = int(ranked.shape[0]) + 1
    tr_lens = p_len[train_s]

    # 5. test sessions: unseen items removed, then sessions shorter than 2 dropped
    in_test = is_test[sess[prow]]
    known = new_id[item[prow]] > 0
    n_unseen_clicks = int((in_test & ~known).sum())
    te_rows = prow[in_test & known]  # grouped by session code, within-session order
    te_len = np.bincount(sess[te_rows], minlength=n_s)
    te_start = np.cumsum(te_len) - te_len
    te_ok = is_test & (te_len >= 2)
    if recipe.session_order == "first_row":
        tfirst = np.full(n_s, n_rows, dtype=np.int64)
        np.minimum.at(tfirst, sess[te_rows], te_rows)
        tkey = np.where(tfirst < n_rows, time[np.minimum(tfirst, n_rows - 1)], np.inf)
        test_s = ordered(te_ok, tkey)
    else:
        test_s = ordered(te_ok, stime)
    te_lens = te_len[test_s]
    te_rows = te_rows[_gather(te_start[test_s], te_lens)]

    # 6. augmentation; Yoochoose-style fraction of the most recent augmented examples
    all_items = np.concatenate([new_id[tr_items], new_id[item[te_rows]]]).astype(np.int32)
    lens = np.concatenate([tr_lens, te_lens]).astype(np.int64)
    offsets = np.zeros(lens.shape[0] + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    n_tr = train_s.shape[0]
    train_all = augment_all_prefixes(offsets, np.arange(n_tr), longest_first=recipe.longest_first)
    info: dict[str, Any] = {
        "test_days": test_days if log_.split is None else None,
        "split_time": split if log_.split is None else None, "max_time": maxdate,
        "boundary": "test" if recipe.boundary_in_test else "dropped",
        "sessions_on_boundary_dropped": n_dropped_boundary,
        "train_period_sessions": int(is_train.sum()), "test_period_sessions": int(is_test.sum()),
        "test_clicks_on_unseen_items_removed": n_unseen_clicks,
        "min_item_support": recipe.min_item_support, "prefix_order": "longest first" if recipe.longest_first else "shortest first",
        "raw_rows": n_rows, "raw_sessions": n_s, "raw_items": n_keys,
    }
    if recipe.fraction:
        n_keep = len(train_all) // recipe.fraction
        if n_keep == 0:
            log.warning("%s: 1/%d of %d examples is 0; SR-GNN then keeps all of them", name, recipe.fraction, len(train_all))
            n_keep = len(train_all)
        train_all = train_all.take(np.arange(len(train_all) - n_keep, len(train_all)))
        info["fraction"] = f"1/{recipe.fraction} of augmented training examples (most recent)"
        # keep only the sessions the kept examples read (the first may be partial)
        first_s = int(train_all.session.min()) if len(train_all) else n_tr
        keep_sessions = np.r_[np.arange(first_s, n_tr), np.arange(n_tr, lens.shape[0])]
        remap = np.full(lens.shape[0], -1, dtype=np.int64)
        remap[keep_sessions] = np.arange(keep_sessions.shape[0])
        all_items = all_items[_gather(offsets[keep_sessions], lens[keep_sessions])]
        lens = lens[keep_sessions]
        offsets = np.zeros(lens.shape[0] + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        train_all = Split(remap[train_all.session].astype(np.int32), train_all.pos)
        train_s = train_s[first_s:]
        n_tr = n_tr - first_s
    test = augment_all_prefixes(offsets, np.arange(n_tr, lens.shape[0]), longest_first=recipe.longest_first)
    train, valid = split_valid(train_all, n_tr, valid_fraction)
    session_time = np.concatenate([stime[train_s], stime[test_s]]).astype(np.float64)
    info.update(valid_fraction=valid_fraction, valid_rule="most recent training sessions")
    return ProcessedDataset(
        name=name, protocol=protocol, n_items=n_items, items=all_items, offsets=offsets,
        splits={"train": train, "valid": valid, "test": test}, session_time=session_time,
        item_keys=[""] + [log_.item_keys[i] for i in ranked.tolist()], info=info,
    )


def split_valid(train_all: Split, n_train_sessions: int, valid_fraction: float) -> tuple[Split, Split]:
    """Hold out the examples of the most recent `valid_fraction` of training sessions.

    Training sessions are stored in time order (indices 0..n-1), so "most recent" is the tail.
    Only sessions that have training examples count.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1), got {valid_fraction}")
    used = np.flatnonzero(np.bincount(train_all.session, minlength=n_train_sessions))
    n_valid = int(round(used.shape[0] * valid_fraction))
    if n_valid == 0:
        return train_all, Split(np.zeros(0, np.int32), np.zeros(0, np.int32))
    cut = used[used.shape[0] - n_valid]
    is_valid = train_all.session >= cut
    return train_all.take(np.flatnonzero(~is_valid)), train_all.take(np.flatnonzero(is_valid))


def build_published(data: PublishedSplits, name: str, protocol: str, *, valid_fraction: float = 0.1,
                    n_items: int | None = None, longest_first: bool = True) -> ProcessedDataset:
    """Published SR-GNN-layout splits, kept exactly (examples and their order)."""
    if data.train_sessions is not None:
        ds = build_from_srgnn_pickles(name, protocol, data.train_sessions, data.test_prefixes, data.test_targets,
                                      n_items=n_items, valid_fraction=valid_fraction, longest_first=longest_first)
    else:
        assert data.train_pairs is not None
        ds = build_from_pairs(name, protocol, data.train_pairs[0], data.train_pairs[1], data.test_prefixes,
                              data.test_targets, n_items=n_items, valid_fraction=valid_fraction)
    ds.info["source_layout"] = "published SR-GNN pickles"
    return ds


PROTOCOLS.register("srgnn")(SessionProtocol(
    "srgnn", "SR-GNN preprocess.py: last 7 days (Yoochoose: 1) strictly after the boundary day, "
    "support >= 5, first-appearance ids, longest prefix first", SessionRecipe()))
PROTOCOLS.register("dgtn")(SessionProtocol(
    "dgtn", "DGTN/TAGNN++ cikm16 split: sessions ending >= tmax - 7 days are test (boundary kept), "
    "popularity ids, shortest prefix first",
    SessionRecipe(boundary_in_test=True, session_time="max", session_order="first_row", click_sort="text",
                  item_ids="popularity", longest_first=False)))


class PublishedProtocol(SessionProtocol):
    """Splits defined by a publisher's pickles (GCE-GNN Tmall/Nowplaying); no raw recipe."""

    accepts = (PublishedSplits,)


class PresplitProtocol(SessionProtocol):
    """Click logs published already split into train and test files (session-rec's prepared
    files): the publisher's split and filtering are kept; ids by first appearance in the
    time-ordered training sessions; every prefix is an example, shortest first (session-rec
    evaluates each next click); test clicks on unseen items are removed."""

    accepts = (ClickLog,)

    def build(self, data: Any, name: str, *, valid_fraction: float = 0.1,
              options: dict[str, Any] | None = None) -> ProcessedDataset:
        """Build from a pre-split `ClickLog` (its `split` marks train/test rows)."""
        self.check_input(data)
        if data.split is None:
            raise DataError(f"protocol {self.name!r} needs click files already split into train and test")
        return build_sessions(data, self.recipe, name, self.name, test_days=0.0, valid_fraction=valid_fraction)


PROTOCOLS.register("gcegnn")(PublishedProtocol(
    "gcegnn", "GCE-GNN Tmall/Nowplaying splits as published (SR-GNN pickle layout)", SessionRecipe()))


class MaclProtocol(PublishedProtocol):
    """MACL's published (prefix, target) pickles kept as published, or MACL-style sessions built
    from user sequences (`sbrbench.data.macl_sessions`: first 20 items, seeded 90/10 user split,
    one example per session; options `session_cut`, `split_seed`)."""

    accepts = (PublishedSplits, UserSequences)

    def build(self, data: Any, name: str, *, valid_fraction: float = 0.1,
              options: dict[str, Any] | None = None) -> ProcessedDataset:
        """Published splits as `PublishedProtocol`; user sequences by the MACL recipe."""
        self.check_input(data)
        if isinstance(data, UserSequences):
            return build_macl_sessions(data, name, self.name, valid_fraction=valid_fraction, options=options)
        return super().build(data, name, valid_fraction=valid_fraction, options=options)


PROTOCOLS.register("macl")(MaclProtocol(
    "macl", "MACL's published (prefix, target) splits, one example per session; on user sequences, "
    "MACL-style sessions (first 20 items, seeded 90/10 user split)", SessionRecipe()))
PROTOCOLS.register("session-rec")(PresplitProtocol(
    "session-rec", "session-rec prepared train/test click files, kept as split; every prefix is an example",
    SessionRecipe(session_time="max", session_order="first_row", min_item_support=1, longest_first=False)))


# ------------------------------------------------------------------------------------------------
# leave-one-out on user sequences


class LeaveOneOut(Protocol):
    """Valid = second-to-last item of each user, test = last, train = every earlier prefix."""

    name = "loo"
    description = "leave-one-out per user: valid = 2nd-to-last item, test = last item"
    accepts = (UserSequences,)

    def build(self, data: Any, name: str, *, valid_fraction: float = 0.1,
              options: dict[str, Any] | None = None) -> ProcessedDataset:
        """One stored sequence per user; `valid_fraction` is unused (the protocol fixes valid)."""
        self.check_input(data)
        lens_all = np.fromiter((s.shape[0] for s in data.sequences), dtype=np.int64, count=len(data.sequences))
        keep = np.flatnonzero(lens_all >= 3)
        n_short = int(lens_all.shape[0] - keep.shape[0])
        if keep.size == 0:
            raise DataError(f"{name}: no user has the 3 items leave-one-out needs")
        if n_short:
            log.warning("%s: %d users with fewer than 3 items skipped", name, n_short)
        lens = lens_all[keep]
        offsets = np.zeros(keep.shape[0] + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        items = np.concatenate([data.sequences[i] for i in keep.tolist()]).astype(np.int32)
        if items.min() < 1:
            raise DataError(f"{name}: item ids must be >= 1 (0 is padding)")
        n_ex = lens - 3
        sess = np.repeat(np.arange(keep.shape[0]), n_ex).astype(np.int32)
        pos = (np.arange(int(n_ex.sum())) - np.repeat(np.cumsum(n_ex) - n_ex, n_ex) + 1).astype(np.int32)
        idx = np.arange(keep.shape[0], dtype=np.int32)
        n_items = max(len(data.item_keys), int(items.max()) + 1)
        return ProcessedDataset(
            name=name, protocol=self.name, n_items=n_items, items=items, offsets=offsets,
            splits={"train": Split(sess, pos), "valid": Split(idx, (lens - 2).astype(np.int32)),
                    "test": Split(idx, (lens - 1).astype(np.int32))},
            session_user=keep.astype(np.int64),
            user_keys=list(data.user_keys),
            item_keys=list(data.item_keys) if len(data.item_keys) == n_items else None,
            item_text=data.item_text if data.item_text is not None and len(data.item_text) == n_items else None,
            info={"users_skipped_short": n_short, "valid_rule": "second-to-last item per user",
                  "prefix_order": "shortest first", **data.notes},
        )


PROTOCOLS.register("loo")(LeaveOneOut())


# ------------------------------------------------------------------------------------------------
# ComiRec's user split (MCLSR): see sbrbench.data.comirec


class ComiRecProtocol(Protocol):
    """THUDM/ComiRec `data.py`: seeded 80/10/10 user split, first 80% of a held-out user's items
    as history and the rest as targets; training cuts drawn per step (`sbrbench.data.comirec`)."""

    name = "comirec"
    description = ("ComiRec user split: support >= 5, popularity ids, users >= 5, seeded 80/10/10 users; "
                   "held-out users: first 80% history, the rest targets")
    accepts = (UserSequences, ClickLog)

    def build(self, data: Any, name: str, *, valid_fraction: float = 0.1,
              options: dict[str, Any] | None = None) -> ProcessedDataset:
        """`valid_fraction` is unused: the protocol fixes 10% of users for validation."""
        from sbrbench.data.comirec import build_comirec, click_log_sequences

        self.check_input(data)
        if isinstance(data, UserSequences):
            return build_comirec(data.sequences, data.item_keys, data.user_keys, name, options, dict(data.notes))
        users = click_log_sequences(data.session, data.item, data.time)
        return build_comirec(users, data.item_keys, [str(u) for u in range(len(users))], name, options,
                             {"users_from": "the click log's session column"})


PROTOCOLS.register("comirec")(ComiRecProtocol())
