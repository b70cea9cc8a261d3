"""The dataset registry: its contents match the real files, and validation rejects bad entries."""

from __future__ import annotations

import copy
import hashlib
import re
import tomllib
from pathlib import Path

import pytest

from sbrbench.data.registry import get_dataset, load_registry, parse_registry, registry_path
from sbrbench.errors import DataError, SbrError

REPO = Path(__file__).resolve().parents[1]
RAW_URL = re.compile(r"^https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+$")


def _doc() -> dict:
    return tomllib.loads(registry_path().read_text(encoding="utf-8"))


def test_repo_root_datasets_toml_is_the_package_registry() -> None:
    assert (REPO / "datasets.toml").resolve() == registry_path().resolve()


def test_every_pinned_file_matches_the_real_bytes(shared_datasets: Path) -> None:
    checked = 0
    for spec in load_registry().values():
        for src in spec.sources.values():
            for f in src.files:
                if src.is_manual:
                    continue
                real = shared_datasets / f.path
                assert real.is_file(), f"{spec.name}/{src.name}: {f.path} is not in ../shared/datasets"
                data = real.read_bytes()
                assert len(data) == f.size, f.path
                assert hashlib.sha256(data).hexdigest() == f.sha256, f.path
                checked += 1
    assert checked >= 30


def test_urls_are_pinned_github_raw_urls_of_the_same_file() -> None:
    for spec in load_registry().values():
        for src in spec.sources.values():
            if src.is_manual:
                assert not any(f.urls for f in src.files)
                assert "--from" in src.manual and "\n" not in src.manual
                continue
            for f in src.files:
                assert f.urls, f"{spec.name}: {f.path} has no URL"
                for url in f.urls:
                    assert RAW_URL.match(url), url
                    assert url.endswith("/" + f.name), (url, f.name)


def test_required_entries_and_roles() -> None:
    want = {
        ("diginetica", "published"): ("srgnn", {"train_sessions", "test"}),
        ("diginetica", "raw"): ("diginetica", {"clicks"}),
        ("diginetica-sample", "raw"): ("diginetica", {"clicks"}),
        ("yoochoose1_64", "published"): ("srgnn", {"train_sessions", "test"}),
        ("yoochoose1_64", "mtd"): ("srgnn", {"train_sessions", "test"}),
        ("yoochoose1_4", "raw"): ("yoochoose", {"clicks"}),
        ("yoochoose-sample", "raw"): ("yoochoose", {"clicks"}),
        ("yoochoose-sessionrec-100k", "prepared"): ("csv", {"train", "test"}),
        ("tmall", "published"): ("srgnn", {"train_sessions", "test"}),
        ("nowplaying", "published"): ("srgnn", {"train_sessions", "test"}),
        ("amazon-beauty", "s3rec"): ("sequences", {"sequences", "attributes"}),
        ("amazon-sports", "s3rec"): ("sequences", {"sequences", "attributes"}),
        ("amazon-toys", "s3rec"): ("sequences", {"sequences", "attributes"}),
        ("amazon-scientific", "recbole"):
            ("recbole", {"train", "valid", "test", "text", "item2index", "user2index"}),
    }
    for (name, source), (fmt, roles) in want.items():
        src = get_dataset(name).source(source)
        assert src.format == fmt, (name, source)
        assert {f.role for f in src.files} == roles, (name, source)
    assert get_dataset("yoochoose1_64").source().options == {"n_items": 37484}
    assert get_dataset("yoochoose1_4").source().is_manual
    assert get_dataset("diginetica").source("raw").files[0].sha256 is None
    ref = get_dataset("diginetica").reference["srgnn"]
    assert (ref["train_sessions"], ref["train_examples"], ref["test_examples"], ref["items"]) == (
        186670, 719470, 60858, 43097)


def test_every_entry_documents_terms_and_citation() -> None:
    for spec in load_registry().values():
        assert spec.description and spec.citation and spec.licence, spec.name
    assert "CC BY-NC-ND 4.0" in get_dataset("yoochoose1_64").licence


def test_unknown_dataset_suggests_close_names() -> None:
    with pytest.raises(SbrError, match="Did you mean 'diginetica'"):
        get_dataset("digenetica")
    with pytest.raises(SbrError, match="unknown source of diginetica 'rwa'"):
        get_dataset("diginetica").source("rwa")


def _mutated(edit) -> dict:
    doc = copy.deepcopy(_doc())
    edit(doc)
    return doc


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(extra=1), "unknown key 'extra' in the top level"),
        (lambda d: d["datasets"]["tmall"].update(descripton="x"),
         "unknown key 'descripton' in datasets.tmall"),
        (lambda d: d["datasets"]["tmall"]["sources"]["published"].update(mirror="x"),
         "unknown key 'mirror' in datasets.tmall.sources.published"),
        (lambda d: d["datasets"]["tmall"]["sources"]["published"]["files"][0].update(md5="x"),
         "unknown key 'md5'"),
        (lambda d: d["datasets"]["tmall"].pop("licence"), "datasets.tmall is missing licence"),
        (lambda d: d["datasets"]["tmall"]["sources"]["published"]["files"][0].pop("sha256"),
         "needs a sha256"),
        (lambda d: d["datasets"]["tmall"]["sources"]["published"]["files"][0].pop("role"), "missing role"),
        (lambda d: d["datasets"]["tmall"]["sources"]["published"]["files"][0].update(sha256="abc"),
         "64 lower-case hex"),
        (lambda d: d["datasets"]["tmall"]["sources"]["published"]["files"][0].update(path="../x"),
         "relative"),
        (lambda d: d["datasets"]["tmall"]["sources"]["published"]["files"][1].update(role="train_sessions"),
         "role 'train_sessions' appears twice"),
        (lambda d: d["datasets"]["tmall"]["sources"]["published"].update(format="parquet"),
         "format must be one of"),
        (lambda d: d["datasets"]["tmall"].update(default_source="raw"), "default_source names no source"),
        (lambda d: d["datasets"]["tmall"].update(default_protocol="srgnn"), "not in its protocols"),
        (lambda d: d["datasets"]["tmall"]["reference"].update(loo={"items": 1}),
         "reference.loo names a protocol"),
        (lambda d: d["datasets"]["tmall"].update(protocols="gcegnn"), "protocols must be list"),
    ],
)
def test_validation_rejects(edit, message: str) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        parse_registry(_mutated(edit))


def test_load_registry_reports_invalid_toml(tmp_path: Path) -> None:
    bad = tmp_path / "datasets.toml"
    bad.write_text("[datasets.x\n", encoding="utf-8")
    with pytest.raises(DataError, match="invalid TOML"):
        load_registry(str(bad))


# ---- the generic name registry (models, formats, protocols, tables) ------------------------------------
def test_registry_aliases_resolve_with_one_deprecation_warning(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from sbrbench.registry import Registry

    reg: Registry[int] = Registry("widget")
    reg.register("new-name")(1)
    reg.alias("Old-Name", "new-name")
    assert reg.names() == ["new-name"] and len(reg) == 1 and list(reg) == ["new-name"]
    assert "old-name" in reg and "new-name" in reg and "other" not in reg
    assert reg.aliases() == {"old-name": "new-name"}
    with caplog.at_level(logging.WARNING, logger="sbrbench.registry"):
        assert reg.get("old-name") == 1 and reg.canonical("OLD-NAME") == "new-name"
        assert reg.get("new-name") == 1
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["warning: widget name 'old-name' is deprecated, use 'new-name'"]  # once per name
    with pytest.raises(ValueError, match="twice"):
        reg.register("old-name")(2)
    with pytest.raises(ValueError, match="twice"):
        reg.alias("new-name", "new-name")
    with pytest.raises(ValueError, match="names no registered"):
        reg.alias("x", "missing")
    with pytest.raises(SbrError, match="Did you mean 'new-name'"):
        reg.get("new-nam")
    assert reg.unregister("new-name") == 1 and "old-name" not in reg and len(reg) == 0


def test_renamed_model_still_loads_and_says_so_on_stderr() -> None:
    import subprocess
    import sys

    from sbrbench.models import MODELS

    assert MODELS.get("tagnnpp-released") is MODELS.get("tagnnpp-code")
    assert "tagnnpp-released" not in MODELS.names()
    code = ("from sbrbench.models import create_model\n"
            "m = create_model('tagnnpp-released', 10, dim=8)\n"
            "create_model('tagnnpp-released', 10, dim=8)\n"
            "print(m.name)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "tagnnpp-code"
    assert r.stderr.strip().splitlines() == [
        "warning: model name 'tagnnpp-released' is deprecated, use 'tagnnpp-code'"]
