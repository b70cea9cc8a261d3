"""The dataset registry: `datasets.toml`, validated on load (unknown keys are errors).

Schema (one table per dataset under `[datasets.<name>]`)::

    [datasets.diginetica]
    description = "..."            # required
    citation = "..."               # required
    licence = "..."                # required: licence / terms note
    homepage = "..."               # optional
    default_protocol = "srgnn"     # required
    protocols = ["srgnn", "dgtn"]  # required: protocols this dataset supports
    default_source = "published"   # required: key of `sources`

    [datasets.diginetica.sources.published]
    format = "srgnn"               # a reader registered in `sbrbench.data.formats.FORMATS`
    manual = "..."                 # optional: how to obtain login-walled files (enables --from)
    options = { ... }              # optional: reader options (column mapping, item space, ...)
    [[datasets.diginetica.sources.published.files]]
    path = "diginetica/GCE-GNN/all_train_seq.txt"  # relative path in the mirror layout
    role = "train_sessions"        # what the reader uses the file for
    sha256 = "..."                 # optional only for manual sources whose bytes nobody pinned
    size = 4193626                 # optional, bytes
    urls = ["https://..."]         # direct download URLs (empty for manual sources)

    [datasets.diginetica.reference.srgnn]   # reference statistics per protocol (optional)
    train_sessions = 186670                 # count names as in ProcessedDataset.counts()
    source = "counted from the GCE-GNN pickles"

Validation also checks: paths are relative `a/b/c` paths, sha256 values are 64 hex digits, URLs
are http(s):// or file://, roles and paths are unique within a source, and each reference table
names a listed protocol and holds only numbers and strings.

The mirror layout is the one of `../shared/datasets`: a mirror directory or URL holds each file
at its `path`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from sbrbench.data.formats import FORMATS
from sbrbench.errors import DataError, SbrError
from sbrbench.registry import unknown_name_message

_DATASET_KEYS = {
    "description": str, "citation": str, "licence": str, "homepage": str,
    "default_protocol": str, "protocols": list, "default_source": str,
    "sources": dict, "reference": dict,
}
_DATASET_REQUIRED = {"description", "citation", "licence", "default_protocol", "protocols",
                     "default_source", "sources"}
_SOURCE_KEYS = {"format": str, "manual": str, "options": dict, "files": list}
_FILE_KEYS = {"path": str, "role": str, "sha256": str, "size": int, "urls": list}


@dataclass(frozen=True)
class FileSpec:
    """One file of a source, at `path` in the mirror layout."""

    path: str
    role: str
    sha256: str | None = None
    size: int | None = None
    urls: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The file's base name."""
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class SourceSpec:
    """A way to obtain a dataset: a format and its files (downloadable or manual)."""

    name: str
    format: str
    files: tuple[FileSpec, ...]
    manual: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_manual(self) -> bool:
        """True when the files cannot be fetched by URL (login-walled: use `--from`)."""
        return self.manual is not None


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry."""

    name: str
    description: str
    citation: str
    licence: str
    default_protocol: str
    protocols: tuple[str, ...]
    default_source: str
    sources: dict[str, SourceSpec]
    reference: dict[str, dict[str, Any]] = field(default_factory=dict)
    homepage: str | None = None

    def source(self, name: str | None = None) -> SourceSpec:
        """The source `name` (default source when None)."""
        key = name or self.default_source
        if key not in self.sources:
            raise SbrError(unknown_name_message(f"source of {self.name}", key, list(self.sources)))
        return self.sources[key]


def _check_keys(table: dict[str, Any], allowed: dict[str, type], where: str,
                required: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    for key, value in table.items():
        if key not in allowed:
            raise DataError(f"datasets.toml: unknown key {key!r} in {where}")
        if not isinstance(value, allowed[key]):
            raise DataError(
                f"datasets.toml: {where}.{key} must be {allowed[key].__name__}, "
                f"got {type(value).__name__}"
            )
    missing = required - table.keys()
    if missing:
        raise DataError(f"datasets.toml: {where} is missing {', '.join(sorted(missing))}")


_HEX = frozenset("0123456789abcdef")


def _check_file(f: dict[str, Any], where: str) -> None:
    path = f["path"]
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise DataError(f"datasets.toml: {where}.path must be a relative a/b/c path, got {path!r}")
    sha = f.get("sha256")
    if sha is not None and (len(sha) != 64 or not set(sha) <= _HEX):
        raise DataError(f"datasets.toml: {where}.sha256 must be 64 lower-case hex digits")
    if f.get("size") is not None and f["size"] < 0:
        raise DataError(f"datasets.toml: {where}.size must be >= 0")
    for url in f.get("urls", []):
        if not isinstance(url, str) or not url.startswith(("https://", "http://", "file://")):
            raise DataError(f"datasets.toml: {where}.urls must hold http(s):// or file:// URLs, got {url!r}")


def _check_unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise DataError(f"datasets.toml: {what} {v!r} appears twice")
        seen.add(v)


def _check_reference(ref: dict[str, Any], protocols: list[str], where: str) -> None:
    for proto, stats in ref.items():
        rwhere = f"{where}.reference.{proto}"
        if proto not in protocols:
            raise DataError(f"datasets.toml: {rwhere} names a protocol the dataset does not list")
        if not isinstance(stats, dict):
            raise DataError(f"datasets.toml: {rwhere} must be a table")
        for key, value in stats.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise DataError(f"datasets.toml: {rwhere}.{key} must be a number or a string")


def parse_registry(doc: dict[str, Any]) -> dict[str, DatasetSpec]:
    """Validate a parsed `datasets.toml` document and build the specs."""
    _check_keys(doc, {"datasets": dict}, "the top level", {"datasets"})
    out: dict[str, DatasetSpec] = {}
    for name, table in doc["datasets"].items():
        where = f"datasets.{name}"
        if not isinstance(table, dict):
            raise DataError(f"datasets.toml: {where} must be a table")
        _check_keys(table, _DATASET_KEYS, where, _DATASET_REQUIRED)
        sources: dict[str, SourceSpec] = {}
        for sname, stable in table["sources"].items():
            swhere = f"{where}.sources.{sname}"
            if not isinstance(stable, dict):
                raise DataError(f"datasets.toml: {swhere} must be a table")
            _check_keys(stable, _SOURCE_KEYS, swhere, {"format", "files"})
            if stable["format"] not in FORMATS.names():
                raise DataError(f"datasets.toml: {swhere}.format must be one of {', '.join(FORMATS.names())}")
            files = []
            for i, f in enumerate(stable["files"]):
                fwhere = f"{swhere}.files[{i}]"
                if not isinstance(f, dict):
                    raise DataError(f"datasets.toml: {fwhere} must be a table")
                _check_keys(f, _FILE_KEYS, fwhere, {"path", "role"})
                if "sha256" not in f and "manual" not in stable:
                    raise DataError(f"datasets.toml: {fwhere} needs a sha256 (only manual sources may omit it)")
                _check_file(f, fwhere)
                files.append(FileSpec(path=f["path"], role=f["role"], sha256=f.get("sha256"),
                                      size=f.get("size"), urls=tuple(f.get("urls", ()))))
            _check_unique([f.role for f in files], f"{swhere}: file role")
            _check_unique([f.path for f in files], f"{swhere}: file path")
            sources[sname] = SourceSpec(name=sname, format=stable["format"], files=tuple(files),
                                        manual=stable.get("manual"), options=stable.get("options", {}))
        if table["default_source"] not in sources:
            raise DataError(f"datasets.toml: {where}.default_source names no source")
        if not table["protocols"] or not all(isinstance(p, str) for p in table["protocols"]):
            raise DataError(f"datasets.toml: {where}.protocols must be a non-empty list of names")
        if table["default_protocol"] not in table["protocols"]:
            raise DataError(f"datasets.toml: {where}.default_protocol is not in its protocols")
        _check_reference(table.get("reference", {}), table["protocols"], where)
        out[name] = DatasetSpec(
            name=name, description=table["description"], citation=table["citation"],
            licence=table["licence"], default_protocol=table["default_protocol"],
            protocols=tuple(table["protocols"]), default_source=table["default_source"],
            sources=sources, reference=table.get("reference", {}), homepage=table.get("homepage"),
        )
    return out


def registry_path() -> Path:
    """`datasets.toml`: shipped inside the package, kept in sync with the repo-root copy."""
    return Path(__file__).resolve().parent.parent / "datasets.toml"


@lru_cache(maxsize=4)
def load_registry(path: str | None = None) -> dict[str, DatasetSpec]:
    """Load and validate the registry (cached)."""
    p = Path(path) if path else registry_path()
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"dataset registry not found: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{p}: invalid TOML: {exc}") from None
    return parse_registry(doc)


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry `name`, or a "did you mean …" error."""
    reg = load_registry()
    if name not in reg:
        raise SbrError(unknown_name_message("dataset", name, list(reg)))
    return reg[name]
