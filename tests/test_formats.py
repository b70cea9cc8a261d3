"""Raw readers: header spellings, header-less Yoochoose, UTC dates, and every failure case."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from sbrbench.data.formats import (
    ClickLog,
    UserSequences,
    days_from_civil,
    discover_files,
    read_format,
)
from sbrbench.errors import DataError, SbrError

SAMPLE = "diginetica/SR-GNN/sample_train-item-views.csv"
YC_SAMPLE = "yoochoose/SR-GTM/sample_yoochoose.dat"


def _same_log(a: ClickLog, b: ClickLog) -> None:
    assert np.array_equal(a.session, b.session)
    assert np.array_equal(a.item, b.item)
    assert np.array_equal(a.time, b.time)
    assert a.item_keys == b.item_keys


def test_diginetica_camel_and_snake_headers_read_the_same(shared_datasets: Path, tmp_path: Path) -> None:
    src = shared_datasets / SAMPLE
    text = src.read_text()
    camel = tmp_path / "train-item-views.csv"
    camel.write_text(text.replace("session_id;user_id;item_id;timeframe;eventdate",
                                  "sessionId;userId;itemId;timeframe;eventdate", 1))
    a = read_format("diginetica", {"clicks": src})
    b = read_format("diginetica", {"clicks": camel})
    _same_log(a, b)
    assert a.n_rows == 12391
    assert len(np.unique(a.session)) == 2986
    assert len(a.item_keys) == 7139
    # 2016-05-09 00:00 UTC, whatever the machine's time zone
    assert a.time[0] == 1462752000.0
    assert a.order is not None and a.order[0] == 526309


def test_yoochoose_header_less_and_with_header_agree(shared_datasets: Path, tmp_path: Path) -> None:
    src = shared_datasets / YC_SAMPLE
    with_header = tmp_path / "yoochoose-clicks.dat"
    with_header.write_bytes(b"session_id,timestamp,item_id,category\r\n" + src.read_bytes().replace(b"\n", b"\r\n"))
    a = read_format("yoochoose", {"clicks": src})
    b = read_format("yoochoose", {"clicks": with_header})
    _same_log(a, b)
    assert a.n_rows == 1913
    assert len(np.unique(a.session)) == 461
    assert len(a.item_keys) == 907
    # 832,2014-04-06T20:21:58.444Z -> whole seconds, UTC
    assert a.time[0] == 1396815718.0
    assert a.item_keys[0] == "214717095"


def test_days_from_civil_matches_numpy() -> None:
    days = np.arange(-800000, 800000, 997)
    d = days.astype("datetime64[D]")
    y = d.astype("datetime64[Y]").astype(np.int64) + 1970
    m = d.astype("datetime64[M]").astype(np.int64) % 12 + 1
    dd = (d - d.astype("datetime64[M]")).astype(np.int64) + 1
    assert np.array_equal(days_from_civil(y, m, dd), days)


def test_malformed_diginetica_csv(tmp_path: Path) -> None:
    bad = tmp_path / "views.csv"
    bad.write_text("sessionId;userId;itemId;timeframe;eventdate\n1;NA;5;10;2016-05-09\n1;NA;6;11;2016-05-09;extra\n")
    with pytest.raises(DataError, match="malformed CSV"):
        read_format("diginetica", {"clicks": bad})


def test_bad_values_are_reported(tmp_path: Path) -> None:
    bad = tmp_path / "views.csv"
    bad.write_text("sessionId;userId;itemId;timeframe;eventdate\n1;NA;5;ten;2016-05-09\n")
    with pytest.raises(DataError, match="timeframe.*integers"):
        read_format("diginetica", {"clicks": bad})
    bad.write_text("sessionId;userId;itemId;timeframe;eventdate\n1;NA;5;10;09/05/2016\n")
    with pytest.raises(DataError, match="unreadable time"):
        read_format("diginetica", {"clicks": bad})


def test_missing_column(tmp_path: Path) -> None:
    bad = tmp_path / "views.csv"
    bad.write_text("sessionId;userId;itemId;eventdate\n1;NA;5;2016-05-09\n")
    with pytest.raises(DataError, match="missing column 'timeframe'"):
        read_format("diginetica", {"clicks": bad})


@pytest.mark.parametrize("fmt", ["diginetica", "yoochoose", "csv", "sequences"])
def test_empty_file(tmp_path: Path, fmt: str) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    role = "sequences" if fmt == "sequences" else "clicks"
    with pytest.raises(DataError, match="is empty"):
        read_format(fmt, {role: empty})


def test_header_only(tmp_path: Path) -> None:
    f = tmp_path / "views.csv"
    f.write_text("sessionId;userId;itemId;timeframe;eventdate\n")
    with pytest.raises(DataError, match="no rows"):
        read_format("diginetica", {"clicks": f})


def test_malformed_yoochoose_lines(tmp_path: Path) -> None:
    f = tmp_path / "clicks.dat"
    f.write_text("1,2014-04-07T10:51:09.277Z,214536502,0\n1,2014-04-07T10:54:09.868Z,214536500\n")
    with pytest.raises(DataError, match="line 2: expected 4 comma-separated fields"):
        read_format("yoochoose", {"clicks": f})
    f.write_text("1,2014-04-07T10:51:09.277Z,214536502,0\n1,2014-04-07 10-54,214536500,0\n")
    with pytest.raises(DataError, match="line 2: bad timestamp"):
        read_format("yoochoose", {"clicks": f})
    f.write_text("1,2014-04-07T10:51:09.277Z,2145x6502,0\n")
    with pytest.raises(DataError, match="line 1: bad item id"):
        read_format("yoochoose", {"clicks": f})


def test_generic_csv_with_column_mapping(tmp_path: Path) -> None:
    f = tmp_path / "log.tsv"
    f.write_text("sid\tts\tproduct\nA\t2020-01-01T00:00:05\tx\nA\t2020-01-01T00:00:01\ty\nB\t2020-01-02T00:00:00\tx\n")
    log = read_format("csv", {"clicks": f}, {"sep": "\t", "columns": {"session": "sid", "item": "product", "time": "ts"}})
    assert log.session.tolist() == [0, 0, 1]
    assert log.item_keys == ["x", "y"]
    assert log.time[1] == 1577836801.0
    assert log.order is not None and log.order[1] < log.order[0]  # clicks ordered by time
    with pytest.raises(DataError, match="missing column 'when'"):
        read_format("csv", {"clicks": f}, {"sep": "\t", "columns": {"session": "sid", "item": "product", "time": "when"}})


def test_hostile_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, (f"touch {marker}",))

    (tmp_path / "all_train_seq.txt").write_bytes(pickle.dumps(Evil()))
    (tmp_path / "test.txt").write_bytes(pickle.dumps(([[1]], [2])))
    with pytest.raises(DataError, match="not a plain-data pickle.*refusing") as err:
        read_format("srgnn", discover_files(tmp_path, "srgnn"))
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_sequences_reader(tmp_path: Path, shared_datasets: Path) -> None:
    data = read_format("sequences", {"sequences": shared_datasets / "amazon-beauty/CIKM2020-S3Rec/Beauty.txt"})
    assert isinstance(data, UserSequences)
    assert len(data.sequences) == 22363
    assert sum(len(s) for s in data.sequences) == 198502
    assert data.sequences[0].tolist() == [1, 2, 3, 4, 5]
    bad = tmp_path / "seq.txt"
    bad.write_text("1 2 3\n2\n")
    with pytest.raises(DataError, match="line 2"):
        read_format("sequences", {"sequences": bad})


def test_recbole_rebuilds_full_sequences_with_text(shared_datasets: Path) -> None:
    files = discover_files(shared_datasets / "amazon-scientific/CoWPiRec", "recbole")
    assert set(files) == {"train", "valid", "test", "text", "item2index", "user2index"}
    data = read_format("recbole", files)
    assert len(data.sequences) == 8442
    assert sum(len(s) for s in data.sequences) == 34101 + 2 * 8442 + 8442
    assert len(data.item_keys) == 4386 and data.item_keys[1] == "B00TNNWMXI"
    assert data.item_text is not None and data.item_text[1]
    assert data.user_keys[0] == "ABW8NXS7SV55K"
    assert data.sequences[0].tolist() == list(range(1, 15))  # indices 0..13 shifted by one
    # users whose history was cut to 50 items in item_id_list are rebuilt in full
    assert max(len(s) for s in data.sequences) > 51


def test_unknown_format_did_you_mean() -> None:
    with pytest.raises(SbrError, match="Did you mean 'diginetica'"):
        read_format("diginetca", {})
