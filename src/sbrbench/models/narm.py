"""NARM (Li et al., CIKM 2017), faithful to the official Theano code.

Follows `lijingsdu/sessionRec_NARM` at commit 88423340531821c84713832d114b8e019539bba4 (`NARM.py`,
`data_process.py`), read for this implementation; the paper's Figure 2 and Section 3 for the names.

Model, as the official code computes it (`build_model`):

* item embeddings `Wemb` (n_items × 50), dropout 0.25 on the embedded clicks;
* the official GRU (`gru_layer`): gates z, r = hard_sigmoid (Theano's: clip(0.2 x + 0.5, 0, 1)),
  input projection `x Wxrz + b` with one bias (3H), recurrent `h Urz` for z and r, candidate
  `tanh((h ⊙ r) Uh + x W_h + b_h)` (the reset gate multiplies h *before* the product, unlike
  PyTorch's GRU), `h' = (1 − z) h + z h̃`; padded steps carry the state through;
* global encoder `c_g = h_t` (the last real step); local encoder (attention)
  `α_j = v^T hard_sigmoid(A_1 h_j + A_2 h_t)` (no bias), softmax over the session's real steps,
  `c_l = Σ α_j h_j`;
* `c = [c_l; c_g]`, dropout 0.5, bilinear decoder `score_i = c · (B^T e_i)` with `B` = `bili`
  (50 × 2H) and the input embedding table `e` reused; full-catalogue softmax cross-entropy.

Dropout is Theano's (not inverted): in training, units are zeroed without rescaling; at
evaluation the input is multiplied by the keep probability (`dropout_layer`). `theano_dropout=false`
uses PyTorch's inverted dropout instead (same expected activations, other training dynamics).

Initialisation as `init_params` / `param_init_gru`: every matrix N(0, 2/rows) (`init_weights`:
σ = sqrt(2 / shape[0]), so the item table has σ = sqrt(2 / n_items) and `bl_vector` σ = sqrt(2)),
`Urz` (two blocks) and `Uh` orthogonal (left singular vectors of a Gaussian matrix), bias 0.

Inputs: `data_process.load_data(maxlen=19)` cuts every training and test prefix to its *first*
19 clicks (`x[:maxlen]`); `max_len` (default 19) does the same here; 0 keeps whole prefixes.

Training (official `train_gru`): Adam lr 1e-3 (with a first-moment decay γ = 1 − 1e-8 per step,
which changes β1 by < 0.05 % over 30 epochs), batch 512, 30 epochs, no weight decay, no learning
rate decay, model selected on validation Recall@20 with patience 100 (effectively off).

Deviations: the official Adam's β1 decay is not applied (standard Adam); the loss is the mean
cross-entropy instead of `-log(p + 1e-8)` (the 1e-8 changes nothing at float32 precision); item 0
(padding) is excluded from the softmax (the official softmax includes row 0 of the item table,
which is never a target); sbrbench's epoch selection (validation split, MRR@20 unless
`--metric`) and pessimistic tie ranks replace the official's validation carved randomly from the
augmented training examples and optimistic ranks (`1 + #(score > target)`).

Components (the paper's Table 3 / Figure 4 ablation): `local` (drop → NARM_global: `c = h_t`,
`B` is 50 × H) and `global` (drop → NARM_local: `c = c_l`; the attention still reads `h_t`).
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
class NARMParams:
    """NARM hyper-parameters (defaults: the official code's)."""

    emb_dim: int = 50
    hidden: int = 100
    drop_emb: float = 0.25
    drop_ctx: float = 0.5
    max_len: int = 19  # keep the first `max_len` clicks of every prefix (official maxlen=19); 0 = all
    theano_dropout: bool = True  # official: no rescaling in training, × keep probability in evaluation
    drop: str = ""  # comma-separated components to switch off: local, global


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Theano's `T.nnet.hard_sigmoid`: clip(0.2 x + 0.5, 0, 1) (PyTorch's `hardsigmoid` has slope 1/6)."""
    return (0.2 * x + 0.5).clamp(0.0, 1.0)


def theano_dropout(x: torch.Tensor, p: float, training: bool, theano: bool = True) -> torch.Tensor:
    """Dropout with keep probability 1 − p: Theano's (`NARM.dropout_layer`: mask without rescaling in
    training, × (1 − p) in evaluation) or, with `theano=False`, PyTorch's inverted dropout."""
    if p <= 0:
        return x
    if not theano:
        return F.dropout(x, p, training)
    if training:
        return x * torch.empty_like(x).bernoulli_(1.0 - p)
    return x * (1.0 - p)


def gaussian_(t: torch.Tensor) -> torch.Tensor:
    """The official `init_weights`: N(0, 2 / shape[0]) (He-style on the first axis)."""
    with torch.no_grad():
        return t.normal_(0.0, (2.0 / t.shape[0]) ** 0.5)


def orthogonal_block_(t: torch.Tensor) -> torch.Tensor:
    """The official `ortho_weight`: U of the SVD of a standard Gaussian square matrix."""
    with torch.no_grad():
        u, _, _ = torch.linalg.svd(torch.randn(t.shape[0], t.shape[0], dtype=torch.float64))
        return t.copy_(u.to(t.dtype))


@register_model("narm")
class NARM(Model):
    """NARM: GRU encoder with a global (last state) and an attentive local encoder, bilinear decoder."""

    Params: ClassVar[type] = NARMParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 30, "batch_size": 512, "lr": 1e-3, "lr_dc": 1.0, "l2": 0.0, "patience": 100,
    }
    components: ClassVar[frozenset[str]] = frozenset({"local", "global"})

    def __init__(self, n_items: int, params: NARMParams | None = None) -> None:
        super().__init__(n_items, params)
        p: NARMParams = self.params
        for key in ("emb_dim", "hidden"):
            if getattr(p, key) < 1:
                raise SbrError(f"narm hyper-parameter {key!r} must be >= 1, got {getattr(p, key)}")
        if not (0 <= p.drop_emb < 1 and 0 <= p.drop_ctx < 1):
            raise SbrError(f"narm dropouts must be in [0, 1), got drop_emb={p.drop_emb}, drop_ctx={p.drop_ctx}")
        if p.max_len < 0:
            raise SbrError(f"narm hyper-parameter 'max_len' must be >= 0 (0 = whole prefixes), got {p.max_len}")
        off = dropped(p)
        if {"local", "global"} <= off:
            raise SbrError("narm needs at least one of its encoders: drop 'local' or 'global', not both")
        self.use_local, self.use_global = "local" not in off, "global" not in off
        e, h = p.emb_dim, p.hidden
        self.Wemb = nn.Parameter(torch.empty(n_items, e))
        self.Wxrz = nn.Parameter(torch.empty(e, 3 * h))  # z, r, candidate
        self.Urz = nn.Parameter(torch.empty(h, 2 * h))
        self.Uh = nn.Parameter(torch.empty(h, h))
        self.b = nn.Parameter(torch.empty(3 * h))
        self.W_encoder = nn.Parameter(torch.empty(h, h)) if self.use_local else None
        self.W_decoder = nn.Parameter(torch.empty(h, h)) if self.use_local else None
        self.bl_vector = nn.Parameter(torch.empty(1, h)) if self.use_local else None
        ctx = h * (int(self.use_local) + int(self.use_global))
        self.bili = nn.Parameter(torch.empty(e, ctx))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official `init_params` (see the module docstring), drawn from torch's global RNG."""
        h = self.params.hidden
        gaussian_(self.Wemb)
        with torch.no_grad():
            for k in range(3):  # three (E, H) blocks, each N(0, 2/E)
                gaussian_(self.Wxrz[:, k * h : (k + 1) * h])
            for k in range(2):
                orthogonal_block_(self.Urz[:, k * h : (k + 1) * h])
            orthogonal_block_(self.Uh)
            self.b.zero_()
        for t in (self.W_encoder, self.W_decoder, self.bl_vector):
            if t is not None:
                gaussian_(t)
        gaussian_(self.bili)

    def encode(self, batch: Batch) -> torch.Tensor:
        """The session representation `c` (B, 2H), before the context dropout."""
        p: NARMParams = self.params
        seq, lengths = batch.seq, batch.lengths
        if p.max_len and seq.shape[1] > p.max_len:
            seq = seq[:, : p.max_len]
        if p.max_len:
            lengths = lengths.clamp(max=p.max_len)
        steps = seq.shape[1]
        mask = torch.arange(steps, device=seq.device).unsqueeze(0) < lengths.unsqueeze(1)
        emb = theano_dropout(F.embedding(seq, self.Wemb), p.drop_emb, self.training, p.theano_dropout)
        h_dim = p.hidden
        x = emb @ self.Wxrz + self.b  # (B, L, 3H)
        h = emb.new_zeros(seq.shape[0], h_dim)
        states = []
        m = mask.to(emb.dtype).unsqueeze(2)
        for t in range(steps):
            xt = x[:, t]
            pre = h @ self.Urz + xt[:, : 2 * h_dim]
            z = hard_sigmoid(pre[:, :h_dim])
            r = hard_sigmoid(pre[:, h_dim:])
            cand = torch.tanh((h * r) @ self.Uh + xt[:, 2 * h_dim :])
            new = (1.0 - z) * h + z * cand
            h = m[:, t] * new + (1.0 - m[:, t]) * h
            states.append(h)
        hs = torch.stack(states, 1)  # (B, L, H)
        last = h  # padded steps carry the state: the last real step's
        parts = []
        if self.use_local:
            assert self.W_encoder is not None and self.W_decoder is not None and self.bl_vector is not None
            act = hard_sigmoid(hs @ self.W_encoder.t() + (last @ self.W_decoder.t()).unsqueeze(1))
            sim = (act @ self.bl_vector.t()).squeeze(2)  # (B, L)
            att = torch.softmax(sim.masked_fill(~mask, float("-inf")), dim=1)
            parts.append((att.unsqueeze(2) * hs).sum(1))
        if self.use_global:
            parts.append(last)
        return torch.cat(parts, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items): `c · (B^T e_i)` for every item; column 0 is -inf."""
        p: NARMParams = self.params
        c = theano_dropout(self.encode(batch), p.drop_ctx, self.training, p.theano_dropout)
        scores = (c @ self.bili.t()) @ self.Wemb.t()
        scores[:, 0] = float("-inf")
        return scores
