"""SASRec (Kang & McAuley, ICDM 2018): self-attentive sequential recommendation.

The architecture of the paper and its code (kang205/SASRec `model.py`; pmixer/SASRec.pytorch):
item embeddings scaled by √d plus learned positions, dropout, padding zeroed; `blocks` blocks of
causal multi-head self-attention with queries LayerNorm(x) and keys / values x, residual to the
normalised queries, then LayerNorm and a point-wise feed-forward (two width-d layers, ReLU,
dropout) with a residual, padding re-zeroed; a final LayerNorm. Positions count from the end of
the window as in the code, whose sequences are left-padded to `max_len`: the most recent item is
always position `max_len` - 1. The user vector is the output at the last item; scores are its dot
products with the (unscaled) item embeddings. Adam with β2 = 0.98.

Training objective (`loss`): `ce` (default) — full-catalogue cross-entropy of the last position,
as RecBole trains SASRec (under the `comirec` protocol each step's random cut plays the part of
RecBole's prefix augmentation); `bce` — the paper's: every position predicts its next item against
one uniform negative (resampled once if it falls in the row's visible sequence), binary
cross-entropy averaged over real positions; `sampled` — ComiRec's sampled softmax of the last
position. Defaults are the paper's for the sparse Amazon sets: d 50, 2 blocks, 1 head, dropout
0.5, maxlen 50, batch 128, lr 1e-3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sbrbench.batching import Batch
from sbrbench.data.dataset import ProcessedDataset
from sbrbench.errors import SbrError
from sbrbench.models.base import Model, register_model
from sbrbench.models.seqrec import LogUniformSampler, last_window, sampled_softmax_loss

LOSSES = ("ce", "bce", "sampled")


@dataclass
class SASRecParams:
    """SASRec hyper-parameters (the paper's defaults for Amazon)."""

    dim: int = 50
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.5
    max_len: int = 50
    loss: str = "ce"  # ce | bce (paper) | sampled (ComiRec's sampled softmax)
    neg_ratio: int = 10  # loss=sampled: shared negatives per example


class _FeedForward(nn.Module):
    """Two width-d position-wise layers (the code's 1×1 convolutions) with ReLU and dropout, plus
    the residual to its input."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop2(self.fc2(F.relu(self.drop1(self.fc1(x)))))


@register_model("sasrec")
class SASRec(Model):
    """SASRec (ICDM 2018): causal self-attention blocks over the sequence; CE of the last position by default."""

    Params: ClassVar[type] = SASRecParams
    train_defaults: ClassVar[dict[str, Any]] = {"epochs": 200, "batch_size": 128, "lr": 1e-3, "lr_dc": 1.0,
                                                "l2": 0.0, "patience": 10, "eval_batch_size": 1000}

    def __init__(self, n_items: int, params: SASRecParams | None = None) -> None:
        super().__init__(n_items, params)
        p: SASRecParams = self.params
        if p.loss not in LOSSES:
            raise SbrError(f"sasrec hyper-parameter 'loss' must be one of {', '.join(LOSSES)}, got {p.loss!r}")
        if p.blocks < 1 or p.max_len < 1 or p.neg_ratio < 1:
            raise SbrError("sasrec hyper-parameters blocks, max_len and neg_ratio must be >= 1")
        if p.dim % p.heads:
            raise SbrError(f"sasrec: dim {p.dim} must be a multiple of heads {p.heads}")
        if not 0.0 <= p.dropout < 1.0:
            raise SbrError(f"sasrec hyper-parameter 'dropout' must be in [0, 1), got {p.dropout}")
        d = p.dim
        self.item_emb = nn.Embedding(n_items, d, padding_idx=0)
        self.pos_emb = nn.Embedding(p.max_len, d)
        self.emb_drop = nn.Dropout(p.dropout)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(p.blocks))
        self.attns = nn.ModuleList(nn.MultiheadAttention(d, p.heads, dropout=p.dropout, batch_first=True)
                                   for _ in range(p.blocks))
        self.ff_norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(p.blocks))
        self.ffs = nn.ModuleList(_FeedForward(d, p.dropout) for _ in range(p.blocks))
        self.last_norm = nn.LayerNorm(d, eps=1e-8)
        self.sampler = LogUniformSampler(n_items) if p.loss == "sampled" else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """pmixer/SASRec.pytorch: Xavier-normal on every weight matrix (LayerNorms and biases keep
        PyTorch's defaults); the padding row stays 0."""
        for m in self.modules():
            if isinstance(m, (nn.LayerNorm, nn.Linear)):
                m.reset_parameters()
            elif isinstance(m, nn.MultiheadAttention):
                m._reset_parameters()
        for name, prm in self.named_parameters():
            if prm.dim() >= 2:
                nn.init.xavier_normal_(prm)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def configure_optimizer(self, lr: float, l2: float) -> torch.optim.Optimizer:
        """Adam with β2 = 0.98 (the paper's), L2 as weight decay (0 by default)."""
        return torch.optim.Adam(self.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=l2)

    def prepare(self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Path | None = None) -> None:
        """`loss=sampled`: the sampler's popularity ranks from the fitted sequences."""
        if self.sampler is not None:
            self.sampler.set_counts(np.bincount(dataset.fit_sessions(splits).items, minlength=self.n_items))

    def encode_all(self, seq: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Outputs (B, W, d) at every position of the last `max_len` items, with (seq, mask, lens)."""
        p: SASRecParams = self.params
        seq, mask, lens = last_window(seq, lengths, p.max_len)
        w = seq.shape[1]
        pos = (p.max_len - lens.unsqueeze(1) + torch.arange(w, device=seq.device).unsqueeze(0)).clamp(0, p.max_len - 1)
        x = self.item_emb(seq) * math.sqrt(p.dim) + self.pos_emb(pos)
        keep = mask.unsqueeze(-1).to(x.dtype)
        x = self.emb_drop(x) * keep
        causal = torch.ones(w, w, dtype=torch.bool, device=seq.device).triu(1)  # True = not allowed
        for norm, attn, ff_norm, ff in zip(self.attn_norms, self.attns, self.ff_norms, self.ffs):
            q = norm(x)
            out, _ = attn(q, x, x, attn_mask=causal, need_weights=False)
            x = ff(ff_norm(q + out)) * keep
        return self.last_norm(x), seq, mask, lens

    def encode(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _, _, lens = self.encode_all(seq, lengths)
        return out.gather(1, (lens - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.shape[-1])).squeeze(1)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) of the last position; column 0 (padding) is -inf."""
        scores = self.encode(batch.seq, batch.lengths) @ self.item_emb.weight.t()
        scores[:, 0] = float("-inf")
        return scores

    def training_loss(self, batch: Batch) -> torch.Tensor:
        p: SASRecParams = self.params
        if batch.targets.dim() != 1:
            raise SbrError("sasrec trains on one target per example")
        if p.loss == "ce":
            return F.cross_entropy(self(batch), batch.targets)
        if p.loss == "sampled":
            assert self.sampler is not None
            return sampled_softmax_loss(self.encode(batch.seq, batch.lengths), self.item_emb.weight, batch.targets,
                                        self.sampler, p.neg_ratio * len(batch))
        out, seq, mask, lens = self.encode_all(batch.seq, batch.lengths)
        # every position t predicts item t+1 of the window, the last real one the example's target
        pos_items = torch.cat([seq[:, 1:], torch.zeros_like(seq[:, :1])], dim=1)
        last = (lens - 1).clamp(min=0).unsqueeze(1)
        pos_items = pos_items.scatter(1, last, batch.targets.unsqueeze(1)) * mask
        neg = torch.randint(1, self.n_items, pos_items.shape, device=seq.device)
        visible = torch.cat([seq, batch.targets.unsqueeze(1)], dim=1)
        clash = (neg.unsqueeze(-1) == visible.unsqueeze(1)).any(-1)
        neg = torch.where(clash, torch.randint(1, self.n_items, pos_items.shape, device=seq.device), neg)
        pos_logit = (out * self.item_emb(pos_items)).sum(-1)
        neg_logit = (out * self.item_emb(neg)).sum(-1)
        m = mask.to(out.dtype)
        loss = (F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit), reduction="none")
                + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit), reduction="none"))
        return (loss * m).sum() / m.sum().clamp(min=1.0)
