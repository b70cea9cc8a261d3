"""A from-scratch re-statement of the released MACL forward pass (Zhang-xiaokun/MACL b9f58f5:
`SemanticContrast.forward`, `perform` and the loss of `train_test`; `modelSingle.py` for the
text-only structure), in evaluation mode (no dropout), written step by step from
models-next.md §2.4 in the release's own shape conventions: N-row tables with a zero row
prepended at lookup, every query of the attention computed and the last real row picked by the
position trick, per-session Python loops for the lookups, all six (three) projections computed
for every row and selected with view masks, session negatives broadcast from the batch.

`macl-code` must give the same scores and the same loss on the same weights and random draws.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _lin(x: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return x @ wb[0].t() + wb[1]


def _seq_encoder(w: dict, seq_h: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    bsz, seqlen, d = seq_h.shape
    hd = d // heads

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(bsz, seqlen, heads, hd).permute(0, 2, 1, 3)

    q, k, v = split(_lin(seq_h, w["query"])), split(_lin(seq_h, w["key"])), split(_lin(seq_h, w["value"]))
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    scores = scores + (1.0 - mask.float())[:, None, None, :] * -10000.0
    ctx = (torch.softmax(scores, dim=-1) @ v).permute(0, 2, 1, 3).reshape(bsz, seqlen, d)
    item_pos = torch.arange(1, seqlen + 1, dtype=torch.float32).unsqueeze(0) * mask.float()
    last = (item_pos - item_pos.max(1, keepdim=True).values) >= 0
    return (ctx * last.unsqueeze(2).float()).sum(1)


def _lookup(table: torch.Tensor, session_item: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(session_item.shape[0], session_item.shape[1], table.shape[1])
    for i in range(session_item.shape[0]):
        out[i] = table[session_item[i]]
    return out


def _cos(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    return (a * b).sum(dim) / (a.norm(2, dim) * b.norm(2, dim) + 1e-12)


def _adaptive(w: tuple, x: torch.Tensor) -> torch.Tensor:
    for layer in w:
        x = torch.tanh(_lin(x, layer))
    return torch.softmax(x.squeeze(-1), 0)


def released_forward(w: dict, session_item: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                     item_views: torch.Tensor, neg_index: torch.Tensor, sess_views: torch.Tensor, *,
                     image: bool, heads: int, alpha: float, beta: float, tau: float = 1.0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores (B, N) over items 1..N, total loss) of the released model on `w`'s weights.

    `w`: id_emb (N, d); views: list of (N, d) tables (image ori, noise, crop, then text ori, swap,
    sub; text only: the three text tables); merger: two (W, b); gates: [(w11, w12), (w21, w22)]
    (text only: [(w1, w2)]); query/key/value; item_mlp / sess_mlp: lists of (W, b);
    adp_item / adp_sess: three (W, b). Labels are 1-based item ids, as in the pickles.
    """
    views = w["views"]
    n, d = w["id_emb"].shape
    n_views = len(views)
    # fusion_img_text_gate (model.py) / the text-only gate (modelSingle.py)
    originals = [views[0], views[3]] if image else [views[0]]
    merged = torch.cat([w["id_emb"], *originals], 1)
    for layer in w["merger"]:
        merged = torch.tanh(_lin(merged, layer))
    item_final = w["id_emb"].clone()
    for (wm, wf), f in zip(w["gates"], originals):
        item_final = item_final + torch.tanh(_lin(merged, wm) + _lin(f, wf)) * f

    # item_contrastive + item_contrast_loss_random
    zeros = torch.zeros(1, d)
    tables = [torch.cat([zeros, v], 0) for v in views]

    def iproj(k: int, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(_lin(x, w["item_mlp"][k]))

    pos = torch.zeros(n, d)
    for k in range(n_views):
        pos = pos + (item_views == k).float().unsqueeze(1) * iproj(k + 1, views[k])
    negs = torch.zeros(n, neg_index.shape[1], d)
    for k in range(n_views):
        neg_k = iproj(k if not image else k + 1, tables[k][neg_index])  # modelSingle: projector k
        negs = negs + (item_views == k).float()[:, None, None] * neg_k
    anchor = iproj(0, item_final)
    lam = _adaptive(w["adp_item"], torch.cat([anchor, pos, negs.sum(1) / neg_index.shape[1]], -1))
    pos_score = (lam * torch.log10(torch.exp(_cos(anchor, pos, 1) / tau))).sum()
    neg_score = torch.log10(torch.exp(_cos(anchor.unsqueeze(1).expand_as(negs), negs, 2) / tau).sum(1)).sum()
    item_loss = neg_score - pos_score

    # generate_sess_emb
    sess = _seq_encoder(w, _lookup(torch.cat([zeros, item_final], 0), session_item), mask, heads)
    aug = [_seq_encoder(w, _lookup(t, session_item), mask, heads) for t in tables]

    # sess_contrastive + sess_contrast_loss_random
    bsz = session_item.shape[0]

    def sproj(k: int, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(_lin(x, w["sess_mlp"][k]))

    s_anchor = sproj(0, sess)
    cands = [sproj(k + 1, a) for k, a in enumerate(aug)]
    s_pos = torch.zeros(bsz, d)
    s_negs = torch.zeros(bsz, bsz, d)
    for k in range(n_views):
        sel = (sess_views == k).float()
        s_pos = s_pos + sel.unsqueeze(1) * cands[k]
        s_negs = s_negs + sel[:, None, None] * cands[k].unsqueeze(0).expand(bsz, bsz, d)
    lam = _adaptive(w["adp_sess"], torch.cat([s_anchor, s_pos, s_negs.sum(1) / bsz], -1))
    pos_score = (lam * torch.log10(torch.exp(_cos(s_anchor, s_pos, 1) / tau))).sum()
    neg_score = torch.log10(torch.exp(_cos(s_anchor.unsqueeze(1).expand_as(s_negs), s_negs, 2) / tau).sum(1)).sum()
    sess_loss = neg_score - pos_score

    scores = sess @ item_final.t()
    loss = F.cross_entropy(scores + 1e-8, labels - 1) + alpha * item_loss + beta * sess_loss
    return scores, loss
