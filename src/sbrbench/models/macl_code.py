r"""`macl-code`: MACL as the released code computes it (Zhang-xiaokun/MACL b9f58f5, `model.py` for
Cellphones / Grocery, `modelSingle.py` for Instacart; models-next.md §2.4, §2.8).

Kept from the release, quirks included:

* **the feature overwrite** (§2.8-1): the code copies its PCA feature files into six embedding
  tables and then re-initialises every parameter, those tables included, to U(±1/√d); the
  "modality views" are therefore random trainable tables and no feature file is needed — this
  variant runs on the shipped ID-only pickles;
* item-level CL over **all N items at every step**; each item's view drawn uniformly; 50
  negatives (Instacart 100) drawn uniformly *with replacement* from rows 0..N−1 of the
  zero-prepended table (row 0 is a zero vector, the last item is never drawn, the anchor may be
  its own negative), projected in the positive's view; the text-only code projects view k's
  negatives with projector k instead of k+1 (§2.8-12, `negative_projector_quirk`);
* session-level CL whose negatives are **all B sessions of the batch** in the anchor's view, the
  anchor's own positive included (the code broadcasts, so it needs B = num_sess_negatives: here
  the batch is the negative set for any B);
* the loss with **log10**, no positive in the denominator, and the adaptive λ = softmax over the
  anchors multiplying **the positive term only**:
  L = Σ_a log10 Σ_j exp(cos(a, n_j)/τ) − Σ_a λ_a log10 exp(cos(a, p_a)/τ), cos with +1e-12 in its
  denominator, λ from MLP_adp over dropout([a ‖ p ‖ mean_j n_j]) (the input dropout is the
  attention dropout module, 0.5 / 0.2); sums, not means; τ = 1; CE + 0.01·L_item + 0.01·L_sess;
* **dropout only in the first epoch** (§2.8-2: `train_test` calls `model.eval()` and never
  `model.train()`), via `on_epoch_start` (`dropout_first_epoch_only=false` to switch it off);
* no weight decay (`--l2` is parsed but unused), Adam 1e-3, no learning-rate decay, batch 50
  (Instacart 100), 100 epochs; one sample per session (the `macl` protocol's data).

Evaluation is sbrbench's: every test example once (the code's last, overlapping batch counts up
to B−1 examples twice), full catalogue, session items *not* masked, ties pessimistic (the code's
`argsort` breaks them by index; float scores have none in practice); `--select-on test` gives the
code's "best of each metric over all epochs on the test set" (`paper_best`) and trains every epoch
(`patience=0`). Parameters the code creates but never uses (`HyperConv`, `LayerNorm`, `gate_w3`,
`adp_*`, Instacart's position tables) are left out: they change no output, only which numbers
the global RNG hands to the others at initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sbrbench.errors import SbrError
from sbrbench.models.base import register_model
from sbrbench.models.layers import overwritten_init, uniform_init_
from sbrbench.models.macl import (
    LN10,
    GatedFusion,
    LastQueryAttention,
    MACLBase,
    TanhMLP,
    adaptive_mlp,
    with_zero_row,
)

if TYPE_CHECKING:
    from sbrbench.batching import Batch

EPS = 1e-12  # the code's cosine denominator term


@dataclass
class MACLCodeParams:
    """Released-code settings (`main.py`; Instacart's `mainSingle.py` through per-dataset defaults)."""

    dim: int = 100
    heads: int = 4
    attn_dropout: float = 0.5  # also the adaptive MLP's input dropout (the code's `self.dropout`)
    dropout: float = 0.5  # merger, projectors, adaptive MLP layers
    alpha: float = 0.01
    beta: float = 0.01
    tau: float = 1.0
    item_negatives: int = 50
    image: bool = True  # main.py: image + text (6 views); false: modelSingle.py, text only (3 views)
    views_per_modality: int = 3
    dropout_first_epoch_only: bool = True
    negative_projector_quirk: bool = True  # text-only code: view k's negatives through projector k


@dataclass
class Draws:
    """The random choices of one contrastive step (the code draws them with the global RNG)."""

    item_views: torch.Tensor  # (N,) view of each item's positive, 0..V-1
    item_negatives: torch.Tensor  # (N, K) rows 0..N-1 of the zero-prepended view tables
    sess_views: torch.Tensor  # (B,) view of each session's positive


def released_contrast(anchor: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor, lam: torch.Tensor,
                      tau: float) -> torch.Tensor:
    r"""The released loss: Σ_a log10 Σ_j exp(cos(a, n_aj)/τ) − Σ_a λ_a·log10 exp(cos(a, p_a)/τ).

    anchor, pos (A, d); negs (A, K, d); lam (A,) (softmax over the anchors in the code).
    cos(x, y) = x·y / (|x||y| + 1e-12).
    """
    cos_p = (anchor * pos).sum(-1) / (anchor.norm(dim=-1) * pos.norm(dim=-1) + EPS)
    cos_n = (anchor.unsqueeze(1) * negs).sum(-1) / (anchor.norm(dim=-1).unsqueeze(1) * negs.norm(dim=-1) + EPS)
    return released_loss(cos_p, cos_n, lam, tau)


def released_loss(cos_p: torch.Tensor, cos_n: torch.Tensor, lam: torch.Tensor, tau: float) -> torch.Tensor:
    """`released_contrast` from the cosines: cos_p (A,), cos_n (A, K), lam (A,)."""
    pos_term = (lam * (cos_p / tau) / LN10).sum()
    neg_term = (torch.log(torch.exp(cos_n / tau).sum(1)) / LN10).sum()
    return neg_term - pos_term


def dropout_keep(shape: tuple[int, ...], rate: float, device: torch.device | str) -> torch.Tensor:
    """Dropout's keep pattern (uint8: 0 with probability `rate`, else 1) from the global RNG. At
    rate 0.5 (the code's) every random byte gives eight entries: on a CPU `bernoulli_` on the
    (N, K, d) negatives took longer than the rest of the step (`bench/bench_macl.py`)."""
    numel = 1
    for s in shape:
        numel *= int(s)
    if rate == 0.5:
        raw = torch.randint(0, 256, (-(-numel // 8),), dtype=torch.uint8, device=device)
        bits = torch.arange(8, dtype=torch.uint8, device=device)
        return ((raw.unsqueeze(1) >> bits) & 1).view(-1)[:numel].view(shape)
    return (torch.rand(shape, device=device) >= rate).to(torch.uint8)


class _GatheredRows(torch.autograd.Function):
    """`gathered_row_stats` with a hand-written backward. With dropout every gathered row is its
    own vector: the forward keeps them (one (A, K, d) tensor, filled chunk by chunk from the table
    pre-multiplied by the dropout scale, times the uint8 keep pattern: the same values as the
    float multipliers, without building them), and the backward scatters each chunk's row
    gradients into one (R, d) buffer (autograd through a chunked `index_select` zero-fills a
    table-sized buffer per chunk, which cost more than the products themselves). Without dropout
    (every epoch after the first, the code's quirk) a gathered row is a table row: norms come from
    the table's row norms, means and the anchors' gradient from `embedding_bag`, and the table's
    gradient from an `embedding_bag` over the transposed index (rows → the anchors that drew
    them), so neither pass keeps (A, K, d) rows beyond the forward's chunks for the dots
    (`bench/bench_macl.py`)."""

    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, anchors: torch.Tensor, idx: torch.Tensor,
                keep: torch.Tensor | None, scale: float, step: int) -> tuple[torch.Tensor, ...]:
        n_anchors, k = idx.shape
        ctx.step, ctx.scale = step, scale
        if keep is None:
            dots = [torch.bmm(table.index_select(0, idx[s : s + step].reshape(-1)).view(-1, k, table.shape[1]),
                              anchors[s : s + step].unsqueeze(2)).squeeze(2) for s in range(0, n_anchors, step)]
            out = torch.cat(dots), table.norm(dim=-1)[idx], F.embedding_bag(idx, table, mode="mean")
            ctx.save_for_backward(table, anchors, idx)
            return out
        src = table * scale if scale != 1.0 else table
        rows = torch.empty(n_anchors, k, table.shape[1], dtype=table.dtype, device=table.device)
        dots, norms, means = [], [], []
        for s in range(0, n_anchors, step):
            g = rows[s : s + step]
            torch.index_select(src, 0, idx[s : s + step].reshape(-1), out=g.view(-1, g.shape[-1]))
            g.mul_(keep[s : s + step])
            dots.append(torch.bmm(g, anchors[s : s + step].unsqueeze(2)).squeeze(2))
            norms.append(g.norm(dim=-1))
            means.append(g.mean(1))
        out = torch.cat(dots), torch.cat(norms), torch.cat(means)
        ctx.save_for_backward(table, anchors, idx, keep, out[1], rows)
        return out

    @staticmethod
    def backward(ctx: Any, g_dots: torch.Tensor | None, g_norms: torch.Tensor | None,
                 g_means: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        if len(ctx.saved_tensors) == 3:
            table, anchors, idx = ctx.saved_tensors
            g_table, g_anch = _GatheredRows.unmasked_backward(table, anchors, idx, g_dots, g_norms, g_means,
                                                              ctx.needs_input_grad)
            return g_table, g_anch, None, None, None, None
        table, anchors, idx, keep, norms, rows = ctx.saved_tensors
        step, k = ctx.step, idx.shape[1]
        g_table = torch.zeros_like(table) if ctx.needs_input_grad[0] else None
        g_anch = torch.zeros_like(anchors) if ctx.needs_input_grad[1] else None
        for s in range(0, idx.shape[0], step):
            e = s + step
            g = rows[s:e]
            if g_dots is not None and g_anch is not None:
                g_anch[s:e] = torch.bmm(g_dots[s:e].unsqueeze(1), g).squeeze(1)
            if g_table is None:
                continue
            grad = torch.zeros_like(g) if g_dots is None else g_dots[s:e].unsqueeze(2) * anchors[s:e].unsqueeze(1)
            if g_norms is not None:  # d|r|/dr = r/|r|, 0 at r = 0 (the zero row), as `norm` does
                n = norms[s:e]
                grad.addcmul_((g_norms[s:e] / torch.where(n > 0, n, torch.ones_like(n))).unsqueeze(2), g)
            if g_means is not None:
                grad += (g_means[s:e] / k).unsqueeze(1)
            grad.mul_(keep[s:e])
            g_table.index_add_(0, idx[s:e].reshape(-1), grad.view(-1, grad.shape[-1]))
        if g_table is not None and ctx.scale != 1.0:
            g_table.mul_(ctx.scale)
        return g_table, g_anch, None, None, None, None

    @staticmethod
    def unmasked_backward(table: torch.Tensor, anchors: torch.Tensor, idx: torch.Tensor,
                          g_dots: torch.Tensor | None, g_norms: torch.Tensor | None, g_means: torch.Tensor | None,
                          needs: tuple[bool, ...]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        r"""Gradients when r_ak = table[idx[a, k]]:

        ∂/∂anchors[a] = Σ_k g_dots[a, k]·r_ak;
        ∂/∂table[j] = Σ_{(a,k): idx[a,k]=j} (g_dots[a, k]·anchors[a] + g_means[a]/K)
        + table[j]/|table[j]|·Σ_{(a,k): idx[a,k]=j} g_norms[a, k].
        """
        n_anchors, k = idx.shape
        g_anch = None
        if needs[1]:
            g_anch = (F.embedding_bag(idx, table, mode="sum", per_sample_weights=g_dots) if g_dots is not None
                      else torch.zeros_like(anchors))
        if not needs[0]:
            return None, g_anch
        flat_idx = idx.reshape(-1)
        order = torch.argsort(flat_idx)
        drawer = order // k  # the anchor of each sorted draw
        offsets = torch.zeros(table.shape[0], dtype=torch.long, device=table.device)
        offsets[1:] = torch.bincount(flat_idx, minlength=table.shape[0]).cumsum(0)[:-1]
        zeros = torch.zeros_like(anchors)
        src = torch.cat([anchors if g_dots is not None else zeros, zeros if g_means is None else g_means / k])
        inputs = torch.stack([drawer, drawer + n_anchors], 1).reshape(-1)
        w_dots = g_dots.reshape(-1)[order] if g_dots is not None else torch.zeros_like(order, dtype=table.dtype)
        weights = torch.stack([w_dots, torch.ones_like(w_dots)], 1).reshape(-1)
        g_table = F.embedding_bag(inputs, src, offsets * 2, mode="sum", per_sample_weights=weights)
        if g_norms is not None:  # d|r|/dr = r/|r|, 0 at r = 0 (the zero row), as `norm` does
            row_norms = table.norm(dim=-1)
            coef = torch.zeros_like(row_norms).index_add_(0, flat_idx, g_norms.reshape(-1))
            g_table.addcmul_((coef / torch.where(row_norms > 0, row_norms, torch.ones_like(row_norms))).unsqueeze(1),
                             table)
        return g_table, g_anch


def gathered_row_stats(table: torch.Tensor, anchors: torch.Tensor, idx: torch.Tensor,
                       keep: torch.Tensor | None = None, scale: float = 1.0,
                       step: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Statistics of the gathered rows r_ak = scale·table[idx[a, k]] ⊙ keep[a, k] (a dropout drawn
    per gathered row: `dropout_keep` and scale 1/(1 − rate); without `keep`, r_ak = table[idx[a, k]]):

    dots[a, k] = ⟨r_ak, anchors[a]⟩ (A, K), norms[a, k] = |r_ak| (A, K), means[a] = mean_k r_ak (A, d).

    table (R, d), anchors (A, d), idx (A, K) rows of `table`, keep (A, K, d) of 0/1 (uint8) or None.
    Gradients flow to `table` and `anchors`.
    """
    k, d = idx.shape[1], table.shape[1]
    step = step or max(1, (1 << 22) // max(k * d, 1))  # ~16 MB of gathered rows per chunk
    return _GatheredRows.apply(table, anchors, idx, keep, float(scale) if keep is not None else 1.0, int(step))


@register_model("macl-code")
class MACLCode(MACLBase):
    """MACL as released: random trainable modality tables (the features are overwritten), item CL
    over all items, batch negatives, log10 loss with λ on the positive term, dropout in epoch 1 only."""

    Params: ClassVar[type] = MACLCodeParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 100, "batch_size": 50, "lr": 1e-3, "l2": 0.0, "lr_dc": 1.0, "patience": 10,
    }
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "macl-instacart": {"image": False, "attn_dropout": 0.2, "batch_size": 100, "item_negatives": 100},
    }
    paper_compatible: ClassVar[dict[str, Any]] = {"patience": 0}  # the code trains every epoch

    def __init__(self, n_items: int, params: MACLCodeParams | None = None) -> None:
        super().__init__(n_items, params)
        p: MACLCodeParams = self.params
        if p.dim % p.heads:
            raise SbrError(f"{self.name} needs dim divisible by heads, got dim={p.dim}, heads={p.heads}")
        for key in ("attn_dropout", "dropout"):
            if not 0.0 <= getattr(p, key) < 1.0:
                raise SbrError(f"{self.name} hyper-parameter {key!r} must be in [0, 1), got {getattr(p, key)}")
        if p.item_negatives < 1 or p.views_per_modality < 1 or p.tau <= 0:
            raise SbrError(f"{self.name} needs item_negatives >= 1, views_per_modality >= 1 and tau > 0")
        if self.n_items < 3:
            raise SbrError(f"{self.name} needs at least 2 items")
        d, n = p.dim, self.n_items - 1
        self.modalities = (["image"] if p.image else []) + ["text"]
        self.view_modality = [m for m in self.modalities for _ in range(p.views_per_modality)]
        n_views = len(self.view_modality)
        with overwritten_init():  # init_parameters(): every parameter U(±1/√d), the feature tables included
            self.id_emb = nn.Parameter(torch.empty(n, d))
            for k in range(n_views):
                setattr(self, f"view{k}", nn.Parameter(torch.empty(n, d)))
            self.fusion = GatedFusion(d, len(self.modalities))
            self.encoder = LastQueryAttention(d, p.heads)
            self.item_proj = nn.ModuleList(TanhMLP([d, d]) for _ in range(n_views + 1))
            self.sess_proj = nn.ModuleList(TanhMLP([d, d]) for _ in range(n_views + 1))
            self.item_adp = adaptive_mlp(d)
            self.sess_adp = adaptive_mlp(d)
        self.reset_parameters()
        self._epoch = 0
        self.fit_info: dict[str, Any] = {"features": {"used": False, "why": "the released code re-initialises the "
                                                      "feature tables it loads (models-next.md §2.8-1)"},
                                         "views": self.view_modality}

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(dim), 1/sqrt(dim)) (`init_parameters`)."""
        uniform_init_(self, self.params.dim)

    def on_epoch_start(self, epoch: int) -> None:
        """The code leaves the model in eval mode after its first test: dropout in epoch 0 only."""
        self._epoch = int(epoch)

    @property
    def dropout_active(self) -> bool:
        return self.training and (self._epoch == 0 or not self.params.dropout_first_epoch_only)

    # ---- one training step -------------------------------------------------------------------------
    def draw(self, batch_size: int, device: torch.device | str) -> Draws:
        """The step's random choices, from the global RNG as the code's `torch.randint` calls."""
        p: MACLCodeParams = self.params
        n, v = self.n_items - 1, len(self.view_modality)
        return Draws(item_views=torch.randint(v, (n,), device=device),
                     item_negatives=torch.randint(n, (n, p.item_negatives), device=device),
                     sess_views=torch.randint(v, (batch_size,), device=device))

    def training_loss(self, batch: Batch, draws: Draws | None = None) -> torch.Tensor:
        """CE + α·L_item + β·L_sess as `SemanticContrast.forward` and `train_test` compute them."""
        p: MACLCodeParams = self.params
        draws = draws if draws is not None else self.draw(batch.seq.shape[0], batch.seq.device)
        views = self.view_tables()
        items = self.item_table(views)
        sess, loss = self.supervised_loss(items, batch)
        return loss + p.alpha * self.item_cl(items, views, draws) + p.beta * self.sess_cl(sess, views, batch, draws)

    def _lambda(self, mlp: TanhMLP, a: torch.Tensor, pos: torch.Tensor, neg_mean: torch.Tensor) -> torch.Tensor:
        x = F.dropout(torch.cat([a, pos, neg_mean], dim=-1), self._p(self.params.attn_dropout), self.dropout_active)
        return torch.softmax(mlp(x, self._p(self.params.dropout)).squeeze(-1), dim=0)

    def item_cl(self, items: torch.Tensor, views: list[torch.Tensor], draws: Draws) -> torch.Tensor:
        """`item_contrastive` + `item_contrast_loss_random` over all N items.

        Each projector is applied to its whole zero-prepended view table once (the same values as
        the code's projection of every gathered row); dropout, when active, is drawn per gathered
        row as the code's. The (N, K, d) negatives are reduced by `gathered_row_stats`: without
        dropout only one chunk of gathered rows exists at a time.
        """
        p: MACLCodeParams = self.params
        p_drop = self._p(p.dropout)
        n, k = items.shape[0], draws.item_negatives.shape[1]
        tables = [with_zero_row(t) for t in views]
        pos_tables = torch.stack([torch.tanh(self.item_proj[v + 1].layers[0](t)) for v, t in enumerate(tables)])
        if not p.image and p.negative_projector_quirk:
            neg_tables = torch.stack([torch.tanh(self.item_proj[v].layers[0](t)) for v, t in enumerate(tables)])
        else:
            neg_tables = pos_tables
        c = draws.item_views
        pos = F.dropout(pos_tables[c, torch.arange(1, n + 1, device=items.device)], p_drop, p_drop > 0)
        anchors = self.item_proj[0](items, p_drop)
        flat = neg_tables.reshape(-1, neg_tables.shape[-1])
        idx = c.unsqueeze(1) * neg_tables.shape[1] + draws.item_negatives  # (N, K) rows of `flat`
        keep = dropout_keep((n, k, flat.shape[1]), p_drop, items.device) if p_drop > 0 else None
        dots, norms, means = gathered_row_stats(flat, anchors, idx, keep, 1.0 / (1.0 - p_drop))
        a_norm = anchors.norm(dim=-1)
        cos_n = dots / (a_norm.unsqueeze(1) * norms + EPS)
        cos_p = (anchors * pos).sum(-1) / (a_norm * pos.norm(dim=-1) + EPS)
        lam = self._lambda(self.item_adp, anchors, pos, means)
        return released_loss(cos_p, cos_n, lam, p.tau)

    def sess_cl(self, sess: torch.Tensor, views: list[torch.Tensor], batch: Batch, draws: Draws) -> torch.Tensor:
        """`sess_contrastive` + `sess_contrast_loss_random`: every session of the batch is a negative."""
        p: MACLCodeParams = self.params
        p_drop = self._p(p.dropout)
        anchors = self.sess_proj[0](sess, p_drop)
        cand = torch.stack([self.sess_proj[k + 1](self.encode(t, batch), p_drop) for k, t in enumerate(views)])
        rows = cand[draws.sess_views]  # (B, B, d)
        own = torch.arange(sess.shape[0], device=sess.device)
        pos = rows[own, own]
        lam = self._lambda(self.sess_adp, anchors, pos, rows.mean(1))
        return released_contrast(anchors, pos, rows, lam, p.tau)

