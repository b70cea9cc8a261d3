"""`reproduce mclsr-table2 --budget ci`: the CI slice of MCLSR's table, with its learning checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sbrbench.cli import app
from sbrbench.data.formats import read_format
from sbrbench.data.protocols import get_protocol
from sbrbench.reproduce import TABLES


@pytest.mark.slow
def test_reproduce_mclsr_table2_ci_learns(shared_datasets: Path, tmp_path: Path) -> None:
    data = read_format("sequences", {"sequences": shared_datasets / "amazon-toys/CIKM2020-S3Rec/Toys_and_Games.txt"}, {})
    get_protocol("comirec").build(data, "amazon-toys").save(tmp_path / "data" / "processed" / "amazon-toys" / "comirec")
    res = CliRunner().invoke(app, ["reproduce", "mclsr-table2", "--budget", "ci", "--datasets", "amazon-toys",
                                   "--threads", "1", "--data-dir", str(tmp_path / "data"),
                                   "--results-dir", str(tmp_path / "results")])
    assert res.exit_code == 0, res.output  # a failed check (MCLSR not above POP) exits 1
    out = json.loads((tmp_path / "results" / "reproduce" / "mclsr-table2.json").read_text())
    rows = {r["model"]: r for r in out["rows"]}
    assert set(rows) == {e.label for e in TABLES.get("mclsr-table2").entries()}
    checks = {c["model"]: c for c in out["checks"]}
    assert checks["mclsr-beta0.1"]["ratio"] >= 1.5 and checks["mclsr"]["ratio"] >= 1.1, checks
    for r in rows.values():
        assert r["epochs"] in (None, 2) and r["data"] == "top 1000 items"
        assert r["paper"]["Recall@20"] is None  # another Toys: absolute figures are never compared
    md = re.sub(r" +", " ", (tmp_path / "results" / "reproduce" / "mclsr-table2.md").read_text())
    assert "| amazon-toys | mclsr-beta0.1 |" in md and "paper Toys (another dataset)" in md
