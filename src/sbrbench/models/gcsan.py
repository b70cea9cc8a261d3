"""GC-SAN (Xu et al., IJCAI 2019: Graph Contextualized Self-Attention Network), after RecBole's
implementation (there is no official code).

Follows `RUCAIBox/RecBole` `recbole/model/sequential_recommender/gcsan.py` (commit 11d27f0),
`recbole/properties/model/GCSAN.yaml` (08eece7) and its Transformer layers (`recbole/model/layers.py`),
read for this implementation:

* session graph and gated GNN as SR-GNN (unique items, in/out adjacency normalised by in/out
  degree), with RecBole's cell: `a = [A_in (W_in h + b_in) ; A_out (W_out h + b_out)]` (no bias
  after the adjacency, unlike SR-GNN's code), GRU gates, **h' = (1 − z) h + z n** (the paper's
  equation; SR-GNN's code writes (1 − z) n + z h); `step` iterations;
* node states gathered back into click order; `layers` post-LayerNorm Transformer blocks
  (BERT-style: `LN(x + Dropout(W_o MHA(x)))`, then `LN(y + Dropout(W_2 act(W_1 y)))`, GELU with
  erf, LayerNorm ε 1e-12), `heads` heads, attention dropout, causal mask plus padded keys masked
  with −10000 added to the logits (RecBole's `get_attention_mask`);
* session `s = ω · SA_last + (1 − ω) · h_last` (ω = `weight`, 0.6; 0.4–0.8 suggested by the
  paper), scores `s · e_i` against the item table, cross-entropy plus
  `reg_weight · ‖E‖_F / n_items` (RecBole's `EmbLoss` on the item table, not squared);
* initialisation: Linear and Embedding weights N(0, 0.02²), biases 0, LayerNorm (1, 0); the GNN's
  own matrices and biases U(±1/sqrt(d)) (its edge Linear layers are re-initialised N(0, 0.02²) by
  RecBole's `apply(_init_weights)`, and so here);
* RecBole defaults: d = 64, 1 block, 1 head (the paper's single head), inner size 256, dropout
  0.2 / 0.2, step 1, ω 0.6, reg_weight 5e-5.

Deviations: training follows the SR-GNN protocol family (prefix examples, batch 100, Adam 1e-3
without decay, 30 epochs, sbrbench's epoch selection; RecBole trains batches of 2048 for up to 300
epochs with early stopping); the padding item is not a graph node and is never scored (RecBole
makes item 0 a node of padded sequences and scores it).

Components (the paper's ablation of the self-attention and GNN): `attention` (drop → the GNN's
last state only, ω = 0) and `gnn` (drop → self-attention over the raw item embeddings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sbrbench.errors import SbrError
from sbrbench.models.base import Model, dropped, register_model

if TYPE_CHECKING:
    from sbrbench.batching import Batch


@dataclass
class GCSANParams:
    """GC-SAN hyper-parameters (defaults: RecBole's GCSAN.yaml)."""

    dim: int = 64
    step: int = 1
    layers: int = 1
    heads: int = 1
    inner: int = 256
    dropout: float = 0.2
    attn_dropout: float = 0.2
    weight: float = 0.6
    reg_weight: float = 5e-5
    init_range: float = 0.02
    drop: str = ""  # comma-separated components to switch off: attention, gnn


class RecBoleGNN(nn.Module):
    """RecBole's GCSAN gated graph cell (see the module docstring)."""

    def __init__(self, dim: int, step: int) -> None:
        super().__init__()
        self.dim, self.step = dim, step
        self.w_ih = nn.Parameter(torch.empty(3 * dim, 2 * dim))
        self.w_hh = nn.Parameter(torch.empty(3 * dim, dim))
        self.b_ih = nn.Parameter(torch.empty(3 * dim))
        self.b_hh = nn.Parameter(torch.empty(3 * dim))
        self.edge_in = nn.Linear(dim, dim)
        self.edge_out = nn.Linear(dim, dim)

    def forward(self, adj_in: torch.Tensor, adj_out: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        for _ in range(self.step):
            a = torch.cat([adj_in @ self.edge_in(hidden), adj_out @ self.edge_out(hidden)], 2)
            i_r, i_z, i_n = F.linear(a, self.w_ih, self.b_ih).chunk(3, 2)
            h_r, h_z, h_n = F.linear(hidden, self.w_hh, self.b_hh).chunk(3, 2)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            hidden = (1 - z) * hidden + z * n
        return hidden


class PostLNBlock(nn.Module):
    """RecBole's TransformerLayer: multi-head self-attention and a GELU feed-forward, each
    followed by dropout, a residual connection and LayerNorm (ε 1e-12)."""

    def __init__(self, dim: int, heads: int, inner: int, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.dense = nn.Linear(dim, dim)
        self.ln1 = nn.LayerNorm(dim, eps=1e-12)
        self.ffn1, self.ffn2 = nn.Linear(dim, inner), nn.Linear(inner, dim)
        self.ln2 = nn.LayerNorm(dim, eps=1e-12)
        self.dropout, self.attn_dropout = dropout, attn_dropout

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        hd = d // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, length, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + additive_mask
        att = F.dropout(torch.softmax(att, -1), self.attn_dropout, self.training)
        ctx = (att @ v).transpose(1, 2).reshape(b, length, d)
        y = self.ln1(F.dropout(self.dense(ctx), self.dropout, self.training) + x)
        h = self.ffn2(F.gelu(self.ffn1(y)))  # GELU with erf, as RecBole's
        return self.ln2(F.dropout(h, self.dropout, self.training) + y)


@register_model("gcsan")
class GCSAN(Model):
    """GC-SAN: SR-GNN's gated GNN, then self-attention blocks; the last click's two views mixed by ω."""

    Params: ClassVar[type] = GCSANParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 30, "batch_size": 100, "lr": 1e-3, "lr_dc": 1.0, "l2": 0.0, "patience": 10,
    }
    components: ClassVar[frozenset[str]] = frozenset({"attention", "gnn"})
    needs_graph: ClassVar[bool] = True

    def __init__(self, n_items: int, params: GCSANParams | None = None) -> None:
        super().__init__(n_items, params)
        p: GCSANParams = self.params
        if p.dim % p.heads:
            raise SbrError(f"gcsan needs dim divisible by heads, got dim={p.dim}, heads={p.heads}")
        if p.layers < 1 or p.inner < 1 or not 0 <= p.weight <= 1:
            raise SbrError("gcsan needs layers >= 1, inner >= 1 and 0 <= weight <= 1")
        off = dropped(p)
        self.embedding = nn.Embedding(n_items, p.dim)
        self.gnn = None if "gnn" in off else RecBoleGNN(p.dim, p.step)
        self.blocks = (None if "attention" in off else
                       nn.ModuleList([PostLNBlock(p.dim, p.heads, p.inner, p.dropout, p.attn_dropout)
                                      for _ in range(p.layers)]))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """RecBole: the GNN's matrices U(±1/sqrt(d)), then Linear/Embedding N(0, init_range²), biases 0, LayerNorm (1, 0)."""
        p: GCSANParams = self.params
        with torch.no_grad():
            if self.gnn is not None:
                for w in self.gnn.parameters():
                    w.uniform_(-1 / math.sqrt(p.dim), 1 / math.sqrt(p.dim))
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    m.weight.normal_(0.0, p.init_range)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.zero_()
                if isinstance(m, nn.LayerNorm):
                    m.weight.fill_(1.0)
                    m.bias.zero_()

    def session_embedding(self, batch: Batch) -> torch.Tensor:
        """`ω · SA_last + (1 − ω) · h_last` (B, d)."""
        p: GCSANParams = self.params
        hidden = self.embedding(batch.nodes)
        if self.gnn is not None:
            hidden = self.gnn(batch.adj_in.to(hidden.dtype), batch.adj_out.to(hidden.dtype), hidden)
        seq_hidden = hidden.gather(1, batch.alias.unsqueeze(2).expand(-1, -1, hidden.shape[2]))
        rows = torch.arange(seq_hidden.shape[0], device=seq_hidden.device)
        last = seq_hidden[rows, batch.lengths - 1]
        if self.blocks is None:
            return last
        length = seq_hidden.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=seq_hidden.device).tril()
        keep = causal.unsqueeze(0) & batch.mask.unsqueeze(1)  # (B, L, L): earlier, real keys
        additive = (1.0 - keep.unsqueeze(1).to(seq_hidden.dtype)) * -10000.0
        out = seq_hidden
        for block in self.blocks:
            out = block(out, additive)
        return p.weight * out[rows, batch.lengths - 1] + (1 - p.weight) * last

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) against the item table; column 0 is -inf."""
        scores = self.session_embedding(batch) @ self.embedding.weight.t()
        scores[:, 0] = float("-inf")
        return scores

    def extra_loss(self, batch: Batch, scores: torch.Tensor) -> torch.Tensor | None:
        """RecBole's `reg_weight · EmbLoss(item table)` = reg_weight · ‖E‖_F / n_items."""
        w = self.params.reg_weight
        return w * torch.linalg.vector_norm(self.embedding.weight) / self.n_items if w > 0 else None
