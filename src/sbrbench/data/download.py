"""Fetch a dataset's raw files into the data dir: pooch does the transfer, sbrbench the rest.

Files land at `<data_dir>/raw/<FileSpec.path>` (the mirror layout, so a data dir's `raw/` can
itself serve as a mirror).

What pooch does: the HTTP transport (`pooch.HTTPDownloader`, i.e. requests), retries with back-off
(`retry_if_failed`), the sha256 check of what it downloaded, and writing through a temporary file
that only becomes the file once it is verified.

What sbrbench adds: the registry (`datasets.toml`: paths, pinned sha256 and sizes, URLs), mirrors
(`--mirror` / `$SBRBENCH_MIRROR`: a directory or an http(s)/file URL laid out like
`../shared/datasets`, tried before the file's URLs by `MirrorDownloader`), `--from PATH` for
login-walled files, the manual sources' instructions, placing a file atomically over an existing
(stale or corrupt) copy only once the new one is verified, a verification cache, and one-line
errors. A location that cannot serve the file (HTTP 4xx, missing, wrong size or sha256) is dropped
at once; a transient failure (cut connection, timeout, 5xx) is retried by pooch.

Verification is cached in a hidden `.<name>.sha256` sidecar (sha256, size, mtime): a second call
on an unchanged file does not hash it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sbrbench import __version__
from sbrbench.data.registry import DatasetSpec, FileSpec, SourceSpec, get_dataset, load_registry
from sbrbench.errors import ChecksumError, DataError, SbrError
from sbrbench.io import atomic_write_text, disk_full_errors, file_lock, process_alive
from sbrbench.paths import data_dir as resolve_data_dir
from sbrbench.paths import processed_dir, raw_dir

ENV_MIRROR = "SBRBENCH_MIRROR"
TIMEOUT_S = 30.0
RETRIES = 3  # pooch's retry_if_failed: up to 4 passes over the locations, waiting 1, 2, 3 s between them
CHUNK = 1 << 20

__all__ = [
    "ENV_MIRROR", "DownloadError", "MirrorDownloader", "dataset_status", "download", "ensure_source",
    "list_datasets", "local_path", "source_status", "verified_sha256",
]


class DownloadError(DataError):
    """A file could not be fetched from any of its locations."""


class _Unservable(Exception):
    """This location cannot serve the file (4xx, missing, wrong bytes): drop it, try the next."""

    def __init__(self, message: str, checksum: bool = False) -> None:
        super().__init__(message)
        self.checksum = checksum


class _Exhausted(Exception):
    """No location is left to try."""


# ---- paths and the verification cache ------------------------------------------------------------
def local_path(root: Path, fspec: FileSpec) -> Path:
    """Where `fspec` lives in the data dir `root`."""
    return raw_dir(root) / fspec.path


def _staging_dir(dest: Path) -> Path:
    """A fresh staging directory beside `dest`, this process's own (concurrent downloads never share one)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.incoming-{os.getpid()}-", dir=dest.parent))


@contextlib.contextmanager
def _exclusive(dest: Path) -> Iterator[None]:
    """Hold `dest`'s lock (`.<name>.lock`): one process fetches a file at a time, the next finds it
    verified; staging left by killed downloads is removed."""
    with disk_full_errors(dest), file_lock(dest.with_name(f".{dest.name}.lock")):
        prefix = f".{dest.name}.incoming"
        for left in dest.parent.glob(prefix + "*"):
            pid = left.name[len(prefix):].lstrip("-").split("-", 1)[0]
            if not (pid.isdigit() and process_alive(int(pid))):  # older releases staged without a pid
                shutil.rmtree(left, ignore_errors=True)
        yield


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


def _verify(path: Path, fspec: FileSpec, where: str) -> str:
    """sha256 of `path`; `_Unservable` (checksum) when its size or sha256 differs from the pins."""
    size = path.stat().st_size
    if fspec.size is not None and size != fspec.size:
        raise _Unservable(f"{fspec.path} from {where}: got {size} bytes, but {fspec.path} has {fspec.size}; "
                          "nothing was kept", checksum=True)
    sha = _hash_file(path)
    if fspec.sha256 is not None and sha != fspec.sha256:
        raise _Unservable(f"{fspec.path} from {where}: sha256 {sha} does not match the pinned "
                          f"{fspec.sha256}; nothing was kept", checksum=True)
    return sha


def _place(staged: Path, dest: Path, sha: str) -> str:
    """Move a verified file over `dest` atomically and record its sha256."""
    with open(staged, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(staged, dest)
    _write_sidecar(dest, sha)
    return sha


# ---- progress ----------------------------------------------------------------------------------
class _Bar:
    """A rich byte-count bar with the interface pooch's downloaders drive (total, update, reset, close)."""

    def __init__(self, label: str) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        self._task = self._progress.add_task(label, total=None)
        self._progress.start()

    @property
    def total(self) -> float | None:
        return self._progress.tasks[0].total

    @total.setter
    def total(self, value: int | None) -> None:
        self._progress.update(self._task, total=value or None)

    def update(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def reset(self) -> None:
        self._progress.reset(self._task, total=self.total)

    def close(self) -> None:
        self._progress.stop()


# ---- transfers ---------------------------------------------------------------------------------
def _mirror_location(mirror: str, fspec: FileSpec) -> str:
    if mirror.startswith(("http://", "https://", "file://")):
        return mirror.rstrip("/") + "/" + urllib.parse.quote(fspec.path)
    return str(Path(mirror).expanduser() / fspec.path)


def _unresolvable(exc: BaseException) -> bool:
    """True when a requests error is a failed host-name lookup (offline, or no such host)."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if type(e).__name__ == "NameResolutionError" or "Name or service not known" in str(e):
            return True
        todo += [getattr(e, "reason", None), e.__cause__, e.__context__, *getattr(e, "args", ())[:1]]
    return False


class MirrorDownloader:
    """A pooch downloader for one registry file that honours the mirror (`$SBRBENCH_MIRROR`).

    Its locations are the mirror's copy of the file (`mirror`, else `$SBRBENCH_MIRROR`), then the file's
    pinned URLs. Each call — one attempt of pooch's — tries every location still in play, in order,
    and checks what it got against the pinned size and sha256. A location that cannot serve the file
    (HTTP 4xx other than 408/429, a missing file, wrong bytes, an unknown host) is dropped at once; a
    transient failure (cut connection, timeout, 408/429/5xx) keeps it and is re-raised as requests'
    error, so pooch waits and calls again. `errors` keeps the last failure of each location,
    `origin` the location that served the file.
    """

    def __init__(self, fspec: FileSpec, mirror: str | None = None, *, progress: bool = False) -> None:
        self.fspec = fspec
        mirror = _mirror_from_env(mirror)
        self.locations = ([_mirror_location(mirror, fspec)] if mirror else []) + list(fspec.urls)
        self.progress = progress
        self.errors: dict[str, str] = {}
        self.checksum_errors: set[str] = set()
        self.dropped: set[str] = set()
        self.attempts: dict[str, int] = {}
        self.origin: str | None = None
        self.sha256: str | None = None

    def __call__(self, url: str, output_file: str, pooch: Any) -> None:
        import requests

        transient: requests.RequestException | None = None
        for loc in self.locations:
            if loc in self.dropped:
                continue
            self.attempts[loc] = self.attempts.get(loc, 0) + 1
            try:
                self._get(loc, Path(output_file))
                sha = _verify(Path(output_file), self.fspec, loc)
            except _Unservable as exc:
                self.dropped.add(loc)
                self.errors[loc] = str(exc)
                if exc.checksum:
                    self.checksum_errors.add(loc)
                continue
            except requests.RequestException as exc:
                self.errors[loc] = f"{loc}: {_describe(exc)}"
                transient = exc
                continue
            self.origin, self.sha256 = loc, sha
            return
        if transient is not None:
            raise transient
        raise _Exhausted

    def _get(self, loc: str, out: Path) -> None:
        if "://" not in loc or loc.startswith("file://"):
            src = Path(urllib.request.url2pathname(urllib.parse.urlparse(loc).path)) if "://" in loc else Path(loc)
            if not src.is_file():
                raise _Unservable(f"{src}: no such file")
            shutil.copyfile(src, out)
            return
        import pooch
        import requests

        bar = _Bar(self.fspec.name) if self.progress and sys.stderr.isatty() else False
        http = pooch.HTTPDownloader(progressbar=bar, chunk_size=CHUNK, timeout=TIMEOUT_S,
                                    headers={"User-Agent": f"sbrbench/{__version__}"})
        try:
            http(loc, str(out), None)
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            if code in (408, 429) or code >= 500:
                raise
            reason = exc.response.reason if exc.response is not None else ""
            raise _Unservable(f"{loc}: HTTP {code} {reason}".rstrip()) from None
        except requests.ConnectionError as exc:
            if _unresolvable(exc):
                raise _Unservable(f"{loc}: cannot resolve the host (offline?)") from None
            raise
        finally:
            if bar:
                bar.close()


def _describe(exc: BaseException) -> str:
    """requests' error in a few words (no nested reprs)."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection closed mid-transfer"
    if isinstance(exc, requests.Timeout):
        return f"no answer within {TIMEOUT_S:g} s"
    return type(exc).__name__


def _obtain(fspec: FileSpec, dest: Path, mirror: str | None, progress: bool,
            manual: str | None) -> tuple[str, str]:
    """Fetch `fspec` from the mirror, then each URL, with pooch: (sha256, where from).

    pooch writes into a hidden staging directory beside `dest`; the verified file is then moved over
    `dest`, so a stale or corrupt copy already there stays until a verified one replaces it.
    """
    import pooch
    import requests

    dl = MirrorDownloader(fspec, mirror, progress=progress)
    failure: BaseException | None = None
    if dl.locations:
        pooch.get_logger().setLevel("WARNING")
        stage = _staging_dir(dest)
        name = dest.name
        known = f"sha256:{fspec.sha256}" if fspec.sha256 else None
        fetcher = pooch.create(path=stage, base_url="", registry={name: known},
                               urls={name: dl.locations[0]}, retry_if_failed=RETRIES)
        try:
            staged = Path(fetcher.fetch(name, downloader=dl))  # pooch has checked the pinned sha256 too
            sha = dl.sha256 or _verify(staged, fspec, dl.origin or dl.locations[0])
            dest.parent.mkdir(parents=True, exist_ok=True)
            return _place(staged, dest, sha), dl.origin or dl.locations[0]
        except (_Exhausted, _Unservable, requests.RequestException, ValueError) as exc:
            failure = exc
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    errors = [_with_attempts(loc, msg, dl) for loc, msg in dl.errors.items()]
    if manual is not None:
        state = "does not match its pinned size/sha256" if dest.exists() else "is not downloaded"
        tried = f" (mirror: {'; '.join(errors)})" if errors else ""
        raise (ChecksumError if dest.exists() else SbrError)(f"{fspec.path} {state}{tried}. {manual}")
    if not dl.locations:
        raise DownloadError(f"{fspec.path}: no URL or mirror to download it from")
    if not errors:  # pooch itself refused (e.g. its own hash check): say what it said, on one line
        raise DownloadError(f"could not download {fspec.path}: {' '.join(str(failure).split())}")
    if len(errors) == 1 and dl.checksum_errors:
        raise ChecksumError(errors[0])
    cls = ChecksumError if dl.checksum_errors else DownloadError
    raise cls(f"could not download {fspec.path}: {' | '.join(errors)}")


def _with_attempts(loc: str, msg: str, dl: MirrorDownloader) -> str:
    n = dl.attempts.get(loc, 0)
    return msg if loc in dl.dropped or n <= 1 else f"{msg} (gave up after {n} attempts)"


def _copy_file(src: Path, dest: Path, fspec: FileSpec) -> str:
    """Copy a local file (`--from`) into place through a verified staging copy."""
    if not src.is_file():
        raise SbrError(f"{src}: no such file")
    size = src.stat().st_size
    if fspec.size is not None and size != fspec.size:
        raise ChecksumError(f"{src}: {size} bytes, but {fspec.path} has {fspec.size}; nothing was copied")
    stage = _staging_dir(dest)
    try:
        stage.mkdir(parents=True, exist_ok=True)
        staged = stage / dest.name
        shutil.copyfile(src, staged)
        try:
            sha = _verify(staged, fspec, str(src))
        except _Unservable as exc:
            raise ChecksumError(str(exc)) from None
        return _place(staged, dest, sha)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _mirror_from_env(mirror: str | None) -> str | None:
    return mirror or os.environ.get(ENV_MIRROR) or None


# ---- the library API ---------------------------------------------------------------------------
def ensure_source(dataset: str, source: str | None, data_dir: Path, mirror: str | None = None, *,
                  progress: bool = False) -> dict[str, Path]:
    """Make sure every file of a dataset's source is in `data_dir`, verified; role -> local path.

    Missing (or corrupt) files are fetched from the mirror (`mirror` or `$SBRBENCH_MIRROR`), then
    from each URL. A manual source whose files are missing raises `SbrError` with its instructions.
    """
    src = get_dataset(dataset).source(source)
    mirror = _mirror_from_env(mirror)
    out: dict[str, Path] = {}
    for fspec in src.files:
        dest = local_path(Path(data_dir), fspec)
        if _check_existing(dest, fspec) is None:
            with _exclusive(dest):
                if _check_existing(dest, fspec) is None:  # another process may have fetched it meanwhile
                    _obtain(fspec, dest, mirror, progress, src.manual)
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
    src = get_dataset(dataset).source(source)
    root = resolve_data_dir(data_dir)
    mirror = _mirror_from_env(mirror)
    given = _from_candidates(Path(from_path).expanduser(), src) if from_path is not None else {}
    records = []
    for fspec in src.files:
        dest = local_path(root, fspec)
        with _exclusive(dest):
            sha = None if force else _check_existing(dest, fspec)
            if sha is not None and fspec.role not in given:
                status, origin = "cached", str(dest)
            elif fspec.role in given:
                sha = _copy_file(given[fspec.role], dest, fspec)
                status, origin = "copied", str(given[fspec.role])
            else:
                sha, origin = _obtain(fspec, dest, mirror, progress, src.manual)
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
    stats = {p: s for p in processed if (s := _processed_stats(processed_dir(root, spec.name, p) / "manifest.json"))}
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
        "description": spec.description, "stats": stats,
    }


def _processed_stats(manifest: Path) -> dict[str, Any] | None:
    """Statistics of a processed dataset from its manifest: items, the protocol's whole training set
    (validation included), test examples, and each split's counts; None when unreadable."""
    try:
        m = json.loads(manifest.read_text(encoding="utf-8"))
        st = m.get("stats") or {}
        splits = {k: v for k, v in st.items() if k in ("train", "valid", "test") and isinstance(v, dict)}
    except (OSError, ValueError, AttributeError):
        return None
    if not splits:
        return None

    def ex(split: str) -> int | None:
        v = (splits.get(split) or {}).get("examples")
        return v if isinstance(v, int) else None

    train = ex("train")
    if train is not None and ex("valid") is not None:
        train += ex("valid")  # type: ignore[operator]
    items = (st.get("all") or {}).get("items") if isinstance(st.get("all"), dict) else None
    return {"items": items if isinstance(items, int) else m.get("n_items"), "train_examples": train,
            "test_examples": ex("test"), "splits": splits}


def list_datasets(data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Every registry entry with its status in the data dir (see `dataset_status`)."""
    root = resolve_data_dir(data_dir)
    return [dataset_status(spec, root) for spec in load_registry().values()]
