"""SR-GNN (Wu et al., AAAI 2019), faithful to the official PyTorch code (CRIPAC-DIG/SR-GNN).

Session graph per prefix (unique items sorted by id, binary edges, in/out adjacency normalised
by in/out degree), a gated graph cell applied `step` times to the layer-0 item embeddings, a
hybrid readout with sigmoid attention, and scores against the layer-0 item embeddings. All
parameters are initialised U(-1/sqrt(d), 1/sqrt(d)). Differences from the official code that do
not change the maths: the padding item is not a graph node, scores keep column 0 (masked to
-inf) instead of slicing `weight[1:]`, and the learning rate decays after each epoch (the
official code calls `scheduler.step()` at the start of each epoch, which with PyTorch >= 1.1
decays one epoch earlier than the paper's "every 3 epochs").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sbrbench.models.base import Model, dropped, register_model
from sbrbench.models.layers import (
    GatedGraphCell,
    SoftAttentionReadout,
    catalogue_scores,
    overwritten_init,
    uniform_init_,
)
from sbrbench.models.search import Choice, FloatRange, IntRange

if TYPE_CHECKING:
    from sbrbench.batching import Batch


@dataclass
class SRGNNParams:
    """SR-GNN hyper-parameters (defaults: the paper's)."""

    dim: int = 100
    step: int = 1
    hybrid: bool = True
    drop: str = ""  # comma-separated components to switch off: gnn, attention


@register_model("srgnn")
class SRGNN(Model):
    """SR-GNN: gated graph neural network on session graphs with a soft-attention readout."""

    Params: ClassVar[type] = SRGNNParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 30, "batch_size": 100, "lr": 1e-3, "lr_dc": 0.1, "lr_dc_step": 3,
        "l2": 1e-5, "patience": 10,
    }
    components: ClassVar[frozenset[str]] = frozenset({"gnn", "attention"})
    paper_compatible: ClassVar[dict[str, Any]] = {"stopping": "official"}  # its main.py's HR-or-MRR rule
    component_aliases: ClassVar[dict[str, str]] = {"global": "attention"}  # its name before GCE-GNN's graph
    needs_graph: ClassVar[bool] = True
    # l2 is Adam's weight decay on every parameter, the item table (the output layer) included: at
    # 3e-4 and above SR-GNN learned nothing in 3 epochs on Diginetica (valid HR@20 < 3 %)
    search_space: ClassVar[dict[str, Any]] = {
        "lr": FloatRange(1e-4, 1e-2, log=True), "l2": FloatRange(1e-7, 1e-4, log=True),
        "dim": Choice(50, 100, 150), "step": IntRange(1, 3),
    }

    def __init__(self, n_items: int, params: SRGNNParams | None = None) -> None:
        super().__init__(n_items, params)
        p: SRGNNParams = self.params
        off = dropped(p)
        with overwritten_init():  # every parameter is re-initialised below
            self.embedding = nn.Embedding(n_items, p.dim)
            self.gnn = None if "gnn" in off else GatedGraphCell(p.dim, p.step)
            self.readout = SoftAttentionReadout(p.dim, hybrid=p.hybrid, use_global=not off & {"attention", "global"})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(dim), 1/sqrt(dim)), as the official code (`uniform_init_`)."""
        uniform_init_(self, self.params.dim)

    def session_embedding(self, batch: Batch, sparse_grad: bool = False) -> torch.Tensor:
        """The hybrid session representation s_h (B, d).

        Computed on the batch's real nodes and positions only (`GatedGraphCell.packed`,
        `SoftAttentionReadout.packed`): padding nodes have no edges and padding positions are
        masked, so this equals the padded (B, N) / (B, L) form, at about a fifth of its per-node
        work on Diginetica. `sparse_grad`: the node lookup's gradient is a sparse tensor (same
        values); `forward` asks for it because the score product's dense gradient of the table then
        absorbs it.
        """
        nodes, alias, lengths = batch.nodes, batch.alias, batch.lengths
        if batch.node_rows is not None and batch.node_cols is not None:
            rows, cols = batch.node_rows, batch.node_cols
        else:
            rows, cols = (nodes > 0).nonzero(as_tuple=True)
        if batch.pos_rows is not None and batch.pos_cols is not None:
            pos_rows, pos_cols = batch.pos_rows, batch.pos_cols
        else:
            pos_rows, pos_cols = batch.mask.nonzero(as_tuple=True)
        hidden = F.embedding(nodes[rows, cols], self.embedding.weight, sparse=sparse_grad)
        if self.gnn is not None:
            hidden = self.gnn.packed(batch.adj_in, batch.adj_out, hidden, rows, cols)
        slot = torch.zeros_like(nodes)
        slot[rows, cols] = torch.arange(rows.shape[0], device=nodes.device)
        sessions = torch.arange(nodes.shape[0], device=nodes.device)
        pos_hidden = hidden[slot[pos_rows, alias[pos_rows, pos_cols]]]
        last = hidden[slot[sessions, alias[sessions, lengths - 1]]]
        return self.readout.packed(pos_hidden, pos_rows, last)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) against the layer-0 item embeddings; column 0 is -inf (`catalogue_scores`)."""
        return catalogue_scores(self.session_embedding(batch, sparse_grad=True), self.embedding.weight)
