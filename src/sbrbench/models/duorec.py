"""DuoRec (Qiu et al., WSDM 2022): contrastive learning with model-level augmentation and
supervised positives, after the official code (RuihongQiu/DuoRec, a RecBole fork: `duorec.py`,
`sequential_dataloader.py`; run script `contrast=us_x`, `sim=dot`, `tau=1`, `lmd_sem=0.1`).

On RecBole's SASRec encoder (`RecBoleSequenceModel`): the loss is the cross-entropy of the
sequence over the whole catalogue plus, with `contrast="us_x"` (the released default), `lmd_sem`
times the NT-Xent between

* the model-level augmentation: the same sequence encoded again (a different dropout mask), and
* the supervised positive: another training sequence with the same target item, drawn uniformly
  among the fitted prefixes that precede an occurrence of that item (the sequence itself when the
  item has no other occurrence; its last `max_len` items are read).

`contrast="un"` adds `lmd` × NT-Xent(sequence, its dropout view) instead, `"su"` `lmd_sem` ×
NT-Xent(sequence, supervised positive), `"us"` both. Other in-batch sequences are negatives even
when they share the target, as in the released code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from sbrbench.batching import Batch, pad_prefixes
from sbrbench.data.dataset import ProcessedDataset
from sbrbench.errors import SbrError
from sbrbench.models.base import register_model
from sbrbench.models.seqrec import RecBoleParams, RecBoleSequenceModel, nt_xent

CONTRASTS = ("us_x", "us", "un", "su")


@dataclass
class DuoRecParams(RecBoleParams):
    """DuoRec: RecBole's SASRec defaults plus the released run's contrastive settings."""

    contrast: str = "us_x"
    lmd: float = 0.1
    lmd_sem: float = 0.1
    tau: float = 1.0
    sim: str = "dot"


@register_model("duorec")
class DuoRec(RecBoleSequenceModel):
    """DuoRec (WSDM 2022): SASRec (RecBole) + dropout views and same-target positives, NT-Xent."""

    Params: ClassVar[type] = DuoRecParams
    train_defaults: ClassVar[dict[str, Any]] = {"epochs": 200, "batch_size": 256, "lr": 1e-3, "lr_dc": 1.0,
                                                "l2": 0.0, "patience": 10, "eval_batch_size": 1000}

    def __init__(self, n_items: int, params: DuoRecParams | None = None) -> None:
        super().__init__(n_items, params)
        p: DuoRecParams = self.params
        if p.contrast not in CONTRASTS:
            raise SbrError(f"duorec hyper-parameter 'contrast' must be one of {', '.join(CONTRASTS)}, got {p.contrast!r}")
        if p.tau <= 0 or p.lmd < 0 or p.lmd_sem < 0 or p.sim not in ("dot", "cos"):
            raise SbrError("duorec needs tau > 0, lmd >= 0, lmd_sem >= 0 and sim in {dot, cos}")
        # same-target index over the fitted prefixes (built in `prepare`): occurrences of each item
        # at positions >= 1, grouped by item (CSR), as (flat position, start of its sequence)
        for name in ("fit_items", "occ_ptr", "occ_pos", "occ_start"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.long), persistent=False)

    def prepare(self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Path | None = None) -> None:
        """The same-target index of the fitted sequences (never held-out items)."""
        fit = dataset.fit_sessions(splits)
        starts = np.repeat(fit.offsets[:-1], fit.lengths)
        pos = np.arange(fit.items.shape[0], dtype=np.int64)
        ok = pos > starts  # a non-empty prefix precedes it
        item, pos, starts = fit.items[ok], pos[ok], starts[ok]
        order = np.argsort(item, kind="stable")
        ptr = np.zeros(self.n_items + 1, dtype=np.int64)
        np.cumsum(np.bincount(item, minlength=self.n_items)[: self.n_items], out=ptr[1:])
        self.fit_items = torch.from_numpy(fit.items.astype(np.int64))
        self.occ_ptr = torch.from_numpy(ptr)
        self.occ_pos = torch.from_numpy(pos[order])
        self.occ_start = torch.from_numpy(starts[order])

    def semantic_positives(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(seq, lengths) of one fitted prefix per example whose next item is the example's target."""
        t = batch.targets
        if self.occ_ptr.numel() == 0:
            return batch.seq, batch.lengths
        lo, hi = self.occ_ptr[t], self.occ_ptr[t + 1]
        has = hi > lo
        n = (hi - lo).clamp(min=1)
        pick = lo + torch.minimum((torch.rand(t.shape, device=t.device) * n).long(), n - 1)
        pick = pick.clamp(max=max(int(self.occ_pos.shape[0]) - 1, 0))  # rows without occurrence: unused
        end = self.occ_pos[pick]
        start = torch.maximum(self.occ_start[pick], end - self.params.max_len)
        length = end - start
        seq, _ = pad_prefixes(self.fit_items, start, length, self.params.max_len)
        width = max(int(batch.seq.shape[1]), self.params.max_len)
        own = F.pad(batch.seq, (0, width - batch.seq.shape[1]))
        seq = F.pad(seq, (0, width - seq.shape[1]))
        return torch.where(has.unsqueeze(1), seq, own), torch.where(has, length, batch.lengths)

    def training_loss(self, batch: Batch) -> torch.Tensor:
        p: DuoRecParams = self.params
        if batch.targets.dim() != 1:
            raise SbrError("duorec trains on one target per example")
        z = self.encode(batch.seq, batch.lengths)
        loss = F.cross_entropy(self.scores_of(z), batch.targets)
        if p.contrast in ("us", "un"):
            loss = loss + p.lmd * nt_xent(z, self.encode(batch.seq, batch.lengths), p.tau, p.sim)
        if p.contrast in ("us", "su"):
            sem_seq, sem_len = self.semantic_positives(batch)
            loss = loss + p.lmd_sem * nt_xent(z, self.encode(sem_seq, sem_len), p.tau, p.sim)
        if p.contrast == "us_x":
            sem_seq, sem_len = self.semantic_positives(batch)
            aug = self.encode(batch.seq, batch.lengths)
            loss = loss + p.lmd_sem * nt_xent(aug, self.encode(sem_seq, sem_len), p.tau, p.sim)
        return loss
