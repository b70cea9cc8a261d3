"""GCE-GNN (Wang et al., SIGIR 2020), faithful to the official PyTorch code (CCIIPLab/GCE-GNN).

Faithful parts (official file in brackets):

* global item graph [`build_graph.py`]: ε = 3 neighbours in training sessions, both directions,
  weighted by co-occurrence count, top-12 per item (`sbrbench.graphs`, built from the fitted
  sessions only); at model build each item gets `sample_num` = 12 of its neighbours drawn at random,
  without replacement when it has at least 12, with replacement otherwise, with their raw counts as
  weights; items without neighbours point to item 0 with weight 0 [`utils.handle_adj`];
* session graph [`utils.Data`]: the prefix reversed (most recent click first), nodes = its unique
  items sorted by id, relations self = 1 on every node, 2 on (u, v) and 3 on (v, u) for each
  transition u → v of the *reversed* prefix (i.e. v was clicked before u), 4 on both when both
  directions occur; repeated clicks u → u add nothing;
* session-level aggregation [`aggregator.LocalAggregator`]: `e_ij = LeakyReLU_0.2(a_r^T (h_i ⊙ h_j))`
  with one vector `a_r` per relation, softmax over the node's related nodes, `h_i' = Σ_j α_ij h_j`;
* global-level aggregation [`aggregator.GlobalAggregator`, `model.CombineGraph.forward`]: `hop`
  layers over the sampled `sample_num`-neighbour tree of every session node; session-aware
  attention `π = w_2^T LeakyReLU_0.2(W_1 [s ⊙ h_n; w_n])` with `s` the mean embedding of the
  session's clicks (repeats counted) and `w_n` the raw co-occurrence count, softmax over the
  sampled neighbours, then `act(W_3 dropout_gcn([h_v; Σ π h_n]))` (ReLU by default); layer k
  reuses the layer-k aggregator at every remaining depth, exactly as the official loop;
* combination: `dropout_local(h_local) + dropout_global(h_global)` (global dropout 0.5);
* readout [`model.compute_scores`]: reversed position embeddings (200 positions),
  `z_i = tanh(W_1 [p_i; h_i])`, `β_i = w_2^T σ(W_g1 z_i + W_g2 s')` with `s'` the mean of the
  positions' representations, `S = Σ β_i h_i` (no softmax), scores `S · v_j` against the layer-0
  item embeddings; every parameter U(-1/√d, 1/√d); per-dataset defaults of `main.py`.

Deliberate differences (none changes the maths of a real session):

* the global aggregation runs only over the batch's real session nodes (flattened), not over the
  official all-dataset-max-length padded node axis, and its first layer's attention once per
  distinct (session, item) rather than per tree slot (`layers.aggregate_neighbour_tree`, as
  CM-GNN); the padding node is not a graph node;
* unused official parameters (`bias` of both aggregators, `linear_transform`) are not created;
* the neighbour sample is drawn with a private `torch.Generator` (seed `graph_seed`, default 2020),
  so it is deterministic but not numpy's `np.random.choice` draw of the official run;
* prefixes longer than `max_position` (200) keep their most recent 200 clicks (the official code
  would fail with an index error);
* ablations (`drop`): `global` (session-level only), `local` (global-level only; both dropped:
  plain item embeddings), `posemb` (`z_i = tanh(W_1 h_i)`, no position embedding), `gattn`
  (global aggregator averages the sampled neighbours, the official code's `extra_vector=None`
  branch, instead of session-aware attention).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sbrbench.batching import session_graphs
from sbrbench.errors import SbrError
from sbrbench.graphs import dataset_graph
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
    reverse_prefixes,
    sample_neighbours,
    session_relations,
    uniform_init_,
)

if TYPE_CHECKING:
    from sbrbench.batching import Batch
    from sbrbench.data.dataset import ProcessedDataset


@dataclass
class GCEGNNParams:
    """GCE-GNN hyper-parameters (defaults: the official `main.py` arguments)."""

    dim: int = 100
    hop: int = 1  # n_iter: global aggregation layers
    sample_num: int = 12  # n_sample: neighbours sampled per item
    topk: int = 12  # n_sample_all: neighbours kept per item in the global graph
    eps: int = 3  # neighbourhood distance of the global graph
    dropout_local: float = 0.0
    dropout_global: float = 0.5
    dropout_gcn: float = 0.0
    alpha: float = 0.2  # LeakyReLU slope of the session-level attention
    activate: str = "relu"  # global aggregator activation: relu or tanh
    max_position: int = 200
    graph_seed: int = 2020
    drop: str = ""  # comma-separated components to switch off: global, local, posemb, gattn


@register_model("gcegnn")
class GCEGNN(Model):
    """GCE-GNN: session-level and global-level (ε-neighbour graph) item aggregation, position-aware readout."""

    Params: ClassVar[type] = GCEGNNParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 20, "batch_size": 100, "lr": 1e-3, "lr_dc": 0.1, "lr_dc_step": 3,
        "l2": 1e-5, "patience": 3,
    }
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "diginetica": {"hop": 2, "dropout_gcn": 0.2, "dropout_local": 0.0},
        "tmall": {"hop": 1, "dropout_gcn": 0.6, "dropout_local": 0.5},
        "nowplaying": {"hop": 1, "dropout_gcn": 0.0, "dropout_local": 0.0},
    }
    components: ClassVar[frozenset[str]] = frozenset({"global", "local", "posemb", "gattn"})
    paper_compatible: ClassVar[dict[str, Any]] = {"stopping": "official"}  # its main.py's HR-or-MRR rule
    needs_graph: ClassVar[bool] = True
    # evaluation encodes this many sessions at a time: on one CPU thread a batch of 500 Diginetica
    # sessions runs at about 40 % of the per-example speed of five slices of 100
    eval_slice: ClassVar[int] = 100

    neighbour_items: torch.Tensor
    neighbour_weights: torch.Tensor

    def __init__(self, n_items: int, params: GCEGNNParams | None = None) -> None:
        super().__init__(n_items, params)
        p: GCEGNNParams = self.params
        _check(p)
        off = dropped(p)
        self.use_global = "global" not in off
        with overwritten_init():  # every parameter is re-initialised below
            self.embedding = nn.Embedding(n_items, p.dim)
            self.local_agg = None if "local" in off else RelationalGraphAttention(p.dim, 4, p.alpha)
            self.global_agg = (
                nn.ModuleList(
                    SessionAwareNeighbourAggregator(p.dim, p.dropout_gcn, p.activate, "gattn" not in off)
                    for _ in range(p.hop)
                )
                if self.use_global
                else None
            )
            self.readout = ReversedPositionReadout(p.dim, p.max_position, "posemb" not in off)
        if self.use_global:
            self.register_buffer("neighbour_items", torch.zeros(n_items, p.sample_num, dtype=torch.long), persistent=False)
            self.register_buffer("neighbour_weights", torch.zeros(n_items, p.sample_num), persistent=False)
        self.prepared = not self.use_global
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(dim), 1/sqrt(dim)), as the official code (`uniform_init_`)."""
        uniform_init_(self, self.params.dim)

    def prepare(
        self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Path | None = None
    ) -> None:
        """Build the global item graph of the fitted sessions and sample each item's neighbours."""
        if not self.use_global:
            return
        p: GCEGNNParams = self.params
        if dataset.n_items != self.n_items:
            raise SbrError(f"gcegnn was built for {self.n_items} item ids, the dataset has {dataset.n_items}")
        g = dataset_graph("global", dataset, splits, cache_dir, eps=p.eps, topk=p.topk)
        gen = torch.Generator().manual_seed(p.graph_seed)
        items, weights = sample_neighbours(g.neighbors, g.weights, g.counts, p.sample_num, gen)
        device = self.embedding.weight.device
        self.neighbour_items = items.to(device)
        self.neighbour_weights = weights.to(device)
        self.prepared = True

    def node_representations(self, mask: torch.Tensor, nodes: torch.Tensor, rev_alias: torch.Tensor) -> torch.Tensor:
        """Local plus global representation of every session node (B, N, d).

        The global level runs over the sampled-neighbour trees of the batch's real session nodes
        (`layers.NeighbourTree`, `layers.aggregate_neighbour_tree`, shared with CM-GNN): the first
        layer's attention once per distinct (session, item) and its keys once per distinct
        (session, neighbour), the same values, gradients and dropout draws as the official
        per-slot loop. All embeddings (session nodes and trees) come from one lookup
        (`layers.UniqueLookup`), so the backward builds one dense embedding gradient.
        """
        p: GCEGNNParams = self.params
        node_mask = nodes > 0
        tree = self._neighbour_tree(nodes, node_mask) if self.global_agg is not None else None
        ids = nodes.reshape(-1) if tree is None else torch.cat([nodes.reshape(-1), tree.items()])
        lookup = UniqueLookup(self.embedding, ids)
        h = lookup(nodes)
        parts: list[torch.Tensor] = []
        if self.local_agg is not None:
            h_local = self.local_agg(h, session_relations(rev_alias, mask, node_mask))
            parts.append(F.dropout(h_local, p.dropout_local, training=self.training))
        if self.global_agg is not None and tree is not None:
            m = mask.to(h.dtype).unsqueeze(-1)
            clicks = h.gather(1, rev_alias.unsqueeze(2).expand(-1, -1, p.dim))
            session = (clicks * m).sum(1) / m.sum(1)
            flat = aggregate_neighbour_tree(self.global_agg, tree, lookup, session)
            h_global = torch.zeros_like(h).index_put(node_mask.nonzero(as_tuple=True), flat)
            parts.append(F.dropout(h_global, p.dropout_global, training=self.training))
        if not parts:
            return h
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]

    def _neighbour_tree(self, nodes: torch.Tensor, node_mask: torch.Tensor) -> NeighbourTree:
        """The `hop`-deep sampled-neighbour trees of the real session nodes, packed as T roots."""
        if not self.prepared:
            raise SbrError("gcegnn needs prepare(dataset, splits) before use: it builds the global item graph")
        assert self.global_agg is not None
        b_idx, n_idx = node_mask.nonzero(as_tuple=True)
        return NeighbourTree.build(nodes[b_idx, n_idx], b_idx, self.neighbour_items, self.neighbour_weights,
                                   self.params.hop, keys=self.global_agg[0].attention)

    def session_embedding(self, batch: Batch) -> torch.Tensor:
        """The session representation S (B, d).

        In evaluation mode the sessions are encoded `eval_slice` at a time (`layers.in_row_slices`:
        rows are independent), so that the neighbour-tree tensors of a slice stay in cache.
        """
        seq, mask, lengths, nodes, alias = batch.seq, batch.mask, batch.lengths, batch.nodes, batch.alias
        limit = self.params.max_position
        if nodes is None or alias is None or seq.shape[1] > limit:
            keep = lengths.clamp(max=limit)
            width = min(seq.shape[1], limit)
            pos = torch.arange(width, device=seq.device)
            idx = ((lengths - keep).unsqueeze(1) + pos).clamp(max=seq.shape[1] - 1)
            mask = pos.unsqueeze(0) < keep.unsqueeze(1)
            seq, lengths = seq.gather(1, idx) * mask, keep
            nodes, alias, _, _ = session_graphs(seq, lengths, mask)
        if self.training:
            return self._encode(mask, lengths, nodes, alias)
        return in_row_slices(self._encode, self.eval_slice, mask, lengths, nodes, alias)

    def _encode(
        self, mask: torch.Tensor, lengths: torch.Tensor, nodes: torch.Tensor, alias: torch.Tensor
    ) -> torch.Tensor:
        rev_alias = reverse_prefixes(alias, lengths, mask)
        hidden = self.node_representations(mask, nodes, rev_alias)
        rev_hidden = hidden.gather(1, rev_alias.unsqueeze(2).expand(-1, -1, hidden.shape[2]))
        return self.readout(rev_hidden, mask)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) against the layer-0 item embeddings; column 0 is -inf."""
        return catalogue_scores(self.session_embedding(batch), self.embedding.weight)


def _check(p: GCEGNNParams) -> None:
    for key in ("hop", "sample_num", "topk", "eps", "max_position"):
        if getattr(p, key) < 1:
            raise SbrError(f"gcegnn hyper-parameter {key!r} must be >= 1, got {getattr(p, key)}")
    for key in ("dropout_local", "dropout_global", "dropout_gcn"):
        if not 0.0 <= getattr(p, key) < 1.0:
            raise SbrError(f"gcegnn hyper-parameter {key!r} must be in [0, 1), got {getattr(p, key)}")
    if p.activate not in ("relu", "tanh"):
        raise SbrError(f"gcegnn hyper-parameter 'activate' must be relu or tanh, got {p.activate!r}")
