r"""TAGNN (Yu et al., SIGIR 2020), faithful to the official code (CRIPAC-DIG/TAGNN), and its parts.

The reusable pieces live here (TAGNN++ and its released variant import them):

* `target_attention_scores`: the target-attention term of every candidate item, computed in chunks
  of the catalogue by a custom autograd function so that neither the forward nor the backward
  pass ever holds the naive B x |V| x L tensors (`target_attention_scores_naive` is the
  reference used by the tests and the benchmark);
* `TargetAttention`: `W_t` plus that scorer; `TagnnReadout`: the softmax-attention readout;
* `official_pad_counts` / `pad_node_state`: the analytic emulation of the official padding.

TAGNN maths (hidden states `h_i` of the prefix's clicks after the gated graph cell, item
embeddings `v_j` of layer 0, `h_t` the last click):

.. math::
    \alpha = \mathrm{softmax}_i(q^\top \sigma(W_1 h_t + W_2 h_i + c)), \quad
    s = W_3 [\textstyle\sum_i \alpha_i h_i; h_t] \;(\text{hybrid})

    \beta_{ji} = \mathrm{softmax}_i(v_j^\top W_t h_i), \quad
    \mathrm{score}_j = (s + \textstyle\sum_i \beta_{ji} h_i)^\top v_j
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sbrbench.errors import SbrError
from sbrbench.models.base import Model, dropped, register_model, register_variant
from sbrbench.models.layers import GatedGraphCell, overwritten_init, reset_children_, self_init, uniform_init_

if TYPE_CHECKING:
    from pathlib import Path

    from sbrbench.batching import Batch
    from sbrbench.data.dataset import ProcessedDataset

PADDING_MODES = ("official", "masked")
#: Elements of one chunk's (B, L, C) work tensors when the chunk size is automatic (32 MiB in fp32).
CHUNK_ELEMENTS = 1 << 23


# ---- target attention -----------------------------------------------------------------------------
def auto_chunk(batch: int, seqlen: int, n_items: int, elements: int = CHUNK_ELEMENTS) -> int:
    """Items per chunk so that one chunk's (B, L, C) tensors hold about `elements` values each."""
    return max(1, min(n_items, elements // max(1, batch * seqlen)))


class _ChunkedTargetAttention(torch.autograd.Function):
    """sum_i softmax_i(q[b,i] . v_j + bias[b,i]) (h[b,i] . v_j), chunked over the items j.

    `bias` (B, L, 1) is 0 on real positions, -inf on masked ones (and log(n) on a zero slot that
    stands for n padded positions). Only the inputs and the (B, J) output are saved; the backward
    pass recomputes each chunk's probabilities, so both passes hold O(B L C) memory per chunk.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, items: torch.Tensor, queries: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, chunk: int
    ) -> torch.Tensor:
        bsz, seqlen, dim = queries.shape
        q = queries.reshape(bsz * seqlen, dim)
        h = values.reshape(bsz * seqlen, dim)
        out = queries.new_empty(bsz, items.shape[0])
        for c0 in range(0, items.shape[0], chunk):
            v = items[c0 : c0 + chunk].t()
            p = torch.softmax((q @ v).view(bsz, seqlen, -1).add_(bias), 1)
            out[:, c0 : c0 + v.shape[1]] = (p.mul_((h @ v).view(bsz, seqlen, -1))).sum(1)
        ctx.save_for_backward(items, queries, values, bias, out)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        items, queries, values, bias, out = ctx.saved_tensors
        bsz, seqlen, dim = queries.shape
        q = queries.reshape(bsz * seqlen, dim)
        h = values.reshape(bsz * seqlen, dim)
        need_items, need_q, need_h = ctx.needs_input_grad[:3]
        g_items = torch.empty_like(items) if need_items else None
        g_q = torch.zeros_like(q) if need_q else None
        g_h = torch.zeros_like(h) if need_h else None
        for c0 in range(0, items.shape[0], ctx.chunk):
            v = items[c0 : c0 + ctx.chunk]
            c1 = c0 + v.shape[0]
            p = torch.softmax((q @ v.t()).view(bsz, seqlen, -1).add_(bias), 1)
            g = grad_out[:, c0:c1].unsqueeze(1)
            # d out / d value_i = p_i g;  d out / d logit_i = p_i (value_i - out) g
            d_val = p.mul_(g)
            d_logit = (h @ v.t()).view(bsz, seqlen, -1).sub_(out[:, c0:c1].unsqueeze(1)).mul_(d_val)
            d_val2, d_logit2 = d_val.view(bsz * seqlen, -1), d_logit.view(bsz * seqlen, -1)
            if g_q is not None:
                g_q.addmm_(d_logit2, v)
            if g_h is not None:
                g_h.addmm_(d_val2, v)
            if g_items is not None:
                torch.addmm(d_logit2.t() @ q, d_val2.t(), h, out=g_items[c0:c1])
        return (
            g_items,
            g_q.view(bsz, seqlen, dim) if g_q is not None else None,
            g_h.view(bsz, seqlen, dim) if g_h is not None else None,
            None,
            None,
        )


def target_attention_scores(
    items: torch.Tensor,
    queries: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    n_pad: torch.Tensor | None = None,
    chunk: int = 0,
) -> torch.Tensor:
    r"""TAGNN's target term :math:`\sum_i \mathrm{softmax}_i(v_j \cdot q_{bi})\,(v_j \cdot h_{bi})` for every item j.

    This equals :math:`\mathrm{target}_{bj} \cdot v_j` with the official
    :math:`\mathrm{target}_{bj} = \sum_i \beta_{bji} h_{bi}`, without building the (B, J, d) targets.

    Args:
        items: (J, d) candidate embeddings v_j.
        queries: (B, L, d) attention queries (official: W_t h, zero on padding).
        values: (B, L, d) hidden states h (zero on padding).
        mask: (B, L) bool, the real positions (masked ones take no part in the softmax).
        n_pad: (B,) or None: extra positions of logit 0 and value 0 in each softmax (the official
            code's padding up to `len_max`), handled as one zero slot of logit log(n_pad).
        chunk: items per chunk (0: automatic, see `auto_chunk`).

    Returns:
        (B, J) scores; memory O(B L C) per chunk in both passes.
    """
    bsz, seqlen, dim = queries.shape
    bias = torch.zeros(bsz, seqlen, 1, dtype=queries.dtype, device=queries.device)
    bias.masked_fill_(~mask.unsqueeze(2), float("-inf"))
    if n_pad is not None:
        z = queries.new_zeros(bsz, 1, dim)
        queries, values = torch.cat([queries, z], 1), torch.cat([values, z], 1)
        bias = torch.cat([bias, torch.log(n_pad.to(bias.dtype)).view(bsz, 1, 1)], 1)
        seqlen += 1
    if chunk <= 0:
        chunk = auto_chunk(bsz, seqlen, items.shape[0])
    return _ChunkedTargetAttention.apply(items, queries, values, bias, int(chunk))


def target_attention_scores_naive(
    items: torch.Tensor,
    queries: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    n_pad: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference form of `target_attention_scores`, materialising B x J x L (tests, benchmarks).

    With `n_pad`, padding positions are appended explicitly (queries and values 0) as the official
    code does, then everything takes part in one softmax exactly as in `compute_scores`.
    """
    real = mask.unsqueeze(2).to(queries.dtype)
    queries, values, present = queries * real, values * real, mask
    if n_pad is not None:
        extra = int(n_pad.max()) if n_pad.numel() else 0
        z = queries.new_zeros(queries.shape[0], extra, queries.shape[2])
        queries, values = torch.cat([queries, z], 1), torch.cat([values, z], 1)
        pos = torch.arange(extra, device=mask.device)
        present = torch.cat([mask, pos.unsqueeze(0) < n_pad.to(mask.device).unsqueeze(1)], 1)
    logits = items @ queries.transpose(1, 2)  # (B, J, L)
    logits = logits.masked_fill(~present.unsqueeze(1), float("-inf"))
    beta = F.softmax(logits, -1)
    target = beta @ values  # (B, J, d)
    return (target * items.unsqueeze(0)).sum(-1)


class TargetAttention(nn.Module):
    """TAGNN's target attention: `W_t` (no bias) and the chunked scorer over the catalogue."""

    def __init__(self, dim: int, chunk: int = 0) -> None:
        super().__init__()
        self.linear_t = nn.Linear(dim, dim, bias=False)
        self.chunk = chunk
        self_init(self)

    def reset_parameters(self) -> None:
        """`W_t` with `nn.Linear`'s default."""
        self.linear_t.reset_parameters()

    def forward(
        self, items: torch.Tensor, seq_hidden: torch.Tensor, mask: torch.Tensor, n_pad: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Target term (B, J) of items (J, d) for hidden states (B, L, d) with real positions `mask`."""
        h = seq_hidden * mask.unsqueeze(2).to(seq_hidden.dtype)
        return target_attention_scores(items, self.linear_t(h), h, mask, n_pad, self.chunk)


# ---- readout --------------------------------------------------------------------------------------
class TagnnReadout(nn.Module):
    r"""TAGNN's session readout: softmax attention on the last click, then the hybrid layer.

    .. math::
        \alpha_i = \mathrm{softmax}_i(q^\top \sigma(W_1 h_t + W_2 h_i + c)),\quad
        s_g = \sum_{i\ \mathrm{real}} \alpha_i h_i,\quad s = W_3 [s_g; h_t] \text{ (hybrid) or } s_g

    Official padding: the softmax also runs over the `n_pad` padded positions (hidden state
    `pad_hidden`), whose weights are then dropped by the mask; they only enlarge the denominator.
    """

    def __init__(self, dim: int, hybrid: bool = True) -> None:
        super().__init__()
        self.linear_one = nn.Linear(dim, dim)
        self.linear_two = nn.Linear(dim, dim)
        self.linear_three = nn.Linear(dim, 1, bias=False)
        self.transform = nn.Linear(2 * dim, dim) if hybrid else None
        self_init(self)

    def reset_parameters(self) -> None:
        """Every linear layer with `nn.Linear`'s default."""
        reset_children_(self)

    def forward(
        self,
        seq_hidden: torch.Tensor,
        mask: torch.Tensor,
        lengths: torch.Tensor,
        pad_hidden: torch.Tensor | None = None,
        n_pad: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Session representation (B, d); `pad_hidden` is (d,), (1, d) or (B, d)."""
        bsz = seq_hidden.shape[0]
        last = seq_hidden[torch.arange(bsz, device=seq_hidden.device), lengths - 1]
        q1 = self.linear_one(last)
        z = self.linear_three(torch.sigmoid(q1.unsqueeze(1) + self.linear_two(seq_hidden))).squeeze(2)
        z = z.masked_fill(~mask, float("-inf"))
        if pad_hidden is not None and n_pad is not None:
            z_pad = self.linear_three(torch.sigmoid(q1 + self.linear_two(pad_hidden))).squeeze(1)
            z_all = torch.cat([z, (z_pad + torch.log(n_pad.to(z.dtype))).unsqueeze(1)], 1)
            alpha = torch.exp(z - torch.logsumexp(z_all, 1, keepdim=True))
        else:
            alpha = torch.softmax(z, 1)
        s = (alpha.unsqueeze(2) * seq_hidden).sum(1)
        if self.transform is not None:
            s = self.transform(torch.cat([s, last], 1))
        return s


# ---- official padding ------------------------------------------------------------------------------
def official_pad_counts(lengths: torch.Tensor, len_max: int | None) -> torch.Tensor:
    """Padded positions per row when padding to `len_max` (None: the batch's longest prefix)."""
    top = int(lengths.max()) if len_max is None else int(len_max)
    return (top - lengths).clamp(min=0).to(torch.float32)


def pad_node_state(embedding: nn.Embedding, gnn: GatedGraphCell | None) -> torch.Tensor:
    """(1, 1, d) hidden state of the official padding node: item 0 through the GNN with no edges."""
    h = embedding.weight[:1].unsqueeze(0)
    if gnn is not None:
        z = h.new_zeros(1, 1, 1)
        h = gnn(z, z, h)
    return h


def fit_len_max(dataset: ProcessedDataset, splits: tuple[str, ...]) -> int:
    """The longest prefix among the examples of `splits` (the official `len_max` of that data).

    A fitted session ends at the target of its longest example, so that prefix is one shorter.
    """
    fitted = dataset.fit_sessions(splits)
    return int(fitted.lengths.max()) - 1 if len(fitted) else 1


def check_padding(mode: str) -> None:
    """Raise a one-line error for an unknown padding mode."""
    if mode not in PADDING_MODES:
        raise SbrError(f"padding must be one of {', '.join(PADDING_MODES)}, got {mode!r}")


def gather_positions(node_hidden: torch.Tensor, alias: torch.Tensor) -> torch.Tensor:
    """(B, L, d) hidden state of every click from (B, N, d) node states and (B, L) node indices."""
    return node_hidden.gather(1, alias.unsqueeze(2).expand(-1, -1, node_hidden.shape[2]))


def target_aware_scores(
    session: torch.Tensor,
    weight: torch.Tensor,
    target: TargetAttention | None,
    seq_hidden: torch.Tensor,
    mask: torch.Tensor,
    n_pad: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, n_items) scores `(s + target_j) . v_j` over items 1.. of `weight`; column 0 is -inf."""
    items = weight[1:]
    scores = session @ items.t()
    if target is not None:
        scores = scores + target(items, seq_hidden, mask, n_pad)
    return torch.cat([scores.new_full((scores.shape[0], 1), float("-inf")), scores], 1)


# ---- the model ---------------------------------------------------------------------------------------
@dataclass
class TAGNNParams:
    """TAGNN hyper-parameters (defaults: the paper's; the official code's settings otherwise)."""

    dim: int = 100
    step: int = 1
    hybrid: bool = True
    padding: str = "masked"  # masked (paper) or official (softmaxes see padding up to len_max; tagnn-code)
    chunk: int = 0  # items per target-attention chunk (0: automatic)
    drop: str = ""  # comma-separated components to switch off: gnn, target


class GatedSessionModel(Model):
    """Shared by TAGNN and TAGNN++ as released: embeddings, the gated cell and official padding.

    Subclasses create `embedding` and `gnn` (None when dropped); `prepare()` records `len_max`,
    the longest fitted prefix, for the official padding emulation.
    """

    embedding: nn.Embedding
    gnn: GatedGraphCell | None
    len_max: int | None = None

    def prepare(
        self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Path | None = None
    ) -> None:
        """Record `len_max`, the longest fitted prefix, for the official padding emulation."""
        self.len_max = fit_len_max(dataset, splits)

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(dim), 1/sqrt(dim)), as the official code (`uniform_init_`)."""
        uniform_init_(self, self.params.dim)

    def node_states(self, batch: Batch) -> torch.Tensor:
        """Node hidden states (B, N, d): layer-0 embeddings after the gated cell (if any)."""
        assert batch.nodes is not None and batch.alias is not None
        hidden = self.embedding(batch.nodes)
        if self.gnn is not None:
            hidden = self.gnn(batch.adj_in, batch.adj_out, hidden)
        return hidden

    def padding_terms(self, batch: Batch, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(pad counts (B,), padding-node state (1, d)) under `padding="official"`, else (None, None)."""
        if self.params.padding != "official":
            return None, None
        n_pad = official_pad_counts(batch.lengths, self.len_max).to(dtype)
        return n_pad, pad_node_state(self.embedding, self.gnn).view(1, -1)


@register_model("tagnn")
class TAGNN(GatedSessionModel):
    """TAGNN: SR-GNN's gated graph cell plus target-aware attention over every candidate item.

    The paper's model, on the official code's footing (CRIPAC-DIG/TAGNN): session graphs and gated
    cell as SR-GNN, readout with a softmax attention (`TagnnReadout`), target attention
    `beta = softmax_i(v_j . W_t h_i)` for every item j, scores `(s_h + target_j) . v_j` against
    layer-0 embeddings, every parameter U(-1/sqrt(d), 1/sqrt(d)), the official training defaults
    (batch 100, Adam lr 1e-3 x0.1 every 3 epochs, L2 1e-5, 30 epochs, patience 10).

    `padding="masked"` (default: the paper's softmaxes over the session's clicks) lets the
    softmaxes see the real positions only. `padding="official"` (the registered variant
    `tagnn-code`, equal to the official code's scores on the same weights) reproduces the official
    padding without padding the batch:
    the official code pads every prefix with item 0 up to `len_max` (its split's longest prefix),
    so item 0 becomes a graph node without edges; the readout's softmax runs over all `len_max`
    positions (padded ones carry that node's GNN state, and are only dropped by the mask after
    the softmax) and the target attention's softmax sees every padded position with logit 0 and
    value 0. Here those `len_max - len` terms are added to both denominators analytically.
    `len_max` comes from the fit examples in `prepare()` (the longest training prefix; the official
    code uses each split's own `len_max`, so its test-time softmaxes use the test split's longest
    prefix instead); longer prefixes get no padding terms. Without `prepare()` the batch's longest
    prefix is used.

    Deliberate differences: the target attention is computed in catalogue chunks by a custom
    autograd function (identical values, bounded memory: `target_attention_scores`); the unused
    `linear_edge_f` of the official GNN is not created; padding nodes are not graph nodes; scores
    keep column 0 (-inf) instead of slicing `weight[1:]`; the learning rate decays after each
    epoch (the official `scheduler.step()` at the start of each epoch decays one epoch early
    with PyTorch >= 1.1). Components: `gnn` (the gated cell), `target` (the target attention).
    """

    Params: ClassVar[type] = TAGNNParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 30, "batch_size": 100, "lr": 1e-3, "lr_dc": 0.1, "lr_dc_step": 3,
        "l2": 1e-5, "patience": 10,
    }
    components: ClassVar[frozenset[str]] = frozenset({"gnn", "target"})
    needs_graph: ClassVar[bool] = True

    def __init__(self, n_items: int, params: TAGNNParams | None = None) -> None:
        super().__init__(n_items, params)
        p: TAGNNParams = self.params
        check_padding(p.padding)
        off = dropped(p)
        with overwritten_init():  # every parameter is re-initialised below
            self.embedding = nn.Embedding(n_items, p.dim)
            self.gnn = None if "gnn" in off else GatedGraphCell(p.dim, p.step)
            self.readout = TagnnReadout(p.dim, hybrid=p.hybrid)
            self.target = None if "target" in off else TargetAttention(p.dim, p.chunk)
        self.reset_parameters()

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) against the layer-0 item embeddings; column 0 is -inf."""
        seq_hidden = gather_positions(self.node_states(batch), batch.alias)
        n_pad, pad_hidden = self.padding_terms(batch, seq_hidden.dtype)
        session = self.readout(seq_hidden, batch.mask, batch.lengths, pad_hidden, n_pad)
        return target_aware_scores(session, self.embedding.weight, self.target, seq_hidden, batch.mask, n_pad)


TagnnCode = register_variant(
    "tagnn-code",
    "tagnn",
    padding="official",
    doc="""TAGNN as the official code computes it: `tagnn` with `padding="official"`.

    The official code pads every prefix with item 0 up to `len_max`, and both softmaxes (readout
    and target attention) also run over the padded positions; see `TAGNN` for the exact emulation.
    Its scores equal the official code's on the same weights.
    """,
)
