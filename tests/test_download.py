"""`sbrbench download` / `datasets` (pooch underneath) against a real HTTP server on 127.0.0.1 serving the benchmark data."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import types
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pooch
import pytest

import sbrbench.data.download as dl
from sbrbench.cli import main
from sbrbench.data.registry import DatasetSpec, FileSpec, get_dataset
from sbrbench.errors import ChecksumError, SbrError

SAMPLE = "diginetica/SR-GNN/sample_train-item-views.csv"


class _Handler(BaseHTTPRequestHandler):
    """Serves the shared datasets; per-path misbehaviour is set in `server.behaviour`."""

    server: _Server

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        rel = urllib.parse.unquote(urllib.parse.urlparse(self.path).path.lstrip("/"))
        rng = self.headers.get("Range")
        self.server.requests.append((rel, rng))
        mode = self.server.behaviour.get(rel, set())
        path = self.server.root / rel
        if "404" in mode or not path.is_file():
            self.send_error(404, "Not Found")
            return
        data = path.read_bytes()
        if "wrong" in mode:
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        if "short" in mode:
            data = data[:-10]
        start = 0
        if rng and "norange" not in mode:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = "cut-always" in mode or ("cut-once" in mode and rel not in self.server.cut_done)
        if cut:
            self.server.cut_done.add(rel)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.behaviour: dict[str, set[str]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_done: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def hits(self, rel: str) -> list[str | None]:
        """The Range header of each request for `rel`."""
        return [r for p, r in self.requests if p == rel]


@pytest.fixture()
def server(shared_datasets: Path) -> Iterator[_Server]:
    srv = _Server(shared_datasets)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _fast_and_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pooch.core, "time", types.SimpleNamespace(sleep=lambda s: None))  # pooch's back-off
    monkeypatch.setattr(dl, "TIMEOUT_S", 5.0)
    monkeypatch.delenv(dl.ENV_MIRROR, raising=False)
    monkeypatch.delenv("SBRBENCH_DATA_DIR", raising=False)


@pytest.fixture(autouse=True)
def _no_real_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hermetic: the registry's real URLs are never contacted (a test that needs URLs sets its own)."""
    real_get = dl.get_dataset

    def stripped(name: str) -> DatasetSpec:
        spec = real_get(name)
        return dataclasses.replace(spec, sources={
            k: dataclasses.replace(s, files=tuple(dataclasses.replace(f, urls=()) for f in s.files))
            for k, s in spec.sources.items()})

    monkeypatch.setattr(dl, "get_dataset", stripped)


def _patch_urls(monkeypatch: pytest.MonkeyPatch, name: str, urls: Callable[[FileSpec], list[str]]) -> None:
    """Point every file of dataset `name` at `urls(file)` for this test."""
    orig = get_dataset(name)
    sources = {k: dataclasses.replace(s, files=tuple(dataclasses.replace(f, urls=tuple(urls(f)))
                                                      for f in s.files))
               for k, s in orig.sources.items()}
    patched: DatasetSpec = dataclasses.replace(orig, sources=sources)
    real_get = dl.get_dataset
    monkeypatch.setattr(dl, "get_dataset", lambda n: patched if n == name else real_get(n))


def _leftovers(root: Path) -> list[str]:
    """Every file under `root` (hidden ones included)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- success and caching -------------------------------------------------------------------------
def test_http_mirror_downloads_verifies_and_caches(server: _Server, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    paths = dl.ensure_source("diginetica", None, tmp_path, mirror=server.url)
    spec = get_dataset("diginetica").source()
    assert set(paths) == {"train_sessions", "test"}
    for f in spec.files:
        p = paths[f.role]
        assert p == tmp_path / "raw" / f.path
        assert _sha(p) == f.sha256 and p.stat().st_size == f.size
    assert not [p for p in _leftovers(tmp_path) if p.endswith(".part")]
    n = len(server.requests)

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(dl, "_hash_file", no_hashing)
    assert dl.ensure_source("diginetica", None, tmp_path, mirror=server.url) == paths
    assert len(server.requests) == n  # second call: no request, no hashing (sidecar cache)


def test_registry_urls_download_then_cached(server: _Server, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _patch_urls(monkeypatch, "amazon-beauty", lambda f: [server.url + f.path])
    first = dl.download("amazon-beauty", data_dir=tmp_path, progress=False)
    assert [r["status"] for r in first] == ["downloaded", "downloaded"]
    for r, f in zip(first, get_dataset("amazon-beauty").source().files, strict=True):
        assert r["sha256"] == f.sha256 == _sha(Path(r["path"])) and r["bytes"] == f.size
    second = dl.download("amazon-beauty", data_dir=tmp_path, progress=False)
    assert [r["status"] for r in second] == ["cached", "cached"]
    forced = dl.download("amazon-beauty", data_dir=tmp_path, progress=False, force=True)
    assert [r["status"] for r in forced] == ["downloaded", "downloaded"]


def test_corrupt_existing_file_is_replaced(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "raw" / SAMPLE
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"garbage")
    [rec] = dl.download("diginetica-sample", data_dir=tmp_path, mirror=server.url, progress=False)
    assert rec["status"] == "downloaded"
    assert _sha(dest) == get_dataset("diginetica-sample").source().files[0].sha256


# ---- failures: nothing is left behind -------------------------------------------------------------
@pytest.mark.parametrize(("mode", "message"), [
    ("wrong", r"sha256 [0-9a-f]{64} does not match the pinned 98da96e0"),
    ("short", r"got 395344 bytes, but .* has 395354"),
])
def test_checksum_mismatch_is_clear_and_leaves_nothing(server: _Server, tmp_path: Path, mode: str,
                                                       message: str) -> None:
    server.behaviour[SAMPLE] = {mode}
    with pytest.raises(ChecksumError, match=message) as exc:
        dl.ensure_source("diginetica-sample", None, tmp_path, mirror=server.url)
    assert "\n" not in str(exc.value)
    assert len(server.hits(SAMPLE)) == 1  # wrong bytes are not fetched again from the same place
    assert _leftovers(tmp_path) == []


def test_404_falls_back_to_the_next_url(server: _Server, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _patch_urls(monkeypatch, "diginetica-sample",
                lambda f: [server.url + "gone/" + f.name, server.url + f.path])
    paths = dl.ensure_source("diginetica-sample", None, tmp_path)
    assert _sha(paths["clicks"]) == get_dataset("diginetica-sample").source().files[0].sha256
    assert server.hits("gone/sample_train-item-views.csv") == [None]  # a 404 is not retried


def test_404_everywhere_is_a_clear_error(server: _Server, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _patch_urls(monkeypatch, "diginetica-sample", lambda f: [server.url + "gone/" + f.name])
    with pytest.raises(dl.DownloadError, match=r"could not download .*HTTP 404 Not Found") as exc:
        dl.download("diginetica-sample", data_dir=tmp_path, mirror=server.url + "nothing/", progress=False)
    assert "\n" not in str(exc.value)
    assert _leftovers(tmp_path) == []


def test_cut_mid_transfer_is_retried_by_pooch(server: _Server, tmp_path: Path) -> None:
    server.behaviour[SAMPLE] = {"cut-once"}
    paths = dl.ensure_source("diginetica-sample", None, tmp_path, mirror=server.url)
    assert _sha(paths["clicks"]) == get_dataset("diginetica-sample").source().files[0].sha256
    assert server.hits(SAMPLE) == [None, None]  # pooch starts the transfer again from scratch
    assert _leftovers(tmp_path) == sorted(["raw/diginetica/SR-GNN/.sample_train-item-views.csv.sha256",
                                           "raw/" + SAMPLE])


def test_connection_always_cut_gives_up_and_cleans_up(server: _Server, tmp_path: Path) -> None:
    server.behaviour[SAMPLE] = {"cut-always"}
    with pytest.raises(dl.DownloadError, match=r"connection closed mid-transfer \(gave up after 4 attempts\)") as exc:
        dl.ensure_source("diginetica-sample", None, tmp_path, mirror=server.url)
    assert "\n" not in str(exc.value)
    assert len(server.hits(SAMPLE)) == dl.RETRIES + 1
    assert _leftovers(tmp_path) == []


def test_corrupt_copy_stays_until_a_verified_one_replaces_it(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "raw" / SAMPLE
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"stale")
    stage = dest.with_name(f".{dest.name}.incoming")  # left by a killed process
    stage.mkdir()
    (stage / "tmpabc").write_bytes(b"half a file")
    server.behaviour[SAMPLE] = {"cut-always"}
    with pytest.raises(dl.DownloadError):
        dl.ensure_source("diginetica-sample", None, tmp_path, mirror=server.url)
    assert dest.read_bytes() == b"stale" and not stage.exists()
    server.behaviour[SAMPLE] = set()
    dl.ensure_source("diginetica-sample", None, tmp_path, mirror=server.url)
    assert _sha(dest) == get_dataset("diginetica-sample").source().files[0].sha256


def test_pooch_retrieve_with_the_mirror_downloader(server: _Server, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The downloader is an ordinary pooch downloader: `pooch.retrieve` with it honours $SBRBENCH_MIRROR."""
    fspec = get_dataset("diginetica-sample").source().files[0]
    monkeypatch.setenv(dl.ENV_MIRROR, server.url)
    got = pooch.retrieve(fspec.urls[0], known_hash=f"sha256:{fspec.sha256}", fname=fspec.name, path=tmp_path,
                         downloader=dl.MirrorDownloader(fspec))
    assert _sha(Path(got)) == fspec.sha256 and server.hits(SAMPLE) == [None]


# ---- mirrors and local copies --------------------------------------------------------------------
def test_directory_mirror_and_file_urls(shared_datasets: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dl.ENV_MIRROR, str(shared_datasets))
    paths = dl.ensure_source("yoochoose1_64", "mtd", tmp_path / "a")
    assert {r: _sha(p) for r, p in paths.items()} == {
        f.role: f.sha256 for f in get_dataset("yoochoose1_64").source("mtd").files}
    monkeypatch.delenv(dl.ENV_MIRROR)
    _patch_urls(monkeypatch, "yoochoose-sample", lambda f: [(shared_datasets / f.path).as_uri()])
    [rec] = dl.download("yoochoose-sample", data_dir=tmp_path / "b", progress=False)
    assert rec["status"] == "downloaded" and rec["origin"].startswith("file://")
    assert rec["sha256"] == _sha(shared_datasets / "yoochoose/SR-GTM/sample_yoochoose.dat")


def test_directory_mirror_with_a_corrupt_copy(shared_datasets: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    bad = mirror / SAMPLE
    bad.parent.mkdir(parents=True)
    data = bytearray((shared_datasets / SAMPLE).read_bytes())
    data[5] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="does not match the pinned"):
        dl.ensure_source("diginetica-sample", None, tmp_path / "data", mirror=str(mirror))
    assert not (tmp_path / "data").exists() or _leftovers(tmp_path / "data") == []


# ---- manual sources and --from ---------------------------------------------------------------
def test_manual_source_without_from_is_a_one_line_error(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SbrError) as exc:
        dl.ensure_source("diginetica", "raw", tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg and "drive.google.com" in msg
    assert msg.endswith("sbrbench download diginetica --source raw --from PATH/train-item-views.csv")
    code, out, err = _cli(["download", "yoochoose1_4", "--data-dir", str(tmp_path)], capsys)
    assert code == 1 and out == ""
    [line] = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "yoochoose-data.7z" in line and line.endswith("--from PATH/yoochoose-clicks.dat")
    assert _leftovers(tmp_path) == []


def test_from_file_for_an_unpinned_manual_source(shared_datasets: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    given = tmp_path / "dl" / "train-item-views.csv"
    given.parent.mkdir()
    given.write_bytes((shared_datasets / SAMPLE).read_bytes())
    data = tmp_path / "data"
    code, out, _ = _cli(["download", "diginetica", "--source", "raw", "--from", str(given),
                         "--data-dir", str(data), "--json"], capsys)
    assert code == 0
    rec = json.loads(out)
    [f] = rec["files"]
    assert f["status"] == "copied" and not f["pinned"] and f["sha256"] == _sha(given)
    dest = data / "raw" / "diginetica" / "raw" / "train-item-views.csv"
    assert json.loads(dest.with_name(".train-item-views.csv.sha256").read_text())["sha256"] == f["sha256"]
    assert dl.ensure_source("diginetica", "raw", data) == {"clicks": dest}


def test_from_directory_and_wrong_file(shared_datasets: Path, tmp_path: Path) -> None:
    recs = dl.download("amazon-beauty", data_dir=tmp_path, progress=False,
                       from_path=shared_datasets / "amazon-beauty" / "CIKM2020-S3Rec")
    assert [r["status"] for r in recs] == ["copied", "copied"]
    with pytest.raises(ChecksumError, match="but yoochoose/raw/yoochoose-clicks.dat has 1486798186"):
        dl.download("yoochoose1_4", data_dir=tmp_path, progress=False,
                    from_path=shared_datasets / "yoochoose/SR-GTM/sample_yoochoose.dat")
    assert not (tmp_path / "raw" / "yoochoose").exists() or _leftovers(tmp_path / "raw" / "yoochoose") == []
    with pytest.raises(SbrError, match="missing Scientific.train.inter"):
        dl.download("amazon-scientific", data_dir=tmp_path, progress=False, from_path=tmp_path)


# ---- the CLI -----------------------------------------------------------------------------------
def test_unknown_dataset_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(["download", "tmal"], capsys)
    assert code == 1 and out == ""
    assert err.strip().startswith("error: unknown dataset 'tmal'. Did you mean 'tmall'")
    assert len(err.strip().splitlines()) == 1


def test_datasets_lists_status(server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    dl.download("tmall", data_dir=tmp_path, mirror=server.url, progress=False)
    (tmp_path / "processed" / "nowplaying" / "gcegnn").mkdir(parents=True)
    (tmp_path / "processed" / "nowplaying" / "gcegnn" / "manifest.json").write_text("{}")
    code, out, _ = _cli(["datasets", "--data-dir", str(tmp_path), "--json"], capsys)
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["datasets"]}
    assert rows["tmall"]["status"] == "downloaded"
    assert rows["nowplaying"]["status"] == "processed (gcegnn)"
    assert rows["diginetica"]["status"] == "missing" and not rows["diginetica"]["manual"]
    assert rows["yoochoose1_4"]["manual"] and rows["yoochoose1_4"]["bytes"] == 1486798186
    assert rows["diginetica"]["formats"] == ["diginetica", "srgnn"]
    code, out, _ = _cli(["datasets", "--data-dir", str(tmp_path)], capsys)
    assert code == 0 and "tmall" in out
    assert next(ln for ln in out.splitlines() if ln.startswith("nowplaying ")).split()[3] == "processed"


def test_download_command_end_to_end(server: _Server, tmp_path: Path) -> None:
    env = {**os.environ, "SBRBENCH_DATA_DIR": str(tmp_path)}
    env.pop(dl.ENV_MIRROR, None)
    proc = subprocess.run([sys.executable, "-m", "sbrbench", "download", "yoochoose-sessionrec-100k",
                           "--mirror", server.url, "--json"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["data_dir"] == str(tmp_path) and [f["status"] for f in rec["files"]] == ["downloaded"] * 2
    assert "CC BY-NC-ND 4.0" in proc.stderr  # the terms are shown before downloading
    assert _leftovers(tmp_path / "raw") == sorted([
        "yoochoose/session-rec/.yoochoose-clicks-100k_test.txt.sha256",
        "yoochoose/session-rec/.yoochoose-clicks-100k_train_full.txt.sha256",
        "yoochoose/session-rec/yoochoose-clicks-100k_test.txt",
        "yoochoose/session-rec/yoochoose-clicks-100k_train_full.txt",
    ])
