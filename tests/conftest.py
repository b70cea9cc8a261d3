"""Shared fixtures: the real benchmark data (through the registry), processed datasets built once, `one_thread`.

`shared_datasets` is a directory laid out like `../shared/datasets` (the mirror layout): the first of

1. `$SBRBENCH_MIRROR` when it is a local directory;
2. `../shared/datasets` beside the clone (`$SBRBENCH_SHARED` names another folder holding `datasets/`);
3. `<cache>/raw`, where every file of the registry's downloadable sources is fetched once through
   `sbrbench.data.download` (from `$SBRBENCH_MIRROR` when it is a URL, else the pinned URLs) and
   kept; `<cache>` is `$SBRBENCH_TEST_DATA`, else sbrbench's data directory.

When none of these works (no network and no copy), every test that needs the data is skipped with
one reason, and the rest of the suite runs. With `CI` (or `SBRBENCH_REQUIRE_DATA`) set to a true
value, missing data fails those tests instead: CI must run every test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SBRBENCH_SHARED", REPO.parent / "shared")).resolve()
DATASETS = SHARED / "datasets"
ENV_TEST_DATA = "SBRBENCH_TEST_DATA"


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


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test: on a small shared machine a second thread makes small ops spin-wait."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def data_required() -> bool:
    """True in CI (`CI` or `SBRBENCH_REQUIRE_DATA` set to a true value): missing data is a failure."""
    for var in ("SBRBENCH_REQUIRE_DATA", "CI"):
        value = os.environ.get(var, "").strip().lower()
        if value and value not in ("0", "false", "no", "off"):
            return True
    return False


def _downloadable_files() -> list[tuple[str, str | None]]:
    """(dataset, source) of every registry source that can be fetched without a login."""
    from sbrbench.data.registry import load_registry

    return [(spec.name, src.name) for spec in load_registry().values() for src in spec.sources.values()
            if not src.is_manual]


def locate_benchmark_data() -> tuple[Path | None, str]:
    """(directory in the mirror layout, how it was found) or (None, why there is none)."""
    mirror = os.environ.get("SBRBENCH_MIRROR", "")
    if mirror and "://" not in mirror and Path(mirror).expanduser().is_dir():
        return Path(mirror).expanduser().resolve(), f"$SBRBENCH_MIRROR ({mirror})"
    if DATASETS.is_dir():
        return DATASETS, str(DATASETS)
    from sbrbench.data.download import ensure_source
    from sbrbench.errors import SbrError
    from sbrbench.paths import data_dir, raw_dir

    cache = Path(os.environ[ENV_TEST_DATA]) if os.environ.get(ENV_TEST_DATA) else data_dir()
    try:
        for dataset, source in _downloadable_files():  # cached files are verified, not fetched again
            ensure_source(dataset, source, cache, mirror or None)
    except SbrError as exc:
        return None, (f"{SKIP_PREFIX}: no {DATASETS}, $SBRBENCH_MIRROR "
                      f"{'= ' + mirror if mirror else 'unset'}, and fetching the registry's files into "
                      f"{raw_dir(cache)} failed ({str(exc)[:300]})")
    return raw_dir(cache), f"downloaded into {raw_dir(cache)}"


_FOUND: list[tuple[Path | None, str]] = []
SKIP_PREFIX = "benchmark data unavailable"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """Report every data skip at one place, so `-ra` folds them into one line with one reason."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and isinstance(rep.longrepr, tuple) and SKIP_PREFIX in str(rep.longrepr[2]):
        rep.longrepr = (__file__, _SKIP_LINE, rep.longrepr[2])


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real benchmark files in the mirror layout (see the module docstring); skips without them."""
    if not _FOUND:
        _FOUND.append(locate_benchmark_data())
    path, how = _FOUND[0]
    if path is None:
        if data_required():
            pytest.fail(f"{how} (CI must run the data tests: put ../shared beside the clone)", pytrace=False)
        pytest.skip(how)
    return path


_SKIP_LINE = next(i for i, ln in enumerate(Path(__file__).read_text(encoding="utf-8").splitlines())
                  if ln.strip() == "pytest.skip(how)") + 1


def pytest_report_header(config: pytest.Config) -> str:
    mirror = os.environ.get("SBRBENCH_MIRROR", "")
    if mirror and "://" not in mirror and Path(mirror).expanduser().is_dir():
        where = f"$SBRBENCH_MIRROR ({mirror})"
    elif DATASETS.is_dir():
        where = str(DATASETS)
    else:
        where = "registry downloads into the cache on first use (skipped if that fails)"
    return f"sbrbench benchmark data: {where}" + ("; required (CI)" if data_required() else "")


@pytest.fixture(scope="session")
def diginetica(shared_datasets: Path):
    """Full Diginetica (SR-GNN protocol, GCE-GNN pickles) with a 10% validation split."""
    from sbrbench.data.srgnn_pickles import build_from_srgnn_pickles, read_pairs, read_train_sessions

    d = shared_datasets / "diginetica" / "GCE-GNN"
    prefixes, targets = read_pairs(d / "test.txt")
    return build_from_srgnn_pickles(
        "diginetica", "srgnn", read_train_sessions(d / "all_train_seq.txt"), prefixes, targets
    )
