"""TAGNN++ (Mitharan et al., arXiv 2107.01516, AISP 2022) as the paper describes it.

TAGNN's gated graph cell, then a Transformer encoder over the clicks with positional embeddings,
then TAGNN's target-aware readout, trained with Adaptive Gradient Clipping. For the code as
released (one causal attention block over the nodes, no feed-forward, no positions, no AGC) see
`tagnnpp-code` (`tagnnpp_released.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from sbrbench.errors import SbrError
from sbrbench.models.base import Model, dropped, register_model
from sbrbench.models.layers import GatedGraphCell, overwritten_init, reset_children_
from sbrbench.models.tagnn import (
    TagnnReadout,
    TargetAttention,
    gather_positions,
    position_units,
    target_aware_scores,
)
from sbrbench.optim import adaptive_grad_clip_

if TYPE_CHECKING:
    from sbrbench.batching import Batch


def check_heads(dim: int, heads: int, model: str) -> None:
    """Raise a one-line error unless `heads` divides `dim`."""
    if heads < 1 or dim % heads:
        raise SbrError(f"{model}: dim ({dim}) must be a multiple of heads ({heads})")


AGC_SCOPES = ("no-classifier", "all")


@dataclass
class TAGNNPPParams:
    """TAGNN++ hyper-parameters (defaults: the paper's, Yoochoose 1/64 setting)."""

    dim: int = 100
    step: int = 1
    heads: int = 2
    layers: int = 1
    ffn_mult: int = 4  # feed-forward width = ffn_mult x dim
    dropout: float = 0.1
    max_len: int = 256  # positional embeddings; longer prefixes share the last one
    hybrid: bool = True
    agc_clip: float = 0.01
    agc_eps: float = 1e-3
    agc_scope: str = "no-classifier"  # no-classifier (NFNets: the item embedding is not clipped) or all
    chunk: int = 0  # items per target-attention chunk (0: automatic)
    drop: str = ""  # comma-separated components to switch off: transformer, gnn, agc, posemb


@register_model("tagnnpp")
class TAGNNPP(Model):
    """TAGNN++ (paper): TAGNN's GNN, a Transformer encoder with positions, target-aware readout, AGC.

    Faithful to the paper (Sec. 3.2, 4): gated graph cell on the session graph (as TAGNN), then a
    multi-head Transformer encoder (self-attention, skip connections, LayerNorm after each
    sub-layer, token-wise feed-forward, dropout 0.1) over the clicks' hidden states plus learned
    positional embeddings, then TAGNN's softmax readout and target attention over every item;
    Adaptive Gradient Clipping (`sbrbench.optim.adaptive_grad_clip_`, lambda 0.01, eps 1e-3 as in
    the released `agc.py`) before every optimizer step. Training defaults from the paper: batch
    50, Adam lr 1e-4 x0.1 every 3 epochs, L2 1e-6, 15 epochs; heads/dim 2/100 on Yoochoose 1/64
    and 8/120 on Diginetica (`dataset_defaults`).

    Choices where the paper is silent (each a hyper-parameter): one encoder layer (`layers`), a
    ReLU feed-forward of 4 x dim (`ffn_mult`), post-norm as in Vaswani et al. ("concatenating the
    outputs before normalizing across the layer and passing to a Feed-forward module"), a key
    padding mask and no causal mask (eq. 1 sums over every item of the session), positions counted
    from the first click (as the release's unused `get_pos`), the hybrid readout of TAGNN
    (`hybrid`), softmaxes over the real positions only (no emulation of the official padding,
    which is undefined for states produced by an encoder), U(-1/sqrt(d), 1/sqrt(d)) as in the TAGNN
    code base for the embeddings, the GNN, the readout and the target attention, and PyTorch's own
    initialisation for the encoder (the paper says nothing else; U(±1/sqrt(d)) would give its
    LayerNorm gains random signs). AGC clips every parameter per output row except the item
    embedding, which is also the output layer (NFNets, which the paper cites, leaves the classifier
    unclipped); `agc_scope="all"` clips it too.

    Components (TAGNN++ Table 3): `transformer` (the encoder; its positional embeddings go with
    it, so without it this is TAGNN with masked softmaxes), `gnn` (the gated cell), `agc` (gradient
    clipping), `posemb` (the positional embeddings).
    """

    Params: ClassVar[type] = TAGNNPPParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 15, "batch_size": 50, "lr": 1e-4, "lr_dc": 0.1, "lr_dc_step": 3, "l2": 1e-6,
    }
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "diginetica": {"dim": 120, "heads": 8},
        "yoochoose1_64": {"dim": 100, "heads": 2},
    }
    components: ClassVar[frozenset[str]] = frozenset({"transformer", "gnn", "agc", "posemb"})
    needs_graph: ClassVar[bool] = True

    def __init__(self, n_items: int, params: TAGNNPPParams | None = None) -> None:
        super().__init__(n_items, params)
        p: TAGNNPPParams = self.params
        off = dropped(p)
        if p.agc_scope not in AGC_SCOPES:
            raise SbrError(f"tagnnpp hyper-parameter 'agc_scope' must be one of {', '.join(AGC_SCOPES)}, got {p.agc_scope!r}")
        self.use_agc = "agc" not in off
        with overwritten_init():  # every parameter is re-initialised below
            self.embedding = nn.Embedding(n_items, p.dim)
            self.gnn = None if "gnn" in off else GatedGraphCell(p.dim, p.step)
            self.encoder: nn.TransformerEncoder | None = None
            self.pos_embedding: nn.Embedding | None = None
            if "transformer" not in off:
                check_heads(p.dim, p.heads, "tagnnpp")
                if p.layers < 1 or p.ffn_mult < 1 or not 0 <= p.dropout < 1:
                    raise SbrError("tagnnpp needs layers >= 1, ffn_mult >= 1 and 0 <= dropout < 1")
                layer = nn.TransformerEncoderLayer(
                    p.dim, p.heads, p.ffn_mult * p.dim, p.dropout, batch_first=True, norm_first=False
                )
                self.encoder = nn.TransformerEncoder(layer, p.layers, enable_nested_tensor=False)
                if "posemb" not in off:
                    if p.max_len < 1:
                        raise SbrError(f"tagnnpp hyper-parameter 'max_len' must be >= 1, got {p.max_len}")
                    self.pos_embedding = nn.Embedding(p.max_len, p.dim)
            self.readout = TagnnReadout(p.dim, hybrid=p.hybrid)
            self.target = TargetAttention(p.dim, p.chunk)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(dim), 1/sqrt(dim)) as in the TAGNN code base, except the encoder (PyTorch's own)."""
        encoder = {id(p) for p in self.encoder.parameters()} if self.encoder is not None else set()
        stdv = 1.0 / math.sqrt(self.params.dim)
        with torch.no_grad():
            for p in self.parameters():
                if id(p) not in encoder:
                    p.uniform_(-stdv, stdv)
        if self.encoder is not None:
            reset_children_(self.encoder)

    def sequence_states(self, batch: Batch) -> torch.Tensor:
        """(B, L, d) hidden state of every click after the GNN and the encoder."""
        assert batch.nodes is not None and batch.alias is not None
        hidden = self.embedding(batch.nodes)
        if self.gnn is not None:
            hidden = self.gnn(batch.adj_in, batch.adj_out, hidden)
        seq = gather_positions(hidden, batch.alias)
        if self.encoder is not None:
            if self.pos_embedding is not None:
                pos = torch.arange(seq.shape[1], device=seq.device).clamp(max=self.pos_embedding.num_embeddings - 1)
                seq = seq + self.pos_embedding(pos).unsqueeze(0)
            seq = self.encoder(seq, src_key_padding_mask=~batch.mask)
        return seq

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) against the layer-0 item embeddings; column 0 is -inf."""
        seq = self.sequence_states(batch)
        session = self.readout(seq, batch.mask, batch.lengths)
        units = position_units(seq, batch)  # the encoder gives every click its own state
        return target_aware_scores(session, self.embedding.weight, self.target, units, seq, batch.mask)

    def clip_gradients(self) -> None:
        """Adaptive Gradient Clipping (unless `agc` is dropped) of every parameter, the item
        embedding (the classifier) only with `agc_scope="all"`."""
        if self.use_agc:
            params = self.parameters() if self.params.agc_scope == "all" else (
                p for p in self.parameters() if p is not self.embedding.weight)
            adaptive_grad_clip_(params, self.params.agc_clip, self.params.agc_eps)
