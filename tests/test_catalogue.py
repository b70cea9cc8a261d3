"""`sbrbench models [NAME]` and `sbrbench datasets [NAME]`: complete, and readable at 80 columns."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from sbrbench.models import MODELS
from sbrbench.models.meanings import meanings

_CAP: Any = None
_MP: Any = None


@pytest.fixture(autouse=True)
def _capsys(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    global _CAP, _MP
    _CAP, _MP = capsys, monkeypatch


def _run(*args: str, columns: int = 80, env_extra: dict[str, str] | None = None) -> str:
    """The command's stdout, run in this process with $COLUMNS set (as a terminal of that width)."""
    from sbrbench.cli import main

    _MP.setenv("COLUMNS", str(columns))
    for k, v in (env_extra or {}).items():
        _MP.setenv(k, v)
    _CAP.readouterr()
    try:
        main(list(args))
    except SystemExit as exc:
        assert exc.code in (0, None), _CAP.readouterr().err
    return _CAP.readouterr().out


def _readable(out: str, columns: int = 80) -> None:
    long = [ln for ln in out.splitlines() if len(ln) > columns]
    assert long == [], f"lines over {columns} columns: {long}"
    assert "…" not in out and "..." not in out


def test_models_one_line_each_at_80_columns() -> None:
    out = _run("models")
    _readable(out)
    lines = out.splitlines()
    assert lines[0].split() == ["model", "kind", "components", "follows"]
    for name in MODELS.names():
        [line] = [ln for ln in lines if ln.split(" ", 1)[0] == name]  # exactly one line, not wrapped
        i = lines.index(line)
        assert not lines[i + 1].startswith(" "), f"{name} wraps onto a second line"
    srgnn = next(ln for ln in lines if ln.startswith("srgnn "))
    assert srgnn.split()[1:3] == ["neural", "attention,gnn"] and "SR-GNN, AAAI 2019" in srgnn


def test_models_name_lists_every_hyper_parameter_with_type_default_and_meaning() -> None:
    out = _run("models", "tagnnpp")
    _readable(out)
    assert "TAGNN++, arXiv 2107.01516" in out
    for f in dataclasses.fields(MODELS.get("tagnnpp").Params):
        assert any(ln.split()[:1] == [f.name] for ln in out.splitlines()), f.name
    flat = " ".join(out.split())
    assert "dim int 100 embedding and hidden size d per dataset: diginetica 120, yoochoose1_64 100" in flat
    assert "training defaults" in out and "lr_schedule" in out
    rec = json.loads(_run("models", "gcegnn", "--json"))
    hop = next(p for p in rec["params"] if p["name"] == "hop")
    assert hop["type"] == "int" and hop["per_dataset"]["diginetica"] == 2 and hop["meaning"]
    assert rec["paper_compatible"] == {"stopping": "official"} and rec["follows"].startswith("GCE-GNN")
    out = _run("models", "spop")
    assert "training defaults" not in out and "non-neural (fitted)" in out


def test_every_hyper_parameter_has_a_meaning() -> None:
    missing = [f"{name}.{k}" for name in MODELS.names() for k, v in meanings(MODELS.get(name)).items() if not v]
    assert missing == [], ("hyper-parameters without a one-line meaning (add a trailing `# comment` to the "
                           f"field in its Params dataclass): {missing}")


def test_datasets_with_statistics_at_80_columns(tmp_path: Path) -> None:
    proc = tmp_path / "processed" / "diginetica" / "srgnn"
    proc.mkdir(parents=True)
    split = {"sessions": 10, "examples": 40, "clicks": 50, "avg_length": 5.0}
    (proc / "manifest.json").write_text(json.dumps({"n_items": 43098, "stats": {
        "train": {**split, "examples": 649944}, "valid": {**split, "examples": 69526},
        "test": {**split, "examples": 60858}, "all": {"items": 43097}}}))
    env = {"SBRBENCH_DATA_DIR": str(tmp_path)}
    out = _run("datasets", env_extra=env)
    _readable(out)
    row = next(ln for ln in out.splitlines() if ln.startswith("diginetica "))
    assert row.split()[3:] == ["processed", "719,470", "60,858", "43,097"]
    assert next(ln for ln in out.splitlines() if ln.startswith("yoochoose1_4 ")).split()[3] == "manual"
    rec = json.loads(_run("datasets", "--json", env_extra=env))
    dg = next(r for r in rec["datasets"] if r["name"] == "diginetica")
    assert dg["stats"]["srgnn"]["train_examples"] == 719470 and dg["status"] == "processed (srgnn)"
    out = _run("datasets", "diginetica", env_extra=env)
    _readable(out)
    assert "processed (srgnn): 43,097 items" in out and "649,944" in out and "--from" in out


@pytest.mark.parametrize("columns", [100, 160])
def test_lists_follow_the_terminal_width(columns: int) -> None:
    _readable(_run("models", columns=columns), columns)
