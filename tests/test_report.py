"""`sbrbench report`: the self-contained HTML page, and a real headless Chromium loading it.

The results directory is synthetic (run records written through `RunDir`), so these tests need no
benchmark data. The browser test needs a Chromium (Debian's `chromium`, installed by `.ci/run`):
skipped without one, except in CI (`CI` set), where it must run. In CI the page and its screenshot
are kept under `results/ci/` as artefacts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from sbrbench.cli import main
from sbrbench.config import RunConfig, TrainOptions
from sbrbench.report import build_report, write_report
from sbrbench.results import RunDir

REPO = Path(__file__).resolve().parents[1]
EVIL = "<script>alert(1)</script>"


def _run(root: Path, dataset: str, model: str, seed: int, *, select_on: str = "valid",
         test: dict[str, float], epochs: list[tuple[float, float]] | None = None, planned: int = 30,
         max_train_examples: int | None = None, hparams: dict | None = None) -> RunDir:
    run = RunDir.create(root, dataset, model, seed)
    cfg = RunConfig(model=model, dataset=dataset, protocol="srgnn", seed=seed, select_on=select_on, metric="MRR@20",
                    hparams=hparams or {}, train=TrainOptions(epochs=planned), max_train_examples=max_train_examples)
    run.write_config(cfg)
    best = max(range(len(epochs)), key=lambda i: epochs[i][1]) + 1 if epochs else None
    run.write_metrics({
        "model": model, "dataset": dataset, "protocol": "srgnn", "seed": seed, "select_on": select_on,
        "selection": {"split": "test" if select_on == "test" else "valid", "metric": "MRR@20",
                      "paper_compatible": select_on == "test"},
        "status": "complete", "best_epoch": best, "epochs_run": len(epochs or []), "test": test,
        "valid": test, "train_seconds": 12.5, "eval_seconds": 3.25, "dataset_checksum": "ab" * 32,
        "device": "cpu", "threads": 1, "precision": "fp32",
    })
    if epochs:
        split = "test" if select_on == "test" else "valid"
        run.write_history([{"epoch": i + 1, "loss": loss, f"{split}_MRR@20": mrr, f"{split}_P@20": 2.5 * mrr,
                            "seconds": 60.0} for i, (loss, mrr) in enumerate(epochs)])
    run.write_env({"git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
                   "versions": {"sbrbench": "0.1.0", "torch": "2.13.0+cpu"}, "device": "cpu",
                   "device_name": "cpu (x86_64, 2 cores, 1 threads)", "seed": seed,
                   "command": ["sbrbench", "train", model, dataset, "--seed", str(seed)],
                   "dataset_checksum": "ab" * 32, "hostname": "ci", "platform": "Linux",
                   "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T00:10:00Z"})
    time.sleep(0.01)  # distinct mtimes: the latest run of a seed counts
    return run


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    _run(root, "diginetica", "spop", 42, test={"P@20": 0.2105, "MRR@20": 0.1363})
    _run(root, "diginetica", "vstan", 42, test={"P@20": 0.5229, "MRR@20": 0.1868})
    for seed, shift in ((42, 0.0), (43, 0.004)):
        _run(root, "diginetica", "srgnn", seed, test={"P@20": 0.4560 + shift, "MRR@20": 0.1492 + shift},
             epochs=[(7.37, 0.1326), (5.36, 0.1486 + shift), (5.03, 0.1510 + shift)], planned=3)
    _run(root, "diginetica", "srgnn", 42, select_on="test", test={"P@20": 0.4700, "MRR@20": 0.1600},
         epochs=[(7.0, 0.14), (5.0, 0.16)], planned=30)
    _run(root, "diginetica", "narm", 42, test={"P@20": 0.3010, "MRR@20": 0.0950}, epochs=[(8.1, 0.09)], planned=1,
         max_train_examples=60_000, hparams={"note": EVIL})
    _run(root, "tmall", "stan", 42, test={"P@20": 0.3114, "MRR@20": 0.1484})
    abl = root / "ablations"
    abl.mkdir()
    (abl / "srgnn-diginetica-20260101-000000.json").write_text(json.dumps({
        "study": "srgnn-diginetica-20260101-000000", "model": "srgnn", "dataset": "diginetica", "protocol": "srgnn",
        "split": "test", "select_on": "valid", "seeds": [42, 43], "metrics": ["P@20", "MRR@20"],
        "variants": [
            {"name": "full", "kind": "full", "runs": [{}, {}], "mean": {"P@20": 0.456, "MRR@20": 0.149},
             "std": {"P@20": 0.002, "MRR@20": 0.001}, "change": {}, "tests": {}},
            {"name": "-attention", "kind": "drop", "runs": [{}, {}], "mean": {"P@20": 0.401, "MRR@20": 0.120},
             "std": {"P@20": 0.003, "MRR@20": 0.002},
             "change": {"P@20": {"abs": -0.055, "rel_pct": -12.1}, "MRR@20": {"abs": -0.029, "rel_pct": -19.5}},
             "tests": {"P@20": {"wilcoxon": 1e-9}, "MRR@20": {"wilcoxon": 0.2}}},
        ]}))
    rep = root / "reproduce"
    rep.mkdir()
    (rep / "srgnn-table2.json").write_text(json.dumps({
        "table": "srgnn-table2", "budget": "reduced", "device": "cpu", "select_on": "valid",
        "rows": [{"dataset": "diginetica", "model": "srgnn", "ours": {"P@20": 0.456, "MRR@20": 0.149},
                  "paper": {"P@20": 0.5073, "MRR@20": 0.1759}, "delta": {"P@20": -0.0513, "MRR@20": -0.0269},
                  "epochs": 3, "train_examples": 649944, "data": "full", "device": "cpu", "select_on": "valid"}],
        "unavailable": {"yoochoose1_4": "needs the manual raw file"}, "claims": []}))
    (rep / "baselines-ci.md").write_text("# baselines (budget ci)\n\n| dataset | model | P@20 ours |\n|---|---|---|\n"
                                         "| tmall | sknn | 42.84 |\n| tmall | ar | 16.45 |\n\nNote: `fitted` in full.\n")
    return root


@pytest.fixture(scope="module")
def written(results: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("page") / "report.html"
    return write_report(results, out), out


def test_report_page_is_self_contained_and_complete(written: tuple[dict, Path]) -> None:
    res, out = written
    page = out.read_text(encoding="utf-8")
    assert res["path"] == str(out) and res["runs"] == 7 and res["ablations"] == 1 and res["reproductions"] == 2
    assert res["datasets"] == ["diginetica (srgnn)", "tmall (srgnn)"]
    # self-contained: nothing is fetched (no external script, stylesheet, image or font)
    assert not re.search(r'<(script|link|img|iframe)[^>]+(src|href)=["\']?(https?:)?//', page)
    assert "<style>" in page and "sortTable" in page and page.count("<svg") == 4  # srgnn (2 selections) and narm curves, 1 ablation
    # honest and paper-compatible runs in separate tables; published figures beside ours
    assert page.count('class="sortable honest"') == 2 and page.count('class="sortable paper"') == 1
    assert "50.73" in page and "17.59" in page  # SR-GNN's published Diginetica figures
    assert 'title="published: srgnn-table2"' in page
    # the reduced budget is marked; significance marks; reproduced tables with their budget
    assert "1 epoch, first 60,000 training examples" in page and 'class="badge reduced"' in page
    assert "1e-09 ***" in page and "0.2 n.s." in page
    assert "budget reduced" in page and "649,944" in page and "yoochoose1_4: unavailable" in page
    assert "baselines (budget ci)" in page and "<code>fitted</code>" in page
    # provenance one click away: every run link points at an existing details element
    anchors = set(re.findall(r'<details class="run" id="([^"]+)"', page))
    links = set(re.findall(r'<a href="#(run-[^"]+)"', page))
    assert len(anchors) == 7 and links == anchors
    assert "0123456789abcdef0123456789abcdef01234567" in page and "sbrbench train srgnn diginetica --seed 43" in page
    assert "abab" * 16 in page  # dataset checksum
    # user text is escaped; figure ids never clash
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    assert res["bytes"] < 400_000


def test_report_filters_datasets_and_handles_an_empty_results_dir(results: Path, tmp_path: Path) -> None:
    data = build_report(results, datasets=["tmall"])
    assert [lb["dataset"] for lb in data["leaderboards"]] == ["tmall"] and len(data["runs"]) == 1
    res = write_report(tmp_path / "nothing", tmp_path / "empty.html")
    page = (tmp_path / "empty.html").read_text(encoding="utf-8")
    assert res["runs"] == 0 and "No complete runs" in page and "No ablation studies yet" in page


def test_report_command(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    with pytest.raises(SystemExit) as exc:
        main(["report", "--results-dir", str(results), "--out", str(out), "--json"])
    assert exc.value.code in (0, None)
    rec = json.loads(capsys.readouterr().out)
    assert rec["path"] == str(out) and out.is_file() and rec["runs"] == 7
    with pytest.raises(SystemExit) as exc:
        main(["report", "--results-dir", str(results / "typo"), "--out", str(tmp_path / "t.html")])
    assert exc.value.code == 1 and not (tmp_path / "t.html").exists()
    assert capsys.readouterr().err == f"error: no results directory at {results / 'typo'}: train a model first or pass --results-dir\n"


def _chromium() -> str:
    from browser import find_chromium

    exe = find_chromium()
    if exe is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail("no Chromium found: .ci/run installs Debian's chromium", pytrace=False)
        pytest.skip("no Chromium on this machine (apt-get install chromium, or set SBRBENCH_CHROMIUM)")
    return exe


def test_report_in_a_real_headless_browser(written: tuple[dict, Path], tmp_path: Path) -> None:
    from browser import Browser

    exe = _chromium()
    out = written[1]
    t0 = time.perf_counter()
    with Browser(exe) as b:
        b.open(out.as_uri())
        assert b.evaluate("document.documentElement.dataset.ready") == "1"
        load_ms = b.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
        table = "table.sortable.honest"
        col = ("(() => { const t = document.querySelector('%s'); const i = [...t.tHead.rows[0].cells]"
               ".findIndex(c => c.textContent === 'P@20'); return [...t.tBodies[0].rows].map(r => "
               "r.cells[0].textContent + ' ' + r.cells[i].dataset.v); })()" % table)
        before = b.evaluate(col)
        header = f"{table} thead th:nth-child(5)"  # P@20 (model, runs, n, budget, P@20, ...)
        assert b.evaluate(f"document.querySelector('{header}').textContent") == "P@20"
        b.click(header)
        ascending = b.evaluate(col)
        assert b.evaluate(f"document.querySelector('{header}').getAttribute('aria-sort')") == "ascending"
        b.click(header)
        descending = b.evaluate(col)
        values = [float(x.split()[-1]) for x in ascending]
        assert values == sorted(values) and sorted(before) == sorted(ascending)
        assert [float(x.split()[-1]) for x in descending] == sorted(values, reverse=True)
        assert ascending[0].startswith("spop") and descending[0].startswith("vstan")
        # a run link opens its provenance
        b.click("table.sortable.honest tbody tr td:nth-child(2) a")
        assert b.wait_for("document.querySelector('details.run[open]') !== null")
        assert b.evaluate("location.hash") == "#" + b.evaluate("document.querySelector('details.run[open]').id")
        b.evaluate("window.scrollTo(0, 0)")
        shot = b.screenshot(tmp_path / "report.png")
        assert b.console_errors() == []
    elapsed = time.perf_counter() - t0
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    print(f"report: {out.stat().st_size / 1024:.0f} KiB, loaded in {load_ms:.0f} ms, browser check {elapsed:.1f} s")
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        keep = REPO / "results" / "ci"
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(out, keep / "report.html")
        shutil.copy(shot, keep / "report-screenshot.png")


def test_a_resumed_run_shows_each_resumption_in_its_provenance(tmp_path: Path) -> None:
    run = _run(tmp_path, "diginetica", "srgnn", 7, test={"P@20": 0.5, "MRR@20": 0.2}, epochs=[(5.0, 0.1), (4.0, 0.2)])
    run.note_resume({"start_time": "2026-01-02T00:00:00Z", "git": {"commit": "fedcba98" * 5, "dirty": False},
                     "hostname": "gpu-box", "device": "cuda:0"})
    write_report(tmp_path, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "resumed (1)" in page
    assert "2026-01-02T00:00:00Z on gpu-box, cuda:0, git fedcba98fedc (another commit than the start)" in page
