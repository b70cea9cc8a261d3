"""Fuzzing the importers (`preprocess --from`): random and adversarial files in every format.

Each input either imports or raises one `SbrError` line; it never crashes with another exception,
never hangs (a deadline per example) and never writes outside the data directory. The example
count is bounded and the run derandomized (a fixed seed) so CI is fast and repeatable;
`SBRBENCH_FUZZ_LONG=1` runs many more examples.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbrbench.data.preprocess import preprocess_files
from sbrbench.errors import SbrError

LONG = os.environ.get("SBRBENCH_FUZZ_LONG", "").strip().lower() not in ("", "0", "false", "no")
EXAMPLES = 1500 if LONG else 60
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=10_000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# values a hostile or broken file puts where ids, times and names belong
NASTY = st.sampled_from([
    "", " ", "nan", "NaN", "inf", "-inf", "-1", "0", "-0", "1e308", "99999999999999999999999", str(2**63),
    str(-(2**63) - 1), "1.5", "0x10", "null", "None", "True", "é", "日本", "\u202e", "\ufeff", "\x00", "a,b",
    '"', "'", "\\", "\t", "../../etc/passwd", "1970-01-01", "2099-13-45T25:61:61", "-86400",
])
FIELD = st.one_of(NASTY, st.integers(-(2**70), 2**70).map(str), st.floats(allow_nan=True).map(str),
                  st.text(max_size=8))


def _assert_imports_or_one_line(write: Any, fmt: str, name: str = "fuzz") -> None:
    """Write the input with `write(folder) -> path`, import it, check the three promises."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inbox, data = root / "in", root / "data"
        inbox.mkdir()
        work = root / "cwd"  # the working directory, which must stay empty
        work.mkdir()
        path = write(inbox)
        before = sorted((p, p.stat().st_size) for p in inbox.rglob("*"))
        old_cwd = os.getcwd()
        os.chdir(work)
        try:
            preprocess_files(path, fmt, name, data_dir=data)
        except SbrError as exc:
            assert "\n" not in str(exc).strip() and str(exc).strip(), repr(exc)
        finally:
            os.chdir(old_cwd)
        assert sorted((p, p.stat().st_size) for p in inbox.rglob("*")) == before  # the input is untouched
        assert sorted(os.listdir(root)) in (["cwd", "in"], ["cwd", "data", "in"])  # nothing beside the data dir
        assert os.listdir(work) == []
        if data.exists():
            assert all(p.resolve().is_relative_to(data.resolve()) for p in data.rglob("*"))


def _rows(header: list[str], rows: list[list[str]], sep: str, newline: str, bom: bool) -> str:
    text = newline.join(sep.join(r) for r in [header, *rows]) + newline
    return ("\ufeff" if bom else "") + text


HEADERS = st.sampled_from([["session", "item", "time"], ["session_id", "item_id", "timestamp"],
                           ["session", "item", "time", "session"], ["item", "session"], [], ["a"]])


@FUZZ
@given(header=HEADERS, rows=st.lists(st.lists(FIELD, min_size=0, max_size=4), max_size=30),
       newline=st.sampled_from(["\n", "\r\n", "\r"]), bom=st.booleans(), dup_header=st.booleans())
def test_csv_click_logs(header: list[str], rows: list[list[str]], newline: str, bom: bool, dup_header: bool) -> None:
    def write(folder: Path) -> Path:
        body = rows + ([header] if dup_header else [])
        p = folder / "clicks.csv"
        p.write_text(_rows(header, body, ",", newline, bom), encoding="utf-8", newline="")
        return p

    _assert_imports_or_one_line(write, "csv")


@FUZZ
@given(ids=st.lists(st.tuples(st.integers(0, 40), st.integers(-3, 60), st.integers(-(10**10), 10**10)), max_size=60),
       newline=st.sampled_from(["\n", "\r\n"]), bom=st.booleans())
def test_csv_click_logs_of_plausible_shape(ids: list[tuple[int, int, int]], newline: str, bom: bool) -> None:
    """Well-formed rows with hostile values (negative times, ids of 0, tiny sessions) reach the protocol."""
    def write(folder: Path) -> Path:
        p = folder / "clicks.csv"
        p.write_text(_rows(["session", "item", "time"], [[str(s), str(i), str(t)] for s, i, t in ids], ",",
                           newline, bom), encoding="utf-8", newline="")
        return p

    _assert_imports_or_one_line(write, "csv")


LINE = st.lists(FIELD, max_size=6).map(" ".join)


@FUZZ
@given(lines=st.lists(st.one_of(LINE, st.lists(st.integers(-5, 10**12).map(str), max_size=8).map(" ".join)),
                      max_size=30), newline=st.sampled_from(["\n", "\r\n"]), bom=st.booleans(),
       raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_user_sequences(lines: list[str], newline: str, bom: bool, raw: bytes | None) -> None:
    def write(folder: Path) -> Path:
        p = folder / "seqs.txt"
        if raw is not None:
            p.write_bytes(raw)
        else:
            p.write_text(("\ufeff" if bom else "") + newline.join(lines), encoding="utf-8", newline="")
        return p

    _assert_imports_or_one_line(write, "sequences")


INTER_HEADERS = st.sampled_from([
    ["user_id:token", "item_id:token", "timestamp:float"], ["user_id:token", "item_id:token"],
    ["user_id:token", "item_id_list:token_seq", "item_id:token"], ["item_id:token"], ["user_id:token"] * 2])


@FUZZ
@given(header=INTER_HEADERS, rows=st.lists(st.lists(FIELD, min_size=1, max_size=4), max_size=30),
       split=st.booleans(), index=st.one_of(st.none(), st.lists(st.tuples(FIELD, FIELD), max_size=8)),
       newline=st.sampled_from(["\n", "\r\n"]), bom=st.booleans())
def test_recbole_atomic_files(header: list[str], rows: list[list[str]], split: bool,
                              index: list[tuple[str, str]] | None, newline: str, bom: bool) -> None:
    def write(folder: Path) -> Path:
        text = ("\ufeff" if bom else "") + newline.join("\t".join(r) for r in [header, *rows]) + newline
        names = ["d.train.inter", "d.valid.inter", "d.test.inter"] if split else ["d.inter"]
        for n in names:
            (folder / n).write_text(text, encoding="utf-8", newline="")
        if index is not None:
            (folder / "d.item2index").write_text("\n".join(f"{k}\t{v}" for k, v in index), encoding="utf-8")
        return folder

    _assert_imports_or_one_line(write, "recbole")


@FUZZ
@given(rows=st.lists(st.tuples(st.integers(0, 30), st.integers(-2, 40), FIELD), max_size=40),
       index=st.booleans(), bom=st.booleans())
def test_recbole_atomic_files_of_plausible_shape(rows: list[tuple[int, int, str]], index: bool, bom: bool) -> None:
    """Well-formed rows (the header's width, token ids) with hostile timestamps reach the reader's
    number parsing and the protocol."""
    def write(folder: Path) -> Path:
        lines = ["user_id:token\titem_id:token\ttimestamp:float"] + [f"u{u}\ti{i}\t{t}" for u, i, t in rows]
        (folder / "d.inter").write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
        if index:
            (folder / "d.item2index").write_text("".join(f"i{i}\t{i}\n" for i in range(-2, 41)), encoding="utf-8")
        return folder

    _assert_imports_or_one_line(write, "recbole")


PICKLABLE = st.recursive(
    st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=4), st.none(),
              st.booleans()),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.tuples(inner, inner), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=25,
)
SESSIONS = st.lists(st.lists(st.integers(-2, 2**40), max_size=6), max_size=12)


@FUZZ
@given(train=st.one_of(PICKLABLE, st.tuples(SESSIONS, st.lists(st.integers(-2, 2**40), max_size=12))),
       test=st.one_of(PICKLABLE, st.tuples(SESSIONS, st.lists(st.integers(-2, 2**40), max_size=12))),
       all_seq=st.one_of(st.none(), SESSIONS, PICKLABLE), protocol=st.integers(0, 5),
       junk=st.one_of(st.none(), st.binary(max_size=40)))
def test_srgnn_pickles(train: Any, test: Any, all_seq: Any, protocol: int, junk: bytes | None) -> None:
    def write(folder: Path) -> Path:
        (folder / "train.txt").write_bytes(pickle.dumps(train, protocol=protocol))
        (folder / "test.txt").write_bytes(junk if junk is not None else pickle.dumps(test, protocol=protocol))
        if all_seq is not None:
            (folder / "all_train_seq.txt").write_bytes(pickle.dumps(all_seq, protocol=protocol))
        return folder

    _assert_imports_or_one_line(write, "srgnn")


def test_a_hostile_pickle_runs_no_code_and_is_one_line(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    def write(folder: Path) -> Path:
        (folder / "train.txt").write_bytes(pickle.dumps(([[1, 2]], [3])))
        (folder / "test.txt").write_bytes(pickle.dumps(Boom()))
        return folder

    _assert_imports_or_one_line(write, "srgnn")
    assert not (tmp_path / "pwned").exists()


def test_inputs_the_long_fuzz_found() -> None:
    """Regressions the fuzzers found: a pickle whose refusal message spanned two lines; and from
    `SBRBENCH_FUZZ_LONG=1`, a 4-tuple of ints (not the CCGNN layout), a dataset
    whose audit finds an undefined rank correlation, and sparse huge item ids (a catalogue of 2**40
    items: memory exhausted) each import or are one line, at once."""
    def pickles(train: Any, test: Any) -> Any:
        def write(folder: Path) -> Path:
            (folder / "train.txt").write_bytes(pickle.dumps(train))
            (folder / "test.txt").write_bytes(pickle.dumps(test))
            return folder
        return write

    _assert_imports_or_one_line(pickles([0, 0, 0, 0], ([[1]], [2])), "srgnn")

    def persistent_id(folder: Path) -> Path:  # pickle's own message for opcode `P` spans two lines
        (folder / "train.txt").write_bytes(pickle.dumps(([], [])))
        (folder / "test.txt").write_bytes(b"P")
        return folder

    _assert_imports_or_one_line(persistent_id, "srgnn")

    def constant_times(folder: Path) -> Path:  # every timestamp inf: the audit's Spearman is undefined
        rows = "".join(f"u0\ti{i}\tinf\n" for i in (0, 0, 1))
        (folder / "d.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + rows, encoding="utf-8")
        return folder

    _assert_imports_or_one_line(constant_times, "recbole")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pickles(([[1, 2**40], [3]], [2, 2**40]), ([[2**40]], [1]))(folder)
        try:
            preprocess_files(folder, "srgnn", "fuzz", data_dir=folder / "data")
        except SbrError as exc:
            assert "densely" in str(exc) and "\n" not in str(exc)
        else:
            raise AssertionError("sparse huge item ids were imported")
