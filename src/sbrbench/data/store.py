"""Where processed datasets live and how they are found, loaded and fingerprinted.

A processed dataset is a directory `processed/<name>/<protocol>/` under the data directory
(`sbrbench.paths`) holding `manifest.json` and `arrays.npz` (`ProcessedDataset.save`). Every command
that reads one goes through `load_processed`, which accepts a registry name (with an optional
protocol) or the directory itself.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from sbrbench import paths
from sbrbench.data.dataset import ProcessedDataset, manifest_checksum, restore_interrupted_swap
from sbrbench.data.registry import load_registry
from sbrbench.errors import DataError, SbrError
from sbrbench.registry import unknown_name_message


def resolve_protocol(name: str, protocol: str | None, root: Path) -> str:
    """The protocol to load `name` with: the given one, the registry's default, or the only one
    processed; a one-line error when there is none or several."""
    if protocol:
        return protocol
    reg = load_registry()
    if name in reg:
        return reg[name].default_protocol
    base = root / "processed" / name
    if base.is_dir():  # a killed re-preprocess may have left a protocol's dataset aside
        for aside in base.glob(".*.old-*"):
            restore_interrupted_swap(base / aside.name[1:].split(".old-", 1)[0])
    done = sorted(p.name for p in base.glob("*") if (p / "manifest.json").is_file()) if base.is_dir() else []
    if len(done) == 1:
        return done[0]
    if not done:
        processed = root / "processed"
        known = set(reg) | ({p.name for p in processed.glob("*")} if processed.is_dir() else set())
        raise SbrError(unknown_name_message("dataset", name, sorted(known)))
    raise DataError(f"dataset {name!r} is processed with several protocols ({', '.join(done)}): pass --protocol")


def processed_location(
    name_or_path: str | Path, protocol: str | None = None, *, data_dir: str | Path | None = None
) -> Path:
    """The directory of a processed dataset given by name (+ protocol) or path; it must exist."""
    as_path = Path(name_or_path).expanduser()
    restore_interrupted_swap(as_path)  # a killed re-preprocess's dataset, put back (it leaves no directory)
    if (as_path / "manifest.json").is_file():
        return as_path
    name = str(name_or_path)
    root = paths.data_dir(data_dir)
    proto = resolve_protocol(name, protocol, root)
    d = paths.processed_dir(root, name, proto)
    restore_interrupted_swap(d)
    if not (d / "manifest.json").is_file():
        raise DataError(f"dataset {name} (protocol {proto}) is not processed yet: run `sbrbench preprocess {name}"
                        + (f" --protocol {proto}" if protocol else "") + "`")
    return d


def load_processed(
    name_or_path: str | Path, protocol: str | None = None, *, data_dir: str | Path | None = None
) -> tuple[ProcessedDataset, Path]:
    """Load a processed dataset by registry name (+ protocol) or directory; returns (dataset, dir)."""
    d = processed_location(name_or_path, protocol, data_dir=data_dir)
    return ProcessedDataset.load(d), d


def load_dataset(
    name_or_path: str | Path, protocol: str | None = None, *, data_dir: str | Path | None = None
) -> ProcessedDataset:
    """`load_processed` without the directory."""
    return load_processed(name_or_path, protocol, data_dir=data_dir)[0]


def dataset_checksum(ds: ProcessedDataset, directory: Path | None) -> str:
    """The manifest's sha256 when the dataset is on disk, else a sha256 of its arrays."""
    if directory is not None:
        return manifest_checksum(directory)
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ds.items).tobytes())
    h.update(np.ascontiguousarray(ds.offsets).tobytes())
    for name in sorted(ds.splits):
        h.update(name.encode())
        h.update(np.ascontiguousarray(ds.splits[name].session).tobytes())
        h.update(np.ascontiguousarray(ds.splits[name].pos).tobytes())
    return "arrays:" + h.hexdigest()
