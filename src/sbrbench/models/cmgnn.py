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
  each forward as DHCN does (two sparse products over the whole incidence: about 2 s per batch
  of 100 on Diginetica on the shared 2-core CPU); the default `"batch"` computes the same rows
  exactly but only for the batch's items and the items they depend on (`HypergraphRows`, 8-15 %
  of the incidence per batch with one layer; tested equal in values and gradients). `s_h` only
  feeds the contrastive loss, so H-GCN runs in training mode only (evaluation costs nothing).
* **CL** (`cl`): `beta * info_nce(s_p, s_h, temperature)` (`sbrbench.losses.info_nce`: cosine
  similarity, in-batch negatives, direction s_p → s_h; `temperature` default 0.2, `beta` 0.01).

Components (`drop`): `lgcn`, `ggcn`, `hgcn`, `fusion`, `cl`. Without one of L-GCN / G-GCN the other
view is used alone (fusion has nothing to fuse and is not built); without both the readout sees
the raw embeddings. Dropping `hgcn` also switches `cl` off: there is no second view. H-GCN has no
parameters; its switch removes the hypergraph buffers and the contrastive term.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sbrbench.errors import SbrError
from sbrbench.losses import info_nce
from sbrbench.models.base import Model, dropped, register_model
from sbrbench.models.layers import (
    RelationalGraphAttention,
    ReversedPositionReadout,
    SessionAwareNeighbourAggregator,
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


def _segments(offsets: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entries of CSR `rows`: (flat entry index, position of its row in `rows`), no Python loop."""
    start = offsets[rows]
    length = offsets[rows + 1] - start
    owner = torch.repeat_interleave(torch.arange(rows.shape[0], device=rows.device), length)
    first = torch.cumsum(length, 0) - length
    return start[owner] + torch.arange(owner.shape[0], device=rows.device) - first[owner], owner


class HypergraphRows(nn.Module):
    r"""Hypergraph convolution `X' = D^{-1} H B^{-1} H^T X` evaluated on a subset of item rows.

    The incidence is kept twice in CSR form (item → hyperedges with weight 1/D, hyperedge → items
    with weight 1/B). `rows(x, items, layers)` returns the mean of layers 0..`layers` for `items`
    only, computing every intermediate layer on just the items it depends on (the items sharing a
    hyperedge with the next layer's rows). The result equals full propagation (DHCN) row for row,
    at the cost of the batch's hypergraph neighbourhood: with one layer about 8% (Diginetica,
    Tmall) to 15% (Nowplaying) of the incidence entries per batch of 100.
    """

    def __init__(self, item_offsets: torch.Tensor, item_edges: torch.Tensor, item_weight: torch.Tensor,
                 edge_offsets: torch.Tensor, edge_items: torch.Tensor, edge_weight: torch.Tensor) -> None:
        super().__init__()
        for name, t in (("item_offsets", item_offsets), ("item_edges", item_edges), ("item_weight", item_weight),
                        ("edge_offsets", edge_offsets), ("edge_items", edge_items), ("edge_weight", edge_weight)):
            self.register_buffer(name, t, persistent=False)

    @classmethod
    def from_graph(cls, h: Any) -> HypergraphRows:
        """The CSR form of a `sbrbench.graphs.SessionHypergraph`."""
        d, b = h.degrees()
        edge = torch.from_numpy(h.edge).long()
        item = torch.from_numpy(h.item).long()
        by_item = torch.argsort(item * h.n_edges + edge)
        by_edge = torch.argsort(edge * h.n_items + item)
        item_off = torch.zeros(h.n_items + 1, dtype=torch.long)
        item_off[1:] = torch.cumsum(torch.bincount(item, minlength=h.n_items), 0)
        edge_off = torch.zeros(h.n_edges + 1, dtype=torch.long)
        edge_off[1:] = torch.cumsum(torch.bincount(edge, minlength=h.n_edges), 0)
        return cls(item_off, edge[by_item], torch.from_numpy(1.0 / d)[item[by_item]],
                   edge_off, item[by_edge], torch.from_numpy(1.0 / b)[edge[by_edge]])

    def _plan(self, out_rows: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One step's gathers: hyperedges of `out_rows` and their items (plus `keep`) as inputs."""
        e_idx, e_owner = _segments(self.item_offsets, out_rows)
        edges, edge_pos = torch.unique(self.item_edges[e_idx], return_inverse=True)
        i_idx, i_owner = _segments(self.edge_offsets, edges)
        in_rows = torch.unique(torch.cat([self.edge_items[i_idx], keep]))
        return e_idx, e_owner, edge_pos, edges, i_idx, i_owner, in_rows

    def _step(self, x_in: torch.Tensor, in_rows: torch.Tensor, n_out: int, plan: tuple[torch.Tensor, ...]) -> torch.Tensor:
        e_idx, e_owner, edge_pos, edges, i_idx, i_owner, _ = plan
        src = torch.searchsorted(in_rows, self.edge_items[i_idx])
        z = torch.zeros(edges.shape[0], x_in.shape[1], dtype=x_in.dtype, device=x_in.device)
        z = z.index_add(0, i_owner, x_in[src] * self.edge_weight[i_idx].unsqueeze(1))
        y = torch.zeros(n_out, x_in.shape[1], dtype=x_in.dtype, device=x_in.device)
        return y.index_add(0, e_owner, z[edge_pos] * self.item_weight[e_idx].unsqueeze(1))

    def rows(self, x: torch.Tensor, items: torch.Tensor, layers: int) -> torch.Tensor:
        """Mean of H-GCN layers 0..`layers` of `x` (n_items, d) at the sorted unique `items` (S, d)."""
        row_sets = [items]
        plans = []
        for _ in range(layers):
            plans.append(self._plan(row_sets[-1], items))
            row_sets.append(plans[-1][-1])
        h = x[row_sets[-1]]
        total = x[items]
        for level in range(layers - 1, -1, -1):
            h = self._step(h, row_sets[level + 1], row_sets[level].shape[0], plans[level])
            total = total + h[torch.searchsorted(row_sets[level], items)]
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
            if p.hgcn_scope == "all":
                edge_from_items, item_from_edges = h.operators()
                self.register_buffer("hyper_i2e", edge_from_items, persistent=False)
                self.register_buffer("hyper_e2i", item_from_edges, persistent=False)
            else:
                self.hyper = HypergraphRows.from_graph(h)

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

    def global_view(self, seq: torch.Tensor, mask: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """G-GCN: `ggcn_layers` rounds of session-aware aggregation over the neighbour tree (B, N, d).

        The tree is built for the real (non-padding) nodes only, packed as T rows, then scattered
        back into the padded (B, N) layout: the cost follows the batch's items, not its longest session.
        """
        assert self.ggcn is not None
        nbr_items, nbr_weights = self._require("nbr_items"), self._require("nbr_weights")
        k, dim = nbr_items.shape[1], self.params.dim
        b_idx, n_idx = (nodes > 0).nonzero(as_tuple=True)
        t = b_idx.shape[0]
        session = masked_mean(self.embedding(seq), mask)[b_idx]
        ids = [nodes[b_idx, n_idx].unsqueeze(1)]  # depth h: (T, K^h)
        weights = []
        for _ in range(len(self.ggcn)):
            weights.append(nbr_weights[ids[-1]].view(t, -1, k))
            ids.append(nbr_items[ids[-1]].view(t, -1))
        vectors = [self.embedding(i) for i in ids]
        for layer, agg in enumerate(self.ggcn):
            vectors = [
                agg(vectors[h], vectors[h + 1].view(t, -1, k, dim), weights[h], session)
                for h in range(len(self.ggcn) - layer)
            ]
        out = torch.zeros(nodes.shape[0], nodes.shape[1], dim, dtype=vectors[0].dtype, device=nodes.device)
        return out.index_put((b_idx, n_idx), vectors[0].view(t, dim))

    def hyper_items(self) -> torch.Tensor:
        """H-GCN over all item embeddings (DHCN): mean of layers 0..hgcn_layers (n_items, d)."""
        i2e, e2i = self._require("hyper_i2e"), self._require("hyper_e2i")
        x = self.embedding.weight
        total = x
        for _ in range(self.params.hgcn_layers):
            x = torch.sparse.mm(e2i, torch.sparse.mm(i2e, x))
            total = total + x
        return total / (self.params.hgcn_layers + 1)

    def high_order_session(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """s_h (B, d): average pooling of the H-GCN item representations over each prefix."""
        if self.params.hgcn_scope == "all":
            return masked_mean(self.hyper_items()[seq], mask)
        if self.hyper is None:
            raise SbrError("cmgnn needs its dataset graphs: call model.prepare(dataset, splits) before use")
        rows, pos = torch.unique(seq[mask], return_inverse=True)
        x = self.hyper.rows(self.embedding.weight, rows, self.params.hgcn_layers)
        out = torch.zeros(seq.shape + (x.shape[1],), dtype=x.dtype, device=x.device)
        return masked_mean(out.index_put((mask.nonzero(as_tuple=True)), x[pos]), mask)

    # ---- forward -----------------------------------------------------------------------------------
    def session_embedding(self, batch: Batch) -> torch.Tensor:
        """The pairwise session vector s_p (B, d) from the fused local and global views."""
        from sbrbench.batching import session_graphs

        p: CMGNNParams = self.params
        seq, mask, lengths, nodes, alias = batch.seq, batch.mask, batch.lengths, batch.nodes, batch.alias
        if nodes is None or alias is None or seq.shape[1] > p.max_position:
            seq, mask, lengths = keep_recent(seq, lengths, p.max_position)
            nodes, alias, _, _ = session_graphs(seq, lengths, mask)
        rev_alias = reverse_prefixes(alias, lengths, mask)
        h0 = self.embedding(nodes)
        views = []
        if self.lgcn is not None:
            views.append(F.dropout(self.local_view(h0, rev_alias, mask, nodes), p.dropout_local, training=self.training))
        if self.ggcn is not None:
            views.append(F.dropout(self.global_view(seq, mask, nodes), p.dropout_global, training=self.training))
        if not views:
            hidden = h0
        elif self.fusion is not None:
            hidden = self.fusion(views)
        else:
            hidden = views[0] if len(views) == 1 else views[0] + views[1]
        rev_hidden = hidden.gather(1, rev_alias.unsqueeze(2).expand(-1, -1, hidden.shape[2]))
        return self.readout(rev_hidden, mask)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) of s_p against the layer-0 embeddings; stashes both views when training."""
        s_p = self.session_embedding(batch)
        self._views = None
        if self.use_cl and self.training:
            s_h = self.high_order_session(batch.seq, batch.mask)
            self._views = (s_p, s_h)
        scores = s_p @ self.embedding.weight.t()
        scores[:, 0] = float("-inf")
        return scores

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
