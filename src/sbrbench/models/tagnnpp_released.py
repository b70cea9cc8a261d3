"""TAGNN++ as released (The-Learning-Machines/SBR `model.py`), to measure paper vs. code.

Registered as `tagnnpp-code` (the `<name>-code` convention: the released code's behaviour where it
differs from the paper); the former name `tagnnpp-released` still works, with a deprecation
warning. See `TAGNNPPReleased` for what the released code does and how it is emulated; the
paper's model is `tagnnpp` (`tagnnpp.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from sbrbench.models.base import dropped, register_model
from sbrbench.models.layers import GatedGraphCell, overwritten_init, self_init
from sbrbench.models.tagnn import (
    GatedSessionModel,
    TagnnReadout,
    TargetAttention,
    check_padding,
    gather_positions,
    node_units,
    target_aware_scores,
)
from sbrbench.models.tagnnpp import check_heads

if TYPE_CHECKING:
    from sbrbench.batching import Batch


class CausalNodeAttention(nn.Module):
    """The release's attention block: `LayerNorm(x) + MHA(x, x, x)` with a strict upper-triangular mask.

    The skip branch is normalised, the attention input is not; no feed-forward, no key padding
    mask. `first_absent` (B,) bool hides slot 0 from every later query of those rows (used when
    the padding node is absent from a row, see `TAGNNPPReleased`).
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self_init(self)

    def reset_parameters(self) -> None:
        """PyTorch's defaults of `nn.LayerNorm` and `nn.MultiheadAttention`."""
        self.norm.reset_parameters()
        self.attn._reset_parameters()

    def forward(self, x: torch.Tensor, first_absent: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, d) -> (B, N, d)."""
        bsz, n, _ = x.shape
        mask = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        if first_absent is not None and n > 1:
            mask = mask.expand(bsz, n, n).clone()
            mask[:, 1:, 0] |= first_absent.unsqueeze(1)
            mask = mask.repeat_interleave(self.heads, 0)
        out, _ = self.attn(x, x, x, attn_mask=mask, need_weights=False)
        return out + self.norm(x)


@dataclass
class TAGNNPPReleasedParams:
    """Hyper-parameters of TAGNN++ as released (defaults: its `Diginetica_arg`)."""

    dim: int = 100
    step: int = 1
    heads: int = 2
    dropout: float = 0.1
    hybrid: bool = False  # the release runs with nonhybrid=True
    padding: str = "official"  # official (padding node and softmaxes up to len_max) or masked
    eval_len_max: str = "fit"  # official padding at evaluation: fit (the fitted len_max) or split (its own)
    chunk: int = 0  # items per target-attention chunk (0: automatic)
    drop: str = ""  # comma-separated components to switch off: transformer, gnn


@register_model("tagnnpp-code", aliases=("tagnnpp-released",))
class TAGNNPPReleased(GatedSessionModel):
    """TAGNN++ as released: TAGNN's GNN, one causal 2-head attention block over the graph nodes.

    Faithful to The-Learning-Machines/SBR `model.py` with its `--defaults` (always on): embedding
    -> TAGNN gated cell -> `skip = LayerNorm(h)`, `h = MHA(h, h, h, mask=triu(1)) + skip` (2
    heads, dropout 0.1) over the **unique-node axis** ordered by item id (so "causal" means "lower
    item id"), then the alias gather to clicks and TAGNN's readout (non-hybrid) and target
    attention over every item. No feed-forward, no key padding mask, no positional embedding
    (`get_pos` is never called), no AGC (the `AGC` optimizer is built but `optimizer.step()` is
    what runs). Every parameter U(-1/sqrt(d), 1/sqrt(d)) (LayerNorm and attention included).
    Defaults: Diginetica batch 50 / dim 100, Yoochoose 1/64 batch 75 / dim 120, Adam lr 1e-3 x0.1
    every 3 epochs, L2 1e-5, 30 epochs, patience 10.

    Official padding (`padding="official"`, default): prefixes shorter than `len_max` contain the
    padding item 0, which `np.unique` sorts first, so node 0 of those rows is the padding node
    (item 0 through the GNN with no edges) and, under the causal mask, every real node attends to
    it; the padded positions point at it, so the readout softmax sees `len_max - len` copies of
    its post-attention state. Emulated exactly: a padding slot is prepended to every row and hidden
    from the other nodes of rows that reach `len_max`; the softmax denominators get the padded terms
    analytically (as in `tagnn`). `len_max` is the longest fitted prefix (`prepare()`; the release
    uses each split's own, i.e. the validation split's at evaluation: `eval_len_max="split"`, on in
    paper-compatible runs). `padding="masked"` drops the padding node and masks the softmaxes. The
    release (PyTorch 1.7.1) steps its scheduler at the start of each epoch, so its first decay comes
    after 2 epochs: `lr_schedule="epoch-start"` by default here. Paper-compatible runs also stop as
    its `main.py` does (`stopping="official"`).

    Not reproduced: the release's validation split (a random 10% of augmented training samples,
    sbrbench selects on its own validation split), the hard-coded `n_node` and checkpoint saving on
    every improvement. Trailing padding
    nodes (batch padding) are identical in both: causal masking keeps them out of every real
    node's attention. Components: `transformer` (the attention block), `gnn` (the gated cell).
    """

    Params: ClassVar[type] = TAGNNPPReleasedParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 30, "batch_size": 50, "lr": 1e-3, "lr_dc": 0.1, "lr_dc_step": 3,
        "l2": 1e-5, "patience": 10, "lr_schedule": "epoch-start",
    }
    paper_compatible: ClassVar[dict[str, Any]] = {"stopping": "official", "eval_len_max": "split"}
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "diginetica": {"batch_size": 50, "dim": 100},
        "yoochoose1_64": {"batch_size": 75, "dim": 120},
    }
    components: ClassVar[frozenset[str]] = frozenset({"transformer", "gnn"})
    needs_graph: ClassVar[bool] = True

    def __init__(self, n_items: int, params: TAGNNPPReleasedParams | None = None) -> None:
        super().__init__(n_items, params)
        p: TAGNNPPReleasedParams = self.params
        check_padding(p.padding, p.eval_len_max)
        off = dropped(p)
        with overwritten_init():  # every parameter is re-initialised below (`GatedSessionModel`)
            self.embedding = nn.Embedding(n_items, p.dim)
            self.gnn = None if "gnn" in off else GatedGraphCell(p.dim, p.step)
            self.block: CausalNodeAttention | None = None
            if "transformer" not in off:
                check_heads(p.dim, p.heads, "tagnnpp-code")
                self.block = CausalNodeAttention(p.dim, p.heads, p.dropout)
            self.readout = TagnnReadout(p.dim, hybrid=p.hybrid)
            self.target = TargetAttention(p.dim, p.chunk)
        self.reset_parameters()

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) against the layer-0 item embeddings; column 0 is -inf."""
        hidden = self.node_states(batch)
        n_pad, pad_hidden = self.padding_terms(batch, hidden.dtype)
        alias, offset = batch.alias, 0
        if self.block is not None:
            if n_pad is not None:
                assert pad_hidden is not None and n_pad is not None
                hidden = torch.cat([pad_hidden.expand(hidden.shape[0], 1, -1), hidden], 1)
                hidden = self.block(hidden, first_absent=n_pad == 0)
                pad_hidden, alias, offset = hidden[:, 0], alias + 1, 1
            else:
                hidden = self.block(hidden)
        seq_hidden = gather_positions(hidden, alias)
        session = self.readout(seq_hidden, batch.mask, batch.lengths, pad_hidden, n_pad)
        units = node_units(hidden, batch, offset)
        return target_aware_scores(
            session, self.embedding.weight, self.target, units, seq_hidden, batch.mask, n_pad
        )
