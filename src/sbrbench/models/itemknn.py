"""Item-KNN as in SR-GNN's baselines: cosine similarity of session co-occurrence, from the last item."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from sbrbench.models.base import Model, register_model
from sbrbench.models.search import FloatRange

if TYPE_CHECKING:
    from sbrbench.batching import Batch
    from sbrbench.data.dataset import ProcessedDataset


@dataclass
class ItemKNNParams:
    """Item-KNN hyper-parameters."""

    self_similarity: bool = False  # score the last item itself (cosine 1) or not
    shrink: float = 0.0  # added to the cosine denominator (0: plain cosine)


@register_model("itemknn")
class ItemKNN(Model):
    """Item-KNN: sim(i, j) = |S_i ∩ S_j| / sqrt(|S_i| |S_j|) over training sessions, scored from the last item."""

    Params: ClassVar[type] = ItemKNNParams
    neural: ClassVar[bool] = False
    search_space: ClassVar[dict[str, Any]] = {"shrink": FloatRange(0.0, 100.0)}

    def __init__(self, n_items: int, params: ItemKNNParams | None = None) -> None:
        super().__init__(n_items, params)
        self.similarity = None  # scipy.sparse CSR (n_items, n_items)

    def fit(self, dataset: ProcessedDataset, splits: tuple[str, ...]) -> None:
        """Build the sparse item-item cosine matrix from the fit sessions."""
        import scipy.sparse as sp

        fitted = dataset.fit_sessions(splits)
        items, offsets = fitted.items, fitted.offsets
        n_sess = offsets.shape[0] - 1
        rows = np.repeat(np.arange(n_sess), np.diff(offsets))
        x = sp.csr_matrix(
            (np.ones(rows.shape[0], np.float64), (rows, items.astype(np.int64))),
            shape=(n_sess, self.n_items),
        )
        x.data[:] = 1.0  # duplicates were summed: a session counts once per item
        co = (x.T @ x).tocsr()
        support = np.asarray(x.sum(0)).ravel()
        norm = np.sqrt(support)
        co = co.tocoo()
        data = co.data / (norm[co.row] * norm[co.col] + self.params.shrink)
        sim = sp.csr_matrix((data, (co.row, co.col)), shape=co.shape)
        if not self.params.self_similarity:
            sim.setdiag(0.0)
            sim.eliminate_zeros()
        self.similarity = sim.astype(np.float32)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Similarity row of each prefix's last item; column 0 is -inf."""
        if self.similarity is None:
            raise RuntimeError("ItemKNN.forward called before fit")
        last = batch.last_items.cpu().numpy()
        dense = torch.from_numpy(self.similarity[last].toarray()).to(batch.seq.device)
        dense[:, 0] = float("-inf")
        return dense
