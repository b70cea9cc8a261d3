"""Where sbrbench keeps data: `--data-dir` > `$SBRBENCH_DATA_DIR` > the platform cache dir."""

from __future__ import annotations

import os
from pathlib import Path

ENV_DATA_DIR = "SBRBENCH_DATA_DIR"
ENV_RESULTS_DIR = "SBRBENCH_RESULTS_DIR"


def data_dir(explicit: str | Path | None = None) -> Path:
    """Resolve the data directory (not created here)."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("sbrbench"))


def raw_dir(root: Path) -> Path:
    """Downloaded files, laid out as `raw/<dataset>/<source>/<file>` (the mirror layout)."""
    return root / "raw"


def processed_dir(root: Path, dataset: str, protocol: str) -> Path:
    """A processed dataset: `processed/<dataset>/<protocol>/`."""
    return root / "processed" / dataset / protocol


def results_dir(explicit: str | Path | None = None) -> Path:
    """Run records and leaderboards: `--results-dir` > `$SBRBENCH_RESULTS_DIR` > `./results`."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_RESULTS_DIR)
    return Path(env).expanduser() if env else Path("results")
