"""FPMC (Rendle et al., WWW 2010) on sessions, as the session-based papers ran it.

Factorizing Personalized Markov Chains with the basket = the previous click: for session ("user")
u, previous click l and next click i,

    x_uli = ⟨v_u^{U,I}, v_i^{I,U}⟩ + ⟨v_i^{I,L}, v_l^{L,I}⟩

(the paper's eq. 8 with one-item baskets; the U–L term cancels in the ranking and is dropped, as
in the paper). SR-GNN's Table 2 lists FPMC without details; as NARM and STAMP describe their
session-based runs, every training session is a user, and for a new session — which has no user
factor — the user term is omitted: a prefix's scores are `⟨v_i^{I,L}, v_last^{L,I}⟩`. There is
no official code for this baseline. Training is the paper's S-BPR (LearnSBPR): for every
transition l → i of every fitted session, a uniformly drawn negative j, loss
`−log σ(x_uli − x_ulj) + ½ λ‖Θ_touched‖²`, plain SGD. Settings (not given by the papers,
[assume]): 100 factors per table (the SBR papers' size), N(0, 0.1²) initialisation, λ = 0.0025
(λ_j on the negative's factors 0.00025), learning rate 0.05, mini-batches of 256 transitions
with the summed loss, 30 epochs — MyMediaLite's BPRMF defaults (`bpr-mf` follows the GRU4Rec
authors' baseline code instead, whose figures the SR-GNN paper copies).

Training batches (`bprmf.TripleSource`) carry the sessions' indices; a hand-made prefix batch
(no session indices) maps row r to fitted session r mod n, its last click to l.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sbrbench.errors import SbrError
from sbrbench.models.base import register_model
from sbrbench.models.bprmf import FactorModel

if TYPE_CHECKING:
    from pathlib import Path

    from sbrbench.batching import Batch
    from sbrbench.data.dataset import ProcessedDataset


@dataclass
class FPMCParams:
    """FPMC hyper-parameters ([assume]: see the module docstring)."""

    dim: int = 100
    reg: float = 0.0025
    reg_j: float = 0.00025
    init_std: float = 0.1
    sparse: bool = True  # sparse gradients: SGD touches only the rows of the batch


@register_model("fpmc")
class FPMC(FactorModel):
    """FPMC: factorized personalized Markov chain over the previous click; S-BPR training."""

    Params: ClassVar[type] = FPMCParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 30, "batch_size": 256, "lr": 0.05, "lr_dc": 1.0, "l2": 0.0, "patience": 10,
    }
    transitions: ClassVar[bool] = True

    def __init__(self, n_items: int, params: FPMCParams | None = None) -> None:
        super().__init__(n_items, params)
        p: FPMCParams = self.params
        if p.dim < 1 or p.init_std <= 0 or p.reg < 0 or p.reg_j < 0:
            raise SbrError("fpmc needs dim >= 1, init_std > 0 and reg, reg_j >= 0")
        self.item_user = nn.Embedding(n_items, p.dim, sparse=p.sparse)  # v_i^{I,U}
        self.item_next = nn.Embedding(n_items, p.dim, sparse=p.sparse)  # v_i^{I,L}
        self.item_prev = nn.Embedding(n_items, p.dim, sparse=p.sparse)  # v_l^{L,I}
        self.n_users = 0
        self.user = self._user_table(0, p.dim)  # v_u^{U,I}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every factor ~ N(0, init_std²)."""
        with torch.no_grad():
            for t in (self.item_user, self.item_next, self.item_prev, self.user):
                t.weight.normal_(0.0, self.params.init_std)

    def prepare(self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Path | None = None) -> None:
        """One user factor per fitted session."""
        self.n_users = len(dataset.fit_sessions(splits))
        self.user = self._user_table(self.n_users, self.params.dim).to(self.item_user.weight.device)

    def forward(self, batch: Batch) -> torch.Tensor:
        """`⟨v_i^{I,L}, v_last^{L,I}⟩` for every item (no user factor for a new session); column 0 -inf."""
        scores = F.embedding(batch.last_items, self.item_prev.weight) @ self.item_next.weight.t()
        scores[:, 0] = float("-inf")
        return scores

    def training_loss(self, batch: Batch) -> torch.Tensor:
        """Summed S-BPR loss of the batch's transitions (see the module docstring)."""
        p: FPMCParams = self.params
        users = getattr(batch, "users", None)
        prev = batch.seq[:, 0] if users is not None else batch.last_items
        u = self.user(self._users(batch))
        i, j = batch.targets, self._negatives(batch)
        lvec = self.item_prev(prev)
        ui, uj = self.item_user(i), self.item_user(j)
        ni, nj = self.item_next(i), self.item_next(j)
        x = (u * (ui - uj)).sum(1) + (lvec * (ni - nj)).sum(1)
        reg = (p.reg * (u.pow(2).sum(1) + lvec.pow(2).sum(1) + ui.pow(2).sum(1) + ni.pow(2).sum(1))
               + p.reg_j * (uj.pow(2).sum(1) + nj.pow(2).sum(1)))
        return (-F.logsigmoid(x) + 0.5 * reg).sum()
