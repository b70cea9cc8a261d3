r"""MCLSR's graphs, built from the fitted sequences only (`ProcessedDataset.fit_sessions`).

Each fitted sequence is one user (under the `comirec` protocol: the training users; valid and
test users never enter). With R the binary user × item matrix (R_ui = 1 iff user u interacted
with item i at least once):

* `bipartite_adjacency`: the user–item graph G^uv, the symmetric block matrix [[0, R], [Rᵀ, 0]]
  over U + n_items nodes (users first), normalised D^{-1/2} A D^{-1/2}, no self-loops
  (MCLSR eq. (1)); items no training user touched are isolated rows.
* `cooccurrence_graph`: the user–user graph G^uu (rows of R) or the item–item graph G^vv (rows of
  Rᵀ): weight of (a, b), a ≠ b = the number of items two users share / of users two items share
  (`mode="count"`, sbrbench's default) or 1 (`mode="binary"`, CTLab's); each node keeps its
  `topk` heaviest neighbours (ties: smaller id; 0 = all), then A ← max(A, Aᵀ) and
  D^{-1/2} A D^{-1/2}. Computed `chunk` rows at a time, so a popular item never materialises a
  dense user × user block.

All return `scipy.sparse.csr_matrix` float32; `to_torch_csr` makes the tensor the model multiplies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sbrbench.errors import SbrError

if TYPE_CHECKING:
    import scipy.sparse as sp
    import torch

    from sbrbench.data.dataset import FitSessions

COOC_MODES = ("count", "binary")


def user_item_matrix(fit: FitSessions, n_items: int, *, holdout_last: bool = False) -> sp.csr_matrix:
    """Binary (n_users, n_items) matrix of the fitted sequences (one row per fitted sequence);
    `holdout_last` leaves each sequence's last item out (MCLSR's `graph_holdout_last` ablation)."""
    import scipy.sparse as sp

    lens = fit.lengths
    rows = np.repeat(np.arange(lens.shape[0]), lens)
    cols = fit.items
    if holdout_last:
        keep = np.ones(cols.shape[0], dtype=bool)
        ends = fit.offsets[1:][lens > 0] - 1
        keep[ends] = False
        rows, cols = rows[keep], cols[keep]
    m = sp.csr_matrix((np.ones(rows.shape[0], np.float32), (rows, cols)), shape=(lens.shape[0], n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _sym_norm(a: sp.csr_matrix) -> sp.csr_matrix:
    import scipy.sparse as sp

    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.zeros_like(deg, dtype=np.float64)
    nz = deg > 0
    inv[nz] = 1.0 / np.sqrt(deg[nz])
    d = sp.diags(inv)
    out = (d @ a @ d).tocsr().astype(np.float32)
    out.sort_indices()
    return out


def bipartite_adjacency(r: sp.csr_matrix) -> sp.csr_matrix:
    """D^{-1/2} [[0, R], [Rᵀ, 0]] D^{-1/2} over users (first) and items."""
    import scipy.sparse as sp

    a = sp.bmat([[None, r], [r.T, None]], format="csr")
    return _sym_norm(a)


def cooccurrence_graph(r: sp.csr_matrix, *, mode: str = "count", topk: int = 50, chunk: int = 2048) -> sp.csr_matrix:
    """Co-occurrence graph of the rows of `r` (see module doc), symmetric-normalised."""
    import scipy.sparse as sp

    if mode not in COOC_MODES:
        raise SbrError(f"co-occurrence graph mode must be one of {', '.join(COOC_MODES)}, got {mode!r}")
    if topk < 0:
        raise SbrError(f"co-occurrence top-k must be >= 0 (0 = keep every neighbour), got {topk}")
    n = r.shape[0]
    rt = r.T.tocsr()
    rows_out, cols_out, vals_out = [], [], []
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        c = (r[lo:hi] @ rt).tocoo()
        row, col, val = c.row.astype(np.int64) + lo, c.col.astype(np.int64), c.data.astype(np.float64)
        off = row != col
        row, col, val = row[off], col[off], val[off]
        if mode == "binary":
            val = np.ones_like(val)
        if topk:
            order = np.lexsort((col, -val, row))
            row, col, val = row[order], col[order], val[order]
            starts = np.searchsorted(row, row, side="left")
            keep = (np.arange(row.shape[0]) - starts) < topk
            row, col, val = row[keep], col[keep], val[keep]
        rows_out.append(row)
        cols_out.append(col)
        vals_out.append(val)
    row = np.concatenate(rows_out) if rows_out else np.zeros(0, np.int64)
    col = np.concatenate(cols_out) if cols_out else np.zeros(0, np.int64)
    val = np.concatenate(vals_out) if vals_out else np.zeros(0)
    a = sp.csr_matrix((val, (row, col)), shape=(n, n))
    a = a.maximum(a.T).tocsr()
    return _sym_norm(a)


def transpose_permutation(m: sp.csr_matrix) -> np.ndarray:
    """For a CSR matrix with a symmetric pattern and sorted indices: `perm` such that the CSR of
    mᵀ has m's row pointers and column indices and the values `m.data[perm]`."""
    import scipy.sparse as sp

    m = m.tocsr()
    m.sort_indices()
    pos = sp.csr_matrix((np.arange(1, m.nnz + 1, dtype=np.float64), m.indices, m.indptr), shape=m.shape)
    t = pos.T.tocsr()
    t.sort_indices()
    if not (np.array_equal(t.indptr, m.indptr) and np.array_equal(t.indices, m.indices)):
        raise ValueError("the matrix's sparsity pattern is not symmetric")
    return t.data.astype(np.int64) - 1


def to_torch_csr(m: sp.csr_matrix) -> torch.Tensor:
    """A float32 `torch.sparse_csr_tensor` of a scipy CSR matrix (indices sorted)."""
    import warnings

    import torch

    m = m.tocsr()
    m.sort_indices()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                       torch.from_numpy(m.indices.astype(np.int64)),
                                       torch.from_numpy(m.data.astype(np.float32)), size=m.shape)
