"""Learning checks on real data: train a model for a fixed number of batches, then score it and POP
on the same test examples."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from sbrbench.batching import Batch, ExampleSource
from sbrbench.data.dataset import ProcessedDataset
from sbrbench.evaluate import score_examples
from sbrbench.models import create_model
from sbrbench.models.base import Model


def train_then_vs_pop(model: Model, opt: torch.optim.Optimizer, batches: Iterable[Batch], steps: int,
                      data: ProcessedDataset, test_limit: int) -> tuple[dict[str, float], dict[str, float]]:
    """`steps` optimiser steps on `batches`, then the @20 metrics of `model` and of POP (fitted on
    the training split) on the first `test_limit` test examples of `data`: (ours, pop)."""
    model.train()
    for i, batch in enumerate(batches):
        if i == steps:
            break
        opt.zero_grad()
        model.training_loss(batch).backward()
        opt.step()
    test = ExampleSource.from_dataset(data, "test", limit=test_limit)
    ours = score_examples(model, test, 500, "cpu").metrics((20,))
    pop = create_model("pop", data.n_items)
    pop.fit(data, ("train",))
    return ours, score_examples(pop, test, 500, "cpu").metrics((20,))
