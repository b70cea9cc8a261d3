"""`preprocess`, protocols, `load_dataset` and `export` on the real data in ../shared/datasets."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sbrbench.data.dataset import ProcessedDataset
from sbrbench.data.formats import read_format
from sbrbench.data.preprocess import export_dataset, preprocess, preprocess_files
from sbrbench.data.store import load_dataset
from sbrbench.data.protocols import PROTOCOLS, get_protocol
from sbrbench.data.srgnn_pickles import read_pairs, read_train_sessions
from sbrbench.errors import DataError, SbrError

# sha256 of json.dumps([train.txt, test.txt, all_train_seq.txt]) written by CRIPAC-DIG/SR-GNN's
# datasets/preprocess.py (run with TZ=UTC) on the sample CSV and on SR-GTM's Yoochoose sample.
SAMPLE_DIGEST = "9d5b19b99c78f3eafcce0186e6fb4e88097d070970403a2ae50badc4e3ef8eb6"
YC_DIGEST = {4: "0117bbea8c0a8275082ff249539b186a478099449ac8ef39c2309ebcbec87d9b",
             64: "bce05577de811c795013ff8dcef49a35e7dca36e199eb28f6378940fa41b4012"}


def srgnn_layout(ds: ProcessedDataset) -> list:
    """The three SR-GNN pickles' contents, as lists."""
    tr_p, tr_t = ds.prefixes("train")
    va_p, va_t = ds.prefixes("valid")
    te_p, te_t = ds.prefixes("test")
    fitted = ds.fit_sessions(("train", "valid"))
    items, offs = fitted.items, fitted.offsets
    flat = items.tolist()
    seqs = [flat[a:b] for a, b in zip(offs[:-1].tolist(), offs[1:].tolist())]
    return [[tr_p + va_p, tr_t + va_t], [te_p, te_t], seqs]


def digest(obj: list) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sbrbench-data")


@pytest.fixture(scope="session")
def published(shared_datasets: Path, data_dir: Path) -> dict[str, tuple[ProcessedDataset, dict]]:
    """Every shipped published dataset, preprocessed once through the registry and the mirror."""
    return {name: preprocess(name, data_dir=data_dir, mirror=str(shared_datasets))
            for name in ("diginetica", "tmall", "nowplaying", "yoochoose1_64")}


# ---- SR-GNN recipe on raw clicks ------------------------------------------------------------------

def test_diginetica_sample_matches_srgnn_script_exactly(shared_datasets: Path, data_dir: Path) -> None:
    ds, manifest = preprocess("diginetica-sample", data_dir=data_dir, mirror=str(shared_datasets))
    c = ds.counts()
    assert (c["train_sessions"], c["train_examples"], c["test_examples"], c["items"]) == (469, 1205, 99, 309)
    assert ds.info["test_period_sessions"] == 47  # the script's len(tes_sess)
    assert c["test_sessions"] == 39  # what is left of them in test.txt
    layout = srgnn_layout(ds)
    assert layout[0][0][:5] == [[1, 2], [1], [4], [6], [8, 9]] and layout[0][1][:5] == [3, 2, 5, 7, 9]
    assert layout[1][0][:3] == [[282], [281, 308], [281]] and layout[1][1][:3] == [282, 281, 308]
    assert layout[2][:3] == [[1, 2, 3], [4, 5], [6, 7]]
    assert digest(layout) == SAMPLE_DIGEST
    assert manifest["format_version"] == 1 and manifest["protocol"] == "srgnn"
    assert set(manifest["sources"]) == {"sample_train-item-views.csv"}
    assert any("consecutive duplicate" in w for w in manifest["warnings"])


@pytest.mark.parametrize("fraction", [4, 64])
def test_yoochoose_fractions_match_srgnn_script(shared_datasets: Path, fraction: int) -> None:
    log = read_format("yoochoose", {"clicks": shared_datasets / "yoochoose/SR-GTM/sample_yoochoose.dat"})
    ds = get_protocol("srgnn").build(log, "y", options={"fraction": fraction})
    assert digest(srgnn_layout(ds)) == YC_DIGEST[fraction]
    assert ds.counts()["items"] == 90  # the full item space survives the cut
    assert ds.counts()["test_examples"] == 51


def test_from_path_for_a_registered_manual_source(shared_datasets: Path, tmp_path: Path) -> None:
    # `preprocess yoochoose1_4 --from yoochoose-clicks.dat`: the registry's format and 1/4 option apply
    ds, manifest = preprocess_files(shared_datasets / "yoochoose/SR-GTM/sample_yoochoose.dat", None,
                                    "yoochoose1_4", data_dir=tmp_path)
    assert digest(srgnn_layout(ds)) == YC_DIGEST[4]
    assert manifest["source"] == "--from" and manifest["options"]["fraction"] == 4


def test_yoochoose_sample_full(shared_datasets: Path, data_dir: Path) -> None:
    ds, _ = preprocess("yoochoose-sample", data_dir=data_dir, mirror=str(shared_datasets))
    c = ds.counts()
    assert (c["train_examples"], c["test_examples"], c["items"]) == (357, 51, 90)


def test_dgtn_keeps_the_boundary_day(shared_datasets: Path) -> None:
    log = read_format("diginetica", {"clicks": shared_datasets / "diginetica/SR-GNN/sample_train-item-views.csv"})
    ds = get_protocol("dgtn").build(log, "d")
    c = ds.counts()
    assert (c["train_sessions"], c["train_examples"], c["test_sessions"], c["test_examples"], c["items"]) == \
        (469, 1205, 47, 118, 309)
    # shortest prefix first, ids by training popularity (id 1 is the most clicked training item)
    ex = ds.examples("train")
    assert ex.length[0] == 1 and ex.length[1] == 2
    tr_items = ds.fit_sessions(("train", "valid")).items
    counts = np.bincount(tr_items, minlength=ds.n_items)[1:]
    assert np.all(np.diff(counts) <= 0)
    srgnn = get_protocol("srgnn").build(log, "d")
    assert srgnn.counts()["test_examples"] < c["test_examples"]


def test_validation_never_straddles_sessions(shared_datasets: Path) -> None:
    log = read_format("diginetica", {"clicks": shared_datasets / "diginetica/SR-GNN/sample_train-item-views.csv"})
    ds = get_protocol("srgnn").build(log, "d", valid_fraction=0.25)
    tr, va = set(ds.splits["train"].session.tolist()), set(ds.splits["valid"].session.tolist())
    assert tr and va and not tr & va
    assert min(va) > max(tr)  # the most recent sessions
    assert round(len(tr | va) * 0.25) == len(va)
    assert np.all(ds.session_time[sorted(va)] >= ds.session_time[max(tr)])
    with pytest.raises(DataError, match="validation fraction"):
        get_protocol("srgnn").build(log, "d", valid_fraction=1.5)


# ---- published pickles ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,expected", [
    ("diginetica", (186670, 719470, 60858, 43097, 43097)),
    ("tmall", (65286, 351268, 25898, 40727, 40727)),
    ("nowplaying", (128077, 825304, 89824, 60416, 60416)),
    ("yoochoose1_64", (116167, 369859, 55898, 37483, 17376)),
])
def test_published_counts(published: dict, name: str, expected: tuple) -> None:
    ds, manifest = published[name]
    c = manifest["counts"]
    assert (c["train_sessions"], c["train_examples"], c["test_examples"], c["items"], c["items_seen_in_train"]) == expected
    assert c["fit_examples"] + c["valid_examples"] == c["train_examples"]
    assert c["valid_sessions"] == round(c["train_sessions"] * 0.1)


def test_yoochoose1_64_warns_about_unseen_test_items(published: dict) -> None:
    _, manifest = published["yoochoose1_64"]
    assert manifest["stats"]["test_unseen"]["items"] == 369
    assert any("369 test items never occur in training" in w for w in manifest["warnings"])


def test_load_is_identical_and_checks_missing(published: dict, data_dir: Path) -> None:
    ds, manifest = published["diginetica"]
    again = load_dataset("diginetica", data_dir=data_dir)
    assert np.array_equal(again.items, ds.items) and np.array_equal(again.offsets, ds.offsets)
    for split in ("train", "valid", "test"):
        assert np.array_equal(again.splits[split].pos, ds.splits[split].pos)
    assert load_dataset(manifest["path"]).counts() == ds.counts()
    with pytest.raises(DataError, match=r"dataset diginetica \(protocol dgtn\) is not processed yet: run `sbrbench preprocess diginetica --protocol dgtn`"):
        load_dataset("diginetica", "dgtn", data_dir=data_dir)
    with pytest.raises(SbrError, match="Did you mean 'diginetica'"):
        load_dataset("diginetca", data_dir=data_dir)


def test_export_round_trip(published: dict, shared_datasets: Path, data_dir: Path, tmp_path: Path) -> None:
    result = export_dataset("diginetica", "srgnn", tmp_path / "out", data_dir=data_dir)
    assert result["n_node"] == 43098
    out = tmp_path / "out"
    ref = shared_datasets / "diginetica/GCE-GNN"
    assert read_train_sessions(out / "all_train_seq.txt") == read_train_sessions(ref / "all_train_seq.txt")
    assert read_pairs(out / "test.txt") == read_pairs(ref / "test.txt")
    prefixes, targets = read_pairs(out / "train.txt")
    assert len(targets) == 719470
    sessions = read_train_sessions(ref / "all_train_seq.txt")
    expect = [(s[:-k], s[-k]) for s in sessions[:50] for k in range(1, len(s))]
    assert list(zip(prefixes[: len(expect)], targets[: len(expect)])) == expect
    # re-import of the export gives the same dataset
    ds2, _ = preprocess_files(out, "srgnn", "diginetica-exported", data_dir=data_dir)
    assert ds2.counts() == published["diginetica"][0].counts()


def test_export_sample_reproduces_script_pickles(shared_datasets: Path, data_dir: Path, tmp_path: Path) -> None:
    preprocess("diginetica-sample", data_dir=data_dir, mirror=str(shared_datasets))
    export_dataset("diginetica-sample", "srgnn", tmp_path, data_dir=data_dir)
    loaded = [pickle.loads((tmp_path / f).read_bytes()) for f in ("train.txt", "test.txt", "all_train_seq.txt")]
    assert digest([list(loaded[0]), list(loaded[1]), loaded[2]]) == SAMPLE_DIGEST
    with pytest.raises(SbrError, match="unknown export format"):
        export_dataset("diginetica-sample", "recbole", tmp_path, data_dir=data_dir)


# ---- user sequences and other shipped layouts ---------------------------------------------------

@pytest.mark.parametrize("name,users,items,clicks", [
    ("amazon-beauty", 22363, 12101, 198502),
    ("amazon-sports", 35598, 18357, 296337),
    ("amazon-toys", 19412, 11924, 167597),
    ("amazon-scientific", 8442, 4385, 59427),
])
def test_leave_one_out(shared_datasets: Path, data_dir: Path, name: str, users: int, items: int, clicks: int) -> None:
    ds, manifest = preprocess(name, data_dir=data_dir, mirror=str(shared_datasets))
    c = manifest["counts"]
    assert (c["users"], c["items"], c["clicks"]) == (users, items, clicks)
    assert c["valid_examples"] == c["test_examples"] == users
    assert c["fit_examples"] == clicks - 3 * users
    ex_t, ex_v = ds.examples("test"), ds.examples("valid")
    assert np.array_equal(ex_t.start + ex_t.length + 1, ex_t.session_end)  # test = last item
    assert np.array_equal(ex_v.length + 1, ex_t.length)  # valid = the one before
    again = load_dataset(name, data_dir=data_dir)
    assert again.session_user is not None and again.user_keys is not None
    if name == "amazon-scientific":
        assert again.item_text is not None and len(again.item_text) == again.n_items
        assert again.item_keys[1] == "B00TNNWMXI" and again.user_keys[0] == "ABW8NXS7SV55K"
        assert c["fit_examples"] == 34101


def test_sessionrec_and_macl(shared_datasets: Path, data_dir: Path) -> None:
    _, m = preprocess("yoochoose-sessionrec-100k", data_dir=data_dir, mirror=str(shared_datasets))
    c = m["counts"]
    assert (c["train_sessions"], c["test_sessions"], c["clicks"]) == (17794, 3416, 83846)
    _, m = preprocess("macl-cellphones", data_dir=data_dir, mirror=str(shared_datasets))
    c = m["counts"]
    assert (c["train_examples"], c["test_examples"], c["items"]) == (41615, 4644, 10213)


def test_protocol_registry_and_input_checks(shared_datasets: Path) -> None:
    assert {"srgnn", "dgtn", "gcegnn", "loo"} <= set(PROTOCOLS.names())
    seqs = read_format("sequences", {"sequences": shared_datasets / "amazon-beauty/CIKM2020-S3Rec/Beauty.txt"})
    with pytest.raises(DataError, match="protocol 'srgnn' needs raw click logs or published"):
        get_protocol("srgnn").build(seqs, "x")
    with pytest.raises(SbrError, match="Did you mean 'srgnn'"):
        get_protocol("srgn")


# ---- failure cases end to end ---------------------------------------------------------------------

def test_hostile_pickle_leaves_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, (f"touch {marker}",))

    src = tmp_path / "in"
    src.mkdir()
    (src / "all_train_seq.txt").write_bytes(pickle.dumps([[1, 2]]))
    (src / "test.txt").write_bytes(pickle.dumps(Evil()))
    data = tmp_path / "data"
    with pytest.raises(DataError, match="refusing to load it"):
        preprocess_files(src, "srgnn", "evil", data_dir=data)
    assert not marker.exists()
    assert not (data / "processed" / "evil").exists()


def _cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    env.pop("SBRBENCH_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "sbrbench", *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_preprocess_json_and_errors(shared_datasets: Path, tmp_path: Path) -> None:
    env = {"SBRBENCH_DATA_DIR": str(tmp_path / "data")}
    r = _cli("preprocess", "diginetica-sample", "--mirror", str(shared_datasets), "--json", env_extra=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("dataset", "protocol", "train_sessions", "train_examples", "valid_examples", "test_examples", "items"):
        assert key in out
    assert (out["train_sessions"], out["train_examples"], out["test_examples"], out["items"]) == (469, 1205, 99, 309)
    assert "warning: " in r.stderr and "avg length" in r.stderr

    r = _cli("preprocess", "diginetca", env_extra=env)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "Did you mean 'diginetica'" in r.stderr

    bad = tmp_path / "bad.csv"
    bad.write_text("sessionId;userId;itemId;timeframe;eventdate\n1;NA;5;10;2016-05-09\n1;NA;6;11;2016-05-09;x\n")
    r = _cli("preprocess", "--from", str(bad), "--format", "diginetica", "--name", "mine", env_extra=env)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "malformed CSV" in r.stderr
    assert r.stderr.strip().count("\n") == 0

    r = _cli("export", "diginetica-sample", "--format", "srgnn", "--out", str(tmp_path / "exp"), "--json", env_extra=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["train_examples"] == 1205


def test_cli_from_csv_with_columns(tmp_path: Path) -> None:
    rows = ["sid,when,product"]
    rng = np.random.default_rng(0)
    for s in range(300):
        day = 1 + s // 20
        for k in range(int(rng.integers(2, 6))):
            rows.append(f"s{s},2021-03-{day:02d}T10:00:{k:02d},p{int(rng.integers(0, 15))}")
    f = tmp_path / "log.csv"
    f.write_text("\n".join(rows) + "\n")
    r = _cli("preprocess", "--from", str(f), "--format", "csv", "--name", "mylog", "--columns",
             "session=sid,item=product,time=when", "--option", "test_days=3", "--json",
             env_extra={"SBRBENCH_DATA_DIR": str(tmp_path / "data")})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["dataset"] == "mylog" and out["test_examples"] > 0 and out["items"] <= 15
    ds = load_dataset("mylog", data_dir=tmp_path / "data")
    assert ds.info["test_days"] == 3.0
