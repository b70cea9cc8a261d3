"""Two processes at once: the same download, the same training run, a leaderboard during training."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sbrbench.data.registry import get_dataset
from sbrbench.leaderboard import build_leaderboard
from sbrbench.results import RunDir
from toy_data import random_sessions, split_dataset

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "fault_driver.py"


def _spawn(*args: str, fault: dict | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    env.pop("SBRBENCH_FAULT", None)
    if fault is not None:
        env["SBRBENCH_FAULT"] = json.dumps(fault)
    return subprocess.Popen([sys.executable, str(DRIVER), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _complete_runs(results: Path) -> int:
    """How many runs under `results` have a complete record (read after the reader under test ran:
    a run counted then must be complete by now; the process may still be exiting)."""
    n = 0
    for m in results.glob("runs/*/*/*/metrics.json"):
        try:
            n += json.loads(m.read_text())["status"] == "complete"
        except (OSError, ValueError, KeyError):
            pass
    return n


def _finish(p: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=180)
    return p.returncode, out, err


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data") / "small"
    split_dataset("small", random_sessions(150, 40, seed=2, max_len=6), (110, 130)).save(d)
    return d


def test_two_downloads_of_the_same_file_both_end_with_the_verified_file(shared_datasets: Path, tmp_path: Path) -> None:
    """Each copy is slowed half-way so that the two processes overlap; the second waits on the
    first's lock, then finds the file verified. Nothing is left beside it."""
    fspec = get_dataset("diginetica-sample").source().files[0]
    mirror = shared_datasets
    data = tmp_path / "data"
    args = ("download", "diginetica-sample", "--mirror", str(mirror), "--data-dir", str(data), "--json")
    a = _spawn(*args, fault={"slow_copy": 1.5})
    time.sleep(0.3)
    b = _spawn(*args, fault={"slow_copy": 1.5})
    results = [_finish(a), _finish(b)]
    for code, _, err in results:
        assert code == 0, err
    statuses = sorted(f["status"] for _, out, _ in results for f in json.loads(out)["files"]
                      if f["path"].endswith(fspec.path))
    assert statuses == ["cached", "downloaded"], statuses  # one fetched it; the other waited, then found it verified
    dest = data / "raw" / fspec.path
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == fspec.sha256
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted([dest.name, f".{dest.name}.sha256"])


def test_two_identical_trainings_at_the_same_moment_write_two_distinct_whole_runs(small: Path, tmp_path: Path) -> None:
    """Both processes see the same frozen clock, so both want the same run name (a time stamp to the
    second): only the exclusive claim keeps them apart, however the two are scheduled."""
    args = ("train", "srgnn", str(small), "--seed", "5", "--threads", "1", "--results-dir", str(tmp_path),
            "--epochs", "2", "--set", "dim=8", "--batch-size", "16", "--json")
    clock = {"clock": 1_700_000_000}
    procs = [_spawn(*args, fault=clock), _spawn(*args, fault=clock)]
    outs = [_finish(p) for p in procs]
    for code, _, err in outs:
        assert code == 0, err
    recs = [json.loads(out) for _, out, _ in outs]
    dirs = {r["run_dir"] for r in recs}
    assert len(dirs) == 2 and dirs == {str(p) for p in tmp_path.glob("runs/small/srgnn/*")}
    assert sorted(Path(d).name for d in dirs) == ["20231114-221320-s5", "20231114-221320-s5-1"]  # the same second
    assert recs[0]["test"] == recs[1]["test"]
    for r in recs:
        run = RunDir(r["run_dir"])
        assert run.status() == "complete" and not list(run.path.rglob(".*.part"))
        again = run.metrics_from_ranks("test", (20,))["metrics"]  # its own ranks, not the other's
        assert again["MRR@20"] == pytest.approx(r["test"]["MRR@20"], abs=1e-9)
        env = json.loads(run.env_path.read_text())
        assert env["seed"] == 5 and str(run.path) in r["run_dir"]


def test_the_leaderboard_while_runs_are_written_skips_them_and_says_so(small: Path, tmp_path: Path) -> None:
    args = ("train", "srgnn", str(small), "--seed", "1", "--threads", "1", "--results-dir", str(tmp_path),
            "--epochs", "6", "--set", "dim=8", "--batch-size", "16")
    p = _spawn(*args)
    seen: set[str] = set()
    polls = 0
    while p.poll() is None:
        lb = build_leaderboard(tmp_path)  # must never raise while files appear under it
        polls += 1
        assert lb.n_runs <= _complete_runs(tmp_path)  # never a run still being written
        seen.update(s["reason"].split(" (")[0] for s in lb.skipped)
        cli = subprocess.run([sys.executable, "-m", "sbrbench", "leaderboard", "--results-dir", str(tmp_path)],
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0 and "Traceback" not in cli.stderr, cli.stderr
        if lb.skipped:
            assert "skipped" in cli.stdout or _complete_runs(tmp_path), cli.stdout  # said, unless it finished meanwhile
    code, _, err = _finish(p)
    assert code == 0, err
    assert polls >= 2 and seen, (polls, seen)
    lb = build_leaderboard(tmp_path)
    assert lb.n_runs == 1 and lb.skipped == []


def test_the_report_while_a_run_is_written_skips_it_and_says_so(small: Path, tmp_path: Path) -> None:
    """`sbrbench report` (and `build_report` behind it) polled while a training run writes its files:
    never a crash; the run being written is skipped, and the page and the command line say so."""
    from sbrbench.report import build_report, write_report

    args = ("train", "srgnn", str(small), "--seed", "2", "--threads", "1", "--results-dir", str(tmp_path),
            "--epochs", "6", "--set", "dim=8", "--batch-size", "16")
    p = _spawn(*args)
    seen: set[str] = set()
    polls = cli_polls = 0
    while p.poll() is None:
        data = build_report(tmp_path)  # must never raise while files appear under it
        polls += 1
        assert data["counts"]["runs"] <= _complete_runs(tmp_path)
        seen.update(s["reason"].split(" (")[0] for s in data["skipped"])
        res = write_report(tmp_path, tmp_path / "page.html")
        page = (tmp_path / "page.html").read_text(encoding="utf-8")
        if res["skipped"]:
            assert "skipped (incomplete or unreadable)" in page
        if cli_polls < 2 and data["skipped"]:
            cli = subprocess.run([sys.executable, "-m", "sbrbench", "report", "--results-dir", str(tmp_path), "--out",
                                  str(tmp_path / "cli.html")], env={**os.environ, "OMP_NUM_THREADS": "1"},
                                 capture_output=True, text=True, timeout=120)
            cli_polls += 1
            assert cli.returncode == 0 and "Traceback" not in cli.stderr, cli.stderr
            assert "skipped" in cli.stdout or _complete_runs(tmp_path), cli.stdout
    code, _, err = _finish(p)
    assert code == 0, err
    assert polls >= 2 and cli_polls >= 1 and seen, (polls, cli_polls, seen)
    data = build_report(tmp_path)
    assert data["counts"] == {"runs": 1, "skipped": 0}
