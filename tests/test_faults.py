"""Faults survived, nothing lost: SIGKILL at chosen and random points, damaged files, a full disk.

Every kill is real: `tests/fault_driver.py` runs the `sbrbench` command line in a child process
that SIGKILLs itself in the middle of writing a named file (half its bytes on disk) or right after
it. The run is then resumed and must end with the numbers of an uninterrupted run; no file is ever
read back half-written. See RELIABILITY.md for the list of guarantees.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sbrbench.cli import main as cli_main
from sbrbench.data.dataset import ProcessedDataset
from sbrbench.errors import DataError, DiskFullError, SbrError
from sbrbench.results import RunDir
from sbrbench.train import train
from toy_data import chain_sessions, split_dataset

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "fault_driver.py"
SMALL = {"dim": 8, "epochs": 3, "batch_size": 16, "eval_batch_size": 64, "lr": 0.01}
SEED = 3


def _child_env(fault: dict | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    env.pop("SBRBENCH_FAULT", None)
    if fault is not None:
        env["SBRBENCH_FAULT"] = json.dumps(fault)
    return env


def sbrbench(*args: str, fault: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The command line in a child process, with `fault` injected (see tests/fault_driver.py)."""
    return subprocess.run([sys.executable, str(DRIVER), *args], env=_child_env(fault), capture_output=True,
                          text=True, timeout=timeout)


def _train_args(data: Path, results: Path) -> list[str]:
    sets = [a for k, v in SMALL.items() for a in ("--set", f"{k}={v}")]
    return ["train", "srgnn", str(data), "--seed", str(SEED), "--threads", "1", "--results-dir", str(results), *sets]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data") / "small"
    split_dataset("small", chain_sessions(150, 40, seed=1, max_len=6), (110, 130)).save(d)
    return d


@pytest.fixture(scope="module")
def reference(small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted run, in this process."""
    return train("srgnn", small, results_dir=tmp_path_factory.mktemp("ref"), overrides=SMALL, seed=SEED, threads=1)


def _only_run(results: Path) -> Path:
    runs = list(results.glob("runs/*/srgnn/*"))
    assert len(runs) == 1, runs
    return runs[0]


def _assert_nothing_half_written(run: Path) -> None:
    """Every visible file of a run directory reads back whole (temporaries are hidden `.*.part`)."""
    for f in run.rglob("*"):
        if not f.is_file() or f.name.startswith("."):
            continue
        if f.suffix == ".json":
            json.loads(f.read_text())
        elif f.suffix == ".safetensors":
            load_file(str(f))
        elif f.suffix == ".npy":
            np.load(f, allow_pickle=False)
        elif f.suffix == ".pt":
            torch.load(f, weights_only=True)


def _assert_same_as_reference(run: Path, record: dict, reference: dict) -> None:
    assert record["status"] == "complete" and record["epochs_run"] == SMALL["epochs"]
    assert record["test"] == reference["test"] and record["valid"] == reference["valid"]
    assert record["best_epoch"] == reference["best_epoch"]
    for which in ("model", "best"):
        wa = load_file(str(Path(reference["run_dir"]) / "checkpoint" / f"{which}.safetensors"))
        wb = load_file(str(run / "checkpoint" / f"{which}.safetensors"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), which
    ranks = RunDir(run).load_ranks("test")
    assert np.array_equal(ranks, RunDir(reference["run_dir"]).load_ranks("test"))


# (file, nth write, when, epochs the last complete checkpoint holds after the kill)
KILL_POINTS = [
    ("state.pt", 2, "half", 1),                    # mid-checkpoint: the state of epoch 2 half on disk
    ("model.pending.safetensors", 2, "half", 1),   # mid-checkpoint: epoch 2's weights half on disk
    ("model.pending.safetensors", 2, "after", 1),  # epoch 2's weights written, its state not yet
    ("state.pt", 2, "after", 2),                   # epoch 2 committed, its weights not yet in place
    ("best.safetensors", 1, "half", 1),            # epoch 1 committed, its selected weights half on disk
    ("history.csv", 2, "half", 2),                 # the run record, mid-write
    ("test.npy", 1, "half", 3),                    # during the final evaluation
    ("metrics.json", 1, "half", 3),                # the final record, mid-write
]


@pytest.mark.parametrize(("name", "nth", "when", "epochs_kept"), KILL_POINTS,
                         ids=[f"{n}-{k}-{w}" for n, k, w, _ in KILL_POINTS])
def test_sigkill_while_writing_then_resume_gives_the_uninterrupted_numbers(
    small: Path, reference: dict, tmp_path: Path, name: str, nth: int, when: str, epochs_kept: int
) -> None:
    p = sbrbench(*_train_args(small, tmp_path), fault={"file": name, "nth": nth, "when": when})
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    run = _only_run(tmp_path)
    _assert_nothing_half_written(run)
    state = RunDir(run).load_state()
    assert state is not None and state["epoch"] == epochs_kept
    metrics = run / "metrics.json"
    assert not metrics.exists() or json.loads(metrics.read_text())["status"] != "complete"
    assert RunDir(run).status() == "resumable"
    record = train(resume=run)
    _assert_same_as_reference(run, record, reference)
    assert not list(run.rglob(".*.part")) and not RunDir(run).pending_weights_path.exists()


def test_sigkill_at_random_moments_until_done_gives_the_uninterrupted_numbers(
    small: Path, reference: dict, tmp_path: Path
) -> None:
    """Kill the training process at random moments (fixed seed) and resume it until it completes.

    An uninterrupted child run first gives the time scale T (and must match the in-process
    reference); the kills land at random fractions of T: while importing, training an epoch,
    checkpointing or evaluating.
    """
    t0 = time.perf_counter()
    whole = sbrbench(*_train_args(small, tmp_path / "whole"))
    scale = time.perf_counter() - t0
    assert whole.returncode == 0, whole.stderr[-2000:]
    run = _only_run(tmp_path / "whole")
    _assert_same_as_reference(run, json.loads((run / "metrics.json").read_text()), reference)
    rng = random.Random(19)
    results = tmp_path / "killed"
    kills = 0
    for attempt in range(8):
        started = [r for r in results.glob("runs/*/srgnn/*") if (r / "config.json").is_file()]  # else: start again
        args = ["train", "--resume", str(started[0])] if started else _train_args(small, results)
        child = subprocess.Popen([sys.executable, str(DRIVER), *args], env=_child_env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        if attempt < 4:
            try:
                child.wait(timeout=scale * rng.uniform(0.5, 0.85) if attempt == 0 else scale * rng.uniform(0.2, 0.8))
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=120)
        if child.returncode == -signal.SIGKILL:
            kills += 1
            for r in results.glob("runs/*/srgnn/*"):
                _assert_nothing_half_written(r)
            continue
        assert child.returncode == 0, err[-2000:]
        break
    else:
        pytest.fail("the run never completed")
    assert kills >= 1
    run = next(r for r in results.glob("runs/*/srgnn/*") if (r / "metrics.json").is_file())
    _assert_same_as_reference(run, json.loads((run / "metrics.json").read_text()), reference)


# ---- preprocess and graph caches ---------------------------------------------------------------
def _clicks_csv(path: Path, n_sessions: int = 120, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["session,item,time"]
    t = 1_600_000_000
    for s in range(n_sessions):
        t += 6 * 3600  # a month of sessions: the srgnn protocol tests on the last week
        for _ in range(int(rng.integers(2, 6))):
            t += int(rng.integers(1, 600))
            lines.append(f"s{s},i{int(rng.integers(1, 30))},{t}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _preprocess_args(csv: Path, data: Path) -> list[str]:
    return ["preprocess", "--from", str(csv), "--format", "csv", "--name", "mini", "--protocol", "srgnn",
            "--data-dir", str(data)]


@pytest.mark.parametrize(("name", "when"), [("arrays.npz", "half"), ("manifest.json", "half"),
                                            ("manifest.json", "after")])
def test_a_killed_preprocess_leaves_no_dataset_that_looks_processed(tmp_path: Path, name: str, when: str) -> None:
    csv = _clicks_csv(tmp_path / "clicks.csv")
    data = tmp_path / "data"
    p = sbrbench(*_preprocess_args(csv, data), fault={"file": name, "nth": 1, "when": when})
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    target = data / "processed" / "mini" / "srgnn"
    assert not (target / "manifest.json").exists()  # `after`: the manifest was whole, but only in a hidden temp dir
    with pytest.raises(SbrError, match="not processed yet"):
        from sbrbench.data.store import load_processed

        load_processed("mini", "srgnn", data_dir=data)
    ok = sbrbench(*_preprocess_args(csv, data))
    assert ok.returncode == 0, ok.stderr
    ProcessedDataset.load(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["srgnn"]  # the killed run's temp dir is gone


def test_a_killed_re_preprocess_keeps_the_dataset_already_there(tmp_path: Path) -> None:
    csv = _clicks_csv(tmp_path / "clicks.csv")
    data = tmp_path / "data"
    assert sbrbench(*_preprocess_args(csv, data)).returncode == 0
    target = data / "processed" / "mini" / "srgnn"
    before = (target / "manifest.json").read_bytes()
    p = sbrbench(*_preprocess_args(_clicks_csv(tmp_path / "other.csv", seed=1), data),
                 fault={"file": "arrays.npz", "nth": 1, "when": "half"})
    assert p.returncode == -signal.SIGKILL
    assert (target / "manifest.json").read_bytes() == before
    ProcessedDataset.load(target)


@pytest.mark.parametrize("then", ["load", "preprocess"])
def test_a_kill_between_the_two_renames_of_a_re_preprocess_restores_the_old_dataset(tmp_path: Path, then: str) -> None:
    """The swap moves the old dataset aside, then the new one in: killed in between, no dataset is in
    place; the next load (or preprocess) puts the old one back instead of discarding it."""
    csv = _clicks_csv(tmp_path / "clicks.csv")
    data = tmp_path / "data"
    assert sbrbench(*_preprocess_args(csv, data)).returncode == 0
    target = data / "processed" / "mini" / "srgnn"
    before = {f.name: f.read_bytes() for f in target.iterdir()}
    p = sbrbench(*_preprocess_args(_clicks_csv(tmp_path / "other.csv", seed=1), data),
                 fault={"replace": ".srgnn.old-*"})
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert not target.exists()  # killed between the renames: the old copy is aside, the new one not in place
    assert any(f.name.startswith(".srgnn.old-") for f in target.parent.iterdir())
    if then == "load":
        from sbrbench.data.store import load_processed

        ds, where = load_processed("mini", "srgnn", data_dir=data)
        assert where == target and {f.name: f.read_bytes() for f in target.iterdir()} == before
        code = subprocess.run([sys.executable, str(DRIVER), "audit", "mini", "--protocol", "srgnn", "--data-dir",
                               str(data)], env=_child_env(), capture_output=True, text=True, timeout=120).returncode
        assert code == 0
    else:  # a preprocess that fails before writing anything still leaves the old dataset in place
        bad = tmp_path / "bad.csv"
        bad.write_text("session,item,time\n")
        again = sbrbench(*_preprocess_args(bad, data))
        assert again.returncode != 0 and "Traceback" not in again.stderr, again.stderr[-2000:]
        assert {f.name: f.read_bytes() for f in target.iterdir()} == before
        ok = sbrbench(*_preprocess_args(_clicks_csv(tmp_path / "other.csv", seed=1), data))
        assert ok.returncode == 0, ok.stderr[-2000:]
        assert (target / "manifest.json").read_bytes() != before["manifest.json"]
        assert sorted(f.name for f in target.parent.iterdir()) == ["srgnn"]  # the killed run's leftovers are gone
    ProcessedDataset.load(target)


@pytest.mark.parametrize("when", ["half", "after"])
def test_a_killed_graph_cache_write_is_never_read_as_a_graph(small: Path, tmp_path: Path, when: str) -> None:
    from sbrbench.graphs import dataset_graph

    data = tmp_path / "small"
    shutil.copytree(small, data)
    ds = ProcessedDataset.load(data)
    cache = data / "graphs"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import fault_driver, json, os; "
            "fault_driver._install(json.loads(os.environ['SBRBENCH_FAULT'])); "
            "from sbrbench.data.dataset import ProcessedDataset; from sbrbench.graphs import dataset_graph; "
            "dataset_graph('global', ProcessedDataset.load(sys.argv[2]), ('train',), sys.argv[3], eps=12)")
    probe = dataset_graph("global", ds, ("train",), tmp_path / "learn", eps=12)  # also tells the cache's file name
    fault = {"file": next((tmp_path / "learn").iterdir()).name, "nth": 1, "when": when}
    p = subprocess.run([sys.executable, "-c", code, str(REPO / "tests"), str(data), str(cache)],
                       env=_child_env(fault), capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    visible = [f for f in cache.iterdir() if not f.name.startswith(".")] if cache.is_dir() else []
    assert visible == ([cache / fault["file"]] if when == "after" else [])
    again = dataset_graph("global", ds, ("train",), cache, eps=12)
    assert np.array_equal(again.neighbors, probe.neighbors) and np.array_equal(again.weights, probe.weights)


# ---- integrity on load: damage is one line naming the file and the command that rebuilds it -----
def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        cli_main(list(args))
    err = capsys.readouterr().err.strip()
    return int(info.value.code or 0), err


def _processed(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    from sbrbench.data.preprocess import preprocess_files

    preprocess_files(_clicks_csv(tmp_path / "clicks.csv"), "csv", "mini", "srgnn", data_dir=data)
    return data, data / "processed" / "mini" / "srgnn"


@pytest.mark.parametrize("damage", ["truncate", "flip", "remove-items", "alter-items"])
def test_a_damaged_processed_dataset_is_one_line_naming_the_file_and_the_rebuild_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    data, target = _processed(tmp_path)
    arrays = target / "arrays.npz"
    if damage == "truncate":
        arrays.write_bytes(arrays.read_bytes()[: arrays.stat().st_size // 2])
        victim = arrays
    elif damage == "flip":
        raw = bytearray(arrays.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        arrays.write_bytes(bytes(raw))
        victim = arrays
    elif damage == "remove-items":
        victim = target / "items.json"
        victim.unlink()
    else:  # two item keys swapped: still valid JSON of the same size; only the sha256 tells
        victim = target / "items.json"
        meta = json.loads(victim.read_text(encoding="utf-8"))
        size = victim.stat().st_size
        k = next(i for i in range(1, len(meta["keys"]) - 1) if meta["keys"][i] != meta["keys"][i + 1])
        meta["keys"][k], meta["keys"][k + 1] = meta["keys"][k + 1], meta["keys"][k]
        victim.write_text(json.dumps(meta), encoding="utf-8")
        assert victim.stat().st_size == size
    code, err = _cli(capsys, "audit", "mini", "--protocol", "srgnn", "--data-dir", str(data))
    assert code != 0 and err.count("\n") == 0 and err.startswith("error: damaged"), err
    assert str(victim) in err and "sbrbench preprocess --from" in err and "--name mini --protocol srgnn" in err
    assert "unexpected" not in err and "BadZipFile" not in err


def test_a_truncated_npz_without_recorded_sizes_is_still_one_line(tmp_path: Path) -> None:
    """Datasets written before sizes were pinned: the zip structure itself is the check."""
    _, target = _processed(tmp_path)
    manifest = json.loads((target / "manifest.json").read_text())
    del manifest["files"]
    (target / "manifest.json").write_text(json.dumps(manifest))
    arrays = target / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[:100])
    with pytest.raises(DataError, match=r"damaged .*arrays\.npz .*sbrbench preprocess") as info:
        ProcessedDataset.load(target)
    assert "\n" not in str(info.value)


def test_a_corrupt_graph_cache_is_rebuilt_not_read(small: Path, tmp_path: Path) -> None:
    from sbrbench.graphs import dataset_graph

    ds = ProcessedDataset.load(small)
    good = dataset_graph("global", ds, ("train",), tmp_path, eps=12)
    f = next(tmp_path.iterdir())
    for damage in (lambda b: b[: len(b) // 2], lambda b: b[:200] + bytes([b[200] ^ 0xFF]) + b[201:]):
        f.write_bytes(damage(f.read_bytes()))
        again = dataset_graph("global", ds, ("train",), tmp_path, eps=12)
        assert np.array_equal(again.neighbors, good.neighbors) and np.array_equal(again.weights, good.weights)
        with zipfile.ZipFile(f) as z:
            assert z.testzip() is None  # rebuilt in place


def test_damaged_checkpoints_and_rank_files_are_one_line_naming_them(
    reference: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference["run_dir"], run)
    code, err = _cli(capsys, "evaluate", str(run), "--split", "test")
    assert code == 0
    ranks = run / "ranks" / "test.npy"
    raw = bytearray(ranks.read_bytes())
    raw[-1] ^= 0x01  # one rank changed by one: still a valid .npy
    ranks.write_bytes(bytes(raw))
    code, err = _cli(capsys, "evaluate", str(run), "--split", "test")
    assert code != 0 and err.count("\n") == 0 and str(ranks) in err and "--recompute" in err, err
    best = run / "checkpoint" / "best.safetensors"
    raw = bytearray(best.read_bytes())
    raw[-3] ^= 0x01
    best.write_bytes(bytes(raw))
    code, err = _cli(capsys, "evaluate", str(run), "--split", "test", "--recompute")
    assert code != 0 and err.count("\n") == 0 and str(best) in err and "sbrbench train srgnn" in err, err
    best.write_bytes(bytes(raw[: len(raw) // 3]))
    code, err = _cli(capsys, "evaluate", str(run), "--split", "test", "--recompute")
    assert code != 0 and err.count("\n") == 0 and str(best) in err, err


# ---- a full disk ------------------------------------------------------------------------------
def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    return p.returncode == 0


@pytest.fixture(params=["tmpfs", "injected"])
def full_disk(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[
        tuple[Path, callable]]:
    """(a directory, fill()): after fill() every write there fails with ENOSPC.

    `tmpfs`: a real 4 MiB filesystem, filled with a ballast file (where mounting is allowed: root
    on Linux); otherwise, and always for `injected`, ENOSPC is raised by `os.fsync`, the call every
    sbrbench write ends with. Never skipped: CI proves the guarantee either way.
    """
    where = tmp_path / "disk"
    if request.param == "tmpfs" and _mount_tmpfs(where, "4m"):
        def fill() -> None:
            with open(where / "ballast", "wb") as fh:
                with pytest.raises(OSError) as info:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
                assert info.value.errno == errno.ENOSPC
        try:
            yield where, fill
        finally:
            subprocess.run(["umount", "-l", str(where)], check=False)
        return
    where.mkdir(exist_ok=True)

    def fill_injected() -> None:
        def no_space(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", no_space)

    yield where, fill_injected


def test_a_full_disk_is_one_line_and_damages_nothing_already_there(
    full_disk: tuple[Path, callable], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where, fill = full_disk
    data = where / "data"
    csv = _clicks_csv(tmp_path / "clicks.csv")
    args = _preprocess_args(csv, data)[:-2] + ["--data-dir", str(data)]
    code, _ = _cli(capsys, *args)
    assert code == 0
    target = data / "processed" / "mini" / "srgnn"
    before = {f.name: f.read_bytes() for f in target.iterdir()}
    record = where / "record.json"
    from sbrbench.io import atomic_write_json

    atomic_write_json(record, {"kept": True})
    fill()
    code, err = _cli(capsys, *_preprocess_args(_clicks_csv(tmp_path / "other.csv", seed=1), data))
    assert code != 0 and err.count("\n") == 0 and "no space left" in err and str(target) in err, err
    with pytest.raises(DiskFullError, match="no space left on the device writing .*record.json"):
        atomic_write_json(record, {"kept": False, "pad": "x" * 100_000})
    assert json.loads(record.read_text()) == {"kept": True}
    assert {f.name: f.read_bytes() for f in target.iterdir()} == before
    ProcessedDataset.load(target)
    leftovers = [p for p in where.rglob("*") if p.name.startswith(".")]
    assert leftovers == [], leftovers
