"""`sbrbench train --seeds N`: the same run with seeds `seed, seed+1, ...`, then mean ± std."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sbrbench.device import check_seeds
from sbrbench.errors import SbrError
from sbrbench.honesty import seed_summary


def train_seeds(train_fn: Callable[..., dict[str, Any]], *args: Any, seeds: int, seed: int = 42,
                **kwargs: Any) -> dict[str, Any]:
    """Call `train_fn(*args, seed=s, **kwargs)` for N seeds; returns {"runs": records, "summary":
    `honesty.seed_summary` of the test split, "valid_summary": the same on validation}."""
    check_seeds(seed, seeds)
    if kwargs.get("resume") is not None:
        raise SbrError("--seeds starts new runs; resume each run on its own with --resume RUN_DIR")
    runs = [train_fn(*args, seed=seed + i, **kwargs) for i in range(seeds)]
    return {"runs": runs, "summary": seed_summary(runs, "test"), "valid_summary": seed_summary(runs, "valid")}
