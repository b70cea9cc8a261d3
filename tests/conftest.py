"""Shared fixtures: the real data in ../shared/datasets and processed datasets built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SBRBENCH_SHARED", REPO.parent / "shared")).resolve()
DATASETS = SHARED / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The staged real datasets (../shared/datasets)."""
    if not DATASETS.is_dir():
        pytest.fail(f"../shared/datasets not found at {DATASETS}; set SBRBENCH_SHARED")
    return DATASETS


@pytest.fixture(scope="session")
def diginetica(shared_datasets: Path):
    """Full Diginetica (SR-GNN protocol, GCE-GNN pickles) with a 10% validation split."""
    from sbrbench.data.published import build_from_srgnn_pickles, read_pairs, read_train_sessions

    d = shared_datasets / "diginetica" / "GCE-GNN"
    prefixes, targets = read_pairs(d / "test.txt")
    return build_from_srgnn_pickles(
        "diginetica", "srgnn", read_train_sessions(d / "all_train_seq.txt"), prefixes, targets
    )
