"""Fetch a dataset's raw files into the data dir: HTTP(S) or a mirror, sha256-verified, atomic.

Files land at `<data_dir>/raw/<FileSpec.path>` (the mirror layout, so a data dir's `raw/` can
itself serve as a mirror). A download streams into a hidden `.<name>.part` file beside the
target; a transfer cut mid-way resumes with an HTTP `Range` request when the server answers 206
and restarts cleanly otherwise. The size and sha256 are checked before the atomic rename, and any
failure removes the partial file, so the data dir only ever holds complete, verified files.

Verification is cached in a hidden `.<name>.sha256` sidecar (sha256, size, mtime): a second call
on an unchanged file does not hash it again.

Sources, in order: `--from PATH` (a file or a directory, copied), the mirror (`--mirror` /
`$SBRBENCH_MIRROR`: a directory or an http(s)/file URL with the layout of `../shared/datasets`),
then each URL of the file. Manual (login-walled) sources have no URLs: their instructions are
raised as a one-line error ending with the `--from` hint.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sbrbench import __version__
from sbrbench.data.registry import DatasetSpec, FileSpec, SourceSpec, get_dataset, load_registry
from sbrbench.errors import ChecksumError, DataError, SbrError
from sbrbench.io import atomic_write_text
from sbrbench.paths import data_dir as resolve_data_dir
from sbrbench.paths import processed_dir, raw_dir

ENV_MIRROR = "SBRBENCH_MIRROR"
TIMEOUT_S = 30.0
ATTEMPTS = 4  # per URL: the first try plus three retries
RETRY_BACKOFF_S = (0.5, 2.0, 5.0)
CHUNK = 1 << 20

__all__ = [
    "ENV_MIRROR", "DownloadError", "dataset_status", "download", "ensure_source", "list_datasets",
    "local_path", "source_status", "verified_sha256",
]


class DownloadError(DataError):
    """A file could not be fetched from any of its locations."""


class _Retryable(Exception):
    """A transient failure (connection cut, timeout, 5xx): try the same URL again."""


class _Fatal(Exception):
    """A failure of this location (404, wrong size): move on to the next location."""


# ---- paths and the verification cache ------------------------------------------------------------
def local_path(root: Path, fspec: FileSpec) -> Path:
    """Where `fspec` lives in the data dir `root`."""
    return raw_dir(root) / fspec.path


def _part_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.part")


def _sidecar_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.sha256")


def _write_sidecar(dest: Path, sha256: str) -> None:
    st = dest.stat()
    atomic_write_text(_sidecar_path(dest), json.dumps(
        {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}) + "\n")


def _read_sidecar(dest: Path) -> str | None:
    """The cached sha256 of `dest` if the sidecar still describes the file (size and mtime)."""
    try:
        rec = json.loads(_sidecar_path(dest).read_text(encoding="utf-8"))
        st = dest.stat()
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("size") != st.st_size or rec.get("mtime_ns") != st.st_mtime_ns:
        return None
    sha = rec.get("sha256")
    return sha if isinstance(sha, str) else None


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def verified_sha256(path: str | Path) -> str:
    """The sha256 of a file in the data dir, from its sidecar when still valid (else hashed and cached)."""
    path = Path(path)
    cached = _read_sidecar(path)
    if cached is not None:
        return cached
    sha = _hash_file(path)
    with contextlib.suppress(OSError):
        _write_sidecar(path, sha)
    return sha


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _check_existing(dest: Path, fspec: FileSpec) -> str | None:
    """sha256 of an existing, valid `dest`; None when it is absent or does not match the pin."""
    if not dest.is_file():
        return None
    if fspec.size is not None and dest.stat().st_size != fspec.size:
        return None
    sha = verified_sha256(dest)
    if fspec.sha256 is not None and sha != fspec.sha256:
        return None
    return sha


# ---- progress ----------------------------------------------------------------------------------
class _TransferProgress:
    """A byte-count progress bar for file transfers on stderr, or nothing (not a TTY, or not asked for)."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                       TimeRemainingColumn, TransferSpeedColumn)

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=False)

    @contextlib.contextmanager
    def task(self, label: str, total: int | None) -> Iterator[Callable[[int, int | None], None]]:
        """Yield `update(completed, total)` for one file."""
        if self._bar is None:
            yield lambda done, total: None
            return
        with self._bar:
            tid = self._bar.add_task(label, total=total)
            yield lambda done, tot: self._bar.update(tid, completed=done, total=tot)


# ---- transfers ---------------------------------------------------------------------------------
def _finish(part: Path, dest: Path, fspec: FileSpec, sha: str, where: str) -> str:
    """Check the size and sha256 of a complete `.part`, then rename it over `dest` atomically."""
    size = part.stat().st_size
    if fspec.size is not None and size != fspec.size:
        _remove(part)
        raise ChecksumError(f"{fspec.path} from {where}: got {size} bytes, expected {fspec.size}; "
                            "nothing was kept")
    if fspec.sha256 is not None and sha != fspec.sha256:
        _remove(part)
        raise ChecksumError(f"{fspec.path} from {where}: sha256 {sha} does not match the pinned "
                            f"{fspec.sha256}; nothing was kept")
    with open(part, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(part, dest)
    _write_sidecar(dest, sha)
    return sha


def _copy_file(src: Path, dest: Path, fspec: FileSpec, progress: _TransferProgress) -> str:
    """Copy a local file into place through a verified `.part`."""
    if not src.is_file():
        raise _Fatal(f"{src}: no such file")
    size = src.stat().st_size
    if fspec.size is not None and size != fspec.size:
        raise ChecksumError(f"{src}: {size} bytes, but {fspec.path} has {fspec.size}; nothing was copied")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    h = hashlib.sha256()
    try:
        with open(src, "rb") as fin, open(part, "wb") as fout, progress.task(fspec.name, size) as update:
            done = 0
            while block := fin.read(CHUNK):
                fout.write(block)
                h.update(block)
                done += len(block)
                update(done, size)
        return _finish(part, dest, fspec, h.hexdigest(), str(src))
    except BaseException:
        _remove(part)
        raise


def _hash_prefix(part: Path) -> tuple[Any, int]:
    h = hashlib.sha256()
    n = 0
    with open(part, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
            n += len(block)
    return h, n


def _http_attempt(url: str, part: Path, fspec: FileSpec, update: Callable[[int, int | None], None]) -> str:
    """One GET of `url` into `part`, resuming from its current length; returns the sha256."""
    offset = part.stat().st_size if part.exists() else 0
    if fspec.size is not None and offset > fspec.size:
        _remove(part)
        offset = 0
    headers = {"User-Agent": f"sbrbench/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            _remove(part)  # our partial file is no prefix the server recognises: start over
            raise _Retryable("HTTP 416 for a resumed range") from None
        if exc.code in (408, 429) or exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
        raise _Fatal(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, socket.gaierror):  # no such host (or offline): retrying will not help
            raise _Fatal(f"{url}: cannot resolve the host ({reason.strerror or reason})") from None
        raise _Retryable(f"cannot connect: {reason}") from None
    with resp:
        status = getattr(resp, "status", 200)
        if offset and status == 206:
            if not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                _remove(part)
                raise _Retryable("the server answered a different range than asked for")
            h, done = _hash_prefix(part)
            mode = "ab"
        else:
            h, done, mode = hashlib.sha256(), 0, "wb"
        length = resp.headers.get("Content-Length")
        total = done + int(length) if length and length.isdigit() else None
        if total is not None and fspec.size is not None and total != fspec.size:
            _remove(part)
            raise ChecksumError(f"{url}: offers {total} bytes, but {fspec.path} has {fspec.size}; "
                                "nothing was kept")
        update(done, total or fspec.size)
        try:
            with open(part, mode) as fh:
                while block := resp.read(CHUNK):
                    fh.write(block)
                    h.update(block)
                    done += len(block)
                    update(done, total or fspec.size)
                    if fspec.size is not None and done > fspec.size:
                        _remove(part)
                        raise _Fatal(f"{url}: sent more than the {fspec.size} bytes of {fspec.path}")
        except (OSError, http.client.HTTPException) as exc:
            raise _Retryable(f"transfer failed after {done} bytes: {exc}") from None
    if total is not None and done < total:
        raise _Retryable(f"connection closed after {done} of {total} bytes")
    return h.hexdigest()


def _http_download(url: str, dest: Path, fspec: FileSpec, progress: _TransferProgress) -> str:
    """Download `url` to `dest` with retries and resume; leaves no `.part` behind on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    last = ""
    try:
        with progress.task(fspec.name, fspec.size) as update:
            for attempt in range(ATTEMPTS):
                if attempt:
                    time.sleep(RETRY_BACKOFF_S[min(attempt - 1, len(RETRY_BACKOFF_S) - 1)])
                resumed = part.exists() and part.stat().st_size > 0
                try:
                    sha = _http_attempt(url, part, fspec, update)
                except _Retryable as exc:
                    last = str(exc)
                    continue
                try:
                    return _finish(part, dest, fspec, sha, url)
                except ChecksumError as exc:
                    if not resumed:
                        raise
                    last = str(exc)  # a stale partial file may have been the culprit: retry from 0
            raise DownloadError(f"{url}: gave up after {ATTEMPTS} attempts ({last})")
    except BaseException:
        _remove(part)
        raise


def _fetch(url: str, dest: Path, fspec: FileSpec, progress: _TransferProgress) -> str:
    if url.startswith("file://"):
        parsed = urllib.parse.urlparse(url)
        return _copy_file(Path(urllib.request.url2pathname(parsed.path)), dest, fspec, progress)
    return _http_download(url, dest, fspec, progress)


def _mirror_location(mirror: str, fspec: FileSpec) -> str:
    if mirror.startswith(("http://", "https://", "file://")):
        return mirror.rstrip("/") + "/" + urllib.parse.quote(fspec.path)
    return str(Path(mirror).expanduser() / fspec.path)


def _locations(fspec: FileSpec, mirror: str | None) -> list[str]:
    locs = [_mirror_location(mirror, fspec)] if mirror else []
    return locs + list(fspec.urls)


def _obtain(fspec: FileSpec, dest: Path, mirror: str | None, progress: _TransferProgress,
            manual: str | None) -> tuple[str, str]:
    """Fetch `fspec` from the mirror, then each URL: (sha256, where from); a clear error if all fail.

    A file already at `dest` that failed verification stays until a verified copy replaces it.
    """
    errors: list[str] = []
    checksum_error: ChecksumError | None = None
    for loc in _locations(fspec, mirror):
        try:
            if "://" in loc:
                return _fetch(loc, dest, fspec, progress), loc
            return _copy_file(Path(loc), dest, fspec, progress), loc
        except ChecksumError as exc:
            checksum_error = exc
            errors.append(str(exc))
        except (_Fatal, DownloadError) as exc:
            errors.append(str(exc))
    if manual is not None:
        state = ("does not match its pinned size/sha256" if dest.exists() else "is not downloaded")
        tried = f" (mirror: {'; '.join(errors)})" if errors else ""
        cls_m = ChecksumError if dest.exists() else SbrError
        raise cls_m(f"{fspec.path} {state}{tried}. {manual}")
    if checksum_error is not None and len(errors) == 1:
        raise checksum_error
    if not errors:
        raise DownloadError(f"{fspec.path}: no URL or mirror to download it from")
    cls = ChecksumError if checksum_error is not None else DownloadError
    raise cls(f"could not download {fspec.path}: {' | '.join(errors)}")


def _mirror_from_env(mirror: str | None) -> str | None:
    return mirror or os.environ.get(ENV_MIRROR) or None


# ---- the library API ---------------------------------------------------------------------------
def ensure_source(dataset: str, source: str | None, data_dir: Path, mirror: str | None = None, *,
                  progress: bool = False) -> dict[str, Path]:
    """Make sure every file of a dataset's source is in `data_dir`, verified; role -> local path.

    Missing (or corrupt) files are fetched from the mirror (`mirror` or `$SBRBENCH_MIRROR`), then
    from each URL. A manual source whose files are missing raises `SbrError` with its instructions.
    """
    spec = get_dataset(dataset)
    src = spec.source(source)
    mirror = _mirror_from_env(mirror)
    bar = _TransferProgress(progress)
    out: dict[str, Path] = {}
    for fspec in src.files:
        dest = local_path(Path(data_dir), fspec)
        if _check_existing(dest, fspec) is None:
            _obtain(fspec, dest, mirror, bar, src.manual)
        out[fspec.role] = dest
    return out


def _from_candidates(from_path: Path, src: SourceSpec) -> dict[str, Path]:
    if from_path.is_file():
        if len(src.files) == 1:
            return {src.files[0].role: from_path}
        match = [f for f in src.files if f.name == from_path.name]
        if not match:
            names = ", ".join(f.name for f in src.files)
            raise SbrError(f"--from {from_path}: this source has several files ({names}); "
                           "pass a directory holding them, or one of them by its name")
        return {match[0].role: from_path}
    if from_path.is_dir():
        found: dict[str, Path] = {}
        missing = []
        for f in src.files:
            for cand in (from_path / f.name, from_path / f.path):
                if cand.is_file():
                    found[f.role] = cand
                    break
            else:
                missing.append(f.name)
        if missing:
            raise SbrError(f"--from {from_path}: missing {', '.join(missing)}")
        return found
    raise SbrError(f"--from {from_path}: no such file or directory")


def download(dataset: str, *, source: str | None = None, data_dir: str | Path | None = None,
             mirror: str | None = None, from_path: str | Path | None = None, force: bool = False,
             progress: bool = True) -> list[dict[str, Any]]:
    """Fetch (or copy with `from_path`) a dataset source's files; one record per file.

    Each record: role, path, bytes, sha256, pinned (whether the registry pins the sha256), status
    (`cached`, `downloaded` from the mirror or a URL, `copied` from `from_path`) and origin (the
    location used). Existing verified files are kept unless `force`.
    """
    spec = get_dataset(dataset)
    src = spec.source(source)
    root = resolve_data_dir(data_dir)
    mirror = _mirror_from_env(mirror)
    bar = _TransferProgress(progress)
    given = _from_candidates(Path(from_path).expanduser(), src) if from_path is not None else {}
    records = []
    for fspec in src.files:
        dest = local_path(root, fspec)
        sha = None if force else _check_existing(dest, fspec)
        if sha is not None and fspec.role not in given:
            status, origin = "cached", str(dest)
        elif fspec.role in given:
            sha = _copy_file(given[fspec.role], dest, fspec, bar)
            status, origin = "copied", str(given[fspec.role])
        else:
            sha, origin = _obtain(fspec, dest, mirror, bar, src.manual)
            status = "downloaded"
        records.append({"role": fspec.role, "path": str(dest), "bytes": dest.stat().st_size,
                        "sha256": sha, "pinned": fspec.sha256 is not None, "status": status,
                        "origin": origin})
    return records


def source_status(dataset: str, source: str | None = None, data_dir: str | Path | None = None) -> str:
    """`downloaded` (every file present with its pinned size), `partial` or `missing`; no hashing."""
    src = get_dataset(dataset).source(source)
    root = resolve_data_dir(data_dir)
    present = 0
    for fspec in src.files:
        dest = local_path(root, fspec)
        if dest.is_file() and (fspec.size is None or dest.stat().st_size == fspec.size):
            present += 1
    if present == len(src.files):
        return "downloaded"
    return "partial" if present else "missing"


def _human_size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def dataset_status(spec: DatasetSpec, root: Path) -> dict[str, Any]:
    """One dataset's row for `sbrbench datasets`: sources downloaded, protocols processed, status."""
    src = spec.source()
    sizes = [f.size for f in src.files]
    total = sum(s for s in sizes if s is not None) if all(s is not None for s in sizes) else None
    downloaded = [name for name in spec.sources
                  if source_status(spec.name, name, root) == "downloaded"]
    processed = [p for p in spec.protocols
                 if (processed_dir(root, spec.name, p) / "manifest.json").is_file()]
    if processed:
        status = f"processed ({', '.join(processed)})"
    elif downloaded:
        status = "downloaded" + ("" if spec.default_source in downloaded else f" ({', '.join(downloaded)})")
    elif source_status(spec.name, None, root) == "partial":
        status = "partial"
    else:
        status = "missing"
    return {
        "name": spec.name, "default_protocol": spec.default_protocol, "protocols": list(spec.protocols),
        "default_source": spec.default_source,
        "formats": sorted({s.format for s in spec.sources.values()}),
        "bytes": total, "size": _human_size(total), "manual": src.is_manual,
        "downloaded_sources": downloaded, "processed": processed, "status": status,
        "description": spec.description,
    }


def list_datasets(data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Every registry entry with its status in the data dir (see `dataset_status`)."""
    root = resolve_data_dir(data_dir)
    return [dataset_status(spec, root) for spec in load_registry().values()]
