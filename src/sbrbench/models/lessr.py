"""LESSR (Chen & Wong, KDD 2020), faithful to the official PyTorch/DGL code, in plain PyTorch.

Follows `twchen/lessr` at commit 39a21e3967181f8f1f059dd7ecb1f663a701d5c7 (`lessr.py`, `main.py`,
`utils/data/collate.py`, `utils/train.py`), read for this implementation. DGL's message passing
is restated with dense per-session tensors and packed node lists:

* nodes: a prefix's distinct items (sorted by id, as `np.unique`); item embeddings (d) looked up
  with `max_norm=1` — PyTorch renormalises the looked-up rows *in place*, and the scores look up
  every row, so after each forward every item vector has norm ≤ 1, as in the official code;
* EOPA layers (edge-order preserving aggregation, on the EOP multigraph: one edge per
  consecutive pair of clicks): BatchNorm over the batch's nodes, dropout, and for each node a GRU
  over the (dropped-out) features of its in-neighbours in the order the edges occurred; output
  `PReLU(W_self x + W_neigh h_GRU)` (nodes without in-edges: `W_self x`);
* SGAT layers (shortcut graph attention: an edge u → v whenever u is clicked at or before some
  click of v, self-loops included, each pair once): BatchNorm, dropout,
  `e_uv = w^T σ(W_q x_u + b_q + W_k x_v)`, softmax over each node's in-edges, `PReLU(Σ_u a_uv W_v x_u)`;
* layers alternate EOPA, SGAT, EOPA, ... (`num_layers`), each layer's output concatenated before
  its input (dense connections);
* readout: BatchNorm, dropout, attention `w^T σ(W_u x_i + W_v x_last + b)` softmaxed over the
  session's nodes, `PReLU(W_out Σ α_i x_i)`; session `W_sr dropout(BN([x_last; s_g]))`; scores
  against every item vector (renormalised as above); cross-entropy;
* AdamW lr 1e-3, weight decay 1e-4 except on biases, BatchNorm and PReLU parameters
  (`fix_weight_decay`), batch 512 (`drop_last`), 30 epochs; PyTorch's default initialisation.
  Defaults for Diginetica from the README: d = 32, 4 layers, feature dropout 0.2.

Deviations: no DGL (the same computation with padded tensors, tested against a per-session
re-statement); sbrbench's epoch selection (the official keeps the best test figures with
patience 2); the last partial training batch is kept.

Components: `eopa` — drop it to leave the EOPA layers out (the SGAT layers remain); `sgat` — drop
it to leave the SGAT layers out (the paper's comparison of the two layer kinds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from sbrbench.errors import SbrError
from sbrbench.models.base import Model, dropped, register_model

if TYPE_CHECKING:
    from sbrbench.batching import Batch


class EOPA(nn.Module):
    """Edge-order preserving aggregation over each node's in-edges (a GRU over them, in order)."""

    def __init__(self, in_dim: int, out_dim: int, feat_drop: float) -> None:
        super().__init__()
        self.batch_norm = nn.BatchNorm1d(in_dim)
        self.feat_drop = nn.Dropout(feat_drop)
        self.gru = nn.GRU(in_dim, in_dim, batch_first=True)
        self.fc_self = nn.Linear(in_dim, out_dim, bias=False)
        self.fc_neigh = nn.Linear(in_dim, out_dim, bias=False)
        self.activation = nn.PReLU(out_dim)

    def forward(self, feat: torch.Tensor, g: SessionGraphs) -> torch.Tensor:
        feat = self.batch_norm(feat)
        ft = self.feat_drop(feat)
        out = self.fc_self(feat)
        if g.edge_src.numel():
            msgs = ft.new_zeros(feat.shape[0], g.max_deg, feat.shape[1])
            msgs[g.edge_dst, g.edge_slot] = ft[g.edge_src]
            has = g.in_deg > 0
            packed = nn.utils.rnn.pack_padded_sequence(msgs[has], g.in_deg[has].cpu(), batch_first=True,
                                                       enforce_sorted=False)
            _, h_n = self.gru(packed)
            neigh = ft.new_zeros(feat.shape[0], feat.shape[1])
            neigh[has] = h_n[0]
            out = out + self.fc_neigh(neigh)
        return self.activation(out)


class SGAT(nn.Module):
    """Shortcut graph attention: every node attends over the nodes clicked at or before it."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, feat_drop: float) -> None:
        super().__init__()
        self.batch_norm = nn.BatchNorm1d(in_dim)
        self.feat_drop = nn.Dropout(feat_drop)
        self.fc_q = nn.Linear(in_dim, hidden, bias=True)
        self.fc_k = nn.Linear(in_dim, hidden, bias=False)
        self.fc_v = nn.Linear(in_dim, out_dim, bias=False)
        self.fc_e = nn.Linear(hidden, 1, bias=False)
        self.activation = nn.PReLU(out_dim)

    def forward(self, feat: torch.Tensor, g: SessionGraphs) -> torch.Tensor:
        feat = self.feat_drop(self.batch_norm(feat))
        q, k, v = g.dense(self.fc_q(feat)), g.dense(self.fc_k(feat)), g.dense(self.fc_v(feat))
        e = self.fc_e(torch.sigmoid(q.unsqueeze(2) + k.unsqueeze(1))).squeeze(3)  # (B, u, v)
        # every real node has a self-loop; padding columns (all masked) are never read back
        a = torch.softmax(e.masked_fill(~g.shortcut, -1e9), dim=1)
        rst = torch.einsum("buv,bud->bvd", a, v)
        return self.activation(g.packed(rst))


class AttnReadout(nn.Module):
    """Attention over the session's nodes queried by its last node, then a projection."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, feat_drop: float) -> None:
        super().__init__()
        self.batch_norm = nn.BatchNorm1d(in_dim)
        self.feat_drop = nn.Dropout(feat_drop)
        self.fc_u = nn.Linear(in_dim, hidden, bias=False)
        self.fc_v = nn.Linear(in_dim, hidden, bias=True)
        self.fc_e = nn.Linear(hidden, 1, bias=False)
        self.fc_out = nn.Linear(in_dim, out_dim, bias=False) if out_dim != in_dim else None
        self.activation = nn.PReLU(out_dim)

    def forward(self, feat: torch.Tensor, g: SessionGraphs) -> torch.Tensor:
        feat = self.feat_drop(self.batch_norm(feat))
        e = self.fc_e(torch.sigmoid(self.fc_u(feat) + self.fc_v(feat[g.last])[g.node_row])).squeeze(1)
        e = e - g.segment_max(e.detach())[g.node_row]  # stability only: softmax is shift-invariant
        w = torch.exp(e)
        alpha = w / g.segment_sum(w)[g.node_row]
        rst = g.segment_sum(feat * alpha.unsqueeze(1))
        if self.fc_out is not None:
            rst = self.fc_out(rst)
        return self.activation(rst)


class SessionGraphs:
    """A batch's session graphs in packed form: T real nodes (row-major), the EOP multigraph's
    edges with each edge's slot among its destination's in-edges (in click order), in-degrees,
    the shortcut graph as a dense (B, N, N) mask, each session's last node."""

    def __init__(self, batch: Batch) -> None:
        assert batch.nodes is not None and batch.alias is not None
        assert batch.node_rows is not None and batch.node_cols is not None
        assert batch.pos_rows is not None and batch.pos_cols is not None
        bsz, n = batch.nodes.shape
        dev = batch.nodes.device
        self.bsz, self.n = bsz, n
        self.node_row, self.node_col = batch.node_rows, batch.node_cols
        t = self.node_row.shape[0]
        to_packed = torch.full((bsz, n), -1, dtype=torch.long, device=dev)
        to_packed[self.node_row, self.node_col] = torch.arange(t, device=dev)
        self.to_packed = to_packed
        self.items = batch.nodes[self.node_row, self.node_col]
        pr, pc = batch.pos_rows, batch.pos_cols  # real positions, row-major
        pnode = to_packed[pr, batch.alias[pr, pc]]  # packed node of each real position
        lengths = batch.lengths
        self.last = to_packed[torch.arange(bsz, device=dev), batch.alias[torch.arange(bsz, device=dev), lengths - 1]]
        # EOP edges: position p -> p + 1 within a row
        has_next = pc < (lengths[pr] - 1)
        src_idx = torch.nonzero(has_next).squeeze(1)
        self.edge_src, self.edge_dst = pnode[src_idx], pnode[src_idx + 1]
        order = torch.argsort(self.edge_dst * (int(lengths.max()) + 1) + pc[src_idx], stable=True)
        dst_sorted = self.edge_dst[order]
        start = torch.ones_like(dst_sorted, dtype=torch.bool)
        if dst_sorted.numel() > 1:
            start[1:] = dst_sorted[1:] != dst_sorted[:-1]
        idx = torch.arange(dst_sorted.shape[0], device=dev)
        first = torch.cummax(torch.where(start, idx, torch.zeros_like(idx)), 0)[0]
        slot = torch.empty_like(order)
        slot[order] = idx - first
        self.edge_slot = slot
        self.in_deg = torch.bincount(self.edge_dst, minlength=t)
        self.max_deg = int(self.in_deg.max()) if t and self.edge_dst.numel() else 0
        # shortcut graph: u -> v iff first click of u <= last click of v
        big = int(lengths.max()) + 1
        first_pos = torch.full((t,), big, dtype=torch.long, device=dev).scatter_reduce(0, pnode, pc, "amin")
        last_pos = torch.full((t,), -1, dtype=torch.long, device=dev).scatter_reduce(0, pnode, pc, "amax")
        fd = torch.full((bsz, n), big, dtype=torch.long, device=dev)
        ld = torch.full((bsz, n), -1, dtype=torch.long, device=dev)
        fd[self.node_row, self.node_col] = first_pos
        ld[self.node_row, self.node_col] = last_pos
        self.shortcut = fd.unsqueeze(2) <= ld.unsqueeze(1)  # (B, u, v)

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(self.bsz, self.n, x.shape[1])
        out[self.node_row, self.node_col] = x
        return out

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.node_row, self.node_col]

    def segment_sum(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros((self.bsz,) + tuple(x.shape[1:]))
        return out.index_add_(0, self.node_row, x)

    def segment_max(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_full((self.bsz,), float("-inf")).scatter_reduce(0, self.node_row, x, "amax")


@dataclass
class LESSRParams:
    """LESSR hyper-parameters (defaults: the README's Diginetica command)."""

    dim: int = 32
    num_layers: int = 4
    feat_drop: float = 0.2
    drop: str = ""  # comma-separated components to switch off: eopa, sgat


@register_model("lessr")
class LESSR(Model):
    """LESSR: EOPA and shortcut-graph attention layers (dense connections), attentive readout."""

    Params: ClassVar[type] = LESSRParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 30, "batch_size": 512, "lr": 1e-3, "lr_dc": 1.0, "l2": 1e-4, "patience": 10,
    }
    components: ClassVar[frozenset[str]] = frozenset({"eopa", "sgat"})
    needs_graph: ClassVar[bool] = True

    def __init__(self, n_items: int, params: LESSRParams | None = None) -> None:
        super().__init__(n_items, params)
        p: LESSRParams = self.params
        off = dropped(p)
        if {"eopa", "sgat"} <= off:
            raise SbrError("lessr: drop 'eopa' or 'sgat', not both")
        if p.num_layers < 1 or not 0 <= p.feat_drop < 1:
            raise SbrError("lessr needs num_layers >= 1 and 0 <= feat_drop < 1")
        d = p.dim
        self.embedding = nn.Embedding(n_items, d, max_norm=1.0)
        layers = []
        in_dim = d
        for i in range(p.num_layers):
            kind = "eopa" if i % 2 == 0 else "sgat"
            if kind in off:  # a dropped kind's layers are left out (the others keep their places)
                continue
            layers.append(EOPA(in_dim, d, p.feat_drop) if kind == "eopa" else SGAT(in_dim, d, d, p.feat_drop))
            in_dim += d
        self.layers = nn.ModuleList(layers)
        self.readout = AttnReadout(in_dim, d, d, p.feat_drop)
        in_dim += d
        self.batch_norm = nn.BatchNorm1d(in_dim)
        self.feat_drop = nn.Dropout(p.feat_drop)
        self.fc_sr = nn.Linear(in_dim, d, bias=False)

    def configure_optimizer(self, lr: float, l2: float) -> torch.optim.Optimizer:
        """AdamW, weight decay `l2` except on biases, BatchNorm and PReLU (`fix_weight_decay`)."""
        decay, no_decay = [], []
        for name, w in self.named_parameters():
            (no_decay if any(k in name for k in ("bias", "batch_norm", "activation")) else decay).append(w)
        return torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, weight_decay=l2)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) against the renormalised item vectors; column 0 is -inf."""
        g = SessionGraphs(batch)
        feat = self.embedding(g.items)
        for layer in self.layers:
            feat = torch.cat([layer(feat, g), feat], 1)
        sr = torch.cat([feat[g.last], self.readout(feat, g)], 1)
        sr = self.fc_sr(self.feat_drop(self.batch_norm(sr)))
        table = self.embedding(torch.arange(self.n_items, device=sr.device))
        scores = sr @ table.t()
        scores[:, 0] = float("-inf")
        return scores
