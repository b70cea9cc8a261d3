r"""MACL — multi-modal adaptive contrastive learning for SBR (Zhang et al., Pattern Recognition
2025, arXiv 2506.05044), the paper reading (`macl`), and `macl-text`, its offline text variant.

The released code (Zhang-xiaokun/MACL) is `macl-code` (`macl_code.py`); the paper's equations
could not be read (models-next.md §2.1, §2.5), so every choice the paper would settle is a
hyper-parameter with the spec's default. Architecture as coded (§2.4), shared by all variants:

* items: an ID table and V modality view tables (images: original + augmented views, then texts);
  fusion e = E_id + Σ_m g_m ⊙ F_m with gates g_m = tanh(W m + W' F_m) on the original view F_m of
  each modality and m = MLP_merge([E_id ‖ F_image ‖ F_text]);
* session encoder f: one multi-head attention (d = 100, 4 heads, −10000 on padded keys, dropout
  on the probabilities, no output projection, residual, norm, FFN or positions), read at the last
  click: attention with the last item as the query over the session;
* scores s·eᵀ over the catalogue, cross-entropy;
* item-level CL: anchor P₀(e_i), positive P_{c+1}(view_c[i]) with c drawn per anchor, sampled
  item negatives in the same view; session-level CL: anchor Q₀(f(e[S])), positive
  Q_{c+1}(f(view_c[S])), the other sessions of the batch in that view as negatives; an MLP over
  [anchor ‖ positive ‖ mean negative] gives each anchor's adaptive weight;
* loss = CE + α·L_item + β·L_sess.

`macl` (paper reading, §2.5): feature files are loaded and kept (frozen buffers unless
`finetune_features=true`), dropout follows train/eval modes, natural-log per-anchor InfoNCE with
the positive in the denominator, ℓ_a = −log(e^{s_p}/(e^{s_p} + Σ_j e^{s_j})), s = cos/τ, weighted as
a whole: L = Σ_a w_a ℓ_a with w = n_anchors·softmax(MLP_adp(·)) (mean weight 1; `cl_reduction=mean`
divides by n_anchors), session negatives are the other B−1 sessions for any batch size, item
negatives are drawn from 1..N without the anchor, item-level CL runs over the batch's items
(`item_cl_scope=batch`) or every item (`all`, as coded).

Features are data (`--set image_features=PATH.npy --set text_features=PATH.npy`, N × dim, row r = item
r+1; augmented views `image_aug=A.npy,B.npy`, `text_aug=...`). Without image features the model
has the release's text-only (Instacart) structure; without any text source the text views are
random trainable tables, which is what the released code effectively trains (§2.8-1) — recorded
in `fit_info["features"]`. `macl-text` encodes the dataset's own item text with all-MiniLM-L6-v2
into `text_views` (orig, swap, sub; optional del, ins), one PCA basis (d = dim), cached beside the
processed dataset (`sbrbench.features.text`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sbrbench.errors import SbrError
from sbrbench.models.base import Model, dropped, register_model, register_variant
from sbrbench.models.layers import overwritten_init, uniform_init_

if TYPE_CHECKING:
    from sbrbench.batching import Batch
    from sbrbench.data.dataset import ProcessedDataset

LN10 = math.log(10.0)


# ---- building blocks (shared with macl-code) -------------------------------------------------------
class LastQueryAttention(nn.Module):
    """MACL's session encoder: multi-head attention of the last click over the session.

    Q, K, V are linear maps with bias; scores q·k/√(d/h) with −10000 added on padded keys, softmax,
    dropout on the probabilities, heads concatenated. The released code computes every query and
    keeps the last real position's row; only that row is computed here (the same numbers).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.dim, self.heads = dim, heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, p_drop: float) -> torch.Tensor:
        """Session vectors (B, d) of the padded click embeddings `h` (B, L, d)."""
        bsz, seqlen, d = h.shape
        hd = d // self.heads
        last = h[torch.arange(bsz, device=h.device), lengths - 1]
        q = self.query(last).view(bsz, self.heads, hd)
        k = self.key(h).view(bsz, seqlen, self.heads, hd)
        v = self.value(h).view(bsz, seqlen, self.heads, hd)
        scores = torch.einsum("bhd,blhd->bhl", q, k) / math.sqrt(hd)
        scores = scores + (1.0 - mask.to(scores.dtype)).unsqueeze(1) * -10000.0
        probs = F.dropout(torch.softmax(scores, dim=-1), p_drop, p_drop > 0)
        return torch.einsum("bhl,blhd->bhd", probs, v).reshape(bsz, d)


class TanhMLP(nn.Module):
    """Linear → tanh → dropout, layer after layer (MACL's merger, projectors and adaptive MLP)."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor, p_drop: float) -> torch.Tensor:
        for layer in self.layers:
            x = F.dropout(torch.tanh(layer(x)), p_drop, p_drop > 0)
        return x


def adaptive_mlp(dim: int) -> TanhMLP:
    """MLP_adp: 3d → ⌊3d/4⌋ → ⌊3d/8⌋ → 1, tanh and dropout after each layer."""
    return TanhMLP([3 * dim, (3 * dim) // 4, (3 * dim) // 8, 1])


class GatedFusion(nn.Module):
    """e = E_id + Σ_m tanh(A_m·m + B_m·F_m) ⊙ F_m with m = MLP_merge([E_id ‖ F_1 ‖ ... ‖ F_M])
    (MLP_merge: Linear((M+1)d → d), tanh, dropout, Linear(d → d), tanh, dropout)."""

    def __init__(self, dim: int, n_modalities: int) -> None:
        super().__init__()
        self.merge = TanhMLP([(n_modalities + 1) * dim, dim, dim])
        self.gate_m = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_modalities))
        self.gate_f = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_modalities))

    def forward(self, ids: torch.Tensor, feats: list[torch.Tensor], p_drop: float) -> torch.Tensor:
        m = self.merge(torch.cat([ids, *feats], dim=1), p_drop)
        out = ids
        for gm, gf, f in zip(self.gate_m, self.gate_f, feats):
            out = out + torch.tanh(gm(m) + gf(f)) * f
        return out


def with_zero_row(table: torch.Tensor) -> torch.Tensor:
    """Row 0 (padding) = 0 in front of an (N, d) item table: item id i → row i."""
    return torch.cat([table.new_zeros(1, table.shape[1]), table], dim=0)


# ---- the contrastive maths (tested on hand-computed values) -----------------------------------------
def similarities(anchor: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(s_p (A,), s_n (A, K)): cosines of each anchor with its positive and its negatives, over τ.
    anchor, pos (A, d); negs (A, K, d)."""
    a = F.normalize(anchor, dim=-1)
    sp = (a * F.normalize(pos, dim=-1)).sum(-1) / tau
    return sp, torch.einsum("ad,akd->ak", a, F.normalize(negs, dim=-1)) / tau


def in_batch_similarities(anchors: torch.Tensor, rows: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(s_p, s_n) of anchor b against rows[b, b] (its positive) and rows[b, j], j ≠ b (the other
    sessions in the same view): anchors (B, d); rows (B, B, d) → (B,), (B, B − 1)."""
    sims = torch.einsum("bd,bjd->bj", F.normalize(anchors, dim=-1), F.normalize(rows, dim=-1)) / tau
    own = torch.eye(anchors.shape[0], dtype=torch.bool, device=anchors.device)
    return sims[own], sims[~own].view(anchors.shape[0], -1)


def info_nce_per_anchor(anchor: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor, tau: float) -> torch.Tensor:
    r"""ℓ_a = −log(e^{s_p} / (e^{s_p} + Σ_j e^{s_j})) per anchor, s = cos/τ (natural log).

    anchor, pos (A, d); negs (A, K, d) (K may be 0). Returns (A,).
    """
    return contrastive_terms(*similarities(anchor, pos, negs, tau), True)


def in_batch_info_nce(anchors: torch.Tensor, rows: torch.Tensor, tau: float) -> torch.Tensor:
    """`info_nce_per_anchor` of anchor b against rows[b, b] (its positive) and rows[b, j], j ≠ b
    (the other sessions in the same view). anchors (B, d); rows (B, B, d). Returns (B,)."""
    return contrastive_terms(*in_batch_similarities(anchors, rows, tau), True)


def contrastive_terms(sp: torch.Tensor, sn: torch.Tensor, positive_in_denominator: bool) -> torch.Tensor:
    """Per-anchor loss log(Σ e^{s}) − s_p, the sum over the positive and the negatives (InfoNCE), or
    over the negatives only (`positive_in_denominator=False`, the released code's form)."""
    logits = torch.cat([sp.unsqueeze(1), sn], dim=1) if positive_in_denominator else sn
    return torch.logsumexp(logits, dim=1) - sp


def macl_objective(sp: torch.Tensor, sn: torch.Tensor, weights: torch.Tensor | None, *,
                   positive_in_denominator: bool = True, weighted_term: str = "whole",
                   reduction: str = "sum") -> torch.Tensor:
    """The contrastive term of `macl`: Σ_a w_a ℓ_a (`weighted_term=whole`, the spec's reading) or
    Σ_a log Σ e^{s} − Σ_a w_a s_p (`positive`, where the released code puts its λ); w = 1 without
    weights; `reduction=mean` divides by the number of anchors."""
    if weights is None or weighted_term == "whole":
        terms = contrastive_terms(sp, sn, positive_in_denominator)
        total = terms.sum() if weights is None else (weights * terms).sum()
    else:
        logits = torch.cat([sp.unsqueeze(1), sn], dim=1) if positive_in_denominator else sn
        total = torch.logsumexp(logits, dim=1).sum() - (weights * sp).sum()
    return total / max(sp.shape[0], 1) if reduction == "mean" else total


def sample_item_negatives(anchors: torch.Tensor, n_items: int, k: int) -> torch.Tensor:
    """(A, k) item ids drawn uniformly from 1..n_items without the anchor's own id (with replacement)."""
    neg = torch.randint(1, n_items, (anchors.shape[0], k), device=anchors.device)
    return neg + (neg >= anchors.unsqueeze(1)).long()


def adaptive_weights(logits: torch.Tensor, norm: str = "mean") -> torch.Tensor:
    """w = n·softmax(logits) over the n anchors: positive weights whose mean is exactly 1
    (`norm=sum`: softmax alone, summing to 1, the released code's λ)."""
    w = torch.softmax(logits, dim=0)
    return w if norm == "sum" else logits.shape[0] * w


# ---- the shared forward pass -------------------------------------------------------------------------------
class MACLBase(Model):
    """What every MACL variant shares: view tables `view0..`, gated fusion, the last-query
    attention encoder and full-catalogue scores. Subclasses set `view_modality` (one entry per view
    table, images first), `modalities` and the modules `id_emb`, `fusion`, `encoder`."""

    view_modality: list[str]
    modalities: list[str]

    @property
    def dropout_active(self) -> bool:
        """Whether dropout applies now (train mode; `macl-code` narrows it to the first epoch)."""
        return self.training

    def _p(self, rate: float) -> float:
        return rate if self.dropout_active else 0.0

    def view_tables(self) -> list[torch.Tensor]:
        """The V modality view tables (N, d), image views first."""
        return [getattr(self, f"view{k}") for k in range(len(self.view_modality))]

    def item_table(self, views: list[torch.Tensor]) -> torch.Tensor:
        """Fused item embeddings (N, d) of items 1..N."""
        first = [views[self.view_modality.index(m)] for m in self.modalities]
        return self.fusion(self.id_emb, first, self._p(self.params.dropout))

    def encode(self, table: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Session vectors (B, d) of the batch's prefixes read through an (N, d) item table."""
        h = with_zero_row(table)[batch.seq]
        return self.encoder(h, batch.mask, batch.lengths, self._p(self.params.attn_dropout))

    def session_scores(self, full: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Session vectors (B, d) read through a zero-prepended item table `full` (N + 1, d), and
        their scores (B, n_items) against it; column 0 is -inf."""
        sess = self.encoder(full[batch.seq], batch.mask, batch.lengths, self._p(self.params.attn_dropout))
        scores = sess @ full.t()
        scores[:, 0] = float("-inf")
        return sess, scores

    def supervised_loss(self, items: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Session vectors (B, d) and the cross-entropy of their scores against `items` (N, d)."""
        sess, scores = self.session_scores(with_zero_row(items), batch)
        return sess, F.cross_entropy(scores, batch.targets)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) against the fused item embeddings; column 0 is -inf."""
        return self.session_scores(with_zero_row(self.item_table(self.view_tables())), batch)[1]


# ---- the paper reading -------------------------------------------------------------------------------
@dataclass
class MACLParams:
    """MACL hyper-parameters; defaults from models-next.md §2.6 (sbrbench `macl` column)."""

    dim: int = 100  # = the PCA dimension of the features
    heads: int = 4
    attn_dropout: float = 0.5  # dropout on attention probabilities (Instacart: 0.2)
    dropout: float = 0.5  # merger, projectors, adaptive MLP and its input
    alpha: float = 0.01  # item-level CL weight
    beta: float = 0.01  # session-level CL weight
    tau: float = 1.0
    item_negatives: int = 50
    item_cl_scope: str = "batch"  # batch: the batch's items | all: every item (as coded)
    cl_reduction: str = "sum"  # sum: Σ_a w_a ℓ_a (spec) | mean: divided by the number of anchors
    positive_in_denominator: bool = True  # InfoNCE (spec); false: the released form log Σ_neg e^s − s_p
    weighted_term: str = "whole"  # whole: w_a·ℓ_a (spec) | positive: w_a on the positive term only (code)
    weight_norm: str = "mean"  # mean: w = n·softmax, mean weight 1 (spec) | sum: softmax, sum 1 (code's λ)
    image_features: str = ""  # .npy (N × dim), row r = item r+1; empty: no image modality
    image_aug: str = ""  # comma-separated .npy files: augmented image views
    text_features: str = ""  # .npy (N × dim); empty: text_encoder, else random trainable views
    text_aug: str = ""  # comma-separated .npy files: augmented text views
    finetune_features: bool = False  # feature tables trainable (default: frozen)
    random_views: int = 3  # text views without any text source (random trainable tables)
    text_encoder: str = ""  # "" | minilm | hash: encode the dataset's item text (macl-text)
    text_views: str = "orig,swap,sub"  # with text_encoder: orig, swap, sub, del, ins
    aug_seed: int = 0  # seed of the text augmentations
    pca_per_view: bool = False  # with text_encoder: MMSBR's separate PCA per view
    drop: str = ""  # components to switch off: item_cl, sess_cl, adaptive


ITEM_CL_SCOPES = ("batch", "all")
CL_REDUCTIONS = ("sum", "mean")
WEIGHTED_TERMS = ("whole", "positive")
WEIGHT_NORMS = ("mean", "sum")


@register_model("macl")
class MACL(MACLBase):
    """MACL (paper reading): multi-modal gated fusion, last-query attention, adaptive InfoNCE at item
    and session level over multi-modal views."""

    Params: ClassVar[type] = MACLParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 100, "batch_size": 100, "lr": 1e-3, "l2": 0.0, "lr_dc": 1.0, "patience": 10,
    }
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {"macl-instacart": {"attn_dropout": 0.2}}
    components: ClassVar[frozenset[str]] = frozenset({"item_cl", "sess_cl", "adaptive"})

    def __init__(self, n_items: int, params: MACLParams | None = None) -> None:
        super().__init__(n_items, params)
        p: MACLParams = self.params
        self._check(p)
        off = dropped(p)
        d, n = p.dim, self.n_items - 1
        self.image_files = [f for f in [p.image_features, *_paths(p.image_aug)] if f] if p.image_features else []
        if p.text_features:
            self.text_source = "file"
            self.text_files = [p.text_features, *_paths(p.text_aug)]
            n_text = len(self.text_files)
        elif p.text_encoder:
            self.text_source = p.text_encoder
            self.text_files = []
            n_text = len(_paths(p.text_views))
        else:
            self.text_source = "random"
            self.text_files = []
            n_text = p.random_views
        self.view_modality = ["image"] * len(self.image_files) + ["text"] * n_text
        n_views = len(self.view_modality)
        self.modalities = (["image"] if self.image_files else []) + ["text"]
        loaded = [k for k, m in enumerate(self.view_modality) if m == "image" or self.text_source != "random"]
        self.trainable_views = [k for k in range(n_views) if k not in loaded or p.finetune_features]
        self.features_used = bool(loaded)
        with overwritten_init():  # every parameter is re-initialised below, as the released code does
            self.id_emb = nn.Parameter(torch.empty(n, d))
            for k in self.trainable_views:
                setattr(self, f"view{k}", nn.Parameter(torch.empty(n, d)))
            self.fusion = GatedFusion(d, len(self.modalities))
            self.encoder = LastQueryAttention(d, p.heads)
            self.item_proj = None if "item_cl" in off else nn.ModuleList(TanhMLP([d, d]) for _ in range(n_views + 1))
            self.sess_proj = None if "sess_cl" in off else nn.ModuleList(TanhMLP([d, d]) for _ in range(n_views + 1))
            adaptive = "adaptive" not in off
            self.item_adp = adaptive_mlp(d) if adaptive and self.item_proj is not None else None
            self.sess_adp = adaptive_mlp(d) if adaptive and self.sess_proj is not None else None
        for k in range(n_views):
            if k not in self.trainable_views:
                self.register_buffer(f"view{k}", torch.zeros(n, d), persistent=False)
        self.reset_parameters()
        self.fit_info: dict[str, Any] = {}

    def _check(self, p: MACLParams) -> None:
        if p.dim % p.heads:
            raise SbrError(f"{self.name} needs dim divisible by heads, got dim={p.dim}, heads={p.heads}")
        for key in ("attn_dropout", "dropout"):
            if not 0.0 <= getattr(p, key) < 1.0:
                raise SbrError(f"{self.name} hyper-parameter {key!r} must be in [0, 1), got {getattr(p, key)}")
        if p.tau <= 0 or p.alpha < 0 or p.beta < 0:
            raise SbrError(f"{self.name} needs tau > 0 and alpha, beta >= 0")
        if p.item_negatives < 1:
            raise SbrError(f"{self.name} hyper-parameter 'item_negatives' must be >= 1, got {p.item_negatives}")
        if p.item_cl_scope not in ITEM_CL_SCOPES:
            raise SbrError(f"{self.name} item_cl_scope must be one of {', '.join(ITEM_CL_SCOPES)}, got {p.item_cl_scope!r}")
        for key, allowed in (("cl_reduction", CL_REDUCTIONS), ("weighted_term", WEIGHTED_TERMS),
                             ("weight_norm", WEIGHT_NORMS)):
            if getattr(p, key) not in allowed:
                raise SbrError(f"{self.name} {key} must be one of {', '.join(allowed)}, got {getattr(p, key)!r}")
        if p.text_features and p.text_encoder:
            raise SbrError(f"{self.name}: give text_features (a file) or text_encoder (the dataset's item text), not both")
        if (p.image_aug and not p.image_features) or (p.text_aug and not p.text_features):
            raise SbrError(f"{self.name}: augmented views (image_aug / text_aug) need the original view's file too")
        if p.text_encoder and p.text_encoder not in ("minilm", "hash"):
            raise SbrError(f"{self.name} text_encoder must be minilm or hash, got {p.text_encoder!r}")
        if p.random_views < 1:
            raise SbrError(f"{self.name} hyper-parameter 'random_views' must be >= 1, got {p.random_views}")
        if self.n_items < 3:
            raise SbrError(f"{self.name} needs at least 2 items")

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(dim), 1/sqrt(dim)), as the released code; loaded feature
        tables are filled by `prepare` afterwards (and never re-initialised)."""
        uniform_init_(self, self.params.dim)

    # ---- dataset-level features ------------------------------------------------------------------
    def prepare(self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Path | None = None) -> None:
        """Load the feature files, or encode the dataset's item text (`text_encoder`), into the view
        tables. Item features are side information, not interactions: no split is read."""
        from sbrbench.features import load_feature_matrix

        p: MACLParams = self.params
        n, d = self.n_items - 1, p.dim
        if dataset.n_items != self.n_items:
            raise SbrError(f"{self.name} was built for {self.n_items - 1} items, {dataset.name} has {dataset.catalogue_size}")
        info: dict[str, Any] = {"image": "absent", "text": "random trainable tables (no text source)"}
        if (self.image_files or self.text_files or p.text_encoder) and dataset.info.get("subset"):
            raise SbrError(f"{self.name}: feature rows index the full dataset's items, but {dataset.name} is a "
                           "subset with renumbered items; train on the full dataset")
        mats: list[Any] = []
        for k, f in enumerate(self.image_files):
            mats.append(load_feature_matrix(f, n, d, f"{self.name} image view {k} (image_features/image_aug)"))
        if self.image_files:
            info["image"] = {"files": self.image_files, "trainable": p.finetune_features}
        if self.text_files:
            for k, f in enumerate(self.text_files):
                mats.append(load_feature_matrix(f, n, d, f"{self.name} text view {k} (text_features/text_aug)"))
            info["text"] = {"files": self.text_files, "trainable": p.finetune_features}
        elif p.text_encoder:
            from sbrbench.features.text import text_view_features

            if dataset.item_text is None or len(dataset.item_text) != dataset.n_items:
                raise SbrError(f"{self.name} encodes item text, and {dataset.name} ({dataset.protocol}) has none: use a "
                               "dataset with item text, e.g. `sbrbench preprocess amazon-scientific --protocol macl`")
            views = _paths(p.text_views)
            out, tinfo = text_view_features(list(dataset.item_text[1:]), encoder=p.text_encoder, views=views,
                                            seed=p.aug_seed, dim=d, pca_per_view=p.pca_per_view, cache_dir=cache_dir)
            mats.extend(out[v] for v in views)
            info["text"] = {**tinfo, "trainable": p.finetune_features}
        with torch.no_grad():
            for k, m in enumerate(mats):
                getattr(self, f"view{k}").copy_(torch.from_numpy(m))
        info["features_used"] = self.features_used
        self.fit_info = {"features": info, "views": self.view_modality}

    def training_loss(self, batch: Batch) -> torch.Tensor:
        """CE + α·L_item + β·L_sess."""
        p: MACLParams = self.params
        views = self.view_tables()
        items = self.item_table(views)
        sess, loss = self.supervised_loss(items, batch)
        if self.item_proj is not None and p.alpha > 0:
            loss = loss + p.alpha * self.item_cl(items, views, batch)
        if self.sess_proj is not None and p.beta > 0:
            loss = loss + p.beta * self.sess_cl(sess, views, batch)
        return loss

    def _project(self, proj: nn.Module, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """proj(table[rows]) with dropout drawn per looked-up row: projecting the whole table and
        gathering (cheaper when rows outnumber the table) gives the same values before dropout."""
        p_drop = self._p(self.params.dropout)
        layer = proj.layers[0]
        if rows.numel() > table.shape[0]:
            out = torch.tanh(layer(table))[rows]
        else:
            out = torch.tanh(layer(table[rows]))
        return F.dropout(out, p_drop, p_drop > 0)

    def anchor_items(self, batch: Batch) -> torch.Tensor:
        """Item ids (A,) whose item-level CL runs this step: the batch's or every item."""
        if self.params.item_cl_scope == "all":
            return torch.arange(1, self.n_items, device=batch.seq.device)
        ids = torch.unique(torch.cat([batch.seq[batch.mask], batch.targets.reshape(-1)]))
        return ids[ids > 0]

    def item_cl(self, items: torch.Tensor, views: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        """Adaptive InfoNCE between fused items and one random view of each, K sampled negatives."""
        p: MACLParams = self.params
        assert self.item_proj is not None
        ids = self.anchor_items(batch)
        a_n, k = ids.shape[0], p.item_negatives
        n = self.n_items - 1
        device = items.device
        view = torch.randint(len(views), (a_n,), device=device)
        neg = sample_item_negatives(ids, n, k)
        anchors = self.item_proj[0](items[ids - 1], self._p(p.dropout))
        a_parts, p_parts, n_parts = [], [], []
        for v, table in enumerate(views):
            sel = torch.nonzero(view == v).squeeze(1)
            if sel.numel() == 0:
                continue
            rows = torch.cat([ids[sel].unsqueeze(1), neg[sel]], dim=1) - 1  # (A_v, 1 + K) rows of table
            proj = self._project(self.item_proj[v + 1], table, rows)
            a_parts.append(anchors[sel])
            p_parts.append(proj[:, 0])
            n_parts.append(proj[:, 1:])
        a, pos, negs = torch.cat(a_parts), torch.cat(p_parts), torch.cat(n_parts)
        weights = None if self.item_adp is None else self._weights(self.item_adp, a, pos, negs.mean(1))
        return self._objective(*similarities(a, pos, negs, p.tau), weights)

    def sess_cl(self, sess: torch.Tensor, views: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        """Adaptive InfoNCE between each session and one random view of it; the other B−1 sessions
        of the batch in that view are its negatives."""
        p: MACLParams = self.params
        assert self.sess_proj is not None
        bsz = sess.shape[0]
        p_drop = self._p(p.dropout)
        anchors = self.sess_proj[0](sess, p_drop)
        cand = torch.stack([self.sess_proj[v + 1](self.encode(t, batch), p_drop) for v, t in enumerate(views)])
        view = torch.randint(len(views), (bsz,), device=sess.device)
        rows = cand[view]  # (B, B, d): anchor b's view of every session
        weights = None
        if self.sess_adp is not None:
            own = torch.arange(bsz, device=sess.device)
            pos = rows[own, own]
            others = (rows.sum(1) - pos) / max(bsz - 1, 1)
            weights = self._weights(self.sess_adp, anchors, pos, others)
        return self._objective(*in_batch_similarities(anchors, rows, p.tau), weights)

    def _objective(self, sp: torch.Tensor, sn: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        p: MACLParams = self.params
        return macl_objective(sp, sn, weights, positive_in_denominator=p.positive_in_denominator,
                              weighted_term=p.weighted_term, reduction=p.cl_reduction)

    def _weights(self, mlp: TanhMLP, a: torch.Tensor, pos: torch.Tensor, neg_mean: torch.Tensor) -> torch.Tensor:
        p_drop = self._p(self.params.dropout)
        x = F.dropout(torch.cat([a, pos, neg_mean], dim=-1), p_drop, p_drop > 0)
        return adaptive_weights(mlp(x, p_drop).squeeze(-1), self.params.weight_norm)


def _paths(spec: str) -> list[str]:
    return [s.strip() for s in spec.split(",") if s.strip()]


MaclText = register_variant(
    "macl-text", "macl", text_encoder="minilm",
    doc="MACL with an offline text modality: the dataset's item text encoded by all-MiniLM-L6-v2 (the [text] "
        "extra) in augmented views (swap, embedding-neighbour substitution), one PCA basis, cached.",
)
