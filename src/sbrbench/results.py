"""Run records: `results/runs/<dataset>/<model>/<run_id>/` and its provenance.

A run directory holds `config.json` (what was asked), `metrics.json` (what came out, with a
`status`), `history.csv` (one row per epoch), `env.json` (git hash, package versions, device,
seed, determinism flags, command line, dataset checksum, host, times), `ranks/{valid,test}.npy`
and `checkpoint/` (neural models). Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sbrbench.errors import SbrError
from sbrbench.io import atomic_write_json, atomic_write_text


def new_run_dir(results_root: Path, dataset: str, model: str, seed: int) -> Path:
    """Create a fresh, unique run directory `runs/<dataset>/<model>/<UTC time>-s<seed>[-n]`."""
    base = Path(results_root) / "runs" / dataset / model
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for n in range(1000):
        name = f"{stamp}-s{seed}" + (f"-{n}" if n else "")
        try:
            (base / name).mkdir()
            return base / name
        except FileExistsError:
            continue
    raise SbrError(f"could not create a new run directory under {base}")


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Write `config.json`."""
    atomic_write_json(run_dir / "config.json", config)


def read_config(run_dir: Path) -> dict[str, Any]:
    """Read a run's `config.json`; a one-line error if it is not a run directory."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise SbrError(f"{run_dir} is not a run directory (config.json missing)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SbrError(f"malformed {path}: {exc}") from None


def write_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Write `metrics.json`."""
    atomic_write_json(run_dir / "metrics.json", record)


def write_history(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Write `history.csv` (columns: the union of the rows' keys, first-seen order)."""
    cols: list[str] = []
    for row in rows:
        for k in row:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: _fmt(v) for k, v in row.items()})
    atomic_write_text(run_dir / "history.csv", buf.getvalue())


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def git_info() -> dict[str, Any]:
    """Git commit and dirty flag of the sbrbench checkout this code runs from (None outside git)."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    """Versions of sbrbench and the numerical stack."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("sbrbench", "torch", "numpy", "scipy", "pandas"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def device_name(device: str) -> str:
    """A human name for a torch device string (GPU model or CPU description)."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def environment(device: str, seed: int, determinism: dict[str, Any], dataset_checksum: str | None) -> dict[str, Any]:
    """The provenance record `env.json` (end time is added when the run finishes)."""
    return {
        "git": git_info(),
        "versions": package_versions(),
        "device": device,
        "device_name": device_name(device),
        "seed": seed,
        "determinism": determinism,
        "command": sys.argv,
        "dataset_checksum": dataset_checksum,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "end_time": None,
    }


def write_env(run_dir: Path, env: dict[str, Any]) -> None:
    """Write `env.json`."""
    atomic_write_json(run_dir / "env.json", env)


def finish_env(run_dir: Path) -> None:
    """Stamp the end time into `env.json`."""
    path = run_dir / "env.json"
    if path.is_file():
        env = json.loads(path.read_text(encoding="utf-8"))
        env["end_time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_json(path, env)
