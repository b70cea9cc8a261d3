"""Shared machinery of the session-rec neighbourhood models (SKNN, V-SKNN, STAN, V-STAN).

Stateless, batched equivalent of session-rec's event-by-event prediction. For a prefix s:

* candidates C = the training sessions that contain any item of s (session-rec accumulates
  `relevant_sessions` over the prefix, which is the same set);
* sampling keeps the `sample_size` candidates of highest *priority*: recency (last timestamp,
  then session index) for `recent`, a seeded random permutation of the training sessions for
  `random` (a uniform sample, but a fixed one); `sample_size=0` keeps them all;
* neighbours are sorted by similarity, ties broken by recency then session index (the more
  recent first), and the top k kept.

Training sessions are renumbered so that column j of every session matrix is the session of
priority rank j: the sampled candidates of a prefix are then simply the last `sample_size`
entries of its row of `Q @ X^T` (CSR rows have sorted column indices). No Python loop runs per
prefix or per candidate session; loops run only over a handful of positions (reminders).

Time: where the dataset has session times (`ProcessedDataset.session_time`, the session's last
click in the session-rec protocol), they order "recent" sampling and feed the time decays;
otherwise the session index (date order in the SR-GNN pickles) is the recency proxy and every
time decay is disabled (`fit_info["uses_time"] = False`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from sbrbench.errors import SbrError

if TYPE_CHECKING:
    from sbrbench.batching import Batch
    from sbrbench.data.dataset import FitSessions, ProcessedDataset

SAMPLINGS = ("recent", "random", "all")
DAY = 86400.0
# Upper bound on the entries of one candidate matrix (rows of Q @ X^T) built at once.
_CAND_BUDGET = 4_000_000


def check_choice(model: str, key: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise a one-line `SbrError` unless `value` is one of `choices`."""
    if value not in choices:
        raise SbrError(f"{model} {key} must be one of {', '.join(choices)}; got {value!r}")


def check_common(model: str, k: int, sample_size: int, sampling: str) -> None:
    """Validate the neighbourhood size and the sampling options."""
    if k < 1:
        raise SbrError(f"{model} k must be >= 1, got {k}")
    if sample_size < 0:
        raise SbrError(f"{model} sample_size must be >= 0 (0 = all candidates), got {sample_size}")
    check_choice(model, "sampling", sampling, SAMPLINGS)


# ---- training sessions ----------------------------------------------------------------------------
def require_fit(fitted: FitSessions, dataset: ProcessedDataset) -> None:
    """Raise a one-line `SbrError` when `dataset.fit_sessions(...)` found no session to fit."""
    if len(fitted) == 0:
        raise SbrError(f"dataset {dataset.name!r} has no training examples in {', '.join(fitted.splits)}")


def last_occurrence(rows: np.ndarray, items: np.ndarray, pos: np.ndarray, n_items: int) -> tuple[np.ndarray, ...]:
    """Deduplicate (row, item) pairs keeping the last position; sorted by (row, item)."""
    key = rows * n_items + items
    order = np.lexsort((pos, key))
    key_s = key[order]
    last = np.r_[key_s[1:] != key_s[:-1], True] if key_s.size else np.zeros(0, bool)
    sel = order[last]
    return rows[sel], items[sel], pos[sel]


@dataclass
class SessionIndex:
    """The training sessions as sparse matrices, rows numbered by sampling priority.

    X (S, n_items) binary incidence (item sets); P (S, n_items) the last 1-based position of
    each item in the session (STAN); XT = X^T in CSR; `rec` the recency rank of each row (higher =
    more recent); `time` last timestamps (None without times); `idf` = ln(#sessions / #events of
    the item), session-rec's definition.
    """

    n_items: int
    X: sp.csr_matrix
    XT: sp.csr_matrix
    P: sp.csr_matrix
    distinct: np.ndarray
    rec: np.ndarray
    time: np.ndarray | None
    idf: np.ndarray
    dataset_session: np.ndarray

    @property
    def n_sessions(self) -> int:
        """Number of training sessions."""
        return int(self.X.shape[0])


def build_index(
    dataset: ProcessedDataset, splits: tuple[str, ...], *, sampling: str = "recent", seed: int = 42,
    use_time: bool = True,
) -> SessionIndex:
    """Index the training sessions of `splits` (see `SessionIndex`)."""
    fitted = dataset.fit_sessions(splits)
    require_fit(fitted, dataset)
    sessions, items, offsets = fitted.session, fitted.items, fitted.offsets
    n_s, n_items = sessions.shape[0], dataset.n_items
    times = None
    if use_time and dataset.session_time is not None:
        t = np.asarray(dataset.session_time, dtype=np.float64)[sessions]
        if np.isfinite(t).all():
            times = t
    # recency rank: by last timestamp, ties (and no time at all) by dataset session index
    rec_order = np.lexsort((sessions, times)) if times is not None else np.arange(n_s)
    rec = np.empty(n_s, dtype=np.int64)
    rec[rec_order] = np.arange(n_s)
    if sampling == "random":
        priority = np.random.default_rng(seed).permutation(n_s)
    else:
        priority = rec
    # row j of the matrices = the session of priority j
    order = np.argsort(priority, kind="stable")
    lens = np.diff(offsets)
    new_row = np.empty(n_s, dtype=np.int64)
    new_row[order] = np.arange(n_s)
    row_of_event = np.repeat(new_row, lens)
    pos = np.arange(items.shape[0]) - np.repeat(offsets[:-1], lens) + 1
    r, c, p = last_occurrence(row_of_event, items, pos, n_items)
    P = sp.csr_matrix((p.astype(np.float64), (r, c)), shape=(n_s, n_items))
    P.sort_indices()
    X = P.copy()
    X.data[:] = 1.0
    XT = X.T.tocsr()
    XT.sort_indices()
    events = np.bincount(items, minlength=n_items).astype(np.float64)
    with np.errstate(divide="ignore"):
        idf = np.where(events > 0, np.log(n_s / np.maximum(events, 1.0)), 0.0)
    return SessionIndex(
        n_items=n_items, X=X, XT=XT, P=P, distinct=np.diff(X.indptr).astype(np.float64),
        rec=rec[order], time=times[order] if times is not None else None, idf=idf,
        dataset_session=sessions[order],
    )


# ---- prefixes ---------------------------------------------------------------------------------------
@dataclass
class Prefixes:
    """The distinct items of each prefix with their last 1-based position (repeats counted)."""

    n: int  # rows
    length: np.ndarray  # (B,) prefix length with repeats (after `last_n` truncation)
    rows: np.ndarray  # (nnz,) sorted by (row, item)
    items: np.ndarray
    pos: np.ndarray  # last position of the item in the (truncated) prefix
    seq: np.ndarray  # (B, Lmax) full prefixes, 0-padded
    full_length: np.ndarray  # (B,) untruncated lengths

    def matrix(self, values: np.ndarray, n_items: int) -> sp.csr_matrix:
        """CSR (B, n_items) with `values` on the (row, item) entries."""
        m = sp.csr_matrix((values, (self.rows, self.items)), shape=(self.n, n_items))
        m.sort_indices()
        return m

    def indptr(self) -> np.ndarray:
        """Row pointers of the (row, item) entries."""
        out = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.rows, minlength=self.n), out=out[1:])
        return out


def prefixes_from_batch(batch: Batch, n_items: int, last_n: int = 0) -> Prefixes:
    """The batch's prefixes as `Prefixes`; `last_n > 0` keeps only the last n clicks."""
    seq = batch.seq.detach().cpu().numpy().astype(np.int64)
    full = batch.lengths.detach().cpu().numpy().astype(np.int64)
    return prefixes_from_arrays(seq, full, n_items, last_n)


def prefixes_from_arrays(seq: np.ndarray, full: np.ndarray, n_items: int, last_n: int = 0) -> Prefixes:
    """`Prefixes` from a 0-padded (B, L) matrix and the lengths."""
    b, lmax = seq.shape
    col = np.arange(lmax)[None, :]
    start = np.maximum(full - last_n, 0) if last_n > 0 else np.zeros_like(full)
    valid = (col < full[:, None]) & (col >= start[:, None])
    rows = np.broadcast_to(np.arange(b)[:, None], (b, lmax))[valid]
    pos = (col - start[:, None] + 1)[valid]
    items = seq[valid]
    r, i, p = last_occurrence(rows, items, pos, n_items)
    return Prefixes(n=b, length=full - start, rows=r, items=i, pos=p, seq=seq, full_length=full)


def row_chunks(pref: Prefixes, index: SessionIndex) -> list[np.ndarray]:
    """Row ranges whose candidate matrices stay within the memory budget."""
    df = np.diff(index.XT.indptr)
    est = np.bincount(pref.rows, weights=df[pref.items], minlength=pref.n)
    chunks, cur, acc = [], [], 0.0
    for r in range(pref.n):
        if cur and acc + est[r] > _CAND_BUDGET:
            chunks.append(np.array(cur))
            cur, acc = [], 0.0
        cur.append(r)
        acc += est[r]
    if cur:
        chunks.append(np.array(cur))
    return chunks


def sub_prefixes(pref: Prefixes, rows: np.ndarray) -> Prefixes:
    """The prefixes of `rows` (a sorted range of row numbers) as their own `Prefixes`."""
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    ptr = pref.indptr()
    a, b = ptr[lo], ptr[hi]
    return Prefixes(
        n=hi - lo, length=pref.length[lo:hi], rows=pref.rows[a:b] - lo, items=pref.items[a:b],
        pos=pref.pos[a:b], seq=pref.seq[lo:hi], full_length=pref.full_length[lo:hi],
    )


# ---- candidates and neighbours ----------------------------------------------------------------------
def candidates(q_all: sp.csr_matrix, index: SessionIndex, sample_size: int) -> sp.csr_matrix:
    """(B, S) CSR of the sampled candidates of each prefix; data = |S ∩ T| (distinct items).

    `q_all` is the binary incidence of *all* the prefix's items (the candidate set is accumulated
    over the whole prefix, even when the similarity uses only the last clicks).
    """
    a = (q_all @ index.XT).tocsr()
    a.sort_indices()
    if sample_size <= 0:
        return a
    counts = np.diff(a.indptr)
    if counts.max(initial=0) <= sample_size:
        return a
    keep_n = np.minimum(counts, sample_size)
    starts = a.indptr[1:] - keep_n
    idx = np.repeat(starts - np.r_[0, np.cumsum(keep_n)[:-1]], keep_n) + np.arange(int(keep_n.sum()))
    indptr = np.r_[0, np.cumsum(keep_n)]
    return sp.csr_matrix((a.data[idx], a.indices[idx], indptr), shape=a.shape)


def restrict(values: sp.csr_matrix, cand: sp.csr_matrix) -> np.ndarray:
    """The entries of `values` at `cand`'s pattern, aligned with `cand.data` (0 where absent)."""
    mask = cand.copy()
    mask.data = np.ones_like(mask.data)
    sub = values.multiply(mask).tocsr()
    sub.sort_indices()
    if sub.nnz == cand.nnz:
        return sub.data.copy()
    # align: keys (row, col) of sub within cand
    crow = np.repeat(np.arange(cand.shape[0]), np.diff(cand.indptr))
    srow = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
    ckey = crow.astype(np.int64) * cand.shape[1] + cand.indices
    skey = srow.astype(np.int64) * cand.shape[1] + sub.indices
    out = np.zeros(cand.nnz, dtype=np.float64)
    out[np.searchsorted(ckey, skey)] = sub.data
    return out


def top_k(
    cand: sp.csr_matrix, sims: np.ndarray, k: int, rec: np.ndarray, *, positive_only: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k neighbours of each row: (row, session, similarity), rows ascending, then by
    similarity descending, ties by recency descending. `positive_only` drops sim <= 0 first."""
    rows = np.repeat(np.arange(cand.shape[0]), np.diff(cand.indptr))
    cols = cand.indices.astype(np.int64)
    if positive_only:
        keep = sims > 0
        rows, cols, sims = rows[keep], cols[keep], sims[keep]
    order = np.lexsort((-rec[cols], -sims, rows))
    rows, cols, sims = rows[order], cols[order], sims[order]
    counts = np.bincount(rows, minlength=cand.shape[0])
    first = np.r_[0, np.cumsum(counts)[:-1]]
    rank = np.arange(rows.shape[0]) - np.repeat(first, counts)
    keep = rank < k
    return rows[keep], cols[keep], sims[keep]


def pair_max(left: sp.csr_matrix, right: sp.csr_matrix) -> np.ndarray:
    """Row-wise max of the elementwise product of two (pairs, n_items) CSR matrices (0 if empty)."""
    prod = left.multiply(right).tocsr()
    out = np.zeros(prod.shape[0], dtype=np.float64)
    nz = np.diff(prod.indptr) > 0
    if prod.nnz:
        out[nz] = np.maximum.reduceat(prod.data, prod.indptr[:-1][nz])
    return out


def scatter_scores(
    n_rows: int, n_items: int, rows: np.ndarray, sub: sp.csr_matrix, entry_weight: np.ndarray,
    dtype: Any = np.float64,
) -> np.ndarray:
    """Dense (n_rows, n_items) sums of `entry_weight` over the entries of `sub` (one row per
    neighbour pair; `rows` gives each pair's prefix row)."""
    er = np.repeat(rows, np.diff(sub.indptr))
    return dense_scores(n_rows, n_items, er, sub.indices, entry_weight, dtype)


def dense_scores(
    n_rows: int, n_items: int, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray,
    dtype: Any = np.float64,
) -> np.ndarray:
    """Dense (n_rows, n_items) matrix of the sums of `weights` at (rows, cols), added in entry
    order; float64 (exact, for tests) or float32 (half the memory traffic of evaluation)."""
    flat = rows.astype(np.int64) * n_items + cols
    if np.dtype(dtype) == np.float64:
        out64 = np.bincount(flat, weights=np.asarray(weights, dtype=np.float64), minlength=n_rows * n_items)
        return out64.astype(np.float64, copy=False).reshape(n_rows, n_items)
    import torch

    out = torch.zeros(n_rows * n_items, dtype=torch.float32)
    out.index_add_(0, torch.from_numpy(flat), torch.from_numpy(np.asarray(weights, dtype=np.float32)))
    return out.numpy().reshape(n_rows, n_items)


def normalise_rows(scores: np.ndarray) -> np.ndarray:
    """Divide each row by its max where the max is positive, in place (session-rec's
    `normalize`; rows whose max is not positive are left as they are, which keeps the ranking
    session-rec's NaN filling gives)."""
    import torch

    t = torch.from_numpy(scores)
    if t.numel() == 0:
        return scores
    mx = t.amax(dim=1, keepdim=True)
    t.div_(torch.where(mx > 0, mx, torch.ones_like(mx)))
    return scores


def to_output(scores: np.ndarray, device: Any) -> Any:
    """A float64 torch tensor with column 0 (padding) at -inf."""
    import torch

    out = torch.from_numpy(scores)
    out[:, 0] = float("-inf")
    return out.to(device)


def fit_info(index: SessionIndex, dataset: ProcessedDataset, splits: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    """What the run record should show about the fitted index."""
    return {
        "training_sessions": index.n_sessions,
        "fit_splits": list(splits),
        "uses_time": index.time is not None,
        "recency": "last timestamp, then session index" if index.time is not None
        else "session index (date order); time decays disabled",
        **extra,
    }
