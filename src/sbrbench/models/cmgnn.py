r"""CM-GNN (Wang et al., IEEE TMM 2023; arXiv 2311.02938): contrastive multi-level graph networks.

No official code exists (see anchors §2.5); this file is sbrbench's reference implementation,
built from the paper's description with GCE-GNN (local / global aggregators, readout) and DHCN
(hypergraph convolution) as the component models. Per batch:

* **L-GCN** (`lgcn_layers`, default 1): GCE-GNN's relation-aware attention on the current session
  graph (`gcegnn.RelationalGraphAttention` on `gcegnn.session_relations`: node = unique item;
  relations self / out / in / both of the reversed prefix, one attention vector each,
  LeakyReLU(`alpha`), softmax over the related nodes); more layers stack more such steps.
* **G-GCN** (`ggcn_layers`, default 2): GCE-GNN's session-aware ε-neighbour aggregation on the
  global item graph (`sbrbench.graphs`: pairs at distance 1..`eps`, default 3; each item's `topk`,
  default 12, strongest neighbours; weights = co-occurrence counts), neighbours drawn once in
  `prepare` as GCE-GNN's `handle_adj` does (`gcegnn.sample_neighbours`, private generator seeded
  with `graph_seed`: deterministic). Attention `w_2^T LeakyReLU(W_1 [s ⊙ h_j ; w_ij])` with `s` the
  mean item embedding of the session, then `relu(W_3 [h_i ; Σ_j π_ij h_j])`, one aggregator per
  layer over the `topk`-ary neighbour tree (`gcegnn.SessionAwareNeighbourAggregator`), rooted at
  the batch's real session nodes only (packed rows; same results as rooting it at every position).
  The first layer's attention depends only on (session, item), so it runs once per distinct pair
  and its keys `(s ⊙ h_j) W_1` once per distinct (session, neighbour) (`layers.NeighbourTree`,
  `layers.aggregate_neighbour_tree`): on Diginetica about 11k key rows per batch of 100 instead of
  53k tree slots; dropout, `W_3` and the later layers stay per slot (same dropout draws).
* **Fusion** (`fusion`): attention over the two pairwise views of every item,
  `[γ_l, γ_g] = softmax(q^T tanh(W_f h + b_f))`, `h = γ_l h^l + γ_g h^g` (GCE-GNN dropouts
  `dropout_local` / `dropout_global` applied to the views first); switched off it is GCE-GNN's plain
  sum. The fused item states go through GCE-GNN's reversed-position soft-attention readout
  (`gcegnn.ReversedPositionReadout`; prefixes longer than `max_position` = 200 keep their most
  recent clicks) → pairwise session vector `s_p`, which alone scores the catalogue against the
  layer-0 item embeddings.
* **H-GCN** (`hgcn_layers`, default 1): DHCN's hypergraph convolution without weights,
  `X^{(l+1)} = D^{-1} H B^{-1} H^T X^{(l)}` on the shared item embeddings, output the mean of
  layers 0..L (each fitted training session one hyperedge). Average pooling over the prefix's
  positions gives the high-order session vector `s_h`. `hgcn_scope="all"` propagates every item
  each forward as DHCN does (two CSR products over the whole incidence, the backward through the
  rows that receive a gradient); the default `"batch"` computes the same rows exactly but only for
  the batch's items and the items they depend on (`HypergraphRows`: the batch items' rows of the
  pre-multiplied item × item propagation, about 2 % of its non-zeros per batch of 100 with one
  layer; tested equal in values and gradients). One training step of the batch scope spends about
  16 ms (CPU) in H-GCN, the full pass about 140 ms, on Diginetica on one thread of the shared
  2-core CPU (`bench/bench_gcegnn.py`). `s_h` only feeds the contrastive loss, so H-GCN runs in
  training mode only (evaluation costs nothing).
* **CL** (`cl`): `beta * info_nce(s_p, s_h, temperature)` (`sbrbench.losses.info_nce`: cosine
  similarity, in-batch negatives, direction s_p → s_h; `temperature` default 0.2, `beta` 0.01).

Components (`drop`): `lgcn`, `ggcn`, `hgcn`, `fusion`, `cl`. Without one of L-GCN / G-GCN the other
view is used alone (fusion has nothing to fuse and is not built); without both the readout sees
the raw embeddings. Dropping `hgcn` also switches `cl` off: there is no second view. H-GCN has no
parameters; its switch removes the hypergraph buffers and the contrastive term.

Each forward looks up the embedding table once (`layers.UniqueLookup`: the distinct ids of the session nodes
and the neighbour trees), so the backward builds one dense embedding gradient for them besides
the score product's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from sbrbench.errors import SbrError
from sbrbench.graphs import csr_tensor
from sbrbench.losses import info_nce
from sbrbench.models.base import Model, dropped, register_model
from sbrbench.models.layers import (
    NeighbourTree,
    RelationalGraphAttention,
    ReversedPositionReadout,
    SessionAwareNeighbourAggregator,
    UniqueLookup,
    aggregate_neighbour_tree,
    catalogue_scores,
    in_row_slices,
    overwritten_init,
    reset_children_,
    reverse_prefixes,
    sample_neighbours,
    self_init,
    session_relations,
    uniform_init_,
)

if TYPE_CHECKING:
    from sbrbench.batching import Batch
    from sbrbench.data.dataset import ProcessedDataset


@dataclass
class CMGNNParams:
    """CM-GNN hyper-parameters (paper defaults where given, GCE-GNN / DHCN choices elsewhere)."""

    dim: int = 100
    lgcn_layers: int = 1
    ggcn_layers: int = 2
    hgcn_layers: int = 1
    beta: float = 0.01
    temperature: float = 0.2
    eps: int = 3
    topk: int = 12
    alpha: float = 0.2  # LeakyReLU slope of the session-graph attention
    max_position: int = 200
    graph_seed: int = 2020  # neighbour sampling of the global graph (GCE-GNN's handle_adj)
    hgcn_scope: str = "batch"  # H-GCN rows computed: "batch" (the batch's items, exact) or "all" (DHCN)
    dropout_local: float = 0.0
    dropout_global: float = 0.5
    dropout_gcn: float = 0.0
    drop: str = ""  # comma-separated components to switch off: lgcn, ggcn, hgcn, fusion, cl


class ViewFusion(nn.Module):
    """Attention over views of the same item: softmax over views of `q^T tanh(W h + b)`.

    Shapes:
        views: a list of V tensors (B, N, d) → (B, N, d).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.q = nn.Linear(dim, 1, bias=False)
        self_init(self)

    def reset_parameters(self) -> None:
        """Both linear layers with `nn.Linear`'s default."""
        reset_children_(self)

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        """The attention-weighted sum of the views."""
        stacked = torch.stack(views, -2)  # (B, N, V, d)
        gamma = torch.softmax(self.q(torch.tanh(self.proj(stacked))), -2)
        return (gamma * stacked).sum(-2)


def _csr_rows(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rows `rows` of the CSR matrix (crow, col, val) as CSR parts of their own, no Python loop."""
    start = crow[rows]
    length = crow[rows + 1] - start
    sub = torch.zeros(rows.shape[0] + 1, dtype=crow.dtype, device=crow.device)
    torch.cumsum(length, 0, out=sub[1:])
    idx = torch.arange(int(sub[-1]), device=crow.device) + torch.repeat_interleave(start - sub[:-1], length)
    return sub, col[idx], val[idx]


def _transposed_product(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, g: torch.Tensor, n_in: int) -> torch.Tensor:
    """`Aᵀ g` (n_in, d) for the CSR matrix A = (crow, col, val), rows of `g` that are all zero skipped."""
    live = g.ne(0).any(1)
    if bool(live.all()):
        row = torch.repeat_interleave(torch.arange(g.shape[0], device=g.device), crow[1:] - crow[:-1])
    else:
        rows = live.nonzero().squeeze(1)
        crow, col, val = _csr_rows(crow, col, val, rows)
        g = g[rows]
        row = torch.repeat_interleave(torch.arange(rows.shape[0], device=g.device), crow[1:] - crow[:-1])
    order = torch.argsort(col, stable=True)
    crow_t = torch.zeros(n_in + 1, dtype=crow.dtype, device=crow.device)
    torch.cumsum(torch.bincount(col, minlength=n_in), 0, out=crow_t[1:])
    return torch.sparse.mm(csr_tensor(crow_t, row[order], val[order].to(g.dtype), (n_in, g.shape[0])), g)


class _CsrProduct(torch.autograd.Function):
    """`A x` for a constant CSR matrix A given by its parts; the backward `Aᵀ g` transposes A on the fly."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(crow, col, val)
        ctx.n_in = x.shape[0]
        return torch.sparse.mm(csr_tensor(crow, col, val.to(x.dtype), (crow.shape[0] - 1, x.shape[0])), x)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        crow, col, val = ctx.saved_tensors
        return _transposed_product(crow, col, val, g.contiguous(), ctx.n_in), None, None, None


class _FullPropagation(torch.autograd.Function):
    """`P x` for every item as DHCN computes it, `D⁻¹H (B⁻¹Hᵀ x)`: two sparse products, the (n_edges, d)
    intermediate in a reused workspace; the backward `Pᵀ g` uses the pre-multiplied P's rows that
    receive a gradient (only the clicked items' when s_h alone reads the result)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, hyper: HypergraphRows) -> torch.Tensor:
        ctx.hyper = hyper
        ctx.n_in = x.shape[0]
        edges, items = hyper.factor_matrices(x.dtype)
        z = hyper.workspace(edges.shape[0], x)
        torch.addmm(z, edges, x, beta=0.0, out=z)
        return torch.sparse.mm(items, z)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None
        h = ctx.hyper
        return _transposed_product(h.prop_crow, h.prop_col, h.prop_val, g.contiguous(), ctx.n_in), None


class HypergraphRows(nn.Module):
    r"""Hypergraph convolution `X' = P X`, `P = D^{-1} H B^{-1} H^T`, over all items or a subset of rows.

    P is kept pre-multiplied as one item × item CSR matrix, as DHCN's `adjacency`
    (`SessionHypergraph.propagation`; float32 values of the float64 product). `rows(x, items,
    layers)` returns the mean of layers 0..`layers` for `items` only, each intermediate layer on
    just the items it depends on: with one layer that is the batch items' rows of P, about 2% of
    its non-zeros per batch of 100 on Diginetica. `full(x, layers)` is DHCN's pass over every item
    (built with `factors=True`: the two factors B⁻¹Hᵀ and D⁻¹H, 0.6x the non-zeros of P on
    Diginetica, 0.3x on Tmall and Nowplaying, are what its forward multiplies). Every product is a
    `torch.sparse.mm` on CSR, forward and backward (the backward transposes only the rows that
    receive a gradient): no (nnz, d) intermediate is ever built.
    """

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor,
                 factors: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None) -> None:
        super().__init__()
        self.register_buffer("prop_crow", crow, persistent=False)
        self.register_buffer("prop_col", col, persistent=False)
        self.register_buffer("prop_val", val, persistent=False)
        self.has_factors = factors is not None
        if factors is not None:
            for name, parts in zip(("edge", "item"), factors):
                for part, t in zip(("crow", "col", "val"), parts):
                    self.register_buffer(f"{name}_{part}", t, persistent=False)
        self._workspace: torch.Tensor | None = None

    @classmethod
    def from_graph(cls, h: Any, factors: bool = False, dtype: torch.dtype = torch.float32) -> HypergraphRows:
        """The propagation of a `sbrbench.graphs.SessionHypergraph` (and its two factors for `full`),
        values rounded once from float64 to `dtype`."""

        def tensors(arrays: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
            crow, col, val = arrays
            return torch.from_numpy(crow), torch.from_numpy(col), torch.from_numpy(val).to(dtype)

        fac = None
        if factors:
            edge_from_items, item_from_edges = h.factors()
            fac = (tensors(edge_from_items), tensors(item_from_edges))
        return cls(*tensors(h.propagation()), factors=fac)

    @property
    def n_items(self) -> int:
        """Size of the item space."""
        return int(self.prop_crow.shape[0] - 1)

    def factor_matrices(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(B⁻¹Hᵀ, D⁻¹H) as sparse CSR tensors of `dtype`."""
        if not self.has_factors:
            raise SbrError("this hypergraph was built without its factors (HypergraphRows.from_graph(h, factors=True))")
        n_edges = self.edge_crow.shape[0] - 1
        edges = csr_tensor(self.edge_crow, self.edge_col, self.edge_val.to(dtype), (n_edges, self.n_items))
        items = csr_tensor(self.item_crow, self.item_col, self.item_val.to(dtype), (self.n_items, n_edges))
        return edges, items

    def workspace(self, rows: int, like: torch.Tensor) -> torch.Tensor:
        """A reused (rows, d) buffer shaped like `like`: the full pass's (n_edges, d) intermediate
        is allocated once, not per step (large allocations are page-faulted anew each time)."""
        w = self._workspace
        if w is None or w.shape != (rows, like.shape[1]) or w.dtype != like.dtype or w.device != like.device:
            w = self._workspace = torch.empty(rows, like.shape[1], dtype=like.dtype, device=like.device)
        return w

    def full(self, x: torch.Tensor, layers: int) -> torch.Tensor:
        """Mean of H-GCN layers 0..`layers` of `x` (n_items, d) for every item (DHCN)."""
        total, h = x, x
        for _ in range(layers):
            h = _FullPropagation.apply(h, self)
            total = total + h
        return total / (layers + 1)

    def rows(self, x: torch.Tensor, items: torch.Tensor, layers: int, x_items: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of H-GCN layers 0..`layers` of `x` (n_items, d) at the sorted unique `items` (S, d).

        `x_items` may supply `x[items]` (e.g. from a lookup the caller already made).
        """
        sets = [items]
        parts = []
        for level in range(layers):
            parts.append(_csr_rows(self.prop_crow, self.prop_col, self.prop_val, sets[-1]))
            if level + 1 < layers:
                sets.append(torch.unique(torch.cat([parts[-1][1], items])))
        total = x[items] if x_items is None else x_items
        h = x
        for level in range(layers - 1, -1, -1):
            crow, col, val = parts[level]
            if level + 1 < layers:  # the input is layer `layers - level - 1` at sets[level + 1] only
                col = torch.searchsorted(sets[level + 1], col)
            h = _CsrProduct.apply(h, crow, col, val)
            total = total + (h if level == 0 else h[torch.searchsorted(sets[level], items)])
        return total / (layers + 1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dimension 1 of x (B, L, d) counting only positions where mask (B, L) is set."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


@register_model("cmgnn")
class CMGNN(Model):
    """CM-GNN: local, global and hypergraph GCNs with attention fusion and InfoNCE between views."""

    Params: ClassVar[type] = CMGNNParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 20, "batch_size": 100, "lr": 1e-3, "lr_dc": 0.1, "lr_dc_step": 3,
        "l2": 1e-5, "patience": 3,
    }
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "diginetica": {"dropout_gcn": 0.2, "dropout_local": 0.0},
        "tmall": {"dropout_gcn": 0.6, "dropout_local": 0.5},
        "nowplaying": {"dropout_gcn": 0.0, "dropout_local": 0.0},
    }
    components: ClassVar[frozenset[str]] = frozenset({"lgcn", "ggcn", "hgcn", "fusion", "cl"})
    needs_graph: ClassVar[bool] = True
    # evaluation encodes this many sessions at a time (as GCE-GNN): the neighbour trees of a slice
    # stay in cache
    eval_slice: ClassVar[int] = 100

    def __init__(self, n_items: int, params: CMGNNParams | None = None) -> None:
        super().__init__(n_items, params)
        p: CMGNNParams = self.params
        _check(p)
        off = dropped(p)
        self.use_lgcn = "lgcn" not in off
        self.use_ggcn = "ggcn" not in off
        self.use_hgcn = "hgcn" not in off
        self.use_cl = self.use_hgcn and "cl" not in off and p.beta > 0
        with overwritten_init():  # every parameter is re-initialised below
            self.embedding = nn.Embedding(n_items, p.dim)
            self.lgcn = (
                nn.ModuleList(RelationalGraphAttention(p.dim, 4, p.alpha) for _ in range(p.lgcn_layers))
                if self.use_lgcn else None
            )
            self.ggcn = (
                nn.ModuleList(SessionAwareNeighbourAggregator(p.dim, p.dropout_gcn) for _ in range(p.ggcn_layers))
                if self.use_ggcn else None
            )
            self.fusion = ViewFusion(p.dim) if self.use_lgcn and self.use_ggcn and "fusion" not in off else None
            self.readout = ReversedPositionReadout(p.dim, p.max_position)
        self.hyper: HypergraphRows | None = None
        self._views: tuple[torch.Tensor, torch.Tensor] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(dim), 1/sqrt(dim)), as GCE-GNN's and DHCN's code (`uniform_init_`)."""
        uniform_init_(self, self.params.dim)

    # ---- dataset-level graphs ----------------------------------------------------------------------
    def prepare(
        self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Path | None = None
    ) -> None:
        """Build the global item graph (G-GCN) and the hypergraph operators (H-GCN) of the fit sessions."""
        from sbrbench.graphs import dataset_graph

        p: CMGNNParams = self.params
        if dataset.n_items != self.n_items:
            raise SbrError(f"cmgnn was built for {self.n_items} item ids, the dataset has {dataset.n_items}")
        if self.use_ggcn:
            g = dataset_graph("global", dataset, splits, cache_dir, eps=p.eps, topk=p.topk)
            gen = torch.Generator().manual_seed(p.graph_seed)
            items, weights = sample_neighbours(g.neighbors, g.weights, g.counts, p.topk, gen)
            self.register_buffer("nbr_items", items, persistent=False)
            self.register_buffer("nbr_weights", weights, persistent=False)
        if self.use_cl:
            h = dataset_graph("hyper", dataset, splits, cache_dir)
            self.hyper = HypergraphRows.from_graph(h, factors=p.hgcn_scope == "all")

    def _require(self, name: str) -> torch.Tensor:
        t = getattr(self, name, None)
        if t is None:
            raise SbrError("cmgnn needs its dataset graphs: call model.prepare(dataset, splits) before use")
        return t

    # ---- the three GCNs ----------------------------------------------------------------------------
    def local_view(self, hidden: torch.Tensor, rev_alias: torch.Tensor, mask: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """L-GCN: `lgcn_layers` relation-aware attention steps on the session graphs (B, N, d)."""
        assert self.lgcn is not None
        rel = session_relations(rev_alias, mask, nodes > 0)
        for layer in self.lgcn:
            hidden = layer(hidden, rel)
        return hidden

    def neighbour_tree(self, nodes: torch.Tensor) -> NeighbourTree:
        """The G-GCN neighbour trees of the batch's real (non-padding) session nodes, packed as T roots."""
        assert self.ggcn is not None
        b_idx, n_idx = (nodes > 0).nonzero(as_tuple=True)
        return NeighbourTree.build(nodes[b_idx, n_idx], b_idx, self._require("nbr_items"), self._require("nbr_weights"),
                                   len(self.ggcn))

    def global_view(
        self, nodes: torch.Tensor, tree: NeighbourTree, lookup: UniqueLookup, session: torch.Tensor
    ) -> torch.Tensor:
        """G-GCN: `ggcn_layers` rounds of session-aware aggregation over the neighbour trees (B, N, d).

        `session` (B, d) is each session's mean click embedding. The trees are rooted at the real
        nodes only and scattered back into the padded (B, N) layout: the cost follows the batch's
        distinct (session, item) pairs, not its longest session (`aggregate_neighbour_tree`).
        """
        assert self.ggcn is not None
        roots = aggregate_neighbour_tree(self.ggcn, tree, lookup, session)
        b_idx, n_idx = (nodes > 0).nonzero(as_tuple=True)
        out = torch.zeros(nodes.shape[0], nodes.shape[1], roots.shape[1], dtype=roots.dtype, device=nodes.device)
        return out.index_put((b_idx, n_idx), roots)

    def hyper_items(self) -> torch.Tensor:
        """H-GCN over all item embeddings (DHCN): mean of layers 0..hgcn_layers (n_items, d)."""
        return self._hyper().full(self.embedding.weight, self.params.hgcn_layers)

    def _hyper(self) -> HypergraphRows:
        if self.hyper is None:
            raise SbrError("cmgnn needs its dataset graphs: call model.prepare(dataset, splits) before use")
        return self.hyper

    def high_order_session(
        self, seq: torch.Tensor, mask: torch.Tensor, lookup: UniqueLookup | None = None
    ) -> torch.Tensor:
        """s_h (B, d): average pooling of the H-GCN item representations over each prefix.

        `lookup` (the forward pass's embedding lookup, holding every clicked item) supplies the
        layer-0 rows of the batch scope; without it they are read from the embedding table.
        """
        if self.params.hgcn_scope == "all":
            return masked_mean(self.hyper_items()[seq], mask)
        rows, pos = torch.unique(seq[mask], return_inverse=True)
        x = self._hyper().rows(self.embedding.weight, rows, self.params.hgcn_layers,
                               None if lookup is None else lookup(rows))
        out = torch.zeros(seq.shape + (x.shape[1],), dtype=x.dtype, device=x.device)
        return masked_mean(out.index_put((mask.nonzero(as_tuple=True)), x[pos]), mask)

    # ---- forward -----------------------------------------------------------------------------------
    def _encode(self, batch: Batch, high_order: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """s_p (B, d) from the fused local and global views, and s_h when `high_order`.

        In evaluation mode s_p is computed `eval_slice` sessions at a time (`layers.in_row_slices`:
        rows are independent), so that the neighbour-tree tensors of a slice stay in cache.
        """
        from sbrbench.batching import session_graphs

        p: CMGNNParams = self.params
        seq, mask, lengths, nodes, alias = batch.seq, batch.mask, batch.lengths, batch.nodes, batch.alias
        if nodes is None or alias is None or seq.shape[1] > p.max_position:
            seq, mask, lengths = keep_recent(seq, lengths, p.max_position)
            nodes, alias, _, _ = session_graphs(seq, lengths, mask)
        if not (self.training or high_order):
            s_p = in_row_slices(lambda *rows: self._pairwise(*rows)[0], self.eval_slice, mask, lengths, nodes, alias)
            return s_p, None
        s_p, lookup = self._pairwise(mask, lengths, nodes, alias)
        return s_p, (self.high_order_session(seq, mask, lookup) if high_order else None)

    def _pairwise(
        self, mask: torch.Tensor, lengths: torch.Tensor, nodes: torch.Tensor, alias: torch.Tensor
    ) -> tuple[torch.Tensor, UniqueLookup]:
        """s_p (B, d) and the forward pass's embedding lookup."""
        p: CMGNNParams = self.params
        rev_alias = reverse_prefixes(alias, lengths, mask)
        tree = self.neighbour_tree(nodes) if self.ggcn is not None else None
        # one lookup for the session nodes (which hold every clicked item) and the neighbour trees
        ids = nodes.reshape(-1) if tree is None else torch.cat([nodes.reshape(-1), tree.items()])
        lookup = UniqueLookup(self.embedding, ids)
        h0 = lookup(nodes)
        views = []
        if self.lgcn is not None:
            views.append(F.dropout(self.local_view(h0, rev_alias, mask, nodes), p.dropout_local, training=self.training))
        if tree is not None:
            clicks = h0.gather(1, alias.unsqueeze(2).expand(-1, -1, h0.shape[2]))
            session = masked_mean(clicks, mask)
            views.append(F.dropout(self.global_view(nodes, tree, lookup, session), p.dropout_global, training=self.training))
        if not views:
            hidden = h0
        elif self.fusion is not None:
            hidden = self.fusion(views)
        else:
            hidden = views[0] if len(views) == 1 else views[0] + views[1]
        rev_hidden = hidden.gather(1, rev_alias.unsqueeze(2).expand(-1, -1, hidden.shape[2]))
        return self.readout(rev_hidden, mask), lookup

    def session_embedding(self, batch: Batch) -> torch.Tensor:
        """The pairwise session vector s_p (B, d) from the fused local and global views."""
        return self._encode(batch, False)[0]

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) of s_p against the layer-0 embeddings; stashes both views when training."""
        s_p, s_h = self._encode(batch, self.use_cl and self.training)
        self._views = None if s_h is None else (s_p, s_h)
        return catalogue_scores(s_p, self.embedding.weight)

    def extra_loss(self, batch: Batch, scores: torch.Tensor) -> torch.Tensor | None:
        """`beta * InfoNCE(s_p, s_h)` of the last training forward (None when CL is off)."""
        if self._views is None:
            return None
        s_p, s_h = self._views
        self._views = None
        return self.params.beta * info_nce(s_p, s_h, self.params.temperature)


def keep_recent(seq: torch.Tensor, lengths: torch.Tensor, limit: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the most recent `limit` clicks of every left-aligned prefix: (seq, mask, lengths)."""
    keep = lengths.clamp(max=limit)
    width = min(seq.shape[1], limit)
    pos = torch.arange(width, device=seq.device)
    idx = ((lengths - keep).unsqueeze(1) + pos).clamp(max=seq.shape[1] - 1)
    mask = pos.unsqueeze(0) < keep.unsqueeze(1)
    return seq.gather(1, idx) * mask, mask, keep


def _check(p: CMGNNParams) -> None:
    for key in ("lgcn_layers", "ggcn_layers", "hgcn_layers", "eps", "topk", "max_position"):
        if getattr(p, key) < 1:
            raise SbrError(f"cmgnn hyper-parameter {key!r} must be >= 1 (drop the component instead), got {getattr(p, key)}")
    for key in ("dropout_local", "dropout_global", "dropout_gcn"):
        if not 0.0 <= getattr(p, key) < 1.0:
            raise SbrError(f"cmgnn hyper-parameter {key!r} must be in [0, 1), got {getattr(p, key)}")
    if p.hgcn_scope not in ("batch", "all"):
        raise SbrError(f"cmgnn hyper-parameter 'hgcn_scope' must be batch or all, got {p.hgcn_scope!r}")
    if p.temperature <= 0 or p.beta < 0:
        raise SbrError(f"cmgnn needs temperature > 0 and beta >= 0, got temperature={p.temperature}, beta={p.beta}")
