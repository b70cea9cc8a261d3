"""ComiRec-SA (Cen et al., KDD 2020): the self-attentive multi-interest extractor of THUDM/ComiRec.

As `Model_ComiRec_SA` in ComiRec's `src/model.py`: item embeddings (d 64) of the last `max_len`
history items, masked; learned absolute positions added for the attention only; K = `interests`
attention heads softmax(W2 tanh(W1 (E + P)ᵀ)) (W1: d → 4·hidden with tanh, W2: 4·hidden → K,
both with biases), each interest = its attention over the raw embeddings. Training: the interest
whose dot product with the target's embedding is largest (hard readout, `argmax`) enters ComiRec's
sampled softmax (`neg_ratio`·B shared log-uniform negatives over popularity ranks, logQ, accidental
hits removed: `sbrbench.models.seqrec.sampled_softmax_loss`). Inference: ComiRec retrieves the top
N of each interest and merges the lists by score, which ranks items by their best interest:
score(v) = max_k (interest_k · h_v), the padding id excluded. Initialisation: TensorFlow's
defaults (Glorot-uniform weights, zero biases). `interests=1` is the "current interest" encoder of
MCLSR.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from sbrbench.batching import Batch
from sbrbench.data.dataset import ProcessedDataset
from sbrbench.errors import SbrError
from sbrbench.models.base import Model, register_model
from sbrbench.models.seqrec import (
    LogUniformSampler,
    SelfAttentiveExtractor,
    glorot_,
    last_window,
    sampled_softmax_loss,
)


@dataclass
class ComiRecSAParams:
    """ComiRec's defaults (`train.py`): embedding 64, hidden 64, 4 interests, Book's maxlen 20,
    10 negatives per example."""

    dim: int = 64
    hidden: int = 64
    interests: int = 4
    max_len: int = 20
    add_pos: bool = True
    neg_ratio: int = 10
    negatives: str = "log-uniform"  # or "full" (full softmax)


@register_model("comirec-sa")
class ComiRecSA(Model):
    """ComiRec-SA (KDD 2020): K self-attentive interests, hard readout, ComiRec's sampled softmax."""

    Params: ClassVar[type] = ComiRecSAParams
    train_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 128, "lr": 1e-3, "lr_dc": 1.0,
                                                "l2": 0.0, "patience": 10, "eval_batch_size": 1000}

    def __init__(self, n_items: int, params: ComiRecSAParams | None = None) -> None:
        super().__init__(n_items, params)
        p: ComiRecSAParams = self.params
        for key in ("hidden", "interests", "max_len", "neg_ratio"):
            if getattr(p, key) < 1:
                raise SbrError(f"comirec-sa hyper-parameter {key!r} must be >= 1, got {getattr(p, key)}")
        if p.negatives not in ("log-uniform", "full"):
            raise SbrError(f"comirec-sa hyper-parameter 'negatives' must be log-uniform or full, got {p.negatives!r}")
        self.item_emb = nn.Embedding(n_items, p.dim)
        self.pos_emb = nn.Parameter(torch.empty(1, p.max_len, p.dim)) if p.add_pos else None
        self.extractor = SelfAttentiveExtractor(p.dim, p.hidden, p.interests)
        self.sampler = LogUniformSampler(n_items)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """TensorFlow's `get_variable` / `tf.layers.dense` defaults: Glorot-uniform, zero biases."""
        glorot_(self)

    def prepare(self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Path | None = None) -> None:
        """The sampler's popularity ranks, from the fitted sequences only."""
        import numpy as np

        self.sampler.set_counts(np.bincount(dataset.fit_sessions(splits).items, minlength=self.n_items))

    def interests(self, batch: Batch) -> torch.Tensor:
        """(B, K, d) interest embeddings of the last `max_len` history items."""
        seq, mask, _ = last_window(batch.seq, batch.lengths, self.params.max_len)
        e = self.item_emb(seq) * mask.unsqueeze(-1)
        ep = e + self.pos_emb[:, : seq.shape[1]] if self.pos_emb is not None else e
        return self.extractor(ep, e, mask)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items): each item's best interest; column 0 (padding) is -inf."""
        scores = (self.interests(batch) @ self.item_emb.weight.t()).amax(dim=1)
        scores[:, 0] = float("-inf")
        return scores

    def training_loss(self, batch: Batch) -> torch.Tensor:
        """Sampled softmax of the interest closest to the target (hard readout)."""
        if batch.targets.dim() != 1:
            raise SbrError("comirec-sa trains on one target per example")
        interests = self.interests(batch)
        target = self.item_emb(batch.targets)
        pick = (interests @ target.unsqueeze(-1)).squeeze(-1).argmax(dim=1)
        readout = interests[torch.arange(interests.shape[0], device=pick.device), pick]
        if self.params.negatives == "full":
            logits = readout @ self.item_emb.weight.t()
            logits[:, 0] = float("-inf")
            return nn.functional.cross_entropy(logits, batch.targets)
        return sampled_softmax_loss(readout, self.item_emb.weight, batch.targets, self.sampler,
                                    self.params.neg_ratio * len(batch))
