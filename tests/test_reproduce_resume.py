"""Long table runs survive interruptions: finished rows are reused, interrupted rows resumed."""

from __future__ import annotations

import itertools
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sbrbench.data.dataset import ProcessedDataset, augment_all_prefixes, from_sequences
from sbrbench.errors import SbrError
from sbrbench.results import RunDir
from sbrbench.reproduce import TABLES, Budget, TableSpec, reproduce, reproduce_status
from sbrbench.train import TrainingCallback, TrainingInterrupted


@pytest.fixture
def tiny_table(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    rng = np.random.default_rng(2)
    sessions = [[(s + k) % 40 + 1 for k in range(int(rng.integers(2, 7)))] for s in rng.integers(0, 40, 160)]
    items, offsets, n_items = from_sequences("reptoy", "t", sessions)
    idx = np.arange(160)
    splits = {"train": augment_all_prefixes(offsets, idx[:120]), "valid": augment_all_prefixes(offsets, idx[120:140]),
              "test": augment_all_prefixes(offsets, idx[140:])}
    data = tmp_path / "data"
    ProcessedDataset("reptoy", "t", n_items, items, offsets, splits).save(data / "processed" / "reptoy" / "t")
    spec = TableSpec(key="test-resume", paper_table="srgnn-table2", models=("spop", "srgnn"),
                     datasets=("reptoy",), protocol="t", budgets={"tiny": Budget("tiny", epochs=3)})
    TABLES.register(spec.key)(spec)
    try:
        yield spec.key, data
    finally:
        TABLES.unregister(spec.key)


class _TermAfterFirstEpoch(TrainingCallback):
    def on_epoch_end(self, epoch: int, row: dict) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


def _runs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("runs/*/*/*/config.json"))


def test_a_killed_table_run_resumes_to_the_uninterrupted_numbers(tiny_table, tmp_path: Path, monkeypatch) -> None:
    table, data = tiny_table
    monkeypatch.setattr("sbrbench.models.srgnn.SRGNNParams.dim", 8)
    full = reproduce(table, budget="tiny", data_dir=data, results_dir=tmp_path / "full")
    part = tmp_path / "part"
    with pytest.raises(TrainingInterrupted):
        reproduce(table, budget="tiny", data_dir=data, results_dir=part, callback=_TermAfterFirstEpoch())
    status = {r["row"]: r for r in reproduce_status(table, budget="tiny", results_dir=part)}
    assert status["spop"]["status"] == "done"
    assert status["srgnn"]["status"] == "interrupted" and status["srgnn"]["epochs_done"] == 1
    assert status["srgnn"]["epochs"] == 3 and status["srgnn"]["eta_seconds"] is not None
    before = _runs(part)
    resumed = reproduce(table, budget="tiny", data_dir=data, results_dir=part)
    assert _runs(part) == before  # the spop row was reused, the srgnn row resumed in place
    assert [r["ours"] for r in resumed["rows"]] == [r["ours"] for r in full["rows"]]
    assert {r["status"] for r in reproduce_status(table, budget="tiny", results_dir=part)} == {"done"}
    again = reproduce(table, budget="tiny", data_dir=data, results_dir=part)
    assert _runs(part) == before and [r["run_dir"] for r in again["rows"]] == [r["run_dir"] for r in resumed["rows"]]
    other = {r["row"]: r for r in reproduce_status(table, budget="tiny", results_dir=part, seed=7)}
    assert {r["status"] for r in other.values()} == {"missing"}  # another seed is another row
    assert other["srgnn"]["epochs"] == 3 and other["srgnn"]["eta_estimated"]  # from seed 42's epochs
    assert other["srgnn"]["eta_from"] == "other seeds" and status["srgnn"]["eta_from"] == "its epochs"
    seconds = [float(h["seconds"]) for h in RunDir(Path(resumed["rows"][1]["run_dir"])).read_history()]
    assert other["srgnn"]["eta_seconds"] == pytest.approx(3 * sum(seconds) / len(seconds))
    assert other["spop"]["eta_seconds"] is None


class _TermInSecondEpoch(TrainingCallback):
    every = 1

    def on_batch(self, epoch: int, done: int, examples_done: int, loss: float) -> None:
        if (epoch, done) == (2, 2):
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_table_run_stopped_inside_an_epoch_resumes_from_that_batch(tiny_table, tmp_path: Path, monkeypatch) -> None:
    table, data = tiny_table
    monkeypatch.setattr("sbrbench.models.srgnn.SRGNNParams.dim", 8)
    full = reproduce(table, budget="tiny", data_dir=data, results_dir=tmp_path / "full")
    part = tmp_path / "part"
    with pytest.raises(TrainingInterrupted, match="interrupted in epoch 2 after batch 2 of"):
        reproduce(table, budget="tiny", data_dir=data, results_dir=part, callback=_TermInSecondEpoch())
    row = {r["row"]: r for r in reproduce_status(table, budget="tiny", results_dir=part)}["srgnn"]
    stopped = RunDir(Path(row["run_dir"])).read_metrics()["stopped_in_epoch"]
    assert stopped["epoch"] == 2 and stopped["batch"] == 2 and stopped["batches"] > 2
    assert row["status"] == "interrupted" and row["epochs_done"] == 1
    assert row["epoch_part_done"] == pytest.approx(2 / stopped["batches"])
    seconds = float(RunDir(Path(row["run_dir"])).read_history()[0]["seconds"])
    assert row["eta_seconds"] == pytest.approx(seconds * (3 - 1 - 2 / stopped["batches"]))
    env_path = RunDir(Path(row["run_dir"])).env_path
    started = json.loads(env_path.read_text())
    assert "resumes" not in started
    resumed = reproduce(table, budget="tiny", data_dir=data, results_dir=part)
    assert [r["ours"] for r in resumed["rows"]] == [r["ours"] for r in full["rows"]]
    env = json.loads(env_path.read_text())  # the start kept, the resumption's own provenance added
    assert env["start_time"] == started["start_time"] and env["git"] == started["git"] and env["end_time"]
    (again,) = env["resumes"]
    assert again["time"] and again["git"] == started["git"] and again["hostname"] == started["hostname"]
    assert again["versions"] == started["versions"] and again["command"]


def test_status_on_the_command_line_says_what_is_left(tiny_table, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from sbrbench.cli import app

    table, data = tiny_table
    monkeypatch.setattr("sbrbench.models.srgnn.SRGNNParams.dim", 8)
    monkeypatch.setenv("COLUMNS", "200")
    args = ["reproduce", table, "--budget", "tiny", "--status", "--results-dir", str(tmp_path)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "2 of 2 rows to run; no epoch time known yet" in res.output
    with pytest.raises(TrainingInterrupted):
        reproduce(table, budget="tiny", data_dir=data, results_dir=tmp_path, callback=_TermInSecondEpoch())
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "1 of 2 rows to run; ≈" in res.output and "h of training left for 1 of them" in res.output
    assert "1/3 (+" in res.output and "% of epoch 2)" in res.output
    res = CliRunner().invoke(app, [*args, "--rows", "srgnn"])
    assert res.exit_code == 0 and "1 of 1 rows to run; ≈" in res.output and "spop" not in res.output
    res = CliRunner().invoke(app, [*args, "--rows", "nosuch"])
    assert res.exit_code != 0 and str(res.exception) == f"{table} has no row 'nosuch'; it has: spop, srgnn"


def test_no_train_renders_the_finished_rows_while_another_process_trains_the_rest(
    tiny_table, tmp_path: Path, monkeypatch
) -> None:
    """`--no-train` looks at a table mid-run: finished rows in it, the running and interrupted ones named
    under `not_run`, nothing trained, resumed or refused (a plain invocation refuses a running row)."""
    from typer.testing import CliRunner

    from sbrbench.cli import app

    table, data = tiny_table
    monkeypatch.setattr("sbrbench.models.srgnn.SRGNNParams.dim", 8)
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(TrainingInterrupted):
        reproduce(table, budget="tiny", data_dir=data, results_dir=tmp_path, callback=_TermInSecondEpoch())
    before = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/**/*") if p.is_file()}
    args = ["reproduce", table, "--budget", "tiny", "--no-train", "--data-dir", str(data), "--results-dir", str(tmp_path)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/**/*") if p.is_file()} == before
    out = json.loads((tmp_path / "reproduce" / f"{table}.json").read_text())
    assert [r["model"] for r in out["rows"]] == ["spop"] and out["not_run"] == ["reptoy srgnn"]
    assert "Not in the table (not finished at this budget; `--rows` or `--no-train` left them out): reptoy srgnn" in res.output
    table_lines = [line for line in res.output.splitlines() if line.startswith("|")]
    assert len(table_lines) == 3 and all(line.endswith("|") for line in table_lines)  # unwrapped Markdown
    srgnn = RunDir(Path({r["row"]: r for r in reproduce_status(table, budget="tiny", results_dir=tmp_path)}["srgnn"]["run_dir"]))
    srgnn.mark_running()  # as if another process trained it now
    assert CliRunner().invoke(app, args).exit_code == 0
    refused = CliRunner().invoke(app, args[:-5] + args[-4:])  # without --no-train
    assert refused.exit_code != 0 and "is being trained by another process" in str(refused.exception)


def test_a_table_whose_datasets_are_all_unprocessed_is_a_one_line_error_and_writes_nothing(
    tiny_table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_evaluate import _cli

    table, _ = tiny_table
    p = _cli("reproduce", table, "--budget", "tiny", "--data-dir", str(tmp_path / "empty"),
             "--results-dir", str(tmp_path / "res"), capsys=capsys)
    assert p.returncode == 1 and p.stderr.count("\n") == 1
    assert p.stderr.startswith("error: nothing to reproduce: reptoy: dataset reptoy (protocol t) is not processed yet")
    assert not (tmp_path / "res" / "reproduce").exists()
    spec = TableSpec(key="test-two-missing", paper_table="srgnn-table2", models=("spop",),
                     datasets=("reptoy", "reptoy2"), protocol="t", budgets={"tiny": Budget("tiny", epochs=1)})
    TABLES.register(spec.key)(spec)
    try:
        with pytest.raises(SbrError, match=r"nothing to reproduce: reptoy: .*; reptoy2: dataset reptoy2"):
            reproduce(spec.key, budget="tiny", data_dir=tmp_path / "empty", results_dir=tmp_path / "res")
    finally:
        TABLES.unregister(spec.key)


def test_a_row_another_table_already_trained_identically_is_reused_not_retrained(
    tiny_table, tmp_path: Path, monkeypatch
) -> None:
    """Same model, settings, data, protocol, seed and selection: one record serves both tables; a
    different setting (another table's budget override) or protocol trains its own."""
    from dataclasses import replace

    table, data = tiny_table
    monkeypatch.setattr("sbrbench.models.srgnn.SRGNNParams.dim", 8)
    first = reproduce(table, budget="tiny", data_dir=data, results_dir=tmp_path)
    spec = TABLES.get(table)
    twins = {
        "test-twin": replace(spec, key="test-twin", models=("srgnn", "spop")),
        "test-lr": replace(spec, key="test-lr", budget_overrides={"tiny": {"srgnn": {"lr": 0.01}}}),
        "test-proto": replace(spec, key="test-proto", protocol="u"),
    }
    for key, twin in twins.items():
        TABLES.register(key)(twin)
    try:
        started: list[str] = []

        class Starts(TrainingCallback):
            def on_start(self, info) -> None:  # type: ignore[no-untyped-def]
                started.append(info.model)

        runs = {r["model"]: r["run_dir"] for r in first["rows"]}
        twin = reproduce("test-twin", budget="tiny", data_dir=data, results_dir=tmp_path, callback=Starts())
        assert started == [] and {r["model"]: r["run_dir"] for r in twin["rows"]} == runs
        assert {r["model"]: r["ours"] for r in twin["rows"]} == {r["model"]: r["ours"] for r in first["rows"]}
        status = {r["row"]: r for r in reproduce_status("test-twin", budget="tiny", results_dir=tmp_path)}
        assert {r["status"] for r in status.values()} == {"done"} and status["srgnn"]["run_dir"] == runs["srgnn"]
        other = reproduce("test-lr", budget="tiny", data_dir=data, results_dir=tmp_path, callback=Starts())
        assert started == ["srgnn"]  # S-POP is the same row; SR-GNN at another learning rate is not
        got = {r["model"]: r["run_dir"] for r in other["rows"]}
        assert got["spop"] == runs["spop"] and got["srgnn"] != runs["srgnn"]
        proto = {r["row"]: r["status"] for r in reproduce_status("test-proto", budget="tiny", results_dir=tmp_path)}
        assert proto == {"spop": "missing", "srgnn": "missing"}  # another protocol is other data
    finally:
        for key in twins:
            TABLES.unregister(key)



class _StatusInFirstEpoch(TrainingCallback):
    """Asks `reproduce --status` where the table stands while its srgnn row is in batch 3 of epoch 1."""

    every = 1

    def __init__(self, table: str, root: Path) -> None:
        self.table, self.root = table, root
        self.seen: dict = {}
        self.mark: dict | None = None

    def on_batch(self, epoch: int, done: int, examples_done: int, loss: float) -> None:
        if (epoch, done) == (1, 3):
            self.seen = {r["row"]: r for r in reproduce_status(self.table, budget="tiny", results_dir=self.root)}
            self.mark = RunDir(Path(self.seen["srgnn"]["run_dir"])).running_mark()


def test_status_projects_the_eta_of_a_row_in_its_first_epoch(tiny_table, tmp_path: Path, monkeypatch) -> None:
    """A running row's heartbeat and an interrupted row's stop record say how far its first epoch is."""
    table, data = tiny_table
    monkeypatch.setattr("sbrbench.models.srgnn.SRGNNParams.dim", 8)
    monkeypatch.setattr("sbrbench.train.loop.Trainer.heartbeat_seconds", 0.0)
    cb = _StatusInFirstEpoch(table, tmp_path / "live")
    reproduce(table, budget="tiny", data_dir=data, results_dir=tmp_path / "live", callback=cb)
    row, beat = cb.seen["srgnn"], (cb.mark or {}).get("progress")
    assert row["status"] == "running" and row["epochs_done"] == 0 and beat is not None
    assert (beat["epoch"], beat["batch"]) == (1, 2)  # the beat after batch 2; batch 3 is being reported
    part = 2 / beat["batches"]
    assert row["epoch_part_done"] == pytest.approx(part) and row["eta_estimated"]
    assert row["eta_from"] == "part of its first epoch"
    assert row["eta_seconds"] == pytest.approx(beat["seconds"] / part * (3 - part))
    assert not (Path(row["run_dir"]) / "running.json").exists()  # cleared when the run ends

    class _TermInFirstEpoch(_TermInSecondEpoch):
        def on_batch(self, epoch: int, done: int, examples_done: int, loss: float) -> None:
            if (epoch, done) == (1, 2):
                os.kill(os.getpid(), signal.SIGTERM)

    stopped_root = tmp_path / "stopped"
    with pytest.raises(TrainingInterrupted, match="interrupted in epoch 1 after batch 2 of"):
        reproduce(table, budget="tiny", data_dir=data, results_dir=stopped_root, callback=_TermInFirstEpoch())
    row = {r["row"]: r for r in reproduce_status(table, budget="tiny", results_dir=stopped_root)}["srgnn"]
    run = RunDir(Path(row["run_dir"]))
    rec = run.read_metrics()
    at = rec["stopped_in_epoch"]
    part = 2 / at["batches"]
    assert row["status"] == "interrupted" and row["eta_estimated"] and at["seconds"] > 0
    assert row["eta_seconds"] == pytest.approx(at["seconds"] / part * (3 - part))
    del rec["stopped_in_epoch"]["seconds"]  # a record written before stops carried their seconds
    run.metrics_path.write_text(json.dumps(rec))
    row = {r["row"]: r for r in reproduce_status(table, budget="tiny", results_dir=stopped_root)}["srgnn"]
    assert row["eta_seconds"] == pytest.approx(rec["train_seconds"] / part * (3 - part))


def test_a_heartbeat_that_cannot_be_written_does_not_stop_training(tiny_table, tmp_path: Path, monkeypatch) -> None:
    table, data = tiny_table
    monkeypatch.setattr("sbrbench.models.srgnn.SRGNNParams.dim", 8)
    monkeypatch.setattr("sbrbench.train.loop.Trainer.heartbeat_seconds", 0.0)
    beats: list[dict] = []
    real = RunDir.mark_running

    def full_disk(self: RunDir, progress: dict | None = None) -> None:
        if progress is not None:
            beats.append(progress)
            raise OSError(28, "No space left on device")
        real(self, progress)

    monkeypatch.setattr(RunDir, "mark_running", full_disk)
    out = reproduce(table, budget="tiny", data_dir=data, results_dir=tmp_path)
    assert beats and {r["model"] for r in out["rows"]} == {"spop", "srgnn"}
    assert all(r["ours"]["MRR@20"] is not None for r in out["rows"])


def test_the_first_heartbeat_comes_after_the_first_batch(tiny_table, tmp_path: Path, monkeypatch) -> None:
    """`--status` places a freshly started (or resumed) row at once, not a heartbeat interval later."""
    table, data = tiny_table
    monkeypatch.setattr("sbrbench.models.srgnn.SRGNNParams.dim", 8)
    monkeypatch.setattr("sbrbench.train.loop.Trainer.heartbeat_seconds", 3600.0)
    beats: list[dict] = []
    since: dict[str, set[str]] = {}
    real = RunDir.mark_running

    def recorded(self: RunDir, progress: dict | None = None) -> None:
        if progress is not None:
            beats.append(progress)
        real(self, progress)
        since.setdefault(self.path.parent.name, set()).add((self.running_mark() or {})["since"])

    monkeypatch.setattr(RunDir, "mark_running", recorded)
    clock = itertools.count()
    monkeypatch.setattr("sbrbench.results.time.strftime", lambda fmt, t=None: f"t{next(clock)}")  # never equal
    reproduce(table, budget="tiny", data_dir=data, results_dir=tmp_path)
    assert [(b["epoch"], b["batch"]) for b in beats] == [(e, 1) for e in range(1, 4)]  # one per epoch, at batch 1
    assert {len(s) for s in since.values()} == {1}  # each run's `since` is kept across its beats
