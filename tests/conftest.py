"""Shared fixtures: the real data in ../shared/datasets and processed datasets built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SBRBENCH_SHARED", REPO.parent / "shared")).resolve()
DATASETS = SHARED / "datasets"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device", action="append", default=None,
        help="device for the device-parametrised tests (repeatable, e.g. --device cpu --device cuda); default cpu",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests taking a `device` argument run once per `--device` (cpu by default; `bench/gpu.sh` adds cuda)."""
    if "device" in metafunc.fixturenames:
        devices = metafunc.config.getoption("device") or ["cpu"]
        metafunc.parametrize("device", devices)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The staged real datasets (../shared/datasets)."""
    if not DATASETS.is_dir():
        pytest.fail(f"../shared/datasets not found at {DATASETS}; set SBRBENCH_SHARED")
    return DATASETS


@pytest.fixture(scope="session")
def diginetica(shared_datasets: Path):
    """Full Diginetica (SR-GNN protocol, GCE-GNN pickles) with a 10% validation split."""
    from sbrbench.data.srgnn_pickles import build_from_srgnn_pickles, read_pairs, read_train_sessions

    d = shared_datasets / "diginetica" / "GCE-GNN"
    prefixes, targets = read_pairs(d / "test.txt")
    return build_from_srgnn_pickles(
        "diginetica", "srgnn", read_train_sessions(d / "all_train_seq.txt"), prefixes, targets
    )
