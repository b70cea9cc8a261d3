r"""TAGNN (Yu et al., SIGIR 2020), faithful to the official code (CRIPAC-DIG/TAGNN), and its parts.

The reusable pieces live here (TAGNN++ and its released variant import them):

* `packed_target_scores`: every candidate's score, session term plus target-attention term,
  computed over the batch's real attention units only (`AttentionUnits`: distinct items with a
  log-count, or click positions), packed across the batch, chunked over the catalogue;
* `TargetAttention`: `W_t` plus that scorer; `TagnnReadout`: the softmax-attention readout;
* `official_pad_counts` / `pad_node_state`: the analytic emulation of the official padding.

The previous implementation (every padded position, recomputing backward) is kept in
`tagnn_reference` as the reference of the tests and the benchmark.

TAGNN maths (hidden states `h_i` of the prefix's clicks after the gated graph cell, item
embeddings `v_j` of layer 0, `h_t` the last click):

.. math::
    \alpha = \mathrm{softmax}_i(q^\top \sigma(W_1 h_t + W_2 h_i + c)), \quad
    s = W_3 [\textstyle\sum_i \alpha_i h_i; h_t] \;(\text{hybrid})

    \beta_{ji} = \mathrm{softmax}_i(v_j^\top W_t h_i), \quad
    \mathrm{score}_j = (s + \textstyle\sum_i \beta_{ji} h_i)^\top v_j

How the scores are computed. Clicks of the same item have the same hidden state (they gather the
same graph node), so with the prefix's distinct items r (multiplicity m_r, state h_r,
q_r = W_t h_r) and P padded positions of logit 0 and value 0 (official padding):

.. math::
    \mathrm{score}_j = s^\top v_j + \frac{\sum_r m_r e^{a_{rj}} x_{rj}}{P + \sum_r m_r e^{a_{rj}}},
    \qquad a_{rj} = v_j^\top q_r,\; x_{rj} = v_j^\top h_r

i.e. a softmax over the units with logits a_rj + log m_r and one extra slot of logit log P. The
(B, |V|, d) targets are never formed: each candidate costs 2 R_b dot products of length d for a
row with R_b distinct items (instead of 2 L_max + 2 before); an exact form cannot do with
fewer, since every a_rj and x_rj enters the softmax non-linearly. The R = sum_b R_b units of a batch are
packed into one (2R, d) matrix [q; h]; per chunk of C candidates one product gives the (2R, C)
logits and values, the per-row maxima and sums are `scatter_reduce_` / `index_add_` over the row
index (no padding, no host synchronisation), and the session term is one `addmm_` into the
output. The backward pass needs, per chunk, p_rj g_bj (gradient of the values) and
p_rj (x_rj - t_bj) g_bj (gradient of the logits): the forward pass keeps p and p (x - t)
when 2 R |V| values fit in half the memory budget (`plan_chunks`), so the backward pass is two
products per chunk, and recomputes them otherwise. Without gradients nothing is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from sbrbench.errors import SbrError
from sbrbench.models.base import Model, dropped, register_model, register_variant
from sbrbench.models.layers import GatedGraphCell, overwritten_init, reset_children_, self_init, uniform_init_

if TYPE_CHECKING:
    from pathlib import Path

    from sbrbench.batching import Batch
    from sbrbench.data.dataset import ProcessedDataset

PADDING_MODES = ("official", "masked")
EVAL_LEN_MAX = ("fit", "split")
#: Memory the target attention may use on CPU: stored probabilities plus one chunk's work tensors.
CPU_MEMORY_BUDGET = 512 << 20
#: Fraction of the free CUDA memory (`torch.cuda.mem_get_info`) the target attention may use.
CUDA_MEMORY_FRACTION = 0.5
#: Elements of one chunk's (2R, C) work matrix on CPU: small enough to stay in the cache.
CPU_CHUNK_ELEMENTS = 1 << 19


# ---- target attention -----------------------------------------------------------------------------
@dataclass
class AttentionUnits:
    """The real attention units of a batch, packed: unit r is `hidden[rows[r], cols[r]]`.

    A unit is a distinct item of a prefix (a graph node: every click of that item has its hidden
    state, so one unit with `log_count` = log(multiplicity) stands for all of them) or a click
    position (states differ per position: `log_count` None). `rows` (R,) are the batch rows.
    """

    hidden: torch.Tensor  # (B, N, d)
    rows: torch.Tensor  # (R,) long
    cols: torch.Tensor  # (R,) long
    log_count: torch.Tensor | None = None  # (R,)

    def states(self) -> torch.Tensor:
        """(R, d) hidden state of every unit (one `index_select`; its backward is an `index_add_`)."""
        bsz, n, dim = self.hidden.shape
        return self.hidden.reshape(bsz * n, dim).index_select(0, self.rows * n + self.cols)


def node_units(hidden: torch.Tensor, batch: Batch, offset: int = 0) -> AttentionUnits:
    """The distinct items of every prefix as units, weighted by their number of clicks.

    `hidden` (B, N + offset, d) holds node k of row b at column k + offset (the released TAGNN++
    prepends a padding slot: offset 1). Rows and columns come from the batch's session graphs
    (`Batch.node_rows` / `node_cols`, no host synchronisation) or, for hand-made batches, from
    `nodes != 0`.
    """
    assert batch.nodes is not None and batch.alias is not None
    if batch.node_rows is not None and batch.node_cols is not None:
        rows, cols = batch.node_rows, batch.node_cols
    else:
        rows, cols = (batch.nodes != 0).nonzero(as_tuple=True)
    alias = batch.alias + offset if offset else batch.alias
    counts = hidden.new_zeros(hidden.shape[0], hidden.shape[1]).scatter_add_(1, alias, batch.mask.to(hidden.dtype))
    cols = cols + offset if offset else cols
    log_count = counts.view(-1).index_select(0, rows * hidden.shape[1] + cols).log_()
    return AttentionUnits(hidden, rows, cols, log_count)


def position_units(hidden: torch.Tensor, batch: Batch) -> AttentionUnits:
    """The real click positions of every prefix as units (`hidden` (B, L, d))."""
    if batch.pos_rows is not None and batch.pos_cols is not None:
        rows, cols = batch.pos_rows, batch.pos_cols
    else:
        rows, cols = batch.mask.nonzero(as_tuple=True)
    return AttentionUnits(hidden, rows, cols, None)


def memory_budget(device: torch.device) -> int:
    """Bytes the target attention may use: a fixed budget on CPU, half the free memory on CUDA."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_MEMORY_FRACTION)
    return CPU_MEMORY_BUDGET


def plan_chunks(
    n_units: int, bsz: int, n_items: int, dtype: torch.dtype, device: torch.device, chunk: int, need_grad: bool
) -> tuple[int, bool]:
    """(candidates per chunk, whether to keep the probabilities for the backward pass).

    Keeping them costs 2 R |V| values (R packed units); they are kept when that takes at most half
    the memory budget (`memory_budget`), else the backward pass recomputes each chunk. A chunk's
    work tensors take about (3R + 4B) C values: on CUDA the chunk is as large as the rest of the
    budget allows (fewer kernels), on CPU it is sized to stay in the cache (`CPU_CHUNK_ELEMENTS`).
    """
    esize = torch.empty((), dtype=dtype).element_size()
    budget = memory_budget(device)
    keep_bytes = 2 * n_units * n_items * esize
    keep = need_grad and keep_bytes <= budget // 2
    if chunk <= 0:
        if device.type == "cuda":
            left = budget - (keep_bytes if keep else 0)
            chunk = left // ((3 * n_units + 4 * bsz) * esize)
        else:
            chunk = CPU_CHUNK_ELEMENTS // max(1, 2 * n_units)
    return max(1, min(n_items, int(chunk))), keep


def _attend_chunk(
    qh: torch.Tensor,
    items: torch.Tensor,
    seg: torch.Tensor,
    log_count: torch.Tensor | None,
    pad_log: torch.Tensor | None,
    target: torch.Tensor,
    work: torch.Tensor | None,
    want_delta: bool,
) -> torch.Tensor:
    """One chunk of candidates `items` (C, d) attending over the R packed units.

    `qh` (2R, d) stacks the queries q_r over the values h_r. Adds the target term
    t_bj = sum_r p_rj x_rj into `target` (B, C, zero on entry; may be a view of the output).
    Returns `pd` (2R, C), whose first R rows are the probabilities p_rj and last R rows
    p_rj x_rj, or with `want_delta` the softmax Jacobian factor p_rj (x_rj - t_bj). `work`
    (>= 2RC values) is reused for `pd` when given.
    """
    n_units, n_cand, bsz = seg.shape[0], items.shape[0], target.shape[0]
    if work is not None:
        pd = torch.mm(qh, items.t(), out=work[: 2 * n_units * n_cand].view(2 * n_units, n_cand))
    else:
        pd = qh @ items.t()
    logit, value = pd[:n_units], pd[n_units:]
    if log_count is not None:
        logit.add_(log_count.unsqueeze(1))
    if pad_log is not None:  # the padded positions: one slot of logit log(n_pad) and value 0
        top = pad_log.unsqueeze(1).repeat(1, n_cand)  # a copy: `top` is updated in place
    else:
        top = logit.new_full((bsz, n_cand), float("-inf"))
    top.scatter_reduce_(0, seg.unsqueeze(1).expand(n_units, n_cand), logit, "amax")
    logit.sub_(top.index_select(0, seg)).exp_()
    if pad_log is not None:
        denom = top.neg_().add_(pad_log.unsqueeze(1)).exp_()
    else:
        denom = top.zero_()
    denom.index_add_(0, seg, logit)
    prob = logit.div_(denom.index_select(0, seg))
    value.mul_(prob)
    target.index_add_(0, seg, value)
    if want_delta:
        value.addcmul_(prob, target.index_select(0, seg), value=-1.0)
    return pd


def _packed_forward(
    weight: torch.Tensor,
    session: torch.Tensor,
    qh: torch.Tensor,
    seg: torch.Tensor,
    log_count: torch.Tensor | None,
    pad_log: torch.Tensor | None,
    chunk: int,
    keep: bool,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Scores (B, n_items) and, with `keep`, every chunk's `pd` (see `_attend_chunk`)."""
    n_items, bsz = weight.shape[0], session.shape[0]
    out = weight.new_empty(bsz, n_items)
    out[:, 0] = float("-inf")
    kept: list[torch.Tensor] = []
    work = None if keep else qh.new_empty(qh.shape[0] * min(chunk, max(1, n_items - 1)))
    target = qh.new_empty(bsz, min(chunk, max(1, n_items - 1)))
    for c0 in range(1, n_items, chunk):
        items = weight[c0 : c0 + chunk]
        t = target[:, : items.shape[0]].zero_()  # contiguous: index_add_ into a strided view is slow
        pd = _attend_chunk(qh, items, seg, log_count, pad_log, t, work, keep)
        torch.addmm(t, session, items.t(), out=out[:, c0 : c0 + items.shape[0]])
        if keep:
            kept.append(pd)
    return out, kept


class _PackedTargetScores(torch.autograd.Function):
    """Scores s_b . v_j + sum_r p_rj (v_j . h_r) over packed units, chunked over the items j.

    Forward keeps each chunk's probabilities (and p (x - t)) when `keep`, so the backward pass
    is two matrix products per chunk; otherwise the backward pass recomputes them.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        weight: torch.Tensor,
        session: torch.Tensor,
        qh: torch.Tensor,
        seg: torch.Tensor,
        log_count: torch.Tensor | None,
        pad_log: torch.Tensor | None,
        chunk: int,
        keep: bool,
    ) -> torch.Tensor:
        out, kept = _packed_forward(weight, session, qh, seg, log_count, pad_log, chunk, keep)
        ctx.save_for_backward(weight, session, qh, seg, log_count, pad_log)
        ctx.kept, ctx.chunk = kept, chunk
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        weight, session, qh, seg, log_count, pad_log = ctx.saved_tensors
        need_w, need_s, need_qh = ctx.needs_input_grad[:3]
        n_items, bsz, n_units, chunk = weight.shape[0], session.shape[0], seg.shape[0], ctx.chunk
        # pd rows pair with the values then the queries: d value = p g, d logit = p (x - t) g
        hq = torch.cat([qh[n_units:], qh[:n_units]])
        g_hq = torch.zeros_like(qh) if need_qh else None
        g_w = torch.empty_like(weight) if need_w else None  # rows 1.. are written chunk by chunk
        if g_w is not None:
            g_w[0] = 0
        g_s = grad_out[:, 1:] @ weight[1:] if need_s else None
        work = None if ctx.kept else qh.new_empty(qh.shape[0] * min(chunk, max(1, n_items - 1)))
        for i, c0 in enumerate(range(1, n_items, chunk)):
            items = weight[c0 : c0 + chunk]
            n_cand = items.shape[0]
            if ctx.kept:
                pd = ctx.kept[i]
            else:
                target = qh.new_zeros(bsz, n_cand)
                pd = _attend_chunk(qh, items, seg, log_count, pad_log, target, work, True)
            g = grad_out[:, c0 : c0 + n_cand]
            dd = (pd.view(2, n_units, n_cand) * g.index_select(0, seg).unsqueeze(0)).view(2 * n_units, n_cand)
            if g_hq is not None:
                g_hq.addmm_(dd, items)
            if g_w is not None:
                torch.addmm(g.t() @ session, dd.t(), hq, out=g_w[c0 : c0 + n_cand])
        g_qh = torch.cat([g_hq[n_units:], g_hq[:n_units]]) if g_hq is not None else None
        return g_w, g_s, g_qh, None, None, None, None, None


def packed_target_scores(
    weight: torch.Tensor,
    session: torch.Tensor,
    queries: torch.Tensor,
    values: torch.Tensor,
    rows: torch.Tensor,
    log_count: torch.Tensor | None = None,
    n_pad: torch.Tensor | None = None,
    chunk: int = 0,
) -> torch.Tensor:
    r"""TAGNN scores of every item: :math:`s_b \cdot v_j + \sum_r eta_{rj} (v_j \cdot h_r)`, column 0 -inf.

    :math:`eta_{rj} = \mathrm{softmax}_r(v_j \cdot q_r + \log m_r)` over the units r of row b
    (plus, with `n_pad`, one slot of logit log(n_pad_b) and value 0 standing for the official
    code's padded positions). A unit of multiplicity m_r stands for m_r positions with equal
    hidden states, so this equals TAGNN's softmax over every click position. The (B, |V|, d)
    targets are never built and padded positions cost nothing.

    Args:
        weight: (n_items, d) item embeddings; candidates are rows 1.. (row 0 is padding).
        session: (B, d) session representations s_b.
        queries, values: (R, d) packed units q_r = W_t h_r and h_r.
        rows: (R,) batch row of every unit.
        log_count: (R,) log multiplicity, or None (all 1).
        n_pad: (B,) or None: padded positions in each softmax (official padding).
        chunk: candidates per chunk (0: `plan_chunks`).

    Without gradients (eval mode, `torch.no_grad()`) nothing is kept for a backward pass.
    """
    qh = torch.cat([queries, values])
    pad_log = torch.log(n_pad.to(qh.dtype)) if n_pad is not None else None
    need_grad = torch.is_grad_enabled() and (weight.requires_grad or session.requires_grad or qh.requires_grad)
    chunk, keep = plan_chunks(
        rows.shape[0], session.shape[0], weight.shape[0] - 1, qh.dtype, qh.device, chunk, need_grad
    )
    if not need_grad:
        with torch.no_grad():
            return _packed_forward(weight, session, qh, rows, log_count, pad_log, chunk, False)[0]
    return _PackedTargetScores.apply(weight, session, qh, rows, log_count, pad_log, chunk, keep)


class TargetAttention(nn.Module):
    """TAGNN's target attention: `W_t` (no bias) and the packed scorer over the catalogue.

    `reference = True` (not a hyper-parameter, see `tagnn_reference.reference_mode`) switches
    to the previous implementation over every padded position, for tests and benchmarks.
    """

    def __init__(self, dim: int, chunk: int = 0) -> None:
        super().__init__()
        self.linear_t = nn.Linear(dim, dim, bias=False)
        self.chunk = chunk
        self.reference = False
        self_init(self)

    def reset_parameters(self) -> None:
        """`W_t` with `nn.Linear`'s default."""
        self.linear_t.reset_parameters()


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


def check_padding(mode: str, eval_len_max: str = "fit") -> None:
    """Raise a one-line error for an unknown padding mode or evaluation padding length."""
    if mode not in PADDING_MODES:
        raise SbrError(f"padding must be one of {', '.join(PADDING_MODES)}, got {mode!r}")
    if eval_len_max not in EVAL_LEN_MAX:
        raise SbrError(f"eval_len_max must be one of {', '.join(EVAL_LEN_MAX)}, got {eval_len_max!r}")


def gather_positions(node_hidden: torch.Tensor, alias: torch.Tensor) -> torch.Tensor:
    """(B, L, d) hidden state of every click from (B, N, d) node states and (B, L) node indices."""
    return node_hidden.gather(1, alias.unsqueeze(2).expand(-1, -1, node_hidden.shape[2]))


def target_aware_scores(
    session: torch.Tensor,
    weight: torch.Tensor,
    target: TargetAttention | None,
    units: AttentionUnits,
    seq_hidden: torch.Tensor,
    mask: torch.Tensor,
    n_pad: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, n_items) scores `(s + target_j) . v_j` over items 1.. of `weight`; column 0 is -inf.

    The target term attends over `units` (`packed_target_scores`); with `target.reference` it
    runs the previous implementation over every position of `seq_hidden` (B, L, d) instead.
    """
    if target is not None and not target.reference:
        h = units.states()
        return packed_target_scores(
            weight, session, target.linear_t(h), h, units.rows, units.log_count, n_pad, target.chunk
        )
    items = weight[1:]
    scores = session @ items.t()
    if target is not None:
        from sbrbench.models.tagnn_reference import reference_target_scores

        scores = scores + reference_target_scores(target.linear_t, items, seq_hidden, mask, n_pad, target.chunk)
    return torch.cat([scores.new_full((scores.shape[0], 1), float("-inf")), scores], 1)


# ---- the model ---------------------------------------------------------------------------------------
@dataclass
class TAGNNParams:
    """TAGNN hyper-parameters (defaults: the paper's; the official code's settings otherwise)."""

    dim: int = 100
    step: int = 1
    hybrid: bool = True
    padding: str = "masked"  # masked (paper) or official (softmaxes see padding up to len_max; tagnn-code)
    eval_len_max: str = "fit"  # official padding at evaluation: fit (the fitted len_max) or split (its own)
    chunk: int = 0  # items per target-attention chunk (0: automatic)
    drop: str = ""  # comma-separated components to switch off: gnn, target


class GatedSessionModel(Model):
    """Shared by TAGNN and TAGNN++ as released: embeddings, the gated cell and official padding.

    Subclasses create `embedding` and `gnn` (None when dropped); `prepare()` records `len_max`,
    the longest fitted prefix, for the official padding emulation. With `eval_len_max="split"`
    evaluation pads each split to its own longest prefix, as the official code does
    (`evaluation_split()` records it; paper-compatible runs of the `-code` variants).
    """

    embedding: nn.Embedding
    gnn: GatedGraphCell | None
    len_max: int | None = None
    split_len_max: int | None = None

    def evaluation_split(self, dataset: ProcessedDataset, split: str) -> None:
        """Record the longest prefix of `split` (only its inputs' lengths) for `eval_len_max="split"`."""
        lengths = dataset.split(split).pos
        self.split_len_max = int(lengths.max()) if lengths.size else None

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
        own = not self.training and self.params.eval_len_max == "split" and self.split_len_max is not None
        n_pad = official_pad_counts(batch.lengths, self.split_len_max if own else self.len_max).to(dtype)
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
    prefix instead: `eval_len_max="split"`, on in paper-compatible runs of `tagnn-code`); longer
    prefixes get no padding terms. Without `prepare()` the batch's longest prefix is used.

    Deliberate differences: the target attention runs over each prefix's distinct items weighted
    by their click counts, packed across the batch and chunked over the catalogue (identical
    values, see the module docstring: `packed_target_scores`); the unused
    `linear_edge_f` of the official GNN is not created; padding nodes are not graph nodes; scores
    keep column 0 (-inf) instead of slicing `weight[1:]`; the learning rate decays after each
    epoch (the official `scheduler.step()` at the start of each epoch decays one epoch early
    with PyTorch >= 1.1: `tagnn-code` does that, `lr_schedule="epoch-start"`). Components: `gnn`
    (the gated cell), `target` (the target attention). Paper-compatible runs use the official
    early-stopping rule (`stopping="official"`).
    """

    paper_compatible: ClassVar[dict[str, Any]] = {"stopping": "official"}

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
        check_padding(p.padding, p.eval_len_max)
        off = dropped(p)
        with overwritten_init():  # every parameter is re-initialised below
            self.embedding = nn.Embedding(n_items, p.dim)
            self.gnn = None if "gnn" in off else GatedGraphCell(p.dim, p.step)
            self.readout = TagnnReadout(p.dim, hybrid=p.hybrid)
            self.target = None if "target" in off else TargetAttention(p.dim, p.chunk)
        self.reset_parameters()

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) against the layer-0 item embeddings; column 0 is -inf."""
        hidden = self.node_states(batch)
        seq_hidden = gather_positions(hidden, batch.alias)
        n_pad, pad_hidden = self.padding_terms(batch, seq_hidden.dtype)
        session = self.readout(seq_hidden, batch.mask, batch.lengths, pad_hidden, n_pad)
        units = node_units(hidden, batch)
        return target_aware_scores(
            session, self.embedding.weight, self.target, units, seq_hidden, batch.mask, n_pad
        )


TagnnCode = register_variant(
    "tagnn-code",
    "tagnn",
    padding="official",
    lr_schedule="epoch-start",
    paper_compatible={"stopping": "official", "eval_len_max": "split"},
    doc="""TAGNN as the official code computes it: `tagnn` with `padding="official"`.

    The official code pads every prefix with item 0 up to `len_max`, and both softmaxes (readout
    and target attention) also run over the padded positions; see `TAGNN` for the exact emulation.
    Its scores equal the official code's on the same weights. It calls `scheduler.step()` at the
    start of each epoch, so under PyTorch >= 1.1 the first decay comes after 2 epochs
    (`lr_schedule="epoch-start"`); paper-compatible runs also pad each evaluated split to its own
    longest prefix (`eval_len_max="split"`) and stop as its `main.py` does (`stopping="official"`).
    """,
)
