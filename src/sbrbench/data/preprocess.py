"""`sbrbench preprocess` and `sbrbench export` as library calls.

`preprocess(name)` obtains a registered dataset's files (downloading or copying what is missing),
reads them in the source's format, runs the protocol and saves the processed dataset under
`processed/<name>/<protocol>/` with a manifest (counts, statistics, warnings, source checksums).
`preprocess_files(path, fmt, name)` does the same for a user's own files. Loading lives in
`sbrbench.data.store`; `export_dataset` writes a processed dataset back in the SR-GNN pickle layout.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from sbrbench import paths
from sbrbench.data.audit import audit_dataset, audit_summary
from sbrbench.data.dataset import ProcessedDataset, restore_interrupted_swap
from sbrbench.data.download import ensure_source, verified_sha256
from sbrbench.data.formats import FORMATS, discover_files, read_format
from sbrbench.data.protocols import PROTOCOLS, get_protocol
from sbrbench.data.registry import get_dataset, load_registry
from sbrbench.data.store import load_dataset
from sbrbench.errors import DataError, SbrError
from sbrbench.io import atomic_write_bytes, sha256_file
from sbrbench.registry import unknown_name_message

log = logging.getLogger(__name__)

LONG_SESSION = 200
KNOWN_OPTIONS = {
    "n_items", "fraction", "test_days", "min_item_support", "min_session_length", "long_session",
    "columns", "sep", "time_format", "session", "item", "time", "order",
    "min_user_length", "split_seed", "history_len", "train_cut",  # comirec
    "session_cut", "max_session_length", "test_fraction",  # macl on user sequences (split_seed too)
}
DEFAULT_PROTOCOL = {"diginetica": "srgnn", "yoochoose": "srgnn", "csv": "srgnn", "srgnn": "srgnn",
                    "sequences": "loo", "recbole": "loo"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


# ---------------------------------------------------------------------------------------------
# statistics and warnings


def dataset_report(ds: ProcessedDataset, long_session: int = LONG_SESSION) -> tuple[dict[str, Any], list[str]]:
    """Per-split statistics and the data-quality warnings preprocessing must never keep silent."""
    lens = np.diff(ds.offsets)
    stats: dict[str, Any] = {}
    for name, sp in ds.splits.items():
        sess = np.flatnonzero(np.bincount(sp.session, minlength=ds.n_sessions)) if len(sp) else np.zeros(0, np.int64)
        clicks = int(lens[sess].sum()) if sess.size else 0
        stats[name] = {
            "sessions": int(sess.size), "examples": len(sp), "clicks": clicks,
            "target_items": int(np.count_nonzero(np.bincount(ds.examples(name).target, minlength=ds.n_items))) if len(sp) else 0,
            "avg_length": round(clicks / sess.size, 4) if sess.size else 0.0,
        }
    stats["all"] = {"sessions": ds.n_sessions, "clicks": int(ds.items.shape[0]),
                    "items": ds.catalogue_size,
                    "avg_length": round(float(lens.mean()), 4) if lens.size else 0.0,
                    "max_length": int(lens.max()) if lens.size else 0}
    warnings: list[str] = []
    if "test" in ds.splits and len(ds.splits["test"]):
        tr_items = ds.fit_sessions(("train", "valid")).items
        seen = np.zeros(ds.n_items, dtype=bool)
        seen[tr_items] = True
        tgt = ds.examples("test").target
        unseen_t = ~seen[tgt]
        # items the test examples read (prefixes and targets): statistics only, never fitted
        te = ds.examples("test")
        cover = np.zeros(ds.items.shape[0] + 1, dtype=np.int64)
        np.add.at(cover, te.start, 1)
        np.add.at(cover, te.start + te.length + 1, -1)
        te_items = ds.items[np.cumsum(cover[:-1]) > 0]
        unseen_items = np.flatnonzero(np.bincount(te_items[~seen[te_items]], minlength=ds.n_items))
        stats["test_unseen"] = {"items": int(unseen_items.size), "target_examples": int(unseen_t.sum())}
        if unseen_items.size:
            warnings.append(
                f"{unseen_items.size} test items never occur in training ({int(unseen_t.sum())} test "
                f"examples have such a target; no model can rank them from training data)"
            )
    same = (ds.items[1:] == ds.items[:-1])
    if same.size:
        starts = ds.offsets[1:-1]
        same[starts[starts > 0] - 1] = False  # pairs across a session boundary do not count
    n_dup = int(same.sum())
    stats["consecutive_duplicates"] = n_dup
    if n_dup:
        n_sess = int(np.count_nonzero(np.bincount(np.searchsorted(ds.offsets, np.flatnonzero(same) + 1, side="right") - 1)))
        warnings.append(f"{n_dup} consecutive duplicate clicks in {n_sess} sessions (kept, as the protocol does)")
    n_long = int((lens > long_session).sum())
    stats["long_sessions"] = n_long
    if n_long:
        warnings.append(f"{n_long} sessions longer than {long_session} clicks (longest: {int(lens.max())})")
    short = ds.info.get("users_skipped_short")
    if short:
        warnings.append(f"{short} users with fewer than 3 items were skipped")
    return stats, warnings


# ---------------------------------------------------------------------------------------------
# preprocess


def _check_options(opts: dict[str, Any]) -> list[str]:
    return [f"ignored unknown option {k!r}" for k in opts if k not in KNOWN_OPTIONS]


def _run(name: str, protocol: str, fmt: str, files: dict[str, Path], opts: dict[str, Any],
         root: Path, valid_fraction: float, checksums: dict[str, str], origin: dict[str, Any]
         ) -> tuple[ProcessedDataset, dict[str, Any]]:
    proto = get_protocol(protocol)
    restore_interrupted_swap(paths.processed_dir(root, name, protocol))  # before anything can fail
    data = read_format(fmt, files, opts)
    ds = proto.build(data, name, valid_fraction=valid_fraction, options=opts)
    long_session = int(opts.get("long_session", LONG_SESSION))
    stats, warnings = dataset_report(ds, long_session)
    warnings = _check_options(opts) + warnings
    for w in warnings:
        log.warning("%s (%s): %s", name, protocol, w)
    extra = {"stats": stats, "warnings": warnings, "format": fmt, "options": opts,
             "valid_fraction": valid_fraction, **origin}
    if "test" in ds.splits and len(ds.splits["test"]):  # `sbrbench audit NAME` gives the full report
        extra["audit"] = audit_summary(audit_dataset(ds))
    manifest = ds.save(paths.processed_dir(root, name, protocol), sources=checksums, extra=extra)
    manifest["path"] = str(paths.processed_dir(root, name, protocol))
    return ds, manifest


def _ensure_files(name: str, source: str | None, root: Path, mirror: str | None) -> dict[str, Path]:
    return ensure_source(name, source, root, mirror)


def preprocess(name: str, protocol: str | None = None, *, data_dir: Path | None = None,
               valid_fraction: float = 0.1, mirror: str | None = None, source: str | None = None,
               options: dict[str, Any] | None = None) -> tuple[ProcessedDataset, dict[str, Any]]:
    """Preprocess the registered dataset `name` with `protocol` (default: the dataset's).

    Missing raw files are fetched (mirror, then URLs) and verified first. Returns the processed
    dataset and its manifest; the dataset is written to `processed/<name>/<protocol>/`.
    """
    spec = get_dataset(name)
    proto = protocol or spec.default_protocol
    if proto not in spec.protocols:
        raise SbrError(unknown_name_message(f"protocol for {name}", proto, list(spec.protocols)))
    src = spec.source(source)
    root = paths.data_dir(data_dir)
    files = _ensure_files(name, src.name, root, mirror)
    used = {role: p for role, p in files.items() if role not in ("attributes",)}
    checksums = {Path(f.path).name: verified_sha256(files[f.role]) for f in src.files if f.role in used}
    opts = {**src.options, **(options or {})}
    return _run(name, proto, src.format, used, opts, root, valid_fraction, checksums,
                {"source": src.name, "registered": True})


def preprocess_files(path: str | Path, fmt: str | None, name: str, protocol: str | None = None, *,
                     data_dir: Path | None = None, valid_fraction: float = 0.1,
                     options: dict[str, Any] | None = None, source: str | None = None
                     ) -> tuple[ProcessedDataset, dict[str, Any]]:
    """Preprocess a user's own files (`--from PATH --format FMT --name NAME`).

    `path` is a file or folder; `fmt` one of the registered formats. When `name` is a
    registered dataset, its source (`source`, else the one in format `fmt`, else its manual
    source) supplies the format, options and protocol: the way to feed login-walled raw files
    such as `yoochoose-clicks.dat` to `yoochoose1_4`.
    """
    if not _NAME_RE.match(name or ""):
        raise DataError(f"dataset name {name!r} must be letters, digits, '.', '_' or '-' (at most 100)")
    base_opts: dict[str, Any] = {}
    spec = load_registry().get(name)
    if spec is not None:
        if source is not None:
            src = spec.source(source)
        elif fmt is not None:
            src = next((s for s in spec.sources.values() if s.format == fmt), None)
        else:
            src = next((s for s in spec.sources.values() if s.is_manual), spec.source())
        if src is not None:
            if fmt is not None and fmt != src.format:
                raise DataError(f"source {src.name!r} of {name} is in format {src.format!r}, not {fmt!r}")
            fmt = src.format
            base_opts = dict(src.options)
    elif source is not None:
        raise DataError(f"--source applies to registered datasets; {name!r} is not one")
    if fmt is None:
        raise DataError(f"{name!r} is not a registered dataset: pass --format ({', '.join(FORMATS.names())})")
    FORMATS.get(fmt)
    proto = protocol or (spec.default_protocol if spec is not None else DEFAULT_PROTOCOL[fmt])
    PROTOCOLS.get(proto)
    files = discover_files(Path(path), fmt)
    checksums = {p.name: sha256_file(p) for p in files.values()}
    opts = {**base_opts, **(options or {})}
    return _run(name, proto, fmt, files, opts, paths.data_dir(data_dir), valid_fraction, checksums,
                {"source": "--from", "from_path": str(Path(path).expanduser().resolve()),
                 "registered": spec is not None})


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The one JSON object `preprocess --json` prints."""
    counts = manifest["counts"]
    out = {"dataset": manifest["dataset"], "protocol": manifest["protocol"], **counts,
           "path": manifest.get("path"), "warnings": manifest.get("warnings", []),
           "stats": manifest.get("stats", {}), "audit": manifest.get("audit")}
    for key in ("train_period_sessions", "test_period_sessions"):
        if key in manifest.get("info", {}):
            out[key] = manifest["info"][key]
    return out


# ---------------------------------------------------------------------------------------------
# export


def export_dataset(name: str, fmt: str, out: str | Path, protocol: str | None = None, *,
                   data_dir: Path | None = None) -> dict[str, Any]:
    """Write a processed dataset in another codebase's layout (`srgnn`: the SR-GNN pickles).

    `train.txt` = (prefixes, targets) of the protocol's whole training set (train then valid,
    i.e. protocol order), `test.txt` = the test examples, `all_train_seq.txt` = the training
    part of every training session. Each file is written atomically.
    """
    if fmt != "srgnn":
        raise SbrError(unknown_name_message("export format", fmt, ["srgnn"]))
    ds = load_dataset(name, protocol, data_dir=data_dir)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} exists and is not a directory")
    tr_p, tr_t = ds.prefixes("train")
    if "valid" in ds.splits:
        va_p, va_t = ds.prefixes("valid")
        tr_p, tr_t = tr_p + va_p, tr_t + va_t
    te_p, te_t = ds.prefixes("test")
    fitted = ds.fit_sessions(("train", "valid"))
    items, offs = fitted.items, fitted.offsets
    flat = items.tolist()
    seqs = [flat[a:b] for a, b in zip(offs[:-1].tolist(), offs[1:].tolist())]
    written = {}
    for fname, obj in (("train.txt", (tr_p, tr_t)), ("test.txt", (te_p, te_t)), ("all_train_seq.txt", seqs)):
        atomic_write_bytes(out / fname, pickle.dumps(obj, protocol=4))
        written[fname] = str(out / fname)
    return {"dataset": ds.name, "protocol": ds.protocol, "format": fmt, "out": str(out), "files": written,
            "train_examples": len(tr_t), "test_examples": len(te_t), "train_sessions": len(seqs),
            "n_node": ds.n_items}
