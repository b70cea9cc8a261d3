"""Leaderboard from real (scored) run directories, and the published figures it shows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from sbrbench import paper_figures
from sbrbench.io import atomic_write_json
from sbrbench.leaderboard import build_leaderboard, render_leaderboard_markdown, write_leaderboard
from test_evaluate import _cli, make_run


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, diginetica) -> Path:
    root = tmp_path_factory.mktemp("lb")
    make_run(root, diginetica, "spop", 0, n=500)
    make_run(root, diginetica, "spop", 1, n=500)
    make_run(root, diginetica, "pop", 0, n=500)
    make_run(root, diginetica, "spop", 0, select_on="test", n=500)  # paper-compatible
    make_run(root, diginetica, "random", 0, status="running", n=500)  # not complete: skipped
    bad = root / "runs" / "diginetica" / "narm" / "broken"
    bad.mkdir(parents=True)
    (bad / "metrics.json").write_text("{")
    return root


def _metric(run: Path, key: str) -> float:
    return json.loads((run / "metrics.json").read_text())["test"][key]


def test_leaderboard_aggregates_seeds(results: Path) -> None:
    lb = build_leaderboard(results, metrics=["P@20", "mrr@20"])
    assert lb.metrics == ["P@20", "MRR@20"]
    assert lb.n_runs == 4 and len(lb.skipped) == 2
    by = {(r["model"], r["select_on"]): r for r in lb.rows}
    assert set(by) == {("spop", "valid"), ("pop", "valid"), ("spop", "test")}
    spop = by[("spop", "valid")]
    runs = [results / "runs" / "diginetica" / "spop" / f"spop-s{s}-valid" for s in (0, 1)]
    vals = np.array([_metric(r, "MRR@20") for r in runs])
    assert spop["n"] == 2 and spop["seeds"] == [0, 1]
    assert spop["MRR@20"] == pytest.approx(vals.mean()) and spop["MRR@20 std"] == pytest.approx(vals.std(ddof=1))
    assert spop["MRR@20 std"] > 0  # the seeds broke ties differently
    assert by[("pop", "valid")]["n"] == 1 and by[("pop", "valid")]["MRR@20 std"] is None
    # published figures beside the runs (SR-GNN Table 2, as fractions)
    assert spop["P@20 published"] == pytest.approx(0.2106) and spop["P@20 source"] == "srgnn-table2"
    assert by[("pop", "valid")]["MRR@20 published"] == pytest.approx(0.0020)
    # validation-selected rows come first, best first
    assert [r["select_on"] for r in lb.rows] == ["valid", "valid", "test"]
    assert lb.rows[0]["model"] == "spop"


def test_leaderboard_metric_recomputed_from_ranks(results: Path) -> None:
    lb = build_leaderboard(results, metrics=["NDCG@50"])  # not in metrics.json: from ranks/test.npy
    assert all(r["NDCG@50"] is not None and 0 < r["NDCG@50"] < 1 for r in lb.rows)


def test_leaderboard_markdown_and_csv(results: Path) -> None:
    lb = build_leaderboard(results)
    md_path, csv_path = write_leaderboard(lb, results)
    md = md_path.read_text()
    assert md == render_leaderboard_markdown(lb)
    valid_part, test_part = md.split("Paper-compatible runs")
    assert "| spop" in valid_part and "| pop" in valid_part
    assert "| spop" in test_part and "| pop" not in test_part
    mean = lb.rows[0]["P@20"]
    assert f"{100 * mean:.2f} ± " in valid_part and "21.06 [srgnn-table2]" in valid_part
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 3 and {r["select_on"] for r in rows} == {"valid", "test"}
    assert float(rows[0]["P@20"]) == pytest.approx(mean)
    assert sorted(p.name for p in results.iterdir()) == ["leaderboard.csv", "leaderboard.md", "runs"]


def test_leaderboard_cli(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _cli("leaderboard", "--results-dir", str(results), "--json", capsys=capsys)
    assert p.returncode == 0, p.stderr
    obj = json.loads(p.stdout)
    assert obj["n_runs"] == 4 and obj["n_skipped"] == 2 and len(obj["rows"]) == 3
    p = _cli("leaderboard", "--results-dir", str(results), "--dataset", "diginetica", capsys=capsys)
    assert p.returncode == 0 and "paper-compatible" in p.stdout and "2 skipped" in p.stdout
    p = _cli("leaderboard", "--results-dir", str(results), "--dataset", "tmall", "--json", capsys=capsys)
    assert json.loads(p.stdout)["rows"] == []
    p = _cli("leaderboard", "--results-dir", str(results), "--metric", "MAP@20", capsys=capsys)
    assert p.returncode == 1 and p.stderr.startswith("error: unknown metric") and p.stderr.count("\n") == 1
    p = _cli("leaderboard", "--results-dir", str(results / "typo"), capsys=capsys)
    assert p.returncode == 1 and p.stderr == f"error: no results directory at {results / 'typo'}: train a model first or pass --results-dir\n"
    assert not (results / "typo").exists()


def test_leaderboard_of_one_run_stays_readable_on_80_columns(
    tmp_path: Path, diginetica, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values shared by every row are printed as lines, not captions: a caption wraps to its table's
    width, and the cost table of a single run is one narrow column (it printed 'yoochoose' / '1_64;')."""
    monkeypatch.setenv("COLUMNS", "80")
    make_run(tmp_path, diginetica, "spop", 0, n=200)
    p = _cli("leaderboard", "--results-dir", str(tmp_path), capsys=capsys)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert any(line.startswith("dataset: diginetica; protocol: ") for line in lines)
    assert any(line.startswith("cost (from the run records, mean over seeds) of spop: dataset: diginetica;")
               for line in lines)
    assert "sbrbench leaderboard (test split, %, mean ± std over seeds)" in p.stdout  # the title unwrapped
    assert max(len(line) for line in lines) <= 80


def test_leaderboard_ignores_malformed_values(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "diginetica" / "pop" / "r1"
    atomic_write_json(run / "metrics.json", {"model": "pop", "dataset": "diginetica", "status": "complete",
                                             "protocol": "srgnn", "seed": 0, "select_on": "valid", "test": []})
    lb = build_leaderboard(tmp_path)
    assert lb.rows == [] and len(lb.skipped) == 1


def test_published_lookup() -> None:
    assert paper_figures.lookup("srgnn-table2", "diginetica", "srgnn", "P@20") == pytest.approx(0.5073)
    assert paper_figures.lookup("srgnn-table2", "diginetica", "srgnn", "HR@20") == pytest.approx(0.5073)
    assert paper_figures.lookup("srgnn-table2", "yoochoose1_4", "narm", "MRR@20") == pytest.approx(0.2923)
    assert paper_figures.lookup("tagnnpp-table2", "diginetica", "tagnnpp", "MRR@20") == pytest.approx(0.1986)
    assert paper_figures.lookup("tagnnpp-table3", "yoochoose1_64", "tagnnpp-no_agc", "HR@20") == pytest.approx(0.7004)
    assert paper_figures.lookup("gcegnn", "nowplaying", "gcegnn", "P@20") == pytest.approx(0.2237)
    assert paper_figures.lookup("sessionrec-single", "diginetica", "vsknn", "MRR@20") == pytest.approx(0.1841)
    assert paper_figures.lookup("srgnn-table2", "diginetica", "srgnn", "MRR@10") is None
    assert paper_figures.lookup("mclsr-table2", "books", "mclsr", "P@20") is None  # multi-target: P is not HR
    assert paper_figures.lookup("mclsr-table2", "gowalla", "sasrec", "Hit@50") == pytest.approx(0.42380)
    tables = {f.table for f in paper_figures.FIGURES if (f.dataset, f.model) == ("diginetica", "srgnn")}
    assert [t for t in paper_figures.PREFERENCE if t in tables] == ["srgnn-table2", "tagnnpp-table2"]
    assert all(0 <= f.value <= 1 and f.source and f.confidence in ("paper", "approx") for f in paper_figures.FIGURES)


def test_paper_table_keys_match_the_cli_and_retired_keys_still_read() -> None:
    from sbrbench.reproduce import TABLES

    for name in TABLES.names():
        assert TABLES.get(name).paper_table in paper_figures.PAPER_TABLES
    assert all("_" not in key for key in paper_figures.PAPER_TABLES)
    # keys written before the hyphenated style (results/baselines/*.json "table" fields)
    assert paper_figures.lookup("srgnn_table2", "diginetica", "srgnn", "P@20") == pytest.approx(0.5073)
    assert paper_figures.lookup("tagnnpp_table3_ablation", "yoochoose1_64", "tagnnpp-no_agc", "HR@20") == pytest.approx(0.7004)
    assert paper_figures.table_key("sessionrec_single") == "sessionrec-single"


def test_leaderboard_out_leaves_the_results_directory_as_it_was(
    tmp_path: Path, diginetica, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--out` reads committed records (e.g. results/reference/X) without writing beside them."""
    records = tmp_path / "reference"
    make_run(records, diginetica, "spop", 0, n=200)
    before = sorted(p.relative_to(records) for p in records.rglob("*"))
    out = tmp_path / "boards" / "x"
    p = _cli("leaderboard", "--results-dir", str(records), "--out", str(out), capsys=capsys)
    assert p.returncode == 0, p.stderr
    assert sorted(p.relative_to(records) for p in records.rglob("*")) == before
    assert sorted(f.name for f in out.iterdir()) == ["leaderboard.csv", "leaderboard.md"]
    assert "spop" in (out / "leaderboard.md").read_text()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = _cli("leaderboard", "--results-dir", str(records), "--out", str(blocker), capsys=capsys)
    assert p.returncode == 1 and p.stderr == f"error: cannot write the leaderboard into {blocker}: not a directory\n"
    assert blocker.read_text() == "x"


def test_paths_with_brackets_print_as_they_are(
    tmp_path: Path, diginetica, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """rich would read `[x]` in a path as a style tag and drop it: the CLI prints without markup."""
    monkeypatch.setenv("COLUMNS", "400")
    root = tmp_path / "runs [x]"
    make_run(root, diginetica, "spop", 0, n=200)
    p = _cli("leaderboard", "--results-dir", str(root), capsys=capsys)
    assert p.returncode == 0, p.stderr
    assert f"wrote {root / 'leaderboard.md'} and {root / 'leaderboard.csv'}" in p.stdout
