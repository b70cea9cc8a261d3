r"""Building blocks of the user-sequence models (ComiRec-SA, MCLSR, SASRec, CL4SRec, DuoRec).

* `last_window`: each prefix cut to its last L items, left-aligned (a model's history length).
* `LogUniformSampler` and `sampled_softmax_loss`: ComiRec's training objective, TensorFlow's
  `tf.nn.sampled_softmax_loss` with its default `log_uniform_candidate_sampler` as ComiRec calls
  it: one set of `n` distinct classes shared by the batch, drawn from the Zipfian distribution

  .. math:: P(c) = \frac{\log(c + 2) - \log(c + 1)}{\log(R + 1)},\quad c = 0, \dots, R - 1

  over popularity ranks c (ComiRec's item ids are ranks: 0 = padding, 1 = the most popular item),
  drawn until `n` distinct classes are found; logits have log(expected count) subtracted (logQ
  correction; for a class with probability p after T draws the expected count is
  1 - (1 - p)^T, or n·p when no draw repeated); a sampled class equal to a row's target is
  removed from that row (accidental hit). sbrbench ranks items by their count in the *fitted*
  sequences, so held-out users never shape the distribution.
* `SelfAttentiveExtractor`: ComiRec-SA's multi-interest extractor, K attention heads
  softmax(W2 tanh(W1 (E + P)ᵀ)) over the history, each reading the raw item embeddings E.
* `RecBoleTransformer` and `RecBoleSequenceModel`: the SASRec-style encoder of RecBole (post-LN
  Transformer, GELU, LayerNorm eps 1e-12, N(0, 0.02) init) on which CL4SRec and DuoRec are built.
* `nt_xent`: the in-batch NT-Xent of CL4SRec and DuoRec (2B views, 2B - 2 negatives per anchor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sbrbench.errors import SbrError
from sbrbench.models.base import Model

if TYPE_CHECKING:
    from sbrbench.batching import Batch
    from sbrbench.data.dataset import ProcessedDataset


# ---- histories ---------------------------------------------------------------------------------------
def last_window(seq: torch.Tensor, lengths: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The last `max_len` items of each left-aligned, 0-padded prefix, left-aligned again.

    Returns (seq (B, W), mask (B, W) bool, lengths (B,)), W = min(max_len, seq width); no host sync.
    """
    width = min(int(max_len), int(seq.shape[1]))
    lens = lengths.clamp(max=width)
    shift = (lengths - lens).unsqueeze(1)
    pos = torch.arange(width, device=seq.device).unsqueeze(0)
    idx = (shift + pos).clamp(max=max(int(seq.shape[1]) - 1, 0))
    mask = pos < lens.unsqueeze(1)
    return seq.gather(1, idx) * mask, mask, lens


def fitted_item_counts(dataset: ProcessedDataset, splits: tuple[str, ...], n_items: int) -> np.ndarray:
    """How often each item occurs in the fitted sequences of `splits` (never held-out items)."""
    fit = dataset.fit_sessions(splits)
    return np.bincount(fit.items, minlength=n_items)[:n_items].astype(np.int64)


# ---- ComiRec's sampled softmax -------------------------------------------------------------------------
class LogUniformSampler(nn.Module):
    """TensorFlow's log-uniform (Zipfian) candidate sampler over popularity ranks (see module doc).

    `rank_item[c]` is the item id of rank c: rank 0 is the padding id 0 (ComiRec's class 0), ranks
    1.. the items by decreasing count in the fitted sequences, ties (and unseen items) by id.
    Buffers are non-persistent: `set_counts` rebuilds them from the fitted data in `prepare`.
    """

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.n_items = int(n_items)
        self.log_range = math.log(self.n_items + 1.0)
        c = torch.arange(self.n_items, dtype=torch.float64)
        self.register_buffer("prob", ((torch.log(c + 2.0) - torch.log(c + 1.0)) / self.log_range).float(),
                             persistent=False)  # P(rank c)
        self.register_buffer("rank_item", torch.arange(self.n_items), persistent=False)
        self.register_buffer("item_rank", torch.arange(self.n_items), persistent=False)

    def set_counts(self, counts: np.ndarray) -> None:
        """Rank the items by `counts` (descending; ties by id); the padding id keeps rank 0."""
        counts = np.asarray(counts, dtype=np.int64)[: self.n_items].copy()
        ids = np.arange(1, self.n_items)
        order = ids[np.lexsort((ids, -counts[1:]))]
        rank_item = np.concatenate([[0], order]).astype(np.int64)
        item_rank = np.empty_like(rank_item)
        item_rank[rank_item] = np.arange(self.n_items)
        self.rank_item = torch.from_numpy(rank_item).to(self.rank_item.device)
        self.item_rank = torch.from_numpy(item_rank).to(self.item_rank.device)

    def draw(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` ranks drawn with replacement (CPU, int64), as TF: floor(exp(u · log(R + 1))) - 1."""
        u = torch.rand(n, dtype=torch.float64, generator=generator)
        return (torch.exp(u * self.log_range).floor().long() - 1).clamp_(0, self.n_items - 1)

    def sample_unique(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        """`n` distinct ranks in order of first draw, and the number of draws it took (CPU).

        With `n` >= the number of classes every class is returned (draws = n: the caller then uses
        a full softmax)."""
        if n >= self.n_items:
            return torch.arange(self.n_items), -1
        drawn = torch.zeros(0, dtype=torch.long)
        chunk = max(2 * n, 256)
        while True:
            drawn = torch.cat([drawn, self.draw(chunk, generator)])
            first = _first_occurrence(drawn)
            found = torch.cumsum(first.long(), 0)
            if int(found[-1]) >= n:
                last = int(torch.searchsorted(found, torch.tensor(n)))  # index of the n-th distinct draw
                return drawn[: last + 1][first[: last + 1]], last + 1
            chunk *= 2

    def expected_count(self, ranks: torch.Tensor, n: int, tries: int) -> torch.Tensor:
        """TF's expected count of each rank in a unique sample of `n` classes that took `tries`
        draws: n·p when no draw repeated, else 1 - (1 - p)^tries (1 for a full softmax)."""
        p = self.prob[ranks].double()
        if tries < 0:
            return torch.ones_like(p)
        if tries == n:
            return p * n
        return -torch.expm1(tries * torch.log1p(-p))


def _first_occurrence(x: torch.Tensor) -> torch.Tensor:
    """True where x[i] does not occur in x[:i]."""
    srt, order = torch.sort(x, stable=True)
    first_sorted = torch.ones_like(srt, dtype=torch.bool)
    first_sorted[1:] = srt[1:] != srt[:-1]
    out = torch.empty_like(first_sorted)
    out[order] = first_sorted
    return out


def sampled_softmax_loss(user: torch.Tensor, item_table: torch.Tensor, targets: torch.Tensor,
                         sampler: LogUniformSampler, n_sampled: int, *,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean sampled-softmax cross-entropy of `user` (B, d) against the rows `targets` (B,) of
    `item_table` (n_items, d), with `n_sampled` shared log-uniform negatives, logQ correction and
    accidental hits removed (TF `sampled_softmax_loss`, zero bias, as ComiRec)."""
    ranks, tries = sampler.sample_unique(int(n_sampled), generator)
    ranks = ranks.to(user.device)
    n = int(ranks.shape[0])
    neg = sampler.rank_item[ranks]
    log_q_neg = torch.log(sampler.expected_count(ranks, n, tries)).to(user.dtype)
    log_q_true = torch.log(sampler.expected_count(sampler.item_rank[targets], n, tries)).to(user.dtype)
    true_logit = (user * item_table[targets]).sum(-1) - log_q_true
    neg_logits = user @ item_table[neg].t() - log_q_neg
    neg_logits = neg_logits.masked_fill(neg.unsqueeze(0) == targets.unsqueeze(1), torch.finfo(user.dtype).min)
    logits = torch.cat([true_logit.unsqueeze(1), neg_logits], dim=1)
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=user.device))


# ---- ComiRec-SA ------------------------------------------------------------------------------------------
class SelfAttentiveExtractor(nn.Module):
    """ComiRec-SA's interests: A = softmax_L(W2 tanh(W1 (E + P)ᵀ)) (K rows), interests = A E.

    W1: Linear(d, 4·hidden) with tanh and a bias (`tf.layers.dense`), W2: Linear(4·hidden, K);
    W2's bias in ComiRec adds one constant per head to every position of that head's softmax, which
    changes nothing (and gets no gradient), so it is left out. Padded positions are masked out of
    the softmax; the weighted sum reads the raw item embeddings (without positions). Returns (B, K, d).
    """

    def __init__(self, dim: int, hidden: int, heads: int, bias: bool = True) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, 4 * hidden, bias=bias)
        self.w2 = nn.Linear(4 * hidden, heads, bias=False)

    def forward(self, with_pos: torch.Tensor, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.w2(torch.tanh(self.w1(with_pos))).transpose(1, 2)  # (B, K, L)
        logits = logits.masked_fill(~mask.unsqueeze(1), float("-inf"))
        return torch.softmax(logits, dim=-1) @ items


def glorot_(module: nn.Module) -> None:
    """TensorFlow's defaults as ComiRec gets them: Glorot-uniform weights, zero biases."""
    for name, p in module.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(p)
        else:
            nn.init.xavier_uniform_(p.view(-1, p.shape[-1]) if p.dim() > 2 else p)


# ---- contrastive objectives -----------------------------------------------------------------------------
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float, sim: str = "dot") -> torch.Tensor:
    """CL4SRec / DuoRec InfoNCE: the 2B views z = [z1; z2], each anchor's positive is its other
    view, its negatives the 2B - 2 other views; similarity `dot` or `cos`, over `tau`. Mean CE."""
    b = z1.shape[0]
    z = torch.cat([z1, z2], dim=0)
    if sim == "cos":
        z = F.normalize(z, dim=-1)
    s = (z @ z.t()) / tau
    s = s.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    labels = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(s, labels)


def cross_view_nce(anchor: torch.Tensor, positive: torch.Tensor, tau: float, sim: str = "cos",
                   symmetric: bool = False) -> torch.Tensor:
    r"""MCLSR's eqs. (8) and (11), averaged over anchors:

    .. math:: \ell_i = -\log \frac{\Psi(a_i, p_i)}{\sum_j \Psi(a_i, p_j) + \sum_{j \ne i} \Psi(a_i, a_j)}

    with Ψ(x, y) = exp(sim(x, y) / τ): the cross-view sum includes the positive, the intra-view sum
    excludes the anchor itself. `symmetric` averages it with the positive view as anchor (CTLab's
    NT-Xent form)."""
    def one(a: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if sim == "cos":
            a, p = F.normalize(a, dim=-1), F.normalize(p, dim=-1)
        cross = a @ p.t() / tau
        intra = (a @ a.t() / tau).masked_fill(torch.eye(a.shape[0], dtype=torch.bool, device=a.device), float("-inf"))
        logits = torch.cat([cross, intra], dim=1)
        return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))

    if anchor.shape[0] == 0:
        return anchor.sum() * 0.0
    loss = one(anchor, positive)
    return 0.5 * (loss + one(positive, anchor)) if symmetric else loss


def projection_head(dim: int, act: str) -> nn.Sequential:
    """MCLSR's projection heads: Linear(d, d) → σ → Linear(d, d)."""
    acts = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
    if act not in acts:
        raise SbrError(f"unknown head activation {act!r}; choose from {', '.join(acts)}")
    return nn.Sequential(nn.Linear(dim, dim), acts[act](), nn.Linear(dim, dim))


# ---- RecBole's SASRec encoder (CL4SRec, DuoRec) ----------------------------------------------------------
class _RecBoleLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int, hidden_dropout: float, attn_dropout: float,
                 eps: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.q, self.k, self.v = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=eps)
        self.drop1 = nn.Dropout(hidden_dropout)
        self.ff1, self.ff2 = nn.Linear(hidden, inner), nn.Linear(inner, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=eps)
        self.drop2 = nn.Dropout(hidden_dropout)

    def forward(self, x: torch.Tensor, add_mask: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)

        scores = split(self.q(x)) @ split(self.k(x)).transpose(-1, -2) / math.sqrt(self.head_dim) + add_mask
        ctx = (self.attn_dropout(torch.softmax(scores, dim=-1)) @ split(self.v(x))).transpose(1, 2).reshape(b, n, h)
        x = self.ln1(self.drop1(self.dense(ctx)) + x)
        return self.ln2(self.drop2(self.ff2(F.gelu(self.ff1(x)))) + x)


class RecBoleTransformer(nn.Module):
    """RecBole's `TransformerEncoder` as SASRec / CL4SRec / DuoRec use it: `layers` post-LN blocks
    (multi-head self-attention, then a GELU feed-forward of width `inner`, each with dropout, a
    residual and LayerNorm), causal attention over the left-aligned prefix (additive -10000 mask,
    as RecBole)."""

    def __init__(self, hidden: int, layers: int, heads: int, inner: int, hidden_dropout: float,
                 attn_dropout: float, eps: float = 1e-12) -> None:
        super().__init__()
        if hidden % heads:
            raise SbrError(f"hidden size {hidden} is not a multiple of the number of heads {heads}")
        self.layers = nn.ModuleList(_RecBoleLayer(hidden, heads, inner, hidden_dropout, attn_dropout, eps)
                                    for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        allowed = mask.unsqueeze(1).unsqueeze(2) & causal  # (B, 1, n, n)
        add_mask = (~allowed).to(x.dtype) * -10000.0
        for layer in self.layers:
            x = layer(x, add_mask)
        return x


@dataclass
class RecBoleParams:
    """RecBole's SASRec-family defaults (CL4SRec, DuoRec): hidden 64, 2 layers, 2 heads, inner 256,
    dropout 0.5 / 0.5, LayerNorm eps 1e-12, N(0, 0.02) init, max length 50."""

    dim: int = 64
    layers: int = 2
    heads: int = 2
    inner: int = 256
    hidden_dropout: float = 0.5
    attn_dropout: float = 0.5
    max_len: int = 50
    init_std: float = 0.02


class RecBoleSequenceModel(Model):
    """Item embedding + learned positions → LayerNorm → dropout → `RecBoleTransformer`; the output
    at the last real position scores every item by dot product (CE over the whole catalogue).

    `extra_tokens` adds rows to the item table after the catalogue (CL4SRec's mask token)."""

    extra_tokens: int = 0

    def __init__(self, n_items: int, params: Any = None) -> None:
        super().__init__(n_items, params)
        p = self.params
        for key in ("layers", "inner", "max_len"):
            if getattr(p, key) < 1:
                raise SbrError(f"{self.name} hyper-parameter {key!r} must be >= 1, got {getattr(p, key)}")
        for key in ("hidden_dropout", "attn_dropout"):
            if not 0.0 <= getattr(p, key) < 1.0:
                raise SbrError(f"{self.name} hyper-parameter {key!r} must be in [0, 1), got {getattr(p, key)}")
        self.item_embedding = nn.Embedding(n_items + self.extra_tokens, p.dim, padding_idx=0)
        self.position_embedding = nn.Embedding(p.max_len, p.dim)
        self.layer_norm = nn.LayerNorm(p.dim, eps=1e-12)
        self.dropout = nn.Dropout(p.hidden_dropout)
        self.encoder = RecBoleTransformer(p.dim, p.layers, p.heads, p.inner, p.hidden_dropout, p.attn_dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """RecBole's `_init_weights`: Linear and Embedding weights N(0, init_std), zero biases,
        LayerNorm (1, 0); the padding row stays 0."""
        std = self.params.init_std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def encode(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, d): the encoder's output at each prefix's last real position (last `max_len` items)."""
        seq, mask, lens = last_window(seq, lengths, self.params.max_len)
        pos = torch.arange(seq.shape[1], device=seq.device)
        x = self.dropout(self.layer_norm(self.item_embedding(seq) + self.position_embedding(pos).unsqueeze(0)))
        out = self.encoder(x, mask)
        return out.gather(1, (lens - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.shape[-1])).squeeze(1)

    def scores_of(self, user: torch.Tensor) -> torch.Tensor:
        scores = user @ self.item_embedding.weight[: self.n_items].t()
        scores[:, 0] = float("-inf")
        return scores

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) of the encoded prefixes; column 0 (padding) is -inf."""
        return self.scores_of(self.encode(batch.seq, batch.lengths))
