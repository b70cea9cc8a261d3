"""The processed dataset: every split of every protocol in one compact, memory-friendly type.

Sessions (or user sequences) are stored once, as a flat item array with CSR offsets. A split is a
list of examples, each a pair (session index, position): the example's input is the session's
items before `position` and its target is the item at `position` (the *remaining items* are those
from `position` on). This one representation expresses the SR-GNN prefix augmentation (any order,
e.g. longest prefix first), fractions of augmented examples (Yoochoose 1/64), leave-one-out on
user sequences and published (prefix, target) files, without materialising lists of lists.

What a model or a dataset-level graph may learn from is `fit_sessions(splits)` and nothing else:
each session read by the fit splits, cut after the last target they read; never the test split.

Item ids are 1..n_items-1; id 0 is padding and never a candidate.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbrbench.errors import DataError
from sbrbench.io import atomic_write_json, disk_full_errors, process_alive, sha256_file

FORMAT_VERSION = 1
DATA_FILES = ("arrays.npz", "items.json", "users.json")  # the files a manifest pins (size + sha256)
HASH_ON_LOAD_BYTES = 64 << 20  # files up to this size are hashed on every load; larger ones: size + zip CRC
SPLITS = ("train", "valid", "test")
FIT_SPLITS = ("train", "valid")  # the splits a model may ever be fitted on; never "test"


@dataclass
class Split:
    """Examples of one split: example i reads session `session[i]` up to (excluding) `pos[i]`."""

    session: np.ndarray  # int32 (N,)
    pos: np.ndarray  # int32 (N,), >= 1

    def __len__(self) -> int:
        return int(self.session.shape[0])

    def take(self, index: np.ndarray) -> Split:
        """The sub-split of the examples at `index` (order kept as given)."""
        return Split(self.session[index], self.pos[index])


@dataclass
class Examples:
    """Flat view of a split for batching: prefix i is `items[start[i] : start[i] + length[i]]`."""

    start: np.ndarray  # int64 (N,)
    length: np.ndarray  # int64 (N,)
    target: np.ndarray  # int64 (N,)
    session_end: np.ndarray  # int64 (N,), end offset of the example's session (remaining items)


@dataclass(frozen=True)
class FitSessions:
    """The fitted part of the sessions a model learns from (`ProcessedDataset.fit_sessions`).

    CSR: fitted session j has items `items[offsets[j] : offsets[j + 1]]` and is session
    `session[j]` of the dataset (ascending), so per-session data (e.g. `session_time`) aligns
    with `session`.
    """

    items: np.ndarray  # int64 (n_clicks,) fitted clicks, session after session
    offsets: np.ndarray  # int64 (n_sessions + 1,)
    session: np.ndarray  # int64 (n_sessions,) dataset index of each fitted session, ascending
    splits: tuple[str, ...]  # the fit splits they come from

    def __len__(self) -> int:
        return int(self.session.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """int64 (n_sessions,) fitted length of each session."""
        return np.diff(self.offsets)


@dataclass
class ProcessedDataset:
    """A dataset after preprocessing: sessions, splits of examples, optional users and item text."""

    name: str
    protocol: str
    n_items: int  # ids 0..n_items-1, 0 = padding; the catalogue is 1..n_items-1
    items: np.ndarray  # int32 flat clicks of every session
    offsets: np.ndarray  # int64 (n_sessions + 1,)
    splits: dict[str, Split]
    session_time: np.ndarray | None = None  # float64 unix seconds per session (NaN unknown)
    session_user: np.ndarray | None = None  # int64 user index per session (-1 anonymous)
    item_keys: list[str] | None = None  # original id of each item id (index 0 = "")
    item_text: list[str] | None = None  # text of each item id (index 0 = "")
    user_keys: list[str] | None = None  # original id of each user index (see `session_user`)
    info: dict[str, Any] = field(default_factory=dict)  # protocol options, sources, notes

    # ---- shape -------------------------------------------------------------------------------
    @property
    def n_sessions(self) -> int:
        """Number of stored sessions (all splits)."""
        return int(self.offsets.shape[0] - 1)

    @property
    def catalogue_size(self) -> int:
        """Number of candidate items (ids 1..n_items-1)."""
        return self.n_items - 1

    def session(self, i: int) -> np.ndarray:
        """Items of session `i`."""
        return self.items[self.offsets[i] : self.offsets[i + 1]]

    def split(self, name: str) -> Split:
        """The split `name`; a clear error if this dataset has no such split."""
        try:
            return self.splits[name]
        except KeyError:
            raise DataError(
                f"dataset {self.name!r} ({self.protocol}) has no {name!r} split; "
                f"it has: {', '.join(self.splits)}"
            ) from None

    def examples(self, name: str) -> Examples:
        """Flat arrays describing the split's examples (vectorised, no Python loop)."""
        sp = self.split(name)
        sess = sp.session.astype(np.int64)
        start = self.offsets[sess]
        length = sp.pos.astype(np.int64)
        target = self.items[start + length].astype(np.int64)
        return Examples(start=start, length=length, target=target, session_end=self.offsets[sess + 1])

    def prefixes(self, name: str) -> tuple[list[list[int]], list[int]]:
        """The split as Python (prefixes, targets) lists — for export and tests, not hot paths."""
        ex = self.examples(name)
        items = self.items.tolist()
        seqs = [items[s : s + n] for s, n in zip(ex.start.tolist(), ex.length.tolist())]
        return seqs, ex.target.tolist()

    def split_sessions(self, name: str) -> np.ndarray:
        """Sorted unique indices of the sessions that the split's examples read."""
        return np.unique(self.split(name).session)

    def fit_sessions(self, splits: Sequence[str]) -> FitSessions:
        """The fitted sessions of `splits`: everything a model or a graph may learn from.

        For each session that an example of `splits` reads, its items up to and including the
        last target those examples read (items after it, and sessions only other splits read,
        stay out); sessions in dataset index order, each once. `splits` are fit splits only:
        `("train",)` when selecting on validation, `("train", "valid")` when the validation
        split is part of the fit (`--select-on test`, or the papers' full training set). The
        test split is refused. A fit split the dataset lacks contributes nothing, as in the
        trainer. This is the one definition of the line that keeps held-out targets out of
        every model and dataset-level graph: take fitted data from here, never from `items`.
        """
        names = (splits,) if isinstance(splits, str) else tuple(splits)
        if "test" in names:
            raise DataError(
                f"models and graphs of {self.name!r} are fitted on {' and '.join(FIT_SPLITS)} only, "
                f"never the test split (got splits: {', '.join(names)})"
            )
        bad = [n for n in names if n not in FIT_SPLITS]
        if bad:
            raise DataError(f"unknown fit split {bad[0]!r}; fit splits are {', '.join(FIT_SPLITS)}")
        names = tuple(dict.fromkeys(names))
        parts = [self.splits[n] for n in names if n in self.splits]
        sess = np.concatenate([np.zeros(0, np.int64)] + [p.session.astype(np.int64) for p in parts])
        pos = np.concatenate([np.zeros(0, np.int64)] + [p.pos.astype(np.int64) for p in parts])
        maxpos = np.full(self.n_sessions, -1, dtype=np.int64)
        np.maximum.at(maxpos, sess, pos)
        session = np.flatnonzero(maxpos >= 0).astype(np.int64)
        lens = maxpos[session] + 1
        offsets = np.zeros(session.shape[0] + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        idx = np.repeat(self.offsets[session] - offsets[:-1], lens) + np.arange(offsets[-1], dtype=np.int64)
        return FitSessions(items=self.items[idx].astype(np.int64), offsets=offsets, session=session, splits=names)

    def unfitted_examples(self, split: str, fit_splits: Sequence[str]) -> np.ndarray:
        """int64 (U,) ascending indices of the examples of `split` whose target item never occurs in
        the fitted sessions of `fit_splits` (`fit_sessions`): no model fitted on them has seen it.

        Where the validation split is held out of the fit (selection on validation), the items
        that only its sessions contain are of this kind (e.g. about 5 % of the test targets of
        GCE-GNN's Tmall and Nowplaying); the test set of a dataset preprocessed as its paper did
        has none against the full training set.
        """
        seen = np.zeros(self.n_items, dtype=bool)
        seen[self.fit_sessions(fit_splits).items] = True
        return np.flatnonzero(~seen[self.examples(split).target]).astype(np.int64)

    # ---- statistics ----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """The headline counts printed by `preprocess --json` and stored in the manifest.

        `train_sessions`/`train_examples` count the protocol's whole training set (what the
        papers train on); `valid_*` count the part of it held out for model selection, and
        `fit_examples` the rest, which sbrbench fits on when selecting on validation.
        """
        def n_sess(*names: str) -> int:
            parts = [self.splits[n].session for n in names if n in self.splits]
            return int(np.count_nonzero(np.bincount(np.concatenate(parts), minlength=self.n_sessions))) if parts else 0

        def n_ex(name: str) -> int:
            return len(self.splits[name]) if name in self.splits else 0

        out: dict[str, int] = {
            "train_sessions": n_sess("train", "valid"),
            "train_examples": n_ex("train") + n_ex("valid"),
            "fit_examples": n_ex("train"),
            "valid_sessions": n_sess("valid"),
            "valid_examples": n_ex("valid"),
            "test_sessions": n_sess("test"),
            "test_examples": n_ex("test"),
            "items": self.catalogue_size,
        }
        tr_items = self.fit_sessions(FIT_SPLITS).items
        out["items_seen_in_train"] = int(np.count_nonzero(np.bincount(tr_items, minlength=self.n_items)))
        out["clicks"] = int(self.items.shape[0])
        if self.session_user is not None:
            users = self.session_user[self.session_user >= 0]
            out["users"] = int(np.unique(users).shape[0])
        return out

    # ---- persistence ----------------------------------------------------------------------------
    def save(self, directory: str | Path, sources: dict[str, str] | None = None,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the dataset to `directory` atomically (a temp dir renamed into place).

        Returns the manifest written. `sources` maps source file names to their sha256;
        `extra` adds top-level manifest entries (statistics, warnings, options).
        """
        directory = Path(directory)
        with disk_full_errors(directory):
            directory.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(directory)
            tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-{os.getpid()}-", dir=directory.parent))
        try:
            with disk_full_errors(directory):
                manifest = self._write_files(tmp, sources, extra)
                _replace_dir(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return manifest

    def _write_files(self, tmp: Path, sources: dict[str, str] | None, extra: dict[str, Any] | None
                     ) -> dict[str, Any]:
        """Write every file of the dataset into the fresh directory `tmp`, synced, the manifest last."""
        arrays: dict[str, np.ndarray] = {
            "items": np.ascontiguousarray(self.items, dtype=np.int32),
            "offsets": np.ascontiguousarray(self.offsets, dtype=np.int64),
        }
        for name, sp in self.splits.items():
            arrays[f"split_{name}_session"] = sp.session.astype(np.int32)
            arrays[f"split_{name}_pos"] = sp.pos.astype(np.int32)
        if self.session_time is not None:
            arrays["session_time"] = self.session_time.astype(np.float64)
        if self.session_user is not None:
            arrays["session_user"] = self.session_user.astype(np.int64)
        np.savez(tmp / "arrays.npz", **arrays)
        if self.item_keys is not None or self.item_text is not None:
            with open(tmp / "items.json", "w", encoding="utf-8") as fh:
                json.dump({"keys": self.item_keys, "text": self.item_text}, fh)
        if self.user_keys is not None:
            with open(tmp / "users.json", "w", encoding="utf-8") as fh:
                json.dump({"keys": self.user_keys}, fh)
        files = {f.name: {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
                 for f in sorted(tmp.iterdir()) if f.name in DATA_FILES}
        manifest = {
            "format_version": FORMAT_VERSION,
            "dataset": self.name,
            "protocol": self.protocol,
            "n_items": self.n_items,
            "splits": list(self.splits),
            "counts": self.counts(),
            "arrays_sha256": files["arrays.npz"]["sha256"],
            "files": files,
            "sources": sources or {},
            "info": self.info,
            **(extra or {}),
        }
        for f in tmp.iterdir():  # on disk before the manifest that vouches for them
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        atomic_write_json(tmp / "manifest.json", manifest)
        return manifest

    @classmethod
    def load(cls, directory: str | Path) -> ProcessedDataset:
        """Load a dataset written by `save`; a clear `DataError` if it is missing or damaged."""
        directory = Path(directory)
        mpath = directory / "manifest.json"
        if not mpath.is_file() and not (restore_interrupted_swap(directory) and mpath.is_file()):
            raise DataError(f"no processed dataset at {directory} (manifest.json missing)")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
            version = manifest["format_version"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"damaged manifest {mpath} ({_first_line(exc)}): rebuild it with "
                            f"`{rebuild_command(directory)}`") from None
        if version != FORMAT_VERSION:
            raise DataError(
                f"{directory} was written by format version {version}; this sbrbench reads "
                f"{FORMAT_VERSION}: run `sbrbench preprocess` again"
            )
        verify_files(directory, manifest)
        try:
            with np.load(directory / "arrays.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"damaged {directory / 'arrays.npz'} ({_first_line(exc)}): rebuild it with "
                            f"`{rebuild_command(directory, manifest)}`") from None
        splits = {
            name: Split(arrays[f"split_{name}_session"], arrays[f"split_{name}_pos"])
            for name in manifest["splits"]
        }
        keys = text = users = None
        ipath, upath = directory / "items.json", directory / "users.json"
        try:
            if ipath.is_file():
                meta = json.loads(ipath.read_text(encoding="utf-8"))
                keys, text = meta.get("keys"), meta.get("text")
            if upath.is_file():
                users = json.loads(upath.read_text(encoding="utf-8")).get("keys")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
            raise DataError(f"damaged item or user keys in {directory} ({_first_line(exc)}): rebuild them with "
                            f"`{rebuild_command(directory, manifest)}`") from None
        return cls(
            name=manifest["dataset"],
            protocol=manifest["protocol"],
            n_items=int(manifest["n_items"]),
            items=arrays["items"],
            offsets=arrays["offsets"],
            splits=splits,
            session_time=arrays.get("session_time"),
            session_user=arrays.get("session_user"),
            item_keys=keys,
            item_text=text,
            user_keys=users,
            info=manifest.get("info", {}),
        )


def rebuild_command(directory: str | Path, manifest: dict[str, Any] | None = None) -> str:
    """The command that writes the processed dataset at `directory` again."""
    directory = Path(directory)
    m = manifest if isinstance(manifest, dict) else {}
    name, protocol = str(m.get("dataset") or directory.parent.name), str(m.get("protocol") or directory.name)
    if m.get("source") == "--from" and m.get("from_path"):
        return (f"sbrbench preprocess --from {m['from_path']} --format {m.get('format')} --name {name} "
                f"--protocol {protocol}")
    return f"sbrbench preprocess {name} --protocol {protocol}"


def verify_files(directory: str | Path, manifest: dict[str, Any]) -> None:
    """Check the files a manifest pins: sizes always, sha256 of those up to `HASH_ON_LOAD_BYTES`.

    Manifests written before sizes were recorded pass unchecked (the zip CRC still guards the arrays).
    """
    directory = Path(directory)
    pinned = manifest.get("files")
    if not isinstance(pinned, dict):
        return
    for name, want in pinned.items():
        path = directory / str(name)
        try:
            size = path.stat().st_size
        except OSError:
            size = None
        problem = None
        if size is None:
            problem = "missing"
        elif size != want.get("bytes"):
            problem = f"{size} bytes, the manifest says {want.get('bytes')}"
        elif size <= HASH_ON_LOAD_BYTES and want.get("sha256") and sha256_file(path) != want["sha256"]:
            problem = "its sha256 differs from the manifest's"
        if problem:
            raise DataError(f"damaged processed dataset file {path} ({problem}): rebuild it with "
                            f"`{rebuild_command(directory, manifest)}`")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def restore_interrupted_swap(directory: str | Path) -> bool:
    """Put back the dataset a killed re-`preprocess` had moved aside; True if one was restored.

    `_replace_dir` swaps a new dataset in with two renames: the old one to `.<name>.old-<pid>`, then
    the new one into place. A kill between them leaves no `<name>` at all; the old copy, complete,
    is renamed back here (by the next load or preprocess) once its writer's process is gone.
    """
    directory = Path(directory)
    if directory.exists() or not directory.parent.is_dir():
        return False
    prefix = f".{directory.name}.old-"
    aside = []
    for left in directory.parent.glob(prefix + "*"):
        pid = left.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)) and (left / "manifest.json").is_file():
            aside.append((left.stat().st_mtime, left))
    for _, left in sorted(aside, reverse=True):  # the copy moved aside last is the one that was in place
        try:
            os.rename(left, directory)
            return True
        except OSError:  # another process restored one first
            if directory.exists():
                return False
    return False


def _remove_stale_temporaries(directory: Path) -> None:
    """Remove what killed writers of `directory` left beside it (their process is gone), after
    putting back a dataset a killed swap left aside (`restore_interrupted_swap`)."""
    restore_interrupted_swap(directory)
    for prefix in (f".{directory.name}.tmp-", f".{directory.name}.old-"):
        for left in directory.parent.glob(prefix + "*"):
            pid = left.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(left, ignore_errors=True)


# Manifest fields that say how long preprocessing took, not what it produced: outside the checksum.
VOLATILE_MANIFEST_FIELDS: tuple[tuple[str, ...], ...] = (("audit", "seconds"),)


def manifest_checksum(directory: str | Path) -> str:
    """The dataset's identity: sha256 of its manifest.json (which pins the arrays' sha256) as
    canonical JSON (sorted keys, no whitespace) without `VOLATILE_MANIFEST_FIELDS`, so that the same
    sources preprocessed by the same sbrbench give the same checksum on any machine, at any time."""
    manifest = json.loads((Path(directory) / "manifest.json").read_text(encoding="utf-8"))
    for path in VOLATILE_MANIFEST_FIELDS:
        node = manifest
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def legacy_manifest_checksum(directory: str | Path) -> str:
    """sha256 of the manifest file's bytes: what run records held before `manifest_checksum`
    (it changed with every preprocessing through the audit's timing)."""
    return sha256_file(Path(directory) / "manifest.json")


# The audit writes its timing as round(seconds, 3); audits take well under a second on every
# registered dataset, so ten minutes (600,001 candidates, about 1 s) is a wide margin.
LEGACY_TIMING_SEARCH_S = 600


def legacy_manifest_matches(directory: str | Path, recorded: str) -> bool:
    """Whether `recorded`, a checksum of the old kind (`legacy_manifest_checksum`), names the data
    of the dataset at `directory` although its manifest file came from another preprocessing.

    Two preprocessings of the same sources write manifests that differ only in the audit's timing
    t = round(seconds, 3). The local manifest is written out again the way preprocessing writes it,
    with t = 0.000, 0.001, ..., `LEGACY_TIMING_SEARCH_S` in place of its own timing; a sha256 equal
    to `recorded` proves every other byte (the arrays' sha256 included) the same. False when the
    local file is not in that canonical form or no timing fits.
    """
    path = Path(directory) / "manifest.json"
    try:
        raw = path.read_bytes()
        return _legacy_match(raw, recorded)
    except (OSError, ValueError):
        return False


@functools.lru_cache(maxsize=64)
def _legacy_match(raw: bytes, recorded: str) -> bool:
    if hashlib.sha256(raw).hexdigest() == recorded:
        return True
    manifest = json.loads(raw.decode("utf-8"))
    audit = manifest.get("audit") if isinstance(manifest, dict) else None
    if not isinstance(audit, dict) or not isinstance(audit.get("seconds"), (int, float)):
        return False
    sentinel = "\u0000timing\u0000"
    own = audit["seconds"]
    audit["seconds"] = sentinel
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    quoted = json.dumps(sentinel)
    if text.count(quoted) != 1 or text.replace(quoted, json.dumps(own)).encode("utf-8") != raw:
        return False
    before, after = (part.encode("utf-8") for part in text.split(quoted))
    head = hashlib.sha256(before)
    for millis in range(LEGACY_TIMING_SEARCH_S * 1000 + 1):
        h = head.copy()
        h.update(repr(round(millis / 1000, 3)).encode("ascii") + after)
        if h.hexdigest() == recorded:
            return True
    return False


def from_sequences(
    name: str,
    protocol: str,
    sessions: list[np.ndarray] | list[list[int]],
    *,
    n_items: int | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Pack a list of sessions into CSR (items int32, offsets int64) and the n_items to use."""
    lens = np.fromiter((len(s) for s in sessions), dtype=np.int64, count=len(sessions))
    offsets = np.zeros(len(sessions) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    items = np.fromiter((x for s in sessions for x in s), dtype=np.int64, count=int(offsets[-1]))
    max_id = int(items.max()) if items.size else 0
    if items.size and int(items.min()) < 1:
        raise DataError(f"{name}: item ids must be >= 1 (0 is padding)")
    if n_items is not None and max_id >= n_items:
        raise DataError(f"{name}: item id {max_id} exceeds the declared item space {n_items - 1}")
    if n_items is None and max_id > max(16 * len(np.unique(items)), 1 << 20):
        # the catalogue is 1..max id: ids far beyond the items there are would make it (and every
        # per-item array) that large, or overflow int32
        raise DataError(f"{name}: item ids go up to {max_id} for only {len(np.unique(items))} distinct items; "
                        "number the items densely from 1")
    return items.astype(np.int32), offsets, (n_items if n_items is not None else max_id + 1)


def augment_all_prefixes(offsets: np.ndarray, session_index: np.ndarray, longest_first: bool = True) -> Split:
    """Prefix augmentation of the given sessions: (s, k) for k = 1..len-1, SR-GNN order by default.

    Longest prefix first within each session, sessions in the given order (SR-GNN `process_seqs`).
    """
    session_index = np.asarray(session_index, dtype=np.int64)
    lens = (offsets[session_index + 1] - offsets[session_index]).astype(np.int64)
    n_ex = np.maximum(lens - 1, 0)
    total = int(n_ex.sum())
    sess = np.repeat(session_index, n_ex).astype(np.int32)
    first = np.repeat(np.cumsum(n_ex) - n_ex, n_ex)
    k = np.arange(total, dtype=np.int64) - first  # 0..n_ex-1 within each session
    pos = (np.repeat(lens, n_ex) - 1 - k) if longest_first else (k + 1)
    return Split(sess, pos.astype(np.int32))


def _replace_dir(src: Path, dst: Path) -> None:
    """Move `src` into place as `dst`, replacing an existing `dst` with no moment of a partial one."""
    if dst.exists():
        trash = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, trash)
        os.replace(src, dst)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(src, dst)
