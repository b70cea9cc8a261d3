"""STAMP (Liu et al., KDD 2018), faithful to the official TensorFlow code.

Follows `uestcnlp/STAMP` at commit c0233b6531e60f2a4b4dc3c644e3741ee0ffa024 (`model/STAMP_cikm.py`,
`model/STAMP_rsc.py`, `basic_layer/FwNn3AttLayer.py`, `basic_layer/NN_adam.py`,
`config/nn_param.conf` sections `stamp_cikm` / `stamp_rsc`, `data_prepare/load_dict.py`), read for
this implementation.

For a prefix x_1..x_t (embeddings looked up with `max_norm=1.5`: each looked-up vector is scaled to
L2 norm ≤ 1.5, `x · 1.5 / max(‖x‖, 1.5)`, gradients through the norm as TF's `clip_by_norm`; the
scored item table is not clipped):

* `m_s` = mean of x_1..x_t, `x_t` the last click;
* attention (`FwNnAttLayer`, `norm_type='none'`, sigmoid, no biases):
  `α_i = w_0^T σ(W_1 x_t + W_2 x_i + W_3 m_s)`, not normalised, padding masked;
* `m_a = Σ α_i x_i + m_s` (the code adds `m_s` to the attention output);
* `h_s = tanh(W_A m_a)`, `h_t = tanh(W_B x_t)` (no biases);
* `score_i = ⟨h_s ⊙ h_t, e_i⟩` against the unclipped item table, full softmax cross-entropy.

Initialisation: weights N(0, 0.05²) (`stddev`), item embeddings N(0, 0.002²) (`emb_stddev`,
`load_random`) with the padding row 0 held at zero. Training (`stamp_cikm` / `stamp_rsc`):
Adam lr 0.003, batch 512, 10 epochs, no weight decay, every gradient tensor clipped to L2 norm 110
(Diginetica) / 150 (Yoochoose) — on the gradient of the batch's *summed* loss (TF minimises the
per-example loss vector, i.e. its sum). sbrbench's Trainer minimises the batch mean, so the clip
is applied at `grad_clip / B` on the mean's gradients: the same direction and the same Adam step
(Adam is invariant to the loss scale up to its ε).

Deviations: batches are sbrbench's shuffled prefix examples (every prefix of every training
session, the same examples as the official), whereas the official `batcher` groups sessions of
equal length and feeds, for up to 512 of them, the prefixes of length 1, 2, ... in consecutive
steps; the official selects the epoch on test Recall@20 (sbrbench: validation, unless
`--select-on test`); padded positions (the official never pads: its batches have equal lengths)
are masked out of the attention and the mean.

Components (the paper's Table 4 ablation): `attention` — dropping it gives STMP
(`h_s = tanh(W_A m_s)`, no attention parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sbrbench.errors import SbrError
from sbrbench.models.base import Model, dropped, register_model

if TYPE_CHECKING:
    from sbrbench.batching import Batch


@dataclass
class STAMPParams:
    """STAMP hyper-parameters (defaults: the official `stamp_cikm` configuration)."""

    dim: int = 100
    max_norm: float = 1.5  # clip of looked-up embeddings; 0 = off
    grad_clip: float = 110.0  # per-tensor clip of the summed-loss gradient; 0 = off
    stddev: float = 0.05
    emb_stddev: float = 0.002
    drop: str = ""  # comma-separated components to switch off: attention


def clip_by_norm(x: torch.Tensor, max_norm: float) -> torch.Tensor:
    """TF's `clip_by_norm` on the last axis: `x · c / max(‖x‖, c)` (differentiable through the norm)."""
    if max_norm <= 0:
        return x
    l2sum = (x * x).sum(-1, keepdim=True)
    norm = torch.where(l2sum > 0, l2sum.clamp(min=1e-30).sqrt(), torch.zeros_like(l2sum))  # no NaN at 0
    return x * max_norm / torch.clamp(norm, min=max_norm)


@register_model("stamp")
class STAMP(Model):
    """STAMP: short-term attention/memory priority over the session's clicks, trilinear scores."""

    Params: ClassVar[type] = STAMPParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 10, "batch_size": 512, "lr": 3e-3, "lr_dc": 1.0, "l2": 0.0, "patience": 10,
    }
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "diginetica": {"grad_clip": 110.0},  # stamp_cikm
        "yoochoose": {"grad_clip": 150.0},  # stamp_rsc
    }
    components: ClassVar[frozenset[str]] = frozenset({"attention"})

    def __init__(self, n_items: int, params: STAMPParams | None = None) -> None:
        super().__init__(n_items, params)
        p: STAMPParams = self.params
        if p.max_norm < 0 or p.grad_clip < 0 or p.stddev <= 0 or p.emb_stddev <= 0:
            raise SbrError("stamp needs max_norm >= 0, grad_clip >= 0, stddev > 0 and emb_stddev > 0")
        d = p.dim
        self.embedding = nn.Parameter(torch.empty(n_items, d))
        att = "attention" not in dropped(p)
        self.w_last = nn.Parameter(torch.empty(d, d)) if att else None  # line_layer_asp (x_t)
        self.w_ctx = nn.Parameter(torch.empty(d, d)) if att else None  # line_layer_ctx (x_i)
        self.w_mean = nn.Parameter(torch.empty(d, d)) if att else None  # line_layer_output (m_s)
        self.w_0 = nn.Parameter(torch.empty(d, 1)) if att else None  # wline_ca
        self.w_a = nn.Parameter(torch.empty(d, d))  # w1
        self.w_b = nn.Parameter(torch.empty(d, d))  # w2
        self._batch_rows = 1
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights N(0, stddev²), item embeddings N(0, emb_stddev²) with row 0 zero."""
        p: STAMPParams = self.params
        with torch.no_grad():
            self.embedding.normal_(0.0, p.emb_stddev)
            self.embedding[0].zero_()
            for w in (self.w_last, self.w_ctx, self.w_mean, self.w_0, self.w_a, self.w_b):
                if w is not None:
                    w.normal_(0.0, p.stddev)

    def session_vector(self, batch: Batch) -> torch.Tensor:
        """`h_s ⊙ h_t` (B, d)."""
        p: STAMPParams = self.params
        mask = batch.mask.to(self.embedding.dtype).unsqueeze(2)
        x = clip_by_norm(F.embedding(batch.seq, self.embedding), p.max_norm) * mask
        last = clip_by_norm(F.embedding(batch.last_items, self.embedding), p.max_norm)
        mean = x.sum(1) / batch.lengths.to(x.dtype).unsqueeze(1)
        if self.w_0 is not None:
            assert self.w_last is not None and self.w_ctx is not None and self.w_mean is not None
            act = torch.sigmoid((last @ self.w_last).unsqueeze(1) + x @ self.w_ctx + (mean @ self.w_mean).unsqueeze(1))
            alpha = (act @ self.w_0) * mask  # (B, L, 1), not normalised
            m_a = (alpha * x).sum(1) + mean
        else:
            m_a = mean
        return torch.tanh(m_a @ self.w_a) * torch.tanh(last @ self.w_b)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) against the (unclipped) item table; column 0 is -inf."""
        scores = self.session_vector(batch) @ self.embedding.t()
        scores[:, 0] = float("-inf")
        return scores

    def training_loss(self, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy; remembers the batch size for the summed-loss gradient clip."""
        self._batch_rows = len(batch)
        return super().training_loss(batch)

    def clip_gradients(self) -> None:
        """Each gradient tensor to L2 norm ≤ grad_clip / B (the official clip on the summed loss)."""
        clip = self.params.grad_clip
        if clip <= 0:
            return
        limit = clip / max(self._batch_rows, 1)
        with torch.no_grad():
            for w in self.parameters():
                if w.grad is not None:  # tf.clip_by_norm: g · c / max(‖g‖, c)
                    w.grad.mul_(limit / torch.clamp(torch.linalg.vector_norm(w.grad), min=limit))
