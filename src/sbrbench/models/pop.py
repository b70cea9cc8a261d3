"""Popularity baselines as SR-GNN's Table 2 defines them: POP and S-POP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from sbrbench.errors import SbrError
from sbrbench.models.base import Model, register_model
from sbrbench.models.search import Choice

if TYPE_CHECKING:
    from sbrbench.batching import Batch
    from sbrbench.data.dataset import ProcessedDataset


@dataclass
class PopParams:
    """Popularity hyper-parameters."""

    count: str = "clicks"  # "clicks": every click counts; "sessions": one per session


def item_popularity(dataset: ProcessedDataset, splits: tuple[str, ...], count: str) -> np.ndarray:
    """Popularity (n_items,) over the sessions read by `splits` (column 0 stays 0)."""
    fitted = dataset.fit_sessions(splits)
    items, offsets = fitted.items, fitted.offsets
    if count == "clicks":
        return np.bincount(items, minlength=dataset.n_items).astype(np.float64)
    if count == "sessions":
        sess = np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets))
        pairs = np.unique(sess.astype(np.int64) * dataset.n_items + items)
        return np.bincount(pairs % dataset.n_items, minlength=dataset.n_items).astype(np.float64)
    raise SbrError(f"popularity count must be 'clicks' or 'sessions', got {count!r}")


@register_model("pop")
class Pop(Model):
    """POP: recommends the most popular training items, whatever the session."""

    Params: ClassVar[type] = PopParams
    neural: ClassVar[bool] = False
    search_space: ClassVar[dict[str, Any]] = {"count": Choice("clicks", "sessions")}

    def __init__(self, n_items: int, params: PopParams | None = None) -> None:
        super().__init__(n_items, params)
        self.register_buffer("popularity", torch.zeros(n_items))

    def fit(self, dataset: ProcessedDataset, splits: tuple[str, ...]) -> None:
        """Count item popularity on the fit sessions."""
        pop = item_popularity(dataset, splits, self.params.count)
        self.popularity = torch.from_numpy(pop).to(self.popularity.device, torch.float32)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Global popularity for every example; column 0 is -inf."""
        scores = self.popularity.unsqueeze(0).expand(len(batch), -1).clone()
        scores[:, 0] = float("-inf")
        return scores


@register_model("spop")
class SPop(Pop):
    """S-POP: the most frequent items of the current session, ties and the rest by global popularity."""

    def fit(self, dataset: ProcessedDataset, splits: tuple[str, ...]) -> None:
        """Count item popularity on the fit sessions (the tie-breaker)."""
        super().fit(dataset, splits)
        # Scaled into [0, 1) so one more click in the session always outranks popularity; float32
        # keeps distinct popularities distinct while max popularity < 2**17 / max session length.
        self.popularity = self.popularity / (self.popularity.max() + 1.0)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Session counts plus scaled global popularity; column 0 is -inf."""
        counts = torch.zeros(len(batch), self.n_items, device=batch.seq.device)
        counts.scatter_add_(1, batch.seq, batch.mask.to(counts.dtype))
        scores = counts + self.popularity.unsqueeze(0)
        scores[:, 0] = float("-inf")
        return scores
