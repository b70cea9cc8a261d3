r"""Auxiliary training losses shared by the models (contrastive objectives).

`info_nce(a, b, temperature)` is the InfoNCE loss with in-batch negatives used by CM-GNN's
contrastive view alignment: row i of `a` and row i of `b` are the two views of example i (the
positive pair); the other rows of `b` are the negatives of `a[i]`. Both views are L2-normalised
first, so similarities are cosines in [-1, 1] and the temperature alone sets the sharpness:

.. math::
    \mathcal{L} = -\frac{1}{B} \sum_i \log
        \frac{\exp(\cos(a_i, b_i) / \tau)}{\sum_j \exp(\cos(a_i, b_j) / \tau)}

One direction (a -> b) is computed; `symmetric=True` averages it with the b -> a direction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.2, *, symmetric: bool = False) -> torch.Tensor:
    """InfoNCE between two views (B, d) with in-batch negatives and cosine similarity.

    Returns a scalar: the mean over the batch of the cross-entropy of picking `b[i]` among all
    rows of `b` for anchor `a[i]`, at temperature `temperature` (> 0). A batch of one example
    has no negative and gives 0. `symmetric` also averages in the b -> a direction.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"info_nce expects two (B, d) tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).t() / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.t(), labels))
    return loss
