r"""MCLSR: Multi-level Contrastive Learning Framework for Sequential Recommendation (CIKM 2022).

There is no official code; this is a reference implementation of the paper (arXiv 2208.13007,
equations (1)-(16)). Every choice the paper leaves open is a hyper-parameter with a documented
default (sbrbench's reading, project spec models-next.md §1.3-1.7); `mclsr-ctlab` sets the
choices of the third-party CTLab-ITMO re-implementation.

Views and encoders (users = the fitted sequences, i.e. the training users of the `comirec`
protocol; `sbrbench.user_graphs` builds the graphs from them only):

* current interest (eqs. 2-3): ComiRec-SA with one interest over the last `max_len` history items,
  a = W2 tanh(W1 (E + P)ᵀ) (W1: d → 4d, W2: 4d → 1, with biases as ComiRec), softmax over the
  history, I^s = a E (raw item embeddings); positions absolute from the history's start
  (`pos="reversed"`: most recent = 0, CTLab);
* general interest (eqs. 4-6): [H^{u,uv} ‖ H^{v,uv}] = GraphEncoder^{(L_g)}([H^u ‖ H^v], Ĝ^uv)
  (LightGCN-style X^{(l)} = Â X^{(l-1)}, the last layer; `graph_readout="mean"`: mean over layers
  0..L_g), A^C = softmax(tanh(W3 h^{u,uv}) · E^{u,uv}ᵀ), I^c = A^C E^{u,uv};
* interest-level contrast (eqs. 7-8): one projection head (Linear → ELU → Linear) shared by
  both views, InfoNCE with cross-view and intra-view negatives (`cross_view_nce`), anchor I^s;
* feature-level contrast (eqs. 9-12): users H^{u,uv} vs H^{u,uu} = GraphEncoder(H^u, Ĝ^uu) over
  the batch's distinct users, items H^{v,uv} vs H^{v,vv} = GraphEncoder(H^v, Ĝ^vv) over the
  distinct items of the batch's histories, one head per level;
* prediction (eqs. 13-14): I^comb = α I^s + (1 − α) I^c against the raw item embeddings, trained
  with ComiRec's sampled softmax (`neg_ratio`·B shared log-uniform negatives over popularity
  ranks, logQ correction, accidental hits removed); `negatives="full"`: full softmax;
* J = L^P + β L^IL + γ (L^UC + L^IC) (eq. 15); inference (eq. 16) = I^s · H^vᵀ only: no user
  table and no graph, so valid and test users (never fitted) are scored like any user.

Examples whose sequence was not fitted (no user row) train with I^comb = I^s and stay out of the
contrastive terms. Known property (documented in the spec): G^uv holds each training user's whole
sequence, target included; `graph_holdout_last=true` builds it without each user's last item.

Measured behaviour (amazon-toys, top 1,000 items, validation split): with β = 1 the cosine InfoNCE
of eq. 8 dominates the first epochs — its gradient does not shrink with the small N(0, 0.02)
embeddings while the prediction loss's does — so L^P barely moves for several epochs and short
budgets under-train MCLSR; β = 0.1 reached valid Recall@50 34.2 after 30 epochs against 27.0 for
β = 1 (`sbrbench reproduce mclsr-table2` shows both rows). β = 1 stays the default: it is the value
the paper's reproducers quote.

Components (`--drop`): `il` (interest-level CL), `fl` (feature-level CL), `uv` (the user–item
graph and with it the general interest, hence `il` and `fl` too: MCLSR becomes ComiRec-SA with one
interest), `uu` (user–user graph: L^UC), `vv` (item–item graph: L^IC). Depth: `--vary L_g=0,1,2,3`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from sbrbench.batching import Batch
from sbrbench.data.dataset import ProcessedDataset
from sbrbench.errors import SbrError
from sbrbench.models.base import Model, dropped, register_model, register_variant
from sbrbench.models.seqrec import (
    LogUniformSampler,
    cross_view_nce,
    last_window,
    projection_head,
    sampled_softmax_loss,
)
from sbrbench.user_graphs import (
    COOC_MODES,
    bipartite_adjacency,
    cooccurrence_graph,
    transpose_permutation,
    user_item_matrix,
)

GRAPHS = ("uv", "uu", "vv")

CHOICES: dict[str, tuple[str, ...]] = {
    "graph_readout": ("last", "mean"),
    "cooc_graph": COOC_MODES,
    "cl_sim": ("cos", "dot"),
    "head_act": ("elu", "relu", "tanh", "gelu"),
    "item_cl_set": ("history-items", "targets"),
    "negatives": ("log-uniform", "full"),
    "pos": ("absolute", "reversed"),
}


@dataclass
class MCLSRParams:
    """MCLSR hyper-parameters: the paper's where it gives them (d 64, α 0.5, β 1, γ 0.05, L_g 2);
    sbrbench's documented choices elsewhere (spec §1.6)."""

    dim: int = 64  # d (paper, as quoted by its reproducers)
    max_len: int = 20  # L: history items read (ComiRec Book)
    alpha: float = 0.5  # eq. 13: weight of I^s in I^comb
    beta: float = 1.0  # eq. 15: interest-level CL weight
    gamma: float = 0.05  # eq. 15: feature-level CL weight, applied to L^UC + L^IC
    L_g: int = 2  # graph encoder layers (main table: 2)
    graph_readout: str = "last"  # eq. 4: layer L_g; "mean": LightGCN mean over layers 0..L_g
    edge_dropout: float = 0.0  # CTLab: 0.3 (dropout on Â's entries in training, rescaled)
    cooc_graph: str = "count"  # G^uu / G^vv weights: co-occurrence counts; "binary" (CTLab)
    cooc_topk: int = 50  # neighbours kept per node (0 = all)
    tau: float = 0.5  # Ψ temperature
    cl_sim: str = "cos"  # Ψ similarity: cosine; "dot" (CTLab)
    cl_symmetric: bool = False  # eq. 8 one direction; True: CTLab's symmetric NT-Xent
    split_interest_heads: bool = False  # eq. 7 shares the interest head; True: two heads (CTLab)
    head_act: str = "elu"  # σ of the projection heads (CTLab: ELU)
    item_cl_set: str = "history-items"  # L^IC anchors: distinct history items of the batch; or targets
    negatives: str = "log-uniform"  # ComiRec's sampled softmax; "full": full softmax
    neg_ratio: int = 10  # ComiRec: 10·B shared negatives per step
    pos: str = "absolute"  # ComiRec positions from the history's start; "reversed" (CTLab)
    seq_layernorm: bool = False  # CTLab: LayerNorm on E + P
    seq_dropout: float = 0.0  # CTLab: 0.3 on E + P
    attention_bias: bool = True  # ComiRec-SA's W1 has a bias (CTLab: none); W2's would be inert
    graph_holdout_last: bool = False  # G^uv without each user's last item
    init_std: float = 0.02  # N(0, 0.02) for every parameter (CTLab)
    drop: str = ""  # components: il, fl, uv, uu, vv


@register_model("mclsr")
class MCLSR(Model):
    """MCLSR (CIKM 2022): multi-level (interest and feature) contrastive learning over sequence, user-item, user-user and item-item views; reference implementation."""

    Params: ClassVar[type] = MCLSRParams
    # ComiRec's loop: batch 128, Adam 1e-3, no decay, no weight decay; selection on valid Recall@50
    # with patience 10 evaluations (one evaluation per epoch of ⌈U_train / B⌉ steps).
    train_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 128, "lr": 1e-3, "lr_dc": 1.0,
                                                "l2": 0.0, "patience": 10, "eval_batch_size": 1000}
    components: ClassVar[frozenset[str]] = frozenset({"il", "fl", "uv", "uu", "vv"})

    def __init__(self, n_items: int, params: MCLSRParams | None = None) -> None:
        super().__init__(n_items, params)
        p: MCLSRParams = self.params
        for key, allowed in CHOICES.items():
            if getattr(p, key) not in allowed:
                raise SbrError(f"mclsr hyper-parameter {key!r} must be one of {', '.join(allowed)}, got {getattr(p, key)!r}")
        for key in ("max_len", "neg_ratio"):
            if getattr(p, key) < 1:
                raise SbrError(f"mclsr hyper-parameter {key!r} must be >= 1, got {getattr(p, key)}")
        if p.L_g < 0 or p.cooc_topk < 0:
            raise SbrError("mclsr hyper-parameters L_g and cooc_topk must be >= 0")
        if not 0.0 <= p.alpha <= 1.0 or p.beta < 0 or p.gamma < 0 or p.tau <= 0 or p.init_std <= 0:
            raise SbrError("mclsr needs 0 <= alpha <= 1, beta >= 0, gamma >= 0, tau > 0 and init_std > 0")
        if not (0.0 <= p.edge_dropout < 1.0 and 0.0 <= p.seq_dropout < 1.0):
            raise SbrError("mclsr dropouts (edge_dropout, seq_dropout) must be in [0, 1)")
        off = dropped(p)
        self.use_uv = "uv" not in off
        self.use_il = self.use_uv and "il" not in off
        self.use_uc = self.use_uv and "fl" not in off and "uu" not in off
        self.use_ic = self.use_uv and "fl" not in off and "vv" not in off
        d = p.dim
        self.item_emb = nn.Embedding(n_items, d, padding_idx=0)
        self.pos_emb = nn.Embedding(p.max_len, d)
        self.w1 = nn.Linear(d, 4 * d, bias=p.attention_bias)  # eq. 2 (ComiRec-SA, one interest)
        self.w2 = nn.Linear(4 * d, 1, bias=False)  # a bias before a softmax over L changes nothing
        self.seq_norm = nn.LayerNorm(d, eps=1e-9) if p.seq_layernorm else None
        self.seq_drop = nn.Dropout(p.seq_dropout)
        self.w3 = nn.Linear(d, d, bias=False) if self.use_uv else None  # eq. 5
        self.head_i = projection_head(d, p.head_act) if self.use_il else None  # eq. 7
        self.head_i2 = projection_head(d, p.head_act) if self.use_il and p.split_interest_heads else None
        self.head_u = projection_head(d, p.head_act) if self.use_uc else None  # eq. 10
        self.head_v = projection_head(d, p.head_act) if self.use_ic else None
        self.user_emb: nn.Embedding | None = None  # H^u: built in `prepare` (one row per fitted user)
        self.sampler = LogUniformSampler(n_items)
        self.register_buffer("user_of_session", torch.zeros(0, dtype=torch.long), persistent=False)
        # normalised Ĝ^uv, Ĝ^uu, Ĝ^vv as CSR arrays (row pointers, columns, values, and the permutation
        # of the values that gives the transpose), built in `prepare`
        for g in GRAPHS:
            for part in ("crow", "col", "val", "tperm"):
                self.register_buffer(f"{g}_{part}", None, persistent=False)
        self.n_users = 0
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, init_std) on every weight (CTLab), zero biases, LayerNorm (1, 0), padding row 0."""
        std = self.params.init_std
        for name, prm in self.named_parameters():
            if "seq_norm" in name:
                nn.init.ones_(prm) if name.endswith("weight") else nn.init.zeros_(prm)
            elif name.endswith("bias"):
                nn.init.zeros_(prm)
            else:
                nn.init.normal_(prm, 0.0, std)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    # ---- dataset-level structures ------------------------------------------------------------------
    def prepare(self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Path | None = None) -> None:
        """Users, graphs and the sampler's popularity ranks from the fitted sequences only."""
        p: MCLSRParams = self.params
        fit = dataset.fit_sessions(splits)
        n_users = len(fit)
        user_of = np.full(dataset.n_sessions, -1, dtype=np.int64)
        user_of[fit.session] = np.arange(n_users)
        self.user_of_session = torch.from_numpy(user_of)
        self.sampler.set_counts(np.bincount(fit.items, minlength=self.n_items))
        self.n_users = n_users
        if not self.use_uv:
            return
        self.user_emb = nn.Embedding(max(n_users, 1), p.dim)
        nn.init.normal_(self.user_emb.weight, 0.0, p.init_std)
        r = user_item_matrix(fit, self.n_items, holdout_last=p.graph_holdout_last)
        self._set_graph("uv", bipartite_adjacency(r))
        if self.use_uc:
            self._set_graph("uu", cooccurrence_graph(r, mode=p.cooc_graph, topk=p.cooc_topk))
        if self.use_ic:
            self._set_graph("vv", cooccurrence_graph(r.T.tocsr(), mode=p.cooc_graph, topk=p.cooc_topk))

    def _set_graph(self, g: str, m: Any) -> None:
        m = m.tocsr()
        m.sort_indices()
        setattr(self, f"{g}_crow", torch.from_numpy(m.indptr.astype(np.int64)))
        setattr(self, f"{g}_col", torch.from_numpy(m.indices.astype(np.int64)))
        tperm = transpose_permutation(m)
        val = 0.5 * (m.data.astype(np.float64) + m.data[tperm])  # exactly symmetric: Âᵀ = Â
        setattr(self, f"{g}_val", torch.from_numpy(val.astype(np.float32)))
        setattr(self, f"{g}_tperm", torch.from_numpy(tperm))

    def graph(self, g: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(crow, col, values, transpose permutation or None) of Ĝ^g; in training with
        `edge_dropout` the values are dropped out (and rescaled) afresh at each call, and the
        permutation gives the transpose's values (None: the values are symmetric)."""
        crow, col, val, tperm = (getattr(self, f"{g}_{part}") for part in ("crow", "col", "val", "tperm"))
        if crow is None:
            raise SbrError("mclsr: prepare() must run before training (it builds the users and graphs)")
        p: MCLSRParams = self.params
        if self.training and p.edge_dropout > 0:
            val = val * (torch.rand_like(val) >= p.edge_dropout).to(val.dtype) / (1.0 - p.edge_dropout)
            return crow, col, val, tperm
        return crow, col, val, None

    # ---- encoders ----------------------------------------------------------------------------------
    def current_interest(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """I^s (B, d) of the last `max_len` history items, with the window (seq, mask) it read."""
        p: MCLSRParams = self.params
        seq, mask, lens = last_window(batch.seq, batch.lengths, p.max_len)
        w = seq.shape[1]
        e = self.item_emb(seq) * mask.unsqueeze(-1)
        pos = torch.arange(w, device=seq.device).unsqueeze(0).expand_as(seq)
        if p.pos == "reversed":
            pos = (lens.unsqueeze(1) - 1 - pos).clamp(min=0)
        ep = e + self.pos_emb(pos)
        if self.seq_norm is not None:
            ep = self.seq_norm(ep)
        ep = self.seq_drop(ep)
        a = self.w2(torch.tanh(self.w1(ep))).squeeze(-1).masked_fill(~mask, float("-inf"))
        return (torch.softmax(a, dim=-1).unsqueeze(1) @ e).squeeze(1), seq, mask

    def forward(self, batch: Batch) -> torch.Tensor:
        """Eq. (16): scores (B, n_items) = I^s · H^vᵀ; column 0 (padding) is -inf."""
        interest, _, _ = self.current_interest(batch)
        scores = interest @ self.item_emb.weight.t()
        scores[:, 0] = float("-inf")
        return scores

    def propagate_rows(self, g: str, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Rows `rows` of GraphEncoder^{(L_g)}(x, Ĝ^g): Â applied L_g times (the last layer, or the
        mean over layers 0..L_g). Layers before the last are computed for every node; the last only
        for `rows`, which is all the losses read."""
        p: MCLSRParams = self.params
        if p.L_g == 0:
            return x[rows]
        crow, col, val, tperm = self.graph(g)
        layers = [x]
        for _ in range(p.L_g - 1):
            layers.append(_SymmetricSpMM.apply(crow, col, val, tperm, layers[-1]))
        last = _rows_spmm(crow, col, val, rows, layers[-1])
        if p.graph_readout == "last":
            return last
        return torch.stack([layer[rows] for layer in layers] + [last]).mean(0)

    def training_loss(self, batch: Batch) -> torch.Tensor:
        """J = L^P + β L^IL + γ (L^UC + L^IC) (eq. 15)."""
        p: MCLSRParams = self.params
        i_s, seq, mask = self.current_interest(batch)
        comb = i_s
        loss_il = loss_fl = None
        if self.use_uv:
            if batch.session is None:
                raise SbrError("mclsr trains on batches that carry each example's user (Batch.session)")
            if self.user_emb is None:
                raise SbrError("mclsr: prepare() must run before training (it builds the users and graphs)")
            users = self.user_of_session[batch.session]
            known = users >= 0
            ub = torch.unique(users[known])  # the batch's distinct fitted users, sorted
        if self.use_uv and ub.numel() > 0:
            n_users = self.user_emb.num_embeddings
            ic_ids = seq[mask] if p.item_cl_set == "history-items" else _as_1d(batch.targets)
            vb = torch.unique(ic_ids[ic_ids > 0])  # L^IC anchors
            items = torch.unique(torch.cat([seq[mask], vb]))  # every item row of H^{v,uv} read below
            h = self.propagate_rows("uv", torch.cat([self.user_emb.weight, self.item_emb.weight]),
                                    torch.cat([ub, n_users + items]))
            h_u_uv, h_v_uv = h[: ub.shape[0]], h[ub.shape[0]:]  # rows of ub, rows of items
            assert self.w3 is not None
            e_uv = h_v_uv[_position(items, seq)] * mask.unsqueeze(-1)  # eqs. 5-6: E^{u,uv}
            q = torch.tanh(self.w3(h_u_uv[_position(ub, users.clamp(min=0))]))
            a = (e_uv @ q.unsqueeze(-1)).squeeze(-1).masked_fill(~mask, float("-inf"))
            i_c = (torch.softmax(a, dim=-1).unsqueeze(1) @ e_uv).squeeze(1)
            comb = torch.where(known.unsqueeze(1), p.alpha * i_s + (1.0 - p.alpha) * i_c, i_s)  # eq. 13
            if self.use_il:  # eqs. 7-8
                head2 = self.head_i2 if self.head_i2 is not None else self.head_i
                assert self.head_i is not None and head2 is not None
                loss_il = cross_view_nce(self.head_i(i_s[known]), head2(i_c[known]), p.tau, p.cl_sim, p.cl_symmetric)
            parts = []
            if self.use_uc:  # eqs. 9-11: users of the batch, user-item view vs user-user view
                assert self.head_u is not None
                h_u_uu = self.propagate_rows("uu", self.user_emb.weight, ub)
                parts.append(cross_view_nce(self.head_u(h_u_uv), self.head_u(h_u_uu), p.tau, p.cl_sim, p.cl_symmetric))
            if self.use_ic and vb.numel() > 0:  # item-level analogue (L^IC)
                assert self.head_v is not None
                h_v_vv = self.propagate_rows("vv", self.item_emb.weight, vb)
                parts.append(cross_view_nce(self.head_v(h_v_uv[_position(items, vb)]), self.head_v(h_v_vv), p.tau,
                                            p.cl_sim, p.cl_symmetric))
            if parts:
                loss_fl = parts[0] if len(parts) == 1 else parts[0] + parts[1]  # eq. 12
        targets = _as_1d(batch.targets)
        if p.negatives == "full":
            logits = comb @ self.item_emb.weight.t()
            logits[:, 0] = float("-inf")
            loss = nn.functional.cross_entropy(logits, targets)
        else:
            loss = sampled_softmax_loss(comb, self.item_emb.weight, targets, self.sampler, p.neg_ratio * len(batch))
        if loss_il is not None:
            loss = loss + p.beta * loss_il
        if loss_fl is not None:
            loss = loss + p.gamma * loss_fl
        return loss


def _position(sorted_ids: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Index of each of `ids` in the sorted, distinct `sorted_ids` (ids absent: a valid index, unused)."""
    return torch.searchsorted(sorted_ids, ids).clamp(max=max(int(sorted_ids.shape[0]) - 1, 0))


def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, n: int) -> torch.Tensor:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta", invariant checks
        return torch.sparse_csr_tensor(crow, col, val, size=(n, n))


class _SymmetricSpMM(torch.autograd.Function):
    """Â @ X for a square CSR Â with a symmetric pattern; the backward multiplies by Âᵀ built from
    the same arrays (`tperm`), without PyTorch's per-call sparse transpose and sort."""

    @staticmethod
    def forward(ctx: Any, crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, tperm: torch.Tensor | None,
                x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(crow, col, val if tperm is None else val[tperm])
        return _csr(crow, col, val, x.shape[0]) @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, None, None, torch.Tensor]:
        crow, col, val_t = ctx.saved_tensors
        return None, None, None, None, _csr(crow, col, val_t, grad.shape[0]) @ grad.contiguous()


def _rows_spmm(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, rows: torch.Tensor,
               x: torch.Tensor) -> torch.Tensor:
    """(Â @ X)[rows] from the rows' edges only (gathers and one index_add; differentiable in X)."""
    starts = crow[rows]
    counts = crow[rows + 1] - starts
    total = int(counts.sum())
    owner = torch.repeat_interleave(torch.arange(rows.shape[0], device=rows.device), counts, output_size=total)
    first = torch.cumsum(counts, 0) - counts
    edge = torch.arange(total, device=rows.device) - first[owner] + starts[owner]
    msg = val[edge].unsqueeze(1) * x[col[edge]]
    return torch.zeros(rows.shape[0], x.shape[1], dtype=x.dtype, device=x.device).index_add(0, owner, msg)


def _as_1d(targets: torch.Tensor) -> torch.Tensor:
    if targets.dim() != 1:
        raise SbrError("mclsr trains on one target per example (the protocol's training examples)")
    return targets


MclsrCtlab = register_variant(
    "mclsr-ctlab", "mclsr", doc="MCLSR with the CTLab-ITMO re-implementation's choices (binary top-50 co-occurrence "
    "graphs, dot-product symmetric NT-Xent at tau 0.5, two interest heads, reversed positions with LayerNorm and "
    "dropout 0.3, edge dropout 0.3, no attention biases, max length 20; its sampled softmax kept as ComiRec's).",
    cooc_graph="binary", cl_sim="dot", cl_symmetric=True, split_interest_heads=True, pos="reversed",
    seq_layernorm=True, seq_dropout=0.3, edge_dropout=0.3, attention_bias=False)
