"""Shared neural building blocks: SR-GNN's gated graph cell and soft-attention readout; GCE-GNN's
four-relation session graph, relational graph attention, session-aware neighbour aggregator (and
`aggregate_neighbour_tree`, its layer-by-layer loop over the sampled-neighbour trees with the first
layer's attention computed once per distinct (session, item)), reversed-position readout and
neighbour sampling (also used by CM-GNN); `UniqueLookup`, one embedding lookup per forward; and
`catalogue_scores`, the full-catalogue score product with the padding column masked.

Initialisation: every layer initialises itself. Its `reset_parameters()` (re-)initialises all of
its parameters: PyTorch sub-modules with PyTorch's defaults, its own `nn.Parameter`s as the
official code of the model it comes from (U(-1/sqrt(d), 1/sqrt(d)) with the layer's own width d),
and the constructor ends with `self_init(self)`. A model that re-initialises every parameter
itself (the SR-GNN family: `uniform_init_`) builds its layers inside `overwritten_init()`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ---- initialisation ---------------------------------------------------------------------------------
_OVERWRITTEN: contextvars.ContextVar[bool] = contextvars.ContextVar("sbrbench_init_overwritten", default=False)


@contextlib.contextmanager
def overwritten_init() -> Iterator[None]:
    """Build layers whose parameters the caller re-initialises right after (e.g. `uniform_init_`).

    Layers built inside still initialise themselves, but on a fork of the global RNG, so building
    them draws nothing from it; PyTorch modules built inside (`nn.Linear`, `nn.Embedding`, ...)
    draw as usual. The caller's re-initialisation then draws the same numbers as when these layers
    left their parameters uninitialised, which keeps the seeded initial values of the SR-GNN
    family exactly as they were. Everything built inside must be re-initialised by the caller:
    layers built here draw their values from the same stream position as what follows them.
    """
    token = _OVERWRITTEN.set(True)
    try:
        yield
    finally:
        _OVERWRITTEN.reset(token)


def self_init(layer: nn.Module) -> None:
    """`layer.reset_parameters()`, the last call of every layer's constructor (see `overwritten_init`)."""
    if not _OVERWRITTEN.get():
        layer.reset_parameters()
        return
    devices = sorted({torch.cuda.current_device() if p.device.index is None else p.device.index
                      for p in layer.parameters() if p.is_cuda})
    with torch.random.fork_rng(devices=devices):
        layer.reset_parameters()


def uniform_(dim: int, *params: torch.Tensor | None) -> None:
    """Fill each of `params` (None skipped) with U(-1/sqrt(dim), 1/sqrt(dim)), in order."""
    stdv = 1.0 / math.sqrt(dim)
    with torch.no_grad():
        for p in params:
            if p is not None:
                p.uniform_(-stdv, stdv)


def uniform_init_(module: nn.Module, dim: int) -> None:
    """SR-GNN initialisation: every parameter of `module` ~ U(-1/sqrt(d), 1/sqrt(d)), in `parameters()` order."""
    uniform_(dim, *module.parameters())


def reset_children_(module: nn.Module) -> None:
    """Re-initialise every sub-module of `module` with its own scheme.

    A child with `reset_parameters()` (every layer here, `nn.Linear`, `nn.Embedding`, `nn.LayerNorm`,
    ...) or `_reset_parameters()` (`nn.MultiheadAttention`) runs it; other children (containers,
    `nn.TransformerEncoderLayer`) are walked recursively. `module`'s own direct `nn.Parameter`s are
    not touched.
    """
    for child in module.children():
        fn = getattr(child, "reset_parameters", None)
        if not callable(fn):
            fn = getattr(child, "_reset_parameters", None)
        if callable(fn):
            fn()
        else:
            reset_children_(child)


# ---- SR-GNN ---------------------------------------------------------------------------------------
class GatedGraphCell(nn.Module):
    r"""The SR-GNN gated graph cell (GGNN with separate incoming and outgoing adjacency).

    .. math::
        a^{in} = A^{in} (W^{in} h + b^{in}_e) + b^{in}, \quad a^{out} = A^{out} (W^{out} h + b^{out}_e) + b^{out}

        r = \sigma(W_{ir} a + b_{ir} + W_{hr} h + b_{hr}), \; z = \sigma(W_{iz} a + b_{iz} + W_{hz} h + b_{hz})

        n = \tanh(W_{in} a + b_{in} + r \odot (W_{hn} h + b_{hn})), \quad h' = n + z \odot (h - n)

    with `a = [a^{in}; a^{out}]`, applied `steps` times.

    Shapes:
        adj_in, adj_out (B, N, N); hidden (B, N, d) → (B, N, d); `packed`: hidden (R, d),
        rows, cols (R,) → (R, d).
    """

    def __init__(self, dim: int, steps: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.steps = steps
        self.edge_in = nn.Linear(dim, dim)
        self.edge_out = nn.Linear(dim, dim)
        self.b_in = nn.Parameter(torch.empty(dim))
        self.b_out = nn.Parameter(torch.empty(dim))
        self.w_ih = nn.Parameter(torch.empty(3 * dim, 2 * dim))
        self.w_hh = nn.Parameter(torch.empty(3 * dim, dim))
        self.b_ih = nn.Parameter(torch.empty(3 * dim))
        self.b_hh = nn.Parameter(torch.empty(3 * dim))
        self_init(self)

    def reset_parameters(self) -> None:
        """`edge_in`, `edge_out`: `nn.Linear`'s default; the other weights and biases U(±1/sqrt(d)) (as `nn.GRUCell`)."""
        self.edge_in.reset_parameters()
        self.edge_out.reset_parameters()
        uniform_(self.dim, self.b_in, self.b_out, self.w_ih, self.w_hh, self.b_ih, self.b_hh)

    def step(self, adj_in: torch.Tensor, adj_out: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """One propagation step."""
        a_in = torch.matmul(adj_in, self.edge_in(hidden)) + self.b_in
        a_out = torch.matmul(adj_out, self.edge_out(hidden)) + self.b_out
        return self._gru(torch.cat([a_in, a_out], -1), hidden)

    def _gru(self, a: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        gi = F.linear(a, self.w_ih, self.b_ih)
        gh = F.linear(hidden, self.w_hh, self.b_hh)
        i_r, i_z, i_n = gi.chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        reset = torch.sigmoid(i_r + h_r)
        update = torch.sigmoid(i_z + h_z)
        new = torch.tanh(i_n + reset * h_n)
        return new + update * (hidden - new)

    def forward(self, adj_in: torch.Tensor, adj_out: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """`steps` propagation steps."""
        for _ in range(self.steps):
            hidden = self.step(adj_in, adj_out, hidden)
        return hidden

    def packed(
        self, adj_in: torch.Tensor, adj_out: torch.Tensor, hidden: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        """`forward` on the real nodes only: `forward(adj_in, adj_out, H)[rows, cols]` where `hidden`
        (R, d) holds the rows of H at the real nodes (rows, cols) of the (B, N) node grid.

        Padding nodes have no edges, so they never reach a real node; only the two adjacency
        products use the (B, N) grid (zeros at the padding), every per-node product runs on R rows.
        """
        d = self.dim
        bsz, n = adj_in.shape[0], adj_in.shape[1]
        for _ in range(self.steps):
            msg = torch.cat([self.edge_in(hidden), self.edge_out(hidden)], -1)
            grid = hidden.new_zeros(bsz, n, 2 * d).index_put((rows, cols), msg)
            a_in = torch.bmm(adj_in, grid[..., :d])[rows, cols] + self.b_in
            a_out = torch.bmm(adj_out, grid[..., d:])[rows, cols] + self.b_out
            hidden = self._gru(torch.cat([a_in, a_out], -1), hidden)
        return hidden


class SoftAttentionReadout(nn.Module):
    r"""SR-GNN readout: sigmoid attention of every position on the last one, plus a hybrid layer.

    .. math::
        \alpha_i = q^\top \sigma(W_1 h_{last} + W_2 h_i + c), \quad s_g = \sum_i \alpha_i h_i,
        \quad s_h = W_3 [s_g; h_{last}] \text{ (hybrid) or } s_g

    No softmax over positions (as in the official code); padded positions are masked out.

    Shapes:
        seq_hidden (B, L, d); mask (B, L) bool; lengths (B,) → (B, d); `packed`: pos_hidden (P, d),
        pos_rows (P,), last (B, d) → (B, d).
    """

    def __init__(self, dim: int, hybrid: bool = True, use_global: bool = True) -> None:
        super().__init__()
        self.hybrid = hybrid
        self.use_global = use_global
        self.w_last = nn.Linear(dim, dim) if use_global else None
        self.w_pos = nn.Linear(dim, dim) if use_global else None
        self.q = nn.Linear(dim, 1, bias=False) if use_global else None
        self.transform = nn.Linear(2 * dim, dim) if hybrid else None
        self_init(self)

    def reset_parameters(self) -> None:
        """Every linear layer with `nn.Linear`'s default."""
        reset_children_(self)

    def forward(self, seq_hidden: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The session representation."""
        bsz = seq_hidden.shape[0]
        last = seq_hidden[torch.arange(bsz, device=seq_hidden.device), lengths - 1]
        if self.q is not None and self.w_last is not None and self.w_pos is not None:
            alpha = self.q(torch.sigmoid(self.w_last(last).unsqueeze(1) + self.w_pos(seq_hidden)))
            s_g = (alpha * seq_hidden * mask.unsqueeze(2).to(seq_hidden.dtype)).sum(1)
        else:
            s_g = torch.zeros_like(last)
        if self.transform is not None:
            return self.transform(torch.cat([s_g, last], 1))
        return s_g

    def packed(self, pos_hidden: torch.Tensor, pos_rows: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """`forward` on the real positions only: `pos_hidden` (P, d) of the positions of sessions
        `pos_rows` (P,), `last` (B, d) each session's last position."""
        if self.q is not None and self.w_last is not None and self.w_pos is not None:
            alpha = self.q(torch.sigmoid(self.w_last(last).index_select(0, pos_rows) + self.w_pos(pos_hidden)))
            s_g = torch.zeros_like(last).index_add(0, pos_rows, alpha * pos_hidden)
        else:
            s_g = torch.zeros_like(last)
        if self.transform is not None:
            return self.transform(torch.cat([s_g, last], 1))
        return s_g


# ---- scoring the catalogue ----------------------------------------------------------------------
class _CatalogueScores(torch.autograd.Function):
    """`s @ W^T` with column 0 set to -inf; the backward skips column 0 without copying the gradient."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, session: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(session, table)
        scores = session @ table.t()
        scores[:, 0] = float("-inf")
        return scores

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        session, table = ctx.saved_tensors  # type: ignore[attr-defined]
        g = grad[:, 1:]
        d_session = d_table = None
        if ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            d_session = g @ table[1:]
        if ctx.needs_input_grad[1]:  # type: ignore[attr-defined]
            d_table = torch.empty_like(table)
            d_table[0] = 0
            torch.mm(g.t(), session, out=d_table[1:])
        return d_session, d_table


def catalogue_scores(session: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    r"""Scores of every item, :math:`\hat y = s\, V^\top`, with column 0 (padding) set to -inf.

    The value of `scores = session @ table.t(); scores[:, 0] = -inf`; when a gradient is needed the
    backward takes the two products `dS[:, 1:] V[1:]` and `dS[:, 1:]^T s` directly (row 0 of the
    table's gradient is 0), so no (B, |V|) copy of the gradient is made. Under autocast, or for
    other than 2-D inputs, it is the plain product.

    Shapes:
        session (B, d); table (|V|, d) → (B, |V|).
    """
    if session.dim() != 2 or torch.is_autocast_enabled(session.device.type) or not (
        torch.is_grad_enabled() and (session.requires_grad or table.requires_grad)
    ):
        scores = session @ table.t()
        scores[..., 0] = float("-inf")
        return scores
    return _CatalogueScores.apply(session, table)


def in_row_slices(fn: Callable[..., torch.Tensor], size: int, *rows: torch.Tensor) -> torch.Tensor:
    """`fn(*rows)` for a row-wise independent `fn`, computed `size` rows at a time and concatenated.

    For evaluation of models whose per-batch intermediates grow faster than the batch (padded
    session graphs, neighbour trees): slices keep them small enough to stay in cache.

    Shapes:
        rows[i] (B, ...) → fn's output (B, ...).
    """
    n = rows[0].shape[0]
    if n <= size:
        return fn(*rows)
    return torch.cat([fn(*(r[i : i + size] for r in rows)) for i in range(0, n, size)])


# ---- GCE-GNN --------------------------------------------------------------------------------------
# Relation codes of the session graph, as in the official `utils.Data`.
REL_NONE, REL_SELF, REL_OUT, REL_IN, REL_BOTH = 0, 1, 2, 3, 4


def reverse_prefixes(x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reverse every left-aligned, 0-padded row of `x` (B, L) within its length (most recent first)."""
    pos = torch.arange(x.shape[1], device=x.device)
    idx = (lengths.unsqueeze(1) - 1 - pos.unsqueeze(0)).clamp(min=0)
    return x.gather(1, idx) * mask


def session_relations(rev_alias: torch.Tensor, mask: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
    """GCE-GNN's four-relation session adjacency (B, N, N) of reversed prefixes.

    `rev_alias` (B, L): node index of each position of the reversed prefix (most recent first);
    `mask` (B, L) marks real positions; `node_mask` (B, N) real nodes. Codes: 0 none, 1 self (every
    real node), 2 on (u, v) and 3 on (v, u) for each step u → v of the reversed prefix, 4 on both
    (u, v) and (v, u) when both steps occur; consecutive repeats u → u add nothing.
    """
    bsz, n = node_mask.shape
    device = rev_alias.device
    step = torch.zeros(bsz, n, n, dtype=torch.bool, device=device)
    if rev_alias.shape[1] > 1:
        edge = mask[:, 1:]
        rows = torch.arange(bsz, device=device).unsqueeze(1).expand_as(edge)
        step[rows[edge], rev_alias[:, :-1][edge], rev_alias[:, 1:][edge]] = True
    eye = torch.eye(n, dtype=torch.bool, device=device)
    step &= ~eye
    back = step.transpose(1, 2)
    rel = torch.zeros(bsz, n, n, dtype=torch.long, device=device)
    rel[step] = REL_OUT
    rel[back] = REL_IN
    rel[step & back] = REL_BOTH
    rel[eye.unsqueeze(0) & node_mask.unsqueeze(2)] = REL_SELF
    return rel


class RelationalGraphAttention(nn.Module):
    r"""GCE-GNN's session-level aggregator: graph attention with one vector per relation type.

    .. math::
        e_{ij} = \mathrm{LeakyReLU}(a_{r_{ij}}^\top (h_i \odot h_j)), \quad
        \alpha_{ij} = \mathrm{softmax}_{j: r_{ij} > 0}(e_{ij}), \quad h_i' = \sum_j \alpha_{ij} h_j

    Shapes:
        hidden (B, N, d); relations (B, N, N) long codes 0..n_relations (0 = no edge) → (B, N, d).
    """

    def __init__(self, dim: int, n_relations: int = 4, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.dim = dim
        self.a = nn.Parameter(torch.empty(n_relations, dim))
        self.negative_slope = negative_slope
        self_init(self)

    def reset_parameters(self) -> None:
        """The relation vectors U(±1/sqrt(d)), as the official code."""
        uniform_(self.dim, self.a)

    def forward(self, hidden: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        """Aggregate each node's related nodes."""
        weighted = hidden.unsqueeze(1) * self.a.view(1, -1, 1, hidden.shape[-1])  # (B, R, N, d)
        e = F.leaky_relu(torch.matmul(weighted, hidden.unsqueeze(1).transpose(-1, -2)), self.negative_slope)
        logits = e.gather(1, (relations - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        logits = logits.masked_fill(relations == 0, -9e15)
        return torch.matmul(torch.softmax(logits, dim=-1), hidden)


class SessionAwareNeighbourAggregator(nn.Module):
    r"""GCE-GNN's global-level aggregator: session-aware attention over sampled neighbours.

    .. math::
        \pi_n = \mathrm{softmax}_n\big(w_2^\top \mathrm{LeakyReLU}_{0.2}(W_1 [s \odot h_n; w_n])\big),
        \quad h' = \mathrm{act}\big(W_3\, \mathrm{dropout}([h; \textstyle\sum_n \pi_n h_n])\big)

    With `attention=False` the neighbours are averaged instead (no `W_1`, `w_2`). `forward` is
    `combine(self, pool(neighbours, weights, keys(session, neighbours)))`; the three steps are
    public so that `aggregate_neighbour_tree` can compute the attention once per distinct
    (session, item) instead of once per tree slot.

    Shapes:
        self_vectors (T, M, d); neighbours (T, M, S, d); weights (T, M, S); session (T, d) → (T, M, d).
    """

    def __init__(self, dim: int, dropout: float = 0.0, act: str = "relu", attention: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.dropout = dropout
        self.act = torch.relu if act == "relu" else torch.tanh
        self.w_1 = nn.Parameter(torch.empty(dim + 1, dim)) if attention else None
        self.w_2 = nn.Parameter(torch.empty(dim, 1)) if attention else None
        self.w_3 = nn.Parameter(torch.empty(2 * dim, dim))
        self_init(self)

    def reset_parameters(self) -> None:
        """`W_1`, `w_2`, `W_3` U(±1/sqrt(d)), as the official code."""
        uniform_(self.dim, self.w_1, self.w_2, self.w_3)

    @property
    def attention(self) -> bool:
        """Whether the neighbours are weighted by session-aware attention (else averaged)."""
        return self.w_1 is not None and self.w_2 is not None

    def keys(self, session: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        """The session part of the attention input, `(s ⊙ h_n) W_1[:d]` (`session` broadcast to `neighbours`)."""
        assert self.w_1 is not None
        return torch.matmul(session * neighbours, self.w_1[: self.dim])

    def pool(self, neighbours: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor:
        """`Σ_n π_n h_n` over the last-but-one axis of `neighbours` (..., S, d); `keys` from `keys()`."""
        if self.w_1 is not None and self.w_2 is not None:
            assert keys is not None
            x = keys + weights.unsqueeze(-1) * self.w_1[self.dim]
            pi = torch.softmax(torch.matmul(F.leaky_relu(x, 0.2), self.w_2).squeeze(-1), dim=-1)
            return (pi.unsqueeze(-1) * neighbours).sum(-2)
        return neighbours.mean(-2)

    def combine(self, self_vectors: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """`act(W_3 dropout([h; pooled]))`."""
        out = F.dropout(torch.cat([self_vectors, pooled], -1), self.dropout, training=self.training)
        return self.act(torch.matmul(out, self.w_3))

    def forward(
        self, self_vectors: torch.Tensor, neighbours: torch.Tensor, weights: torch.Tensor, session: torch.Tensor
    ) -> torch.Tensor:
        """One aggregation of every entity's neighbours."""
        keys = None
        if self.attention:
            keys = self.keys(session.view(session.shape[0], 1, 1, self.dim), neighbours)
        return self.combine(self_vectors, self.pool(neighbours, weights, keys))


class UniqueLookup:
    """One embedding lookup per forward pass: the distinct ids' rows, then `lookup(ids)` by position.

    Every consumer indexes the same (U, d) rows, so the backward builds one dense embedding
    gradient (plus the score product's) instead of one per lookup.

    Shapes:
        ids (any) at construction; `lookup(ids)` (any shape) → shape + (d,).
    """

    def __init__(self, embedding: nn.Embedding, ids: torch.Tensor) -> None:
        self.ids = torch.unique(ids)
        self.rows = embedding(self.ids)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.rows[torch.searchsorted(self.ids, ids)]


@dataclass
class NeighbourTree:
    """The sampled-neighbour trees of a batch's session nodes, with their first layer deduplicated.

    Built by `NeighbourTree.build`; consumed by `aggregate_neighbour_tree`. Depth h holds
    `K**h` entities per root (K neighbours per item). The first aggregation layer's pooled
    neighbour vector of an entity depends only on (its session, its item), so it is computed once
    per distinct such *pair*; the attention keys `(s ⊙ h_n) W_1` once per distinct (session,
    neighbour item) *key*. Everything else (the self vectors, dropout, `W_3`, later layers) stays
    per tree slot, exactly as GCE-GNN's layer-by-layer loop.

    Shapes (T roots, P pairs, Q keys):
        root_session (T,); ids[h] (T, K**h) item ids, h = 0..layers-1; weights[h] (T, K**h, K),
        h = 0..layers-2; pair_of[h] (T, K**h); pair_session (P,), pair_neighbours (P, K),
        pair_weights (P, K); key_session (Q,), key_items (Q,), key_of (P, K).
    """

    root_session: torch.Tensor
    ids: list[torch.Tensor]
    weights: list[torch.Tensor]
    pair_of: list[torch.Tensor]
    pair_session: torch.Tensor
    pair_neighbours: torch.Tensor
    pair_weights: torch.Tensor
    key_session: torch.Tensor
    key_items: torch.Tensor
    key_of: torch.Tensor

    @classmethod
    def build(
        cls, roots: torch.Tensor, root_session: torch.Tensor, nbr_items: torch.Tensor, nbr_weights: torch.Tensor,
        layers: int, keys: bool = True,
    ) -> NeighbourTree:
        """The trees of `roots` (T,) item ids, root t in session `root_session[t]`, `layers` deep.

        `nbr_items`, `nbr_weights` (n_items, K): each item's sampled neighbours and their weights.
        `keys=False` (averaging aggregators) skips the key deduplication.
        """
        n, k = nbr_items.shape
        t = roots.shape[0]
        ids = [roots.view(t, 1)]
        weights = []
        for h in range(layers - 1):
            weights.append(nbr_weights[ids[h]].view(t, -1, k))
            ids.append(nbr_items[ids[h]].view(t, -1))
        owner = root_session.view(t, 1) * n
        pairs, inverse = torch.unique(torch.cat([(owner + i).view(-1) for i in ids]), return_inverse=True)
        pair_of = [p.view(t, -1) for p in inverse.split([i.numel() for i in ids])]
        pair_session, pair_items = pairs // n, pairs % n
        pair_neighbours = nbr_items[pair_items]
        pair_weights = nbr_weights[pair_items]
        if keys:
            key_codes, key_of = torch.unique(pair_session.unsqueeze(1) * n + pair_neighbours, return_inverse=True)
            key_session, key_items = key_codes // n, key_codes % n
        else:
            key_session = key_items = key_of = roots.new_zeros(0)
        return cls(root_session, ids, weights, pair_of, pair_session, pair_neighbours, pair_weights,
                   key_session, key_items, key_of)

    def items(self) -> torch.Tensor:
        """Every item id whose embedding the aggregation reads (with repeats), flat."""
        return torch.cat([i.reshape(-1) for i in self.ids] + [self.pair_neighbours.reshape(-1), self.key_items])


def aggregate_neighbour_tree(
    aggregators: Sequence[SessionAwareNeighbourAggregator],
    tree: NeighbourTree,
    lookup: Callable[[torch.Tensor], torch.Tensor],
    session: torch.Tensor,
) -> torch.Tensor:
    """GCE-GNN's layer-by-layer global aggregation of the trees' roots (T, d), deduplicated.

    Equal to the official loop (`for layer: vectors = [agg_layer(vectors[h], vectors[h + 1], ...)
    for h in range(hop - layer)]` over per-slot embeddings) in values and gradients, and it draws
    the same dropout masks in the same order; the first layer's attention runs once per distinct
    (session, item) and its keys once per distinct (session, neighbour), which on Diginetica's
    2-layer, 12-neighbour trees cuts the dominant (144 leaves per node) matrix product about 4x.
    `lookup(ids)` gives the embeddings of item ids (any shape → shape + (d,)); `session` (B, d)
    holds the session vectors that `tree.root_session` indexes.
    """
    first = aggregators[0]
    k = tree.pair_neighbours.shape[1]
    keys = None
    if first.attention:
        keys = first.keys(session[tree.key_session], lookup(tree.key_items))[tree.key_of]
    pooled = first.pool(lookup(tree.pair_neighbours), tree.pair_weights, keys)
    vectors = [first.combine(lookup(i), pooled[p]) for i, p in zip(tree.ids, tree.pair_of)]
    root_session = session[tree.root_session]
    t, dim = root_session.shape
    for layer in range(1, len(aggregators)):
        agg = aggregators[layer]
        vectors = [
            agg(vectors[h], vectors[h + 1].view(t, -1, k, dim), tree.weights[h], root_session)
            for h in range(len(aggregators) - layer)
        ]
    return vectors[0].view(t, dim)


class ReversedPositionReadout(nn.Module):
    r"""GCE-GNN's readout: soft attention with reversed position embeddings and a gated session mean.

    .. math::
        z_i = \tanh(W_1 [p_i; h_i]), \quad \beta_i = w_2^\top \sigma(W_{g1} z_i + b + W_{g2} \bar h),
        \quad S = \sum_i \beta_i h_i

    where position 0 is the most recent click, `\bar h` the mean over real positions and no softmax
    is taken over the β. `use_position=False` drops `p_i` (`W_1` is then d × d).

    Shapes:
        rev_hidden (B, L, d) most recent first; mask (B, L) bool → (B, d).
    """

    def __init__(self, dim: int, max_position: int = 200, use_position: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.pos_embedding = nn.Embedding(max_position, dim) if use_position else None
        self.w_1 = nn.Parameter(torch.empty(2 * dim if use_position else dim, dim))
        self.w_2 = nn.Parameter(torch.empty(dim, 1))
        self.glu1 = nn.Linear(dim, dim)
        self.glu2 = nn.Linear(dim, dim, bias=False)
        self_init(self)

    def reset_parameters(self) -> None:
        """Position embeddings and `W_g1`, `W_g2`: PyTorch's defaults; `W_1`, `w_2` U(±1/sqrt(d)) as the official code."""
        reset_children_(self)
        uniform_(self.dim, self.w_1, self.w_2)

    def forward(self, rev_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The session representation."""
        m = mask.to(rev_hidden.dtype).unsqueeze(-1)
        mean = (rev_hidden * m).sum(1) / m.sum(1)
        z = torch.matmul(rev_hidden, self.w_1[-self.dim :])
        if self.pos_embedding is not None:
            z = z + torch.matmul(self.pos_embedding.weight[: rev_hidden.shape[1]], self.w_1[: self.dim])
        z = torch.sigmoid(self.glu1(torch.tanh(z)) + self.glu2(mean).unsqueeze(1))
        beta = torch.matmul(z, self.w_2) * m
        return (beta * rev_hidden).sum(1)


def sample_neighbours(
    neighbors: np.ndarray | torch.Tensor,
    weights: np.ndarray | torch.Tensor,
    counts: np.ndarray | torch.Tensor,
    sample_num: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GCE-GNN's `handle_adj`: `sample_num` neighbours per item and their weights.

    Items with at least `sample_num` neighbours get a random subset without replacement, items
    with fewer a draw with replacement, items with none item 0 with weight 0.
    Returns (items (n, sample_num) long, weights (n, sample_num) float32).
    """
    nb = torch.as_tensor(np.asarray(neighbors), dtype=torch.long)
    wt = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
    cnt = torch.as_tensor(np.asarray(counts), dtype=torch.long)
    n, k = nb.shape
    if k >= sample_num:
        keys = torch.rand(n, k, generator=generator)
        keys = keys.masked_fill(torch.arange(k).unsqueeze(0) >= cnt.unsqueeze(1), 2.0)
        without = keys.argsort(dim=1)[:, :sample_num]
    else:
        without = torch.zeros(n, sample_num, dtype=torch.long)
    draw = torch.rand(n, sample_num, generator=generator)
    withrep = (draw * cnt.unsqueeze(1)).long().clamp(max=k - 1)
    withrep = torch.minimum(withrep, (cnt - 1).clamp(min=0).unsqueeze(1))
    idx = torch.where((cnt >= sample_num).unsqueeze(1), without, withrep)
    has = (cnt > 0).unsqueeze(1)
    return nb.gather(1, idx) * has, wt.gather(1, idx) * has
