"""BPR-MF (Rendle et al., UAI 2009) on sessions, as the session-based papers ran it.

SR-GNN's Table 2 copies its BPR-MF rows from NARM, whose baselines are those of GRU4Rec (Hidasi
et al., ICLR 2016, Section 4): every training session is a user, and a new session — no user
factor — is represented by the average of the factors of the items it clicked so far. The
defaults follow the code behind GRU4Rec's row (the `BPR` class of the GRU4Rec authors'
`baselines.py`, hidasib/GRU4Rec), not MyMediaLite's `BPRMF`:

* score `x_ui = ⟨w_u, h_i⟩` — the released class allocates item biases but never updates them
  (they stay 0), so `item_bias = False`; `item_bias = True` adds a learnt `b_i` (MyMediaLite);
* training triples `(u, i, j)`: every click `i` of fitted session `u` once per epoch, in a
  random order, `j` drawn uniformly from the catalogue;
* loss per triple `−log σ(x_ui − x_uj) + ½ (λ_u‖w_u‖² + λ_i‖h_i‖² + λ_j‖h_j‖² + λ_b(b_i² + b_j²))`
  (the `reg · θ` gradient of both codes), summed over the mini-batch, plain SGD; defaults lr 0.01,
  every λ = 0, factors ~ U(−0.05, 0.05) (`init = uniform`, `init_std` the half-width; `normal`:
  N(0, init_std²)), 10 epochs;
* scores of a prefix: `⟨mean_{k ∈ prefix} h_k, h_i⟩ (+ b_i)` over the catalogue, shape (B, N).

Why the bias matters: with the mean-of-items session the strongest signal is an item's own factor
(`‖h_k‖²` for an item of the prefix), so BPR-MF on sessions behaves much like S-POP; a learnt bias
trained against uniform negatives is a popularity term that outweighs it and turns the model into
POP (Yoochoose 1/64, 3 epochs: HR@20 6.14 with MyMediaLite's settings against the paper's 31.31).

Deviations (the papers give no settings): mini-batches of 256 triples with the summed loss instead
of one triple per SGD step; `j` uniform over the catalogue (the released class indexes the item
column of its merged training frame with a random integer below the number of items: a quirk of
its pandas merge order, not reproduced); sbrbench's epoch selection on validation. Evaluation
never reads the session factors, so unseen sessions need nothing.

Training batches (`TripleSource`) carry the sessions' indices among the fitted sessions; on a
hand-made prefix batch (no session indices) row r stands for fitted session r mod n and its
positive is the batch's target, so that every parameter still takes part.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sbrbench.batching import Batch
from sbrbench.errors import SbrError
from sbrbench.models.base import Model, register_model

if TYPE_CHECKING:
    from pathlib import Path

    from sbrbench.data.dataset import FitSessions, ProcessedDataset


@dataclass
class TripleBatch(Batch):
    """Training triples: `users` (B,) fitted-session indices, `targets` (B,) positives, `seq`
    (B, 1) the previous click (FPMC's basket; 0 when none), `negatives` (B,) sampled items."""

    users: torch.Tensor | None = None
    negatives: torch.Tensor | None = None


class TripleSource:
    """(fitted session, click) pairs — `transitions=True`: (session, previous click, click) for
    every click after a session's first — once per epoch in a random order, with one uniformly
    drawn negative item each."""

    def __init__(self, fit: FitSessions, n_items: int, device: torch.device | str, *, transitions: bool,
                 limit: int | None = None) -> None:
        lengths = fit.lengths
        user = np.repeat(np.arange(len(fit), dtype=np.int64), lengths)
        first = np.zeros(fit.items.shape[0], dtype=bool)
        first[fit.offsets[:-1][lengths > 0]] = True
        prev = np.concatenate([[0], fit.items[:-1]]).astype(np.int64)
        prev[first] = 0
        keep = ~first if transitions else np.ones_like(first)
        self.user = torch.as_tensor(user[keep][:limit], device=device)
        self.item = torch.as_tensor(fit.items[keep][:limit].astype(np.int64), device=device)
        self.prev = torch.as_tensor(prev[keep][:limit], device=device)
        self.n_items = n_items

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def batches(self, batch_size: int, *, generator: torch.Generator | None = None) -> Iterator[TripleBatch]:
        n = len(self)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        order = torch.randperm(n, generator=gen).to(self.user.device)
        neg = torch.randint(1, max(self.n_items, 2), (n,), generator=gen).to(self.user.device)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            b = idx.shape[0]
            prev = self.prev[idx]
            yield TripleBatch(seq=prev.unsqueeze(1), lengths=torch.ones(b, dtype=torch.long, device=idx.device),
                              targets=self.item[idx], mask=(prev > 0).unsqueeze(1), users=self.user[idx],
                              negatives=neg[i : i + batch_size])


@dataclass
class BPRMFParams:
    """BPR-MF hyper-parameters (defaults: the GRU4Rec authors' `BPR` baseline; MyMediaLite's BPRMF is
    `item_bias=true, init=normal, init_std=0.1, reg_u=reg_i=0.0025, reg_j=0.00025`, lr 0.05, 30 epochs)."""

    dim: int = 100
    reg_u: float = 0.0
    reg_i: float = 0.0
    reg_j: float = 0.0
    reg_bias: float = 0.0
    item_bias: bool = False  # learn b_i (MyMediaLite); the GRU4Rec baseline's biases stay 0
    init: str = "uniform"  # uniform: U(-init_std, init_std); normal: N(0, init_std²)
    init_std: float = 0.05
    sparse: bool = True  # sparse gradients: SGD touches only the rows of the batch


class FactorModel(Model):
    """Shared machinery of BPR-MF and FPMC: per-session factors sized in `prepare`, SGD, triples."""

    transitions: ClassVar[bool] = False

    def _user_table(self, n_users: int, dim: int) -> nn.Embedding:
        table = nn.Embedding(max(n_users, 1), dim, sparse=self.params.sparse)
        with torch.no_grad():
            table.weight.normal_(0.0, self.params.init_std)
        return table

    def configure_optimizer(self, lr: float, l2: float) -> torch.optim.Optimizer:
        """Plain SGD (LearnBPR); regularisation is part of the loss (`reg_*`), so `l2` must be 0."""
        if l2 > 0:
            raise SbrError(f"{self.name} regularises through its reg_* hyper-parameters: leave l2 at 0, got {l2}")
        return torch.optim.SGD(self.parameters(), lr=lr)

    def example_source(self, dataset: ProcessedDataset, splits: tuple[str, ...], items: torch.Tensor,
                       limit: int | None) -> TripleSource:
        fit = dataset.fit_sessions(splits)
        return TripleSource(fit, self.n_items, items.device, transitions=self.transitions, limit=limit)

    def _users(self, batch: Batch) -> torch.Tensor:
        users = getattr(batch, "users", None)
        if users is not None:
            return users
        n = self.n_users
        return torch.arange(len(batch), device=batch.seq.device) % max(n, 1)

    def _negatives(self, batch: Batch) -> torch.Tensor:
        neg = getattr(batch, "negatives", None)
        if neg is not None:
            return neg
        return torch.randint(1, max(self.n_items, 2), (len(batch),), device=batch.seq.device)


@register_model("bpr-mf")
class BPRMF(FactorModel):
    """BPR-MF: sessions as users, pairwise ranking; a new session is the mean of its items' factors."""

    Params: ClassVar[type] = BPRMFParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 10, "batch_size": 256, "lr": 0.01, "lr_dc": 1.0, "l2": 0.0, "patience": 10,
    }

    def __init__(self, n_items: int, params: BPRMFParams | None = None) -> None:
        super().__init__(n_items, params)
        p: BPRMFParams = self.params
        if p.dim < 1 or p.init_std <= 0 or min(p.reg_u, p.reg_i, p.reg_j, p.reg_bias) < 0:
            raise SbrError("bpr-mf needs dim >= 1, init_std > 0 and reg_* >= 0")
        if p.init not in ("uniform", "normal"):
            raise SbrError(f"bpr-mf init must be uniform or normal, got {p.init!r}")
        self.item = nn.Embedding(n_items, p.dim, sparse=p.sparse)
        self.bias = nn.Embedding(n_items, 1, sparse=p.sparse)
        self.n_users = 0
        self.user = self._user_table(0, p.dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Factors ~ U(−init_std, init_std) or N(0, init_std²) (`init`), biases 0."""
        with torch.no_grad():
            self._init_factors(self.item.weight)
            self.bias.weight.zero_()
            self._init_factors(self.user.weight)
        self.bias.weight.requires_grad_(self.params.item_bias)

    def _init_factors(self, weight: torch.Tensor) -> None:
        s = self.params.init_std
        with torch.no_grad():
            weight.uniform_(-s, s) if self.params.init == "uniform" else weight.normal_(0.0, s)

    def prepare(self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Path | None = None) -> None:
        """One factor vector per fitted session (the "users")."""
        self.n_users = len(dataset.fit_sessions(splits))
        self.user = self._user_table(self.n_users, self.params.dim).to(self.item.weight.device)
        self._init_factors(self.user.weight)

    def forward(self, batch: Batch) -> torch.Tensor:
        """`⟨mean of the prefix's item factors, h_i⟩ (+ b_i)`, (B, N); column 0 is -inf."""
        m = batch.mask.to(self.item.weight.dtype).unsqueeze(2)
        session = (F.embedding(batch.seq, self.item.weight) * m).sum(1) / m.sum(1).clamp(min=1.0)
        scores = session @ self.item.weight.t() + self.bias.weight.t()
        scores[:, 0] = float("-inf")
        return scores

    def training_loss(self, batch: Batch) -> torch.Tensor:
        """Summed LearnBPR loss of the batch's triples (see the module docstring)."""
        p: BPRMFParams = self.params
        u = self.user(self._users(batch))
        i, j = batch.targets, self._negatives(batch)
        hi, hj = self.item(i), self.item(j)
        bi, bj = self.bias(i).squeeze(1), self.bias(j).squeeze(1)
        x = bi - bj + (u * (hi - hj)).sum(1)
        reg = (p.reg_u * u.pow(2).sum(1) + p.reg_i * hi.pow(2).sum(1) + p.reg_j * hj.pow(2).sum(1)
               + p.reg_bias * (bi.pow(2) + bj.pow(2)))
        return (-F.logsigmoid(x) + 0.5 * reg).sum()
