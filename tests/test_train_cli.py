"""`sbrbench models/train/reproduce` end to end through the CLI, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from toy_data import random_sessions, split_dataset


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sbrbench", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sbr")
    split_dataset("toy", random_sessions(80, 25, 2, max_len=5), (60, 70), protocol="srgnn").save(
        root / "processed" / "toy" / "srgnn")
    return root


def test_train_json_end_to_end(data_dir: Path, tmp_path: Path) -> None:
    r = cli("train", "srgnn", "--dataset", "toy", "--data-dir", str(data_dir), "--results-dir", str(tmp_path),
            "--epochs", "2", "--batch-size", "32", "--set", "dim=8", "--seed", "1", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["model"] == "srgnn" and rec["dataset"] == "toy" and rec["epochs"] == 2
    assert 0 <= rec["test"]["P@20"] <= 1 and 0 <= rec["valid"]["MRR@20"] <= 1
    assert Path(rec["run_dir"]).is_dir() and rec["hparams"]["dim"] == 8
    assert "epoch 2" in r.stderr  # plain progress lines when stderr is not a terminal


def test_models_json_lists_hyper_parameters() -> None:
    r = cli("models", "--json")
    assert r.returncode == 0, r.stderr
    names = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    assert {"pop", "spop", "itemknn", "srgnn"} <= set(names)
    assert names["srgnn"]["hparams"]["dim"] == 100 and names["srgnn"]["train"]["lr_dc_step"] == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "srgn", "--dataset", "toy"], "Did you mean 'srgnn'"),
        (["train", "srgn"], "Did you mean 'srgnn'"),  # named before the (unprocessed) default dataset
        (["train", "srgnn", "--epochs", "0"], "'epochs' must be >= 1"),
        (["train", "srgnn", "--dataset", "toy", "--set", "dimm=3"], "valid keys"),
        (["train", "srgnn", "--dataset", "toy", "--set", "dim=big"], "expects an integer"),
        (["train", "srgnn", "--dataset", "toy", "--gpu", "0"], "CUDA is not available"),
        (["train", "srgnn", "--dataset", "nowhere"], "unknown dataset"),
        (["reproduce", "srgnn-table9"], "Did you mean 'srgnn-table2'"),
        (["train", "srgnn", "--dataset", "toy", "--seed", "-1"], "--seed -1: seeds must lie in 0 … 4294967295"),
        (["train", "srgnn", "--dataset", "toy", "--seed", str(2**32)], "seeds must lie in 0 … 4294967295"),
        (["train", "srgnn", "--dataset", "toy", "--seed", str(2**32 - 1), "--seeds", "2"],
         "seeds 4294967295…4294967296: seeds must lie in"),
        (["reproduce", "srgnn-table2", "--budget", "ci", "--seed", "-3", "--status"], "seeds must lie in"),
        (["ablate", "srgnn", "--dataset", "toy", "--drop", "gnn", "--seed", "-3"], "seeds must lie in"),
    ],
)
def test_bad_inputs_give_one_line_errors(data_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    r = cli(*args, "--data-dir", str(data_dir), "--results-dir", str(tmp_path))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-made
