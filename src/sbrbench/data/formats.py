"""Readers for every supported input format, each returning one of three plain record types.

* `ClickLog` — raw click rows in file order (Diginetica `train-item-views.csv`, Yoochoose
  `yoochoose-clicks.dat`, a generic click CSV). Protocols turn it into sessions and splits.
* `PublishedSplits` — SR-GNN/GCE-GNN pickles (`all_train_seq.txt` + `test.txt`, or `train.txt`
  + `test.txt`), already split and numbered; read with the restricted unpickler.
* `UserSequences` — one chronological item sequence per user (S3-Rec `Beauty.txt`, RecBole
  atomic files), with optional item text.

Formats are registered by name in `FORMATS`; `read_format(fmt, files, options)` dispatches.
All readers raise `DataError` with a one-line message for malformed, empty or incomplete input.
Timestamps are interpreted in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbrbench.data.srgnn_pickles import read_pairs, read_train_sessions
from sbrbench.errors import DataError
from sbrbench.registry import Registry

# --------------------------------------------------------------------------------------------
# record types


@dataclass
class ClickLog:
    """Raw clicks in file order; ids are factorised codes numbered by first appearance."""

    session: np.ndarray  # int64 (n,) session code, 0.. in order of first appearance in the file
    item: np.ndarray  # int64 (n,) item code into `item_keys`
    time: np.ndarray  # float64 (n,) unix seconds, UTC
    item_keys: list[str]  # original item id of each item code
    order: np.ndarray | None = None  # int64 (n,) within-session sort key (Diginetica timeframe)
    kind: str = "clicks"  # "diginetica" | "yoochoose" | "csv": picks protocol defaults
    split: np.ndarray | None = None  # int8 (n,) 0 = train, 1 = test, for logs published pre-split

    @property
    def n_rows(self) -> int:
        """Number of click rows."""
        return int(self.session.shape[0])


@dataclass
class PublishedSplits:
    """Data already split by its publisher (SR-GNN layout)."""

    train_sessions: list[list[int]] | None  # all_train_seq.txt, when present
    train_pairs: tuple[list[list[int]], list[int]] | None  # train.txt, when no sessions
    test_prefixes: list[list[int]]
    test_targets: list[int]


@dataclass
class UserSequences:
    """One chronological item sequence per user, items numbered 1..n (0 is padding)."""

    sequences: list[np.ndarray]  # int32 item ids per user, oldest first
    user_keys: list[str]
    item_keys: list[str]  # index = item id; item_keys[0] == ""
    item_text: list[str] | None = None  # index = item id; item_text[0] == ""
    notes: dict[str, Any] = field(default_factory=dict)


Reader = Callable[[dict[str, Path], dict[str, Any]], "ClickLog | PublishedSplits | UserSequences"]
FORMATS: Registry[Reader] = Registry("format")

# --------------------------------------------------------------------------------------------
# shared helpers


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    return path


def _role(files: dict[str, Path], role: str, fmt: str) -> Path:
    try:
        return files[role]
    except KeyError:
        raise DataError(
            f"format {fmt!r} needs a file with role {role!r}; got roles: {', '.join(files) or '(none)'}"
        ) from None


def _norm_col(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _read_table(path: Path, sep: str, header: bool = True) -> Any:
    """Read a delimited file as strings (pandas C parser), with one-line errors."""
    import pandas as pd

    _require_file(path)
    try:
        df = pd.read_csv(
            path, sep=sep, dtype=str, keep_default_na=False, engine="c",
            header=0 if header else None, skipinitialspace=False,
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty") from None
    except pd.errors.ParserError as exc:
        msg = str(exc).strip().splitlines()[-1]
        raise DataError(f"{path}: malformed CSV: {msg}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if len(df) == 0:
        raise DataError(f"{path} has a header but no rows")
    return df


def _pick_column(df: Any, path: Path, wanted: str, aliases: tuple[str, ...]) -> str:
    by_norm = {_norm_col(str(c)): str(c) for c in df.columns}
    for a in aliases:
        if _norm_col(a) in by_norm:
            return by_norm[_norm_col(a)]
    raise DataError(
        f"{path}: missing column {wanted!r} (found: {', '.join(map(str, df.columns))})"
    )


def _factorize(values: Any) -> tuple[np.ndarray, list[str]]:
    """Codes in order of first appearance, and the original values as strings."""
    import pandas as pd

    codes, uniques = pd.factorize(values, sort=False)
    return codes.astype(np.int64), [str(u) for u in uniques]


def _parse_times(values: Any, path: Path, column: str, time_format: str | None = None) -> np.ndarray:
    """Unix seconds (float64, UTC) of a column of timestamps; uniques are parsed once."""
    import pandas as pd

    codes, uniques = pd.factorize(values, sort=False)
    uniq = pd.Index(uniques)
    if time_format in ("unix", "s", "unix_ms", "ms"):
        try:
            num = pd.to_numeric(uniq).astype(np.float64)
        except (ValueError, TypeError):
            raise DataError(f"{path}: column {column!r} is not numeric unix time") from None
        secs = np.asarray(num) / (1000.0 if time_format in ("unix_ms", "ms") else 1.0)
        return secs[codes]
    if time_format is None:
        num = pd.to_numeric(uniq, errors="coerce")
        if len(uniq) and not np.isnan(np.asarray(num, dtype=np.float64)).any():
            return np.asarray(num, dtype=np.float64)[codes]
    try:
        dt = pd.to_datetime(uniq, format=time_format or "ISO8601", utc=True)
    except (ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"{path}: column {column!r} has an unreadable time ({first})") from None
    secs = (np.asarray(dt.as_unit("s").asi8, dtype=np.int64)).astype(np.float64)
    return secs[codes]


def _to_int64(values: Any, path: Path, column: str) -> np.ndarray:
    import pandas as pd

    try:
        return np.asarray(pd.to_numeric(values, errors="raise"), dtype=np.int64)
    except (ValueError, TypeError):
        bad = next((v for v in values if not str(v).lstrip("-").isdigit()), "?")
        raise DataError(f"{path}: column {column!r} must hold integers, found {bad!r}") from None


# --------------------------------------------------------------------------------------------
# raw click logs


@FORMATS.register("diginetica")
def read_diginetica(files: dict[str, Path], options: dict[str, Any]) -> ClickLog:
    """CIKM Cup 2016 `train-item-views.csv`: `;`-separated, camelCase or snake_case header."""
    path = _role(files, "clicks", "diginetica")
    df = _read_table(path, sep=";")
    scol = _pick_column(df, path, "sessionId", ("sessionId", "session_id"))
    icol = _pick_column(df, path, "itemId", ("itemId", "item_id"))
    tcol = _pick_column(df, path, "timeframe", ("timeframe",))
    dcol = _pick_column(df, path, "eventdate", ("eventdate", "event_date"))
    session, _ = _factorize(df[scol].to_numpy())
    item, keys = _factorize(df[icol].to_numpy())
    order = _to_int64(df[tcol].to_numpy(), path, tcol)
    time = _parse_times(df[dcol].to_numpy(), path, dcol, "%Y-%m-%d")
    return ClickLog(session=session, item=item, time=time, item_keys=keys, order=order, kind="diginetica")


@FORMATS.register("csv")
def read_click_csv(files: dict[str, Path], options: dict[str, Any]) -> ClickLog:
    """A generic click log with a column mapping, one file (role `clicks`) or pre-split
    `train` + `test` files (session-rec's prepared files).

    Columns: `options["columns"]` = {session, item, time[, order]} or the same keys at the top
    of `options`; defaults try common names. `options["sep"]` (default ","),
    `options["time_format"]` (strptime format, "unix" or "unix_ms"; default: numbers are unix
    seconds, text is ISO 8601). Clicks of a session are ordered by `order` when given, else by
    time (stable, so equal times keep file order).
    """
    cols = dict(options.get("columns") or {})
    for role in ("session", "item", "time", "order"):
        if role in options and role not in cols:
            cols[role] = options[role]
    unknown = set(cols) - {"session", "item", "time", "order"}
    if unknown:
        raise DataError(f"unknown column role(s) {', '.join(sorted(unknown))}; use session, item, time, order")
    if "clicks" in files:
        parts = [(files["clicks"], 0)]
    elif "train" in files and "test" in files:
        parts = [(files["train"], 0), (files["test"], 1)]
    else:
        raise DataError("format 'csv' needs one click file (role clicks) or train and test files")
    frames = []
    for path, flag in parts:
        df = _read_table(path, sep=str(options.get("sep", ",")))
        defaults = {
            "session": ("session", "session_id", "sessionId", "SessionId"),
            "item": ("item", "item_id", "itemId", "ItemId"),
            "time": ("time", "timestamp", "Time", "eventdate"),
        }
        picked = {role: _pick_column(df, path, cols.get(role, al[0]), (cols[role],) if role in cols else al)
                  for role, al in defaults.items()}
        if "order" in cols:
            picked["order"] = _pick_column(df, path, cols["order"], (cols["order"],))
        sub = df[list(picked.values())].copy()
        sub.columns = list(picked)
        sub["_split"] = flag
        sub["_path"] = str(path)
        frames.append(sub)
    import pandas as pd

    df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    path = parts[0][0]
    session, _ = _factorize((df["_split"].astype(str) + "\x00" + df["session"]).to_numpy()
                            if len(frames) > 1 else df["session"].to_numpy())
    item, keys = _factorize(df["item"].to_numpy())
    time = _parse_times(df["time"].to_numpy(), path, cols.get("time", "time"), options.get("time_format"))
    if "order" in picked:
        order = _to_int64(df["order"].to_numpy(), path, cols["order"])
    else:
        order = np.argsort(np.argsort(time, kind="stable"), kind="stable").astype(np.int64)
    split = df["_split"].to_numpy().astype(np.int8) if len(frames) > 1 else None
    return ClickLog(session=session, item=item, time=time, item_keys=keys, order=order, kind="csv", split=split)


@FORMATS.register("yoochoose")
def read_yoochoose(files: dict[str, Path], options: dict[str, Any]) -> ClickLog:
    """RecSys Challenge 2015 `yoochoose-clicks.dat`: `session,timestamp,item,category`.

    The real file has no header; a header line (SR-GNN users add one) is skipped. Parsed with a
    vectorised byte-level reader (33M rows in seconds); timestamps are truncated to whole
    seconds, as SR-GNN does with `timestamp[:19]`.
    """
    path = _require_file(_role(files, "clicks", "yoochoose"))
    session_raw, time, item_raw = _parse_yoochoose_bytes(path)
    session = _factorize_runs(session_raw)
    item, uniq = _factorize_int(item_raw)
    return ClickLog(session=session, item=item, time=time, item_keys=uniq, kind="yoochoose")


def _factorize_runs(values: np.ndarray) -> np.ndarray:
    """First-appearance codes of a column whose equal values mostly come in runs (fast)."""
    import pandas as pd

    if values.size == 0:
        return values.astype(np.int64)
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    codes, _ = pd.factorize(values[starts], sort=False)
    return np.repeat(codes.astype(np.int64), np.diff(np.r_[starts, values.size]))


def _factorize_int(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    import pandas as pd

    codes, uniques = pd.factorize(values, sort=False)
    return codes.astype(np.int64), [str(int(u)) for u in uniques]


def _parse_yoochoose_bytes(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    buf = np.fromfile(path, dtype=np.uint8)
    start = 0
    if buf.size and not 48 <= int(buf[0]) <= 57:  # header line
        nl = np.flatnonzero(buf[: 1 << 16] == 10)
        start = int(nl[0]) + 1 if nl.size else buf.size
    data = buf[start:]
    if data.size == 0:
        raise DataError(f"{path} has no click rows")
    if data[-1] != 10:
        data = np.concatenate([data, np.array([10], np.uint8)])
    nl = np.flatnonzero(data == 10)
    line_start = np.r_[0, nl[:-1] + 1]
    line_end = nl.copy()
    line_end -= (data[np.maximum(line_end - 1, 0)] == 13) & (line_end > line_start)
    nonempty = line_end > line_start
    if not nonempty.all():
        line_start, line_end = line_start[nonempty], line_end[nonempty]
        line_no = np.flatnonzero(nonempty) + 1 + (start > 0)
    else:
        line_no = None
    n = line_start.shape[0]
    if n == 0:
        raise DataError(f"{path} has no click rows")
    commas = np.flatnonzero(data == 44)
    ok = commas.shape[0] == 3 * n
    if ok:
        c = commas.reshape(n, 3)
        ok = bool((c[:, 0] > line_start).all() and (c[:, 2] < line_end).all())
    if not ok:
        counts = np.searchsorted(commas, line_end) - np.searchsorted(commas, line_start)
        bad = int(np.flatnonzero(counts != 3)[0])
        lineno = int(line_no[bad]) if line_no is not None else bad + 1 + (start > 0)
        raise DataError(
            f"{path}: malformed line {lineno}: expected 4 comma-separated fields "
            f"(session,timestamp,item,category), found {int(counts[bad]) + 1}"
        )
    session = _parse_uint_fields(data, line_start, c[:, 0], path, "session id", line_no, start)
    item = _parse_uint_fields(data, c[:, 1] + 1, c[:, 2], path, "item id", line_no, start)
    time = _parse_iso_seconds(data, c[:, 0] + 1, c[:, 1], path, line_no, start)
    return session, time, item


def _bad_line(path: Path, idx: int, what: str, line_no: np.ndarray | None, header: int) -> DataError:
    lineno = int(line_no[idx]) if line_no is not None else idx + 1 + (header > 0)
    return DataError(f"{path}: malformed line {lineno}: bad {what}")


def _windows(data: np.ndarray, s: np.ndarray, width: int) -> np.ndarray:
    """(n, width) uint8 copy of `data[s[i] : s[i] + width]` (one gather of fixed-width rows)."""
    padded = data if data.shape[0] >= width else np.concatenate([data, np.zeros(width, np.uint8)])
    view = np.lib.stride_tricks.as_strided(padded, shape=(padded.shape[0] - width + 1, width),
                                           strides=(padded.strides[0], padded.strides[0]), writeable=False)
    return view[np.minimum(s, view.shape[0] - 1)]


def _parse_uint_fields(data: np.ndarray, s: np.ndarray, e: np.ndarray, path: Path, what: str,
                       line_no: np.ndarray | None, header: int) -> np.ndarray:
    length = e - s
    bad = (length < 1) | (length > 18)
    if bad.any():
        raise _bad_line(path, int(np.flatnonzero(bad)[0]), what, line_no, header)
    width = int(length.max())
    win = _windows(data, s, width) - np.uint8(48)  # uint8: non-digits wrap above 9
    out = np.zeros(s.shape[0], dtype=np.int64)
    for k in range(width):
        active = length > k
        dig = win[:, k]
        wrong = active & (dig > 9)
        if wrong.any():
            raise _bad_line(path, int(np.flatnonzero(wrong)[0]), what, line_no, header)
        if active.all():
            out *= 10
            out += dig
        else:
            np.copyto(out, out * 10 + dig, where=active)
    return out


def _parse_iso_seconds(data: np.ndarray, s: np.ndarray, e: np.ndarray, path: Path,
                       line_no: np.ndarray | None, header: int) -> np.ndarray:
    """`YYYY-MM-DDTHH:MM:SS[...]` → unix seconds (UTC), fraction dropped."""
    bad = (e - s) < 19
    if bad.any():
        raise _bad_line(path, int(np.flatnonzero(bad)[0]), "timestamp", line_no, header)
    win = _windows(data, s, 19)
    ok = np.ones(s.shape[0], dtype=bool)
    for j, v in ((4, 45), (7, 45), (13, 58), (16, 58)):
        ok &= win[:, j] == v
    ok &= (win[:, 10] == 84) | (win[:, 10] == 32)
    win -= np.uint8(48)

    def num(*cols: int) -> np.ndarray:
        nonlocal ok
        val = np.zeros(s.shape[0], dtype=np.int64)
        for j in cols:
            dig = win[:, j]
            ok &= dig <= 9
            val *= 10
            val += dig
        return val

    y, mo, d = num(0, 1, 2, 3), num(5, 6), num(8, 9)
    secs = num(11, 12) * 3600 + num(14, 15) * 60 + num(17, 18)
    ok &= (mo >= 1) & (mo <= 12) & (d >= 1) & (d <= 31)
    if not ok.all():
        raise _bad_line(path, int(np.flatnonzero(~ok)[0]), "timestamp", line_no, header)
    return (days_from_civil(y, mo, d) * 86400 + secs).astype(np.float64)


def days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (vectorised)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


# --------------------------------------------------------------------------------------------
# published pickles


@FORMATS.register("srgnn")
def read_srgnn(files: dict[str, Path], options: dict[str, Any]) -> PublishedSplits:
    """SR-GNN/GCE-GNN pickles: `train_sessions` (all_train_seq.txt) or `train` (train.txt), and `test`."""
    test = _role(files, "test", "srgnn")
    if "train_sessions" in files:
        sessions = read_train_sessions(files["train_sessions"])
        pairs = None
    elif "train" in files or "train_pairs" in files:
        sessions, pairs = None, read_pairs(files.get("train") or files["train_pairs"])
    else:
        raise DataError("format 'srgnn' needs all_train_seq.txt (role train_sessions) or train.txt (role train)")
    prefixes, targets = read_pairs(test)
    return PublishedSplits(train_sessions=sessions, train_pairs=pairs, test_prefixes=prefixes, test_targets=targets)


# --------------------------------------------------------------------------------------------
# user sequences


def _number_items(tokens: list[list[str]]) -> tuple[list[np.ndarray], list[str]]:
    """Keep positive integer ids as they are; otherwise number by first appearance from 1."""
    flat = [t for seq in tokens for t in seq]
    dense = bool(flat) and all(t.isascii() and t.isdigit() for t in flat) and min(int(t) for t in flat) >= 1
    if dense and max(int(t) for t in flat) > max(16 * len(set(flat)), 1 << 20):
        dense = False  # sparse huge ids (up to 10**12...) would make a catalogue of that size: number them
    if dense:
        seqs = [np.asarray([int(t) for t in seq], dtype=np.int32) for seq in tokens]
        top = max(int(t) for t in flat)
        keys = [""] + [str(i) for i in range(1, top + 1)]
        return seqs, keys
    ids: dict[str, int] = {}
    seqs = []
    for seq in tokens:
        seqs.append(np.asarray([ids.setdefault(t, len(ids) + 1) for t in seq], dtype=np.int32))
    return seqs, [""] + list(ids)


@FORMATS.register("sequences")
def read_sequences(files: dict[str, Path], options: dict[str, Any]) -> UserSequences:
    """S3-Rec style text: one line per user, `user item item ...`, oldest item first."""
    path = _require_file(_role(files, "sequences", "sequences"))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    users: list[str] = []
    tokens: list[list[str]] = []
    for i, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise DataError(f"{path}: line {i}: expected `user item [item ...]`, got {line.strip()!r}")
        users.append(parts[0])
        tokens.append(parts[1:])
    if not users:
        raise DataError(f"{path} has no user lines")
    seqs, keys = _number_items(tokens)
    return UserSequences(sequences=seqs, user_keys=users, item_keys=keys)


def _read_atomic(path: Path) -> tuple[list[str], list[list[str]]]:
    """A RecBole atomic file: header `name:type` fields, tab-separated rows."""
    _require_file(path)
    try:
        text = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if not text:
        raise DataError(f"{path} is empty")
    header = [h.split(":", 1)[0] for h in text[0].split("\t")]
    if len(set(header)) != len(header):
        raise DataError(f"{path}: repeated column in the header {text[0]!r}")
    rows = []
    for i, line in enumerate(text[1:], 2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != len(header):
            raise DataError(f"{path}: line {i}: expected {len(header)} tab-separated fields, found {len(parts)}")
        rows.append(parts)
    return header, rows


def _col(header: list[str], name: str, path: Path) -> int:
    if name not in header:
        raise DataError(f"{path}: missing column {name!r} (found: {', '.join(header)})")
    return header.index(name)


@FORMATS.register("recbole")
def read_recbole(files: dict[str, Path], options: dict[str, Any]) -> UserSequences:
    """RecBole atomic files: prefix-augmented `train`/`valid`/`test` `.inter` files (UniSRec
    layout: `user_id`, `item_id_list`, `item_id`) or one plain `inter` file (`user_id`,
    `item_id`, optional `timestamp`). Optional `text` (`item_id`, `text`), `item2index` and
    `user2index` files map indices back to original ids and attach item text.
    """
    item2index = _read_index(files["item2index"]) if "item2index" in files else None
    user2index = _read_index(files["user2index"]) if "user2index" in files else None
    per_user: dict[str, list[tuple[int, int, list[str], str]]] = {}
    if all(r in files for r in ("train", "valid", "test")):
        for rank, role in enumerate(("train", "valid", "test")):
            header, rows = _read_atomic(files[role])
            u, lst, it = (_col(header, c, files[role]) for c in ("user_id", "item_id_list", "item_id"))
            for k, row in enumerate(rows):
                # UniSRec writes each user's training rows newest first; sort key restores time order
                per_user.setdefault(row[u], []).append((rank, -k if rank == 0 else k, row[lst].split(), row[it]))
        seq_tokens, users = [], []
        for user, rows in per_user.items():
            rows.sort(key=lambda r: (r[0], len(r[2]), r[1]))
            first = rows[0][2]
            if not first:
                raise DataError(f"user {user}: empty item_id_list in the RecBole files")
            seq = first + [r[3] for r in rows]
            _check_windows(seq, rows, user, len(first))
            seq_tokens.append(seq)
            users.append(user)
    elif "inter" in files:
        header, rows = _read_atomic(files["inter"])
        u, it = _col(header, "user_id", files["inter"]), _col(header, "item_id", files["inter"])
        ts = header.index("timestamp") if "timestamp" in header else None
        grouped: dict[str, list[tuple[float, int, str]]] = {}
        for k, row in enumerate(rows):
            try:
                t = float(row[ts]) if ts is not None else 0.0
            except ValueError:
                raise DataError(f"{files['inter']}: row {k + 2}: timestamp {row[ts]!r} is not a number") from None
            if t != t:
                raise DataError(f"{files['inter']}: row {k + 2}: timestamp is NaN")
            grouped.setdefault(row[u], []).append((t, k, row[it]))
        users = list(grouped)
        seq_tokens = [[x[2] for x in sorted(v)] for v in grouped.values()]
    else:
        raise DataError("format 'recbole' needs train/valid/test .inter files or one .inter file")
    notes: dict[str, Any] = {}
    if item2index is not None:
        by_index = {v: k for k, v in item2index.items()}
        tokens_all = {t for s in seq_tokens for t in s}
        missing = [t for t in tokens_all if t not in by_index]
        if missing:
            raise DataError(f"item index {missing[0]!r} is not in the item2index file")
        # our id = RecBole index + 1 (0 is padding), so every indexed item keeps its place
        seqs = [np.asarray([int(t) + 1 for t in s], dtype=np.int32) for s in seq_tokens]
        n = max(int(v) for v in item2index.values()) + 1
        keys = [""] * (n + 1)
        for asin, idx in item2index.items():
            keys[int(idx) + 1] = asin
    else:
        seqs, keys = _number_items(seq_tokens)
    if user2index is not None:
        by_uindex = {v: k for k, v in user2index.items()}
        users = [by_uindex.get(u, u) for u in users]
    text = None
    if "text" in files:
        theader, trows = _read_atomic(files["text"])
        ic, tc = _col(theader, "item_id", files["text"]), _col(theader, "text", files["text"])
        by_key = {row[ic]: row[tc] for row in trows}
        text = [by_key.get(k, "") if k else "" for k in keys]
        notes["items_without_text"] = sum(1 for k in keys[1:] if k not in by_key)
    return UserSequences(sequences=seqs, user_keys=users, item_keys=keys, item_text=text, notes=notes)


def _check_windows(seq: list[str], rows: list[tuple[int, int, list[str], str]], user: str, first_len: int) -> None:
    """Every augmented row must be (window of history, next item) of the rebuilt sequence."""
    for k, (_, _, hist, target) in enumerate(rows):
        end = first_len + k
        if seq[end] != target or seq[max(0, end - len(hist)) : end] != hist:
            raise DataError(f"user {user}: the RecBole rows are not prefixes of one sequence")


def _read_index(path: Path) -> dict[str, str]:
    """A RecBole `key<TAB>index` file; indices are integers 0 .. 2**31 - 3 (ours are index + 1)."""
    _require_file(path)
    out: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataError(f"{path}: line {i}: expected `key<TAB>index`")
        if not (parts[1].isascii() and parts[1].isdigit() and int(parts[1]) < np.iinfo(np.int32).max - 1):
            raise DataError(f"{path}: line {i}: index {parts[1]!r} is not an integer from 0 to {np.iinfo(np.int32).max - 2}")
        out[parts[0]] = parts[1]
    if not out:
        raise DataError(f"{path} has no `key<TAB>index` lines")
    return out


# --------------------------------------------------------------------------------------------
# dispatch and `--from PATH` discovery


def read_format(fmt: str, files: dict[str, Path], options: dict[str, Any] | None = None) -> ClickLog | PublishedSplits | UserSequences:
    """Read `files` (role → path) in format `fmt` ("did you mean" error for unknown names)."""
    reader = FORMATS.get(fmt)
    return reader(files, dict(options or {}))


def discover_files(path: Path, fmt: str) -> dict[str, Path]:
    """Map a user's `--from PATH` (a file or a folder) to the roles format `fmt` reads."""
    FORMATS.get(fmt)
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if fmt in ("diginetica", "yoochoose", "csv"):
        if path.is_dir():
            raise DataError(f"format {fmt!r} reads one click file, but {path} is a folder")
        return {"clicks": path}
    if fmt == "sequences":
        if path.is_dir():
            raise DataError(f"format 'sequences' reads one text file, but {path} is a folder")
        return {"sequences": path}
    folder = path if path.is_dir() else path.parent
    if fmt == "srgnn":
        out = {}
        for role, fname in (("train_sessions", "all_train_seq.txt"), ("train", "train.txt"), ("test", "test.txt")):
            if (folder / fname).is_file():
                out[role] = folder / fname
        if "test" not in out:
            raise DataError(f"{folder}: no test.txt (SR-GNN layout: all_train_seq.txt or train.txt, and test.txt)")
        return out
    # recbole
    out = {}
    for f in sorted(folder.iterdir()):
        for role, suffix in (("train", ".train.inter"), ("valid", ".valid.inter"), ("test", ".test.inter"),
                             ("text", ".text"), ("item2index", ".item2index"), ("user2index", ".user2index")):
            if f.name.endswith(suffix):
                out.setdefault(role, f)
        if f.name.endswith(".inter") and f.name.count(".") == 1:
            out.setdefault("inter", f)
    if not ({"train", "valid", "test"} <= out.keys() or "inter" in out):
        raise DataError(f"{folder}: no RecBole .inter files found")
    return out
