"""CL4SRec (Xie et al., ICDE 2022): contrastive learning for sequential recommendation.

No official code was released; the reference read is the CL4SRec model and augmentation code in
the DuoRec authors' RecBole fork (RuihongQiu/DuoRec `cl4srec.py`, `sequential_dataloader.py`),
which both papers' comparisons use. On RecBole's SASRec encoder (`RecBoleSequenceModel`): each
training sequence of length > 1 gets two *different* augmentations drawn from

* crop: keep a random contiguous ⌊η·n⌋ items (η = 0.6),
* mask: replace ⌊γ·n⌋ random items by a mask token (an extra embedding row; γ = 0.3),
* reorder: shuffle a random contiguous window of ⌊β·n⌋ items (β = 0.6),

(a sequence of one item is left as it is), both views are encoded, and the NT-Xent between them
(in-batch: 2B - 2 negatives per view, similarity `sim`, temperature `tau`) is added with weight
`lmd` to the cross-entropy of the un-augmented sequence over the whole catalogue. Augmentations
are drawn on the device, vectorised over the batch, from the global RNG (seeded per run).
Augmentations read the model's history window (its last `max_len` items).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from sbrbench.batching import Batch
from sbrbench.errors import SbrError
from sbrbench.models.base import register_model
from sbrbench.models.seqrec import (
    RecBoleParams,
    RecBoleSequenceModel,
    last_window,
    nt_xent,
)


@dataclass
class CL4SRecParams(RecBoleParams):
    """CL4SRec: RecBole's SASRec defaults plus the augmentation rates and the contrastive weight
    of the DuoRec authors' CL4SRec (η 0.6, γ 0.3, β 0.6, λ 0.1, τ 1, dot product)."""

    crop_eta: float = 0.6
    mask_gamma: float = 0.3
    reorder_beta: float = 0.6
    lmd: float = 0.1
    tau: float = 1.0
    sim: str = "dot"


def _keys_sorted(valid: torch.Tensor) -> torch.Tensor:
    """Random permutation per row of the True positions of `valid` (they come first)."""
    keys = torch.rand(valid.shape, device=valid.device).masked_fill(~valid, 2.0)
    return keys.argsort(dim=1)


def augment(seq: torch.Tensor, lens: torch.Tensor, kind: torch.Tensor, mask_token: int,
            eta: float, gamma: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply augmentation `kind` (B,) (0 crop, 1 mask, 2 reorder, 3 none) to each left-aligned
    row of `seq` (B, W) with lengths `lens`; returns (seq, lengths)."""
    b, w = seq.shape
    dev = seq.device
    pos = torch.arange(w, device=dev).unsqueeze(0)
    lf = lens.to(torch.float64)
    out, out_len = seq.clone(), lens.clone()
    # crop: ⌊η·n⌋ items from a uniform start in [0, n - ⌊η·n⌋]
    keep = torch.floor(lf * eta).long()
    start = torch.floor(torch.rand(b, device=dev, dtype=torch.float64) * (lens - keep + 1).to(torch.float64)).long()
    src = (start.unsqueeze(1) + pos).clamp(max=w - 1)
    cropped = seq.gather(1, src) * (pos < keep.unsqueeze(1))
    c = kind == 0
    out = torch.where(c.unsqueeze(1), cropped, out)
    out_len = torch.where(c, keep, out_len)
    # mask: ⌊γ·n⌋ distinct positions get the mask token
    n_mask = torch.floor(lf * gamma).long()
    order = _keys_sorted(pos < lens.unsqueeze(1))
    chosen = torch.zeros_like(seq, dtype=torch.bool).scatter(1, order, pos < n_mask.unsqueeze(1))
    m = (kind == 1).unsqueeze(1) & chosen
    out = torch.where(m, torch.full_like(seq, mask_token), out)
    # reorder: shuffle a window of ⌊β·n⌋ items starting uniformly in [0, n - ⌊β·n⌋]
    n_re = torch.floor(lf * beta).long()
    rstart = torch.floor(torch.rand(b, device=dev, dtype=torch.float64) * (lens - n_re + 1).to(torch.float64)).long()
    window = (pos >= rstart.unsqueeze(1)) & (pos < (rstart + n_re).unsqueeze(1))
    perm = _keys_sorted(window)  # window positions, shuffled, first
    slots = torch.where(window, torch.cumsum(window.long(), 1) - 1, torch.zeros_like(seq))  # k-th window slot
    src_pos = perm.gather(1, slots)  # the k-th shuffled window position feeds slot k
    reordered = torch.where(window, seq.gather(1, src_pos), seq)
    r = kind == 2
    out = torch.where(r.unsqueeze(1), reordered, out)
    return out, out_len


@register_model("cl4srec")
class CL4SRec(RecBoleSequenceModel):
    """CL4SRec (ICDE 2022): SASRec (RecBole) + crop / mask / reorder views and NT-Xent."""

    Params: ClassVar[type] = CL4SRecParams
    train_defaults: ClassVar[dict[str, Any]] = {"epochs": 200, "batch_size": 256, "lr": 1e-3, "lr_dc": 1.0,
                                                "l2": 0.0, "patience": 10, "eval_batch_size": 1000}
    extra_tokens = 1  # the mask token, id n_items

    def __init__(self, n_items: int, params: CL4SRecParams | None = None) -> None:
        super().__init__(n_items, params)
        p: CL4SRecParams = self.params
        for key in ("crop_eta", "mask_gamma", "reorder_beta"):
            if not 0.0 <= getattr(p, key) <= 1.0:
                raise SbrError(f"cl4srec hyper-parameter {key!r} must be in [0, 1], got {getattr(p, key)}")
        if p.tau <= 0 or p.lmd < 0 or p.sim not in ("dot", "cos"):
            raise SbrError("cl4srec needs tau > 0, lmd >= 0 and sim in {dot, cos}")

    def training_loss(self, batch: Batch) -> torch.Tensor:
        p: CL4SRecParams = self.params
        if batch.targets.dim() != 1:
            raise SbrError("cl4srec trains on one target per example")
        loss = F.cross_entropy(self.scores_of(self.encode(batch.seq, batch.lengths)), batch.targets)
        if p.lmd == 0:
            return loss
        seq, _, lens = last_window(batch.seq, batch.lengths, p.max_len)
        b = seq.shape[0]
        first = torch.randint(0, 3, (b,), device=seq.device)
        second = (first + torch.randint(1, 3, (b,), device=seq.device)) % 3  # a different one
        single = lens <= 1
        first = first.masked_fill(single, 3)
        second = second.masked_fill(single, 3)
        views = [augment(seq, lens, k, self.n_items, p.crop_eta, p.mask_gamma, p.reorder_beta) for k in (first, second)]
        z1, z2 = (self.encode(s, ln.clamp(min=1)) for s, ln in views)
        return loss + p.lmd * nt_xent(z1, z2, p.tau, p.sim)
