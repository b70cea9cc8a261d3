"""Dataset-level graphs built from training sessions only: the global item graph and the session hypergraph.

* `global_item_graph`: GCE-GNN's ε-neighbour graph. For every session and every pair of positions
  at distance 1..ε, both directions get one count (an item paired with itself included, as in
  GCE-GNN's `build_graph.py`); each item keeps its `topk` neighbours by decreasing count, ties
  broken by first occurrence in that script's enumeration order (session, distance, position,
  direction), so its `adj_12.pkl` / `num_12.pkl` are reproduced exactly.
* `session_hypergraph`: DHCN's hypergraph, each session a hyperedge over its unique items. Its
  propagation `D⁻¹ H B⁻¹ Hᵀ` is available factorised (`operators`: two sparse incidence products)
  and, as DHCN's `adjacency`, pre-multiplied into one item × item CSR matrix (`propagation`:
  1.6x (Diginetica) to 3.1x (Nowplaying) the non-zeros of the two factors together, but one
  product instead of two, and its rows are what a batch needs). DHCN itself uses every augmented
  training prefix as a hyperedge; sbrbench uses whole sessions.
* `dataset_graph`: the graph of a dataset's fitted sessions (`dataset.fit_sessions(splits)`, never
  the test split), cached as `.npz` under the processed dataset's `graphs/` directory.

Both are vectorised with numpy: building them for Nowplaying takes seconds.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sbrbench.errors import SbrError
from sbrbench.io import atomic_write_bytes

if TYPE_CHECKING:
    import torch

    from sbrbench.data.dataset import ProcessedDataset

log = logging.getLogger(__name__)


@dataclass
class GlobalItemGraph:
    """Each item's `topk` strongest ε-neighbours.

    Shapes:
        neighbors (n_items, topk) int64, 0-padded; weights (n_items, topk) float32 co-occurrence
        counts, 0 where there is no neighbour; counts (n_items,) int64 real neighbours per item.
    """

    neighbors: np.ndarray
    weights: np.ndarray
    counts: np.ndarray
    eps: int
    topk: int

    @property
    def n_items(self) -> int:
        """Size of the item space (including the padding id 0)."""
        return int(self.neighbors.shape[0])

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kept edges as (source, neighbour, weight) arrays, sources ascending."""
        mask = np.arange(self.topk)[None, :] < self.counts[:, None]
        src = np.broadcast_to(np.arange(self.n_items)[:, None], mask.shape)[mask]
        return src.astype(np.int64), self.neighbors[mask], self.weights[mask]

    def adjacency(self) -> torch.Tensor:
        """The kept edges as a sparse (n_items, n_items) float32 tensor, row i → its neighbours."""
        import torch

        src, dst, w = self.edges()
        idx = torch.from_numpy(np.stack([src, dst]))
        return torch.sparse_coo_tensor(idx, torch.from_numpy(w), (self.n_items, self.n_items), check_invariants=True).coalesce()


@dataclass
class SessionHypergraph:
    """Sessions as hyperedges over their unique items (incidence pairs, edge-major order).

    Shapes:
        edge (nnz,) int64 hyperedge index; item (nnz,) int64 item id; one entry per
        (session, unique item).
    """

    edge: np.ndarray
    item: np.ndarray
    n_items: int
    n_edges: int

    def degrees(self) -> tuple[np.ndarray, np.ndarray]:
        """(item degree D, hyperedge degree B), zeros replaced by 1."""
        d = np.bincount(self.item, minlength=self.n_items).astype(np.float32)
        b = np.bincount(self.edge, minlength=self.n_edges).astype(np.float32)
        return np.maximum(d, 1.0), np.maximum(b, 1.0)

    def operators(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B⁻¹Hᵀ of shape (n_edges, n_items), D⁻¹H of shape (n_items, n_edges)), sparse float32."""
        import torch

        d, b = self.degrees()
        e = torch.from_numpy(self.edge)
        i = torch.from_numpy(self.item)
        edge_from_items = torch.sparse_coo_tensor(
            torch.stack([e, i]), torch.from_numpy(1.0 / b[self.edge]), (self.n_edges, self.n_items), check_invariants=True
        ).coalesce()
        item_from_edges = torch.sparse_coo_tensor(
            torch.stack([i, e]), torch.from_numpy(1.0 / d[self.item]), (self.n_items, self.n_edges), check_invariants=True
        ).coalesce()
        return edge_from_items, item_from_edges

    def factors(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """(B⁻¹Hᵀ (n_edges × n_items), D⁻¹H (n_items × n_edges)) as CSR arrays: (indptr, indices, values).

        Indices int64, sorted within each row; values float64. `propagation` is their product.
        """
        import scipy.sparse as sp

        d, b = self.degrees()
        inc = sp.csr_matrix((np.ones(self.item.shape[0]), (self.item, self.edge)), shape=(self.n_items, self.n_edges))
        edge_from_items = (sp.diags(1.0 / b.astype(np.float64)) @ inc.T).tocsr()
        item_from_edges = (sp.diags(1.0 / d.astype(np.float64)) @ inc).tocsr()
        return _csr_arrays(edge_from_items), _csr_arrays(item_from_edges)

    def propagation(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`D⁻¹ H B⁻¹ Hᵀ` (n_items × n_items) as CSR arrays: (indptr, indices) int64, values float64.

        Computed in float64 from the incidence (DHCN's pre-multiplied `adjacency`); column indices
        are sorted within each row. Entry (i, j) is `Σ_e 1/(D_i B_e)` over the hyperedges holding both.
        """
        import scipy.sparse as sp

        (e_ptr, e_idx, e_val), (i_ptr, i_idx, i_val) = self.factors()
        edge_from_items = sp.csr_matrix((e_val, e_idx, e_ptr), shape=(self.n_edges, self.n_items))
        item_from_edges = sp.csr_matrix((i_val, i_idx, i_ptr), shape=(self.n_items, self.n_edges))
        return _csr_arrays((item_from_edges @ edge_from_items).tocsr())

    def propagate(self, x: torch.Tensor) -> torch.Tensor:
        """One hypergraph convolution without weights: `D⁻¹ H B⁻¹ Hᵀ x` for x of shape (n_items, d)."""
        import torch

        indptr, indices, values = (torch.from_numpy(a).to(x.device) for a in self.propagation())
        return torch.sparse.mm(csr_tensor(indptr, indices, values.to(x.dtype), (self.n_items, self.n_items)), x)


def csr_tensor(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A sparse CSR tensor from trusted parts (sorted, in range): no invariant check, no beta warning.

    `torch.sparse.mm(csr, dense)` builds no (nnz, d) intermediate: on one CPU thread it is 1.8x
    faster than the COO product and 6x faster than gathering rows and `index_add`ing them on the
    full Diginetica incidence (`bench/bench_gcegnn.py` times the H-GCN passes built on it).
    """
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Sparse CSR tensor support is in beta state"
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _csr_arrays(m: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, data) of a scipy CSR matrix: int64 indices sorted within rows, float64 data."""
    m.sort_indices()
    return m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data.astype(np.float64)


def _session_index(offsets: np.ndarray) -> np.ndarray:
    lengths = np.diff(offsets)
    return np.repeat(np.arange(lengths.shape[0], dtype=np.int64), lengths)


def global_item_graph(
    items: np.ndarray, offsets: np.ndarray, n_items: int, *, eps: int = 3, topk: int = 12
) -> GlobalItemGraph:
    """GCE-GNN's global item graph of the CSR sessions `items[offsets[s]:offsets[s+1]]`."""
    if eps < 1 or topk < 1:
        raise SbrError(f"the global item graph needs eps >= 1 and topk >= 1, got eps={eps}, topk={topk}")
    items = np.asarray(items, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise SbrError(f"item ids must lie in 0..{n_items - 1} to build the global item graph")
    sess = _session_index(offsets)
    pos = np.arange(items.shape[0], dtype=np.int64) - offsets[sess]
    max_len = int(np.diff(offsets).max()) if offsets.shape[0] > 1 else 1
    srcs, dsts, keys = [], [], []
    for k in range(1, eps + 1):
        j = np.arange(max(items.shape[0] - k, 0), dtype=np.int64)
        j = j[sess[j] == sess[j + k]]
        a, b = items[j], items[j + k]
        # The official script's enumeration order: session, distance, position, then direction.
        base = ((sess[j] * eps + (k - 1)) * max_len + pos[j]) * 2
        srcs += [a, b]
        dsts += [b, a]
        keys += [base, base + 1]
    src = np.concatenate(srcs) if srcs else np.zeros(0, np.int64)
    dst = np.concatenate(dsts) if dsts else np.zeros(0, np.int64)
    key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    order = np.argsort(key, kind="stable")
    code = src[order] * n_items + dst[order]
    uniq, first, count = np.unique(code, return_index=True, return_counts=True)
    usrc, udst = uniq // n_items, uniq % n_items
    rank = np.lexsort((first, -count, usrc))
    usrc, udst, count = usrc[rank], udst[rank], count[rank]
    starts = np.searchsorted(usrc, np.arange(n_items))
    within = np.arange(usrc.shape[0]) - starts[usrc]
    keep = within < topk
    neighbors = np.zeros((n_items, topk), dtype=np.int64)
    weights = np.zeros((n_items, topk), dtype=np.float32)
    neighbors[usrc[keep], within[keep]] = udst[keep]
    weights[usrc[keep], within[keep]] = count[keep]
    counts = np.minimum(np.bincount(usrc, minlength=n_items), topk).astype(np.int64)
    return GlobalItemGraph(neighbors, weights, counts, int(eps), int(topk))


def session_hypergraph(items: np.ndarray, offsets: np.ndarray, n_items: int) -> SessionHypergraph:
    """DHCN's hypergraph: session s is hyperedge s over its unique (non-padding) items."""
    items = np.asarray(items, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise SbrError(f"item ids must lie in 0..{n_items - 1} to build the session hypergraph")
    n_edges = int(offsets.shape[0] - 1)
    code = np.unique(_session_index(offsets) * n_items + items)
    edge, item = code // n_items, code % n_items
    keep = item != 0
    return SessionHypergraph(edge[keep], item[keep], int(n_items), n_edges)


GRAPH_KINDS = ("global", "hyper")


def dataset_graph(
    kind: str,
    dataset: ProcessedDataset,
    splits: Sequence[str],
    cache_dir: str | Path | None = None,
    **params: Any,
) -> GlobalItemGraph | SessionHypergraph:
    """The `kind` graph ("global" or "hyper") of the sessions that `splits` fit, cached in `cache_dir`.

    Only the fitted part of each session enters (`ProcessedDataset.fit_sessions`, which refuses
    the test split): validation targets when selecting on the validation split, and the test
    split ever, stay out of the graph. The cache key covers the kind, the parameters and a hash
    of the fitted sessions (their items and offsets), so a re-split never reuses a stale graph; a
    corrupt cache file is rebuilt.
    """
    if kind not in GRAPH_KINDS:
        raise SbrError(f"unknown graph kind {kind!r}; choose from {', '.join(GRAPH_KINDS)}")
    fitted = dataset.fit_sessions(tuple(splits))
    items, offsets = fitted.items, fitted.offsets
    n_items = int(dataset.n_items)
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(items, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(offsets, dtype=np.int64).tobytes())
    tag = "-".join(f"{k}{params[k]}" for k in sorted(params))
    name = f"{kind}{'-' + tag if tag else ''}-n{n_items}-{h.hexdigest()[:16]}.npz"
    path = Path(cache_dir) / name if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            return _load_graph(kind, path, n_items)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # the zip CRC checks the bytes
            log.warning("rebuilding corrupt graph cache %s (%s)", path, exc)
    graph: GlobalItemGraph | SessionHypergraph
    if kind == "global":
        graph = global_item_graph(items, offsets, n_items, **params)
    else:
        if params:
            raise SbrError(f"the session hypergraph takes no parameters, got {', '.join(sorted(params))}")
        graph = session_hypergraph(items, offsets, n_items)
    if path is not None:
        _save_graph(graph, path)
    return graph


def _save_graph(graph: GlobalItemGraph | SessionHypergraph, path: Path) -> None:
    buf = io.BytesIO()
    if isinstance(graph, GlobalItemGraph):
        np.savez(buf, neighbors=graph.neighbors, weights=graph.weights, counts=graph.counts,
                 meta=np.array([graph.eps, graph.topk], dtype=np.int64))
    else:
        np.savez(buf, edge=graph.edge, item=graph.item,
                 meta=np.array([graph.n_items, graph.n_edges], dtype=np.int64))
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:  # a read-only data directory only costs a rebuild next time
        log.warning("could not cache graph at %s: %s", path, exc)


def _load_graph(kind: str, path: Path, n_items: int) -> GlobalItemGraph | SessionHypergraph:
    with np.load(path, allow_pickle=False) as z:
        if kind == "global":
            g = GlobalItemGraph(z["neighbors"], z["weights"], z["counts"], int(z["meta"][0]), int(z["meta"][1]))
            if g.neighbors.shape != (n_items, g.topk) or g.weights.shape != g.neighbors.shape:
                raise ValueError("shape mismatch")
            return g
        meta = z["meta"]
        hg = SessionHypergraph(z["edge"], z["item"], int(meta[0]), int(meta[1]))
        if hg.n_items != n_items or hg.edge.shape != hg.item.shape:
            raise ValueError("shape mismatch")
        return hg
