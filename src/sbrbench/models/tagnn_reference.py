"""The previous TAGNN target attention, kept as the reference for tests and benchmarks.

`target_attention_scores` is the padded, chunked form that `tagnn.py` used before the packed
implementation: every (row, position) pair of the batch's longest prefix, real or not, takes part
(B x L_max x |V| x d work), and the backward pass recomputes each chunk's probabilities.
`target_attention_scores_naive` materialises B x |V| x L and is the plain statement of the maths.
A model computes its scores with these when its `TargetAttention.reference` is set (see
`reference_mode`). Nothing here is used by training or evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Elements of one chunk's (B, L, C) work tensors when the chunk size is automatic (32 MiB in fp32).
CHUNK_ELEMENTS = 1 << 23


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


def reference_target_scores(
    linear_t: nn.Linear, items: torch.Tensor, seq_hidden: torch.Tensor, mask: torch.Tensor,
    n_pad: torch.Tensor | None = None, chunk: int = 0,
) -> torch.Tensor:
    """The previous `TargetAttention.forward`: (B, J) target term over every padded position."""
    h = seq_hidden * mask.unsqueeze(2).to(seq_hidden.dtype)
    return target_attention_scores(items, linear_t(h), h, mask, n_pad, chunk)


@contextmanager
def reference_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, `model` (tagnn, tagnnpp, tagnnpp-released) scores with the previous implementation."""
    targets = [m for m in model.modules() if hasattr(m, "reference") and hasattr(m, "linear_t")]
    old = [m.reference for m in targets]
    try:
        for m in targets:
            m.reference = True
        yield model
    finally:
        for m, o in zip(targets, old):
            m.reference = o
