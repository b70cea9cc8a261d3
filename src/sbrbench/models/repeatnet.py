"""RepeatNet (Ren et al., AAAI 2019), faithful to the official Chainer code.

Follows `PengjieRen/RepeatNet` at commit 0b72f32dc9925033edd95ecfe017f56d92c9125c (`repeat_net.py`,
`base/encoder.py`, `base/decoder.py`, `base/attention.py`, `base/function.py`, `train.py`), read
for this implementation (the repository points to a later PyTorch port; this is the code the
paper's numbers come from):

* encoder: item embeddings (100) and a one-layer GRU (100; Chainer's `NStepGRU`, the same gate
  equations as `nn.GRU`) with dropout 0.5 on its input in training;
* decoder (`AttReDecoder`), with dropout 0.5 on the last state and on every state: three additive
  attentions `e_j = w^T tanh(W_h h_j + W_x h_t)` (no biases, softmax over the clicks):
  `re_att` → repeat/explore mode probabilities `softmax(W_re c_re)` (2 × H, no bias);
  `e_att` → explore scores `W_y [c_e; h_t]` over all items with the session's items set to −inf
  (explore = new items only), softmax; `r_att`'s weights summed per item id (repeat = items of
  the session, a click's weight to its item);
  `P(i) = P(repeat) · P_r(i) + P(explore) · P_e(i)`;
* loss `−Σ log P(target) / B`; Adam lr 1e-3, global gradient-norm clip 5, batch 1024, the
  learning rate halved every 3 epochs (`change_alpha`); Glorot-normal initialisation of every
  matrix (the item table too), biases 0.

Scores are `log P(i)` computed in log space (`log P(repeat) + log P_r(i)` for the session's items,
`log P(explore) + log_softmax_e(i)` for the others), so no probability underflows to −inf.

Deviations: the padding item takes no part in the softmaxes; the official trainer runs until stopped (`training.Trainer` without a stop trigger);
sbrbench trains 30 epochs with its epoch selection; `P_r(i)` is clamped at 1e-30 before the log
(it is > 0 for every session item).

Components (the paper's ablations): `repeat` — drop gives the explore-only attention decoder
(`att_rec.py`'s `AttDecoder`: `W_y [h_t; c]` over every item); `attention` — drop gives
`NoAttReDecoder` (mode probabilities from `h_t`, explore scores `W_y dropout(h_t)`, repeat
weights from a 2H-wide attention).
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


def glorot_normal_(w: torch.Tensor, fan_in: int, fan_out: int) -> None:
    """Chainer's GlorotNormal: N(0, 2 / (fan_in + fan_out))."""
    with torch.no_grad():
        w.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)))


class AdditiveAttention(nn.Module):
    """The official `Attention`: `e_j = w^T tanh(W_h h_j + W_x x)`, masked softmax over j."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.xh = nn.Linear(in_dim, hidden, bias=False)
        self.hh = nn.Linear(in_dim, hidden, bias=False)
        self.hw = nn.Linear(hidden, 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.xh, self.hh, self.hw):
            glorot_normal_(lin.weight, lin.in_features, lin.out_features)

    def weights(self, seq_h: torch.Tensor, last: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        e = self.hw(torch.tanh(self.hh(seq_h) + self.xh(last).unsqueeze(1))).squeeze(2)
        return torch.softmax(e.masked_fill(~mask, float("-inf")), dim=1)

    def forward(self, seq_h: torch.Tensor, last: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.weights(seq_h, last, mask).unsqueeze(2) * seq_h).sum(1)


@dataclass
class RepeatNetParams:
    """RepeatNet hyper-parameters (defaults: the official `train.py`)."""

    emb_dim: int = 100
    hidden: int = 100
    dropout: float = 0.5
    grad_clip: float = 5.0  # global gradient-norm clip (Chainer's GradientClipping); 0 = off
    drop: str = ""  # comma-separated components to switch off: repeat, attention


@register_model("repeatnet")
class RepeatNet(Model):
    """RepeatNet: repeat-explore mechanism; repeats re-weight the session's items by attention."""

    Params: ClassVar[type] = RepeatNetParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 30, "batch_size": 1024, "lr": 1e-3, "lr_dc": 0.5, "lr_dc_step": 3, "l2": 0.0, "patience": 10,
    }
    components: ClassVar[frozenset[str]] = frozenset({"repeat", "attention"})

    def __init__(self, n_items: int, params: RepeatNetParams | None = None) -> None:
        super().__init__(n_items, params)
        p: RepeatNetParams = self.params
        if p.emb_dim < 1 or p.hidden < 1 or not 0 <= p.dropout < 1 or p.grad_clip < 0:
            raise SbrError("repeatnet needs emb_dim, hidden >= 1, 0 <= dropout < 1 and grad_clip >= 0")
        off = dropped(p)
        if {"repeat", "attention"} <= off:
            raise SbrError("repeatnet: drop 'repeat' or 'attention', not both")
        self.use_repeat, self.use_attention = "repeat" not in off, "attention" not in off
        h = p.hidden
        self.embedding = nn.Embedding(n_items, p.emb_dim)
        self.gru = nn.GRU(p.emb_dim, h, batch_first=True)
        if not self.use_repeat:  # AttDecoder (att_rec.py)
            self.att = AdditiveAttention(h, h)
            self.fy = nn.Linear(2 * h, n_items, bias=False)
        elif self.use_attention:  # AttReDecoder
            self.re_att, self.e_att, self.r_att = AdditiveAttention(h, h), AdditiveAttention(h, h), AdditiveAttention(h, h)
            self.re = nn.Linear(h, 2, bias=False)
            self.fy = nn.Linear(2 * h, n_items, bias=False)
        else:  # NoAttReDecoder
            self.re_att = AdditiveAttention(h, 2 * h)
            self.re = nn.Linear(h, 2, bias=False)
            self.fy = nn.Linear(h, n_items, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-normal matrices (item table: fans n_items and emb_dim), biases 0."""
        glorot_normal_(self.embedding.weight, self.params.emb_dim, self.n_items)
        h = self.params.hidden
        for name, w in self.gru.named_parameters():
            if name.startswith("weight"):
                for k in range(3):
                    glorot_normal_(w.data[k * h : (k + 1) * h], w.shape[1], h)
            else:
                with torch.no_grad():
                    w.zero_()
        for m in self.modules():
            if isinstance(m, AdditiveAttention):
                m.reset_parameters()
        for lin in (getattr(self, "re", None), self.fy):
            if lin is not None:
                glorot_normal_(lin.weight, lin.in_features, lin.out_features)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.params.dropout, self.training)

    def forward(self, batch: Batch) -> torch.Tensor:
        """log P(i) for every item (B, n_items); column 0 is -inf."""
        mask, seq = batch.mask, batch.seq
        emb = self._drop(self.embedding(seq))  # NStepGRU's dropout on its input
        packed = nn.utils.rnn.pack_padded_sequence(emb, batch.lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, h_n = self.gru(packed)
        seq_h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=seq.shape[1])
        last = self._drop(h_n[0])
        seq_h = self._drop(seq_h)
        pad = torch.zeros(1, self.n_items, dtype=torch.bool, device=seq.device)
        pad[0, 0] = True  # the padding item takes no part in any softmax
        if not self.use_repeat:
            logits = self.fy(torch.cat([last, self.att(seq_h, last, mask)], 1))
            return F.log_softmax(logits.masked_fill(pad, float("-inf")), dim=1)
        in_session = torch.zeros(seq.shape[0], self.n_items, dtype=torch.bool, device=seq.device)
        in_session.scatter_(1, seq, mask)
        if self.use_attention:
            mode = F.log_softmax(self.re(self.re_att(seq_h, last, mask)), dim=1)
            explore = self.fy(torch.cat([self.e_att(seq_h, last, mask), last], 1))
            rep_w = self.r_att.weights(seq_h, last, mask)
        else:
            mode = F.log_softmax(self.re(last), dim=1)
            explore = self.fy(self._drop(last))
            rep_w = self.re_att.weights(seq_h, last, mask)
        log_explore = F.log_softmax(explore.masked_fill(in_session | pad, float("-inf")), dim=1)
        repeat = torch.zeros(seq.shape[0], self.n_items, dtype=rep_w.dtype, device=seq.device)
        repeat.scatter_add_(1, seq, rep_w * mask)
        scores = torch.where(in_session, mode[:, 1:2] + torch.log(repeat.clamp(min=1e-30)),
                             mode[:, 0:1] + log_explore)
        return scores.masked_fill(pad, float("-inf"))

    def training_loss(self, batch: Batch) -> torch.Tensor:
        """`−Σ log P(target) / B` (the official loss)."""
        return -self(batch).gather(1, batch.targets.unsqueeze(1)).mean()

    def clip_gradients(self) -> None:
        """Chainer's GradientClipping(5): all gradients scaled by min(1, 5 / global norm)."""
        clip = self.params.grad_clip
        if clip <= 0:
            return
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = torch.clamp(clip / norm, max=1.0)
        for g in grads:
            g.mul_(scale)
