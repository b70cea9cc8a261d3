"""Significance across a table, seed stability, length buckets and cost columns."""

from __future__ import annotations

import json
from pathlib import Path

import honest_data as hd
import numpy as np
import pytest

from sbrbench.errors import SbrError
from sbrbench.honesty import (
    aggregate_costs,
    cost_cells,
    cost_from_record,
    holm,
    length_breakdown,
    parse_length_buckets,
    seed_stability,
    table_significance,
)
from sbrbench.io import atomic_write_json
from sbrbench.leaderboard import (
    build_leaderboard,
    render_csv,
    render_leaderboard_markdown,
)
from sbrbench.metrics import metrics_from_ranks
from sbrbench.results import RunDir

N = 400


def test_holm_matches_hand_computation() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy on nearly identical samples
def test_best_is_claimed_only_when_the_correction_allows_it() -> None:
    rng = np.random.default_rng(0)
    good = rng.random(N) * 0.2 + 0.6
    bad = good - 0.3
    sig = table_significance({"MRR@20": {"good": good, "bad": bad, "none": None}})["MRR@20"]
    assert sig["good"]["role"] == "best" and sig["good"]["mark"] == "*" and sig["good"]["claim"]
    assert sig["bad"]["role"] == "worse" and sig["bad"]["mark"] == "" and sig["bad"]["p_holm"] < 0.05
    assert sig["bad"]["vs"] == "good" and sig["none"]["mark"] == "?"
    # an untested row whose records report more than the best tested row: nobody is claimed best
    reported = {"good": 0.7, "bad": 0.4, "none": 0.9}
    sig = table_significance({"MRR@20": {"good": good, "bad": bad, "none": None}}, reported={"MRR@20": reported})
    assert sig["MRR@20"]["good"]["mark"] == "=" and not sig["MRR@20"]["good"]["claim"]
    assert sig["MRR@20"]["bad"]["mark"] == "" and sig["MRR@20"]["none"]["mark"] == "?"
    reported["none"] = 0.5  # below the best tested row: the claim stands
    sig = table_significance({"MRR@20": {"good": good, "bad": bad, "none": None}}, reported={"MRR@20": reported})
    assert sig["MRR@20"]["good"]["mark"] == "*"
    # two indistinguishable rows: no claim, both marked as tied with the best
    twin = good + rng.normal(0, 1e-3, N)
    sig = table_significance({"MRR@20": {"a": good, "b": twin}})["MRR@20"]
    assert {sig["a"]["mark"], sig["b"]["mark"]} == {"="} and not sig[max(sig, key=lambda k: sig[k]["mean"])]["claim"]
    # Holm over the whole table: a p-value that passes alone can fail once corrected
    small = good - 0.002 * (rng.random(N) < 0.5)
    one = table_significance({"M": {"g": good, "s": small}})["M"]["s"]
    many = table_significance({f"M{i}": {"g": good, "s": small} for i in range(40)})["M0"]["s"]
    assert one["p"] == many["p"] and many["p_holm"] > one["p_holm"]


def test_seed_stability_marks_flips() -> None:
    steady = seed_stability({"a": {1: 0.5, 2: 0.52, 3: 0.51}, "b": {1: 0.4, 2: 0.41, 3: 0.39}})
    assert steady is not None and steady["a"]["stable"] and steady["b"]["mark"] == ""
    assert steady["a"]["rank_agreement"] == 1.0 and steady["b"]["rank_by_mean"] == 2
    flip = seed_stability({"a": {1: 0.5, 2: 0.40, 3: 0.51}, "b": {1: 0.45, 2: 0.45, 3: 0.45}, "c": {1: 0.1}})
    assert flip is not None and not flip["a"]["stable"] and flip["a"]["mark"] == "~"
    assert flip["a"]["flip_rates"] == {"b": pytest.approx(1 / 3)} and flip["c"]["stable"]  # one run: deterministic
    assert seed_stability({"a": {1: 0.5}, "b": {1: 0.4}}) is None  # one seed: nothing to say


def test_length_breakdown_by_hand() -> None:
    ranks = np.array([1, 2, 30, 1, 5, 1])
    lengths = np.array([1, 2, 3, 5, 6, 9])
    b = length_breakdown(ranks, lengths, (1, 5), parse_length_buckets("2,5"))
    assert [x["bucket"] for x in b] == ["<=2", "3-5", ">5"] and [x["examples"] for x in b] == [2, 2, 2]
    assert b[0]["metrics"]["HR@1"] == 0.5 and b[0]["metrics"]["MRR@5"] == pytest.approx(0.75)
    assert b[1]["metrics"]["HR@5"] == 0.5 and b[2]["metrics"]["MRR@5"] == pytest.approx(0.6)
    assert parse_length_buckets("3") == (3,) and [x["name"] for x in length_breakdown(ranks, lengths, (5,), (3,))] == ["b1", "b2"]
    for bad in ("5,2", "0,3", "x", ""):
        with pytest.raises(SbrError):
            parse_length_buckets(bad)


def test_cost_from_old_and_new_records() -> None:
    old = cost_from_record({"train_seconds": 12.0, "epochs_run": 3, "device": "cpu", "threads": 2},
                           [{"seconds": "3.5", "examples_per_s": "100"}, {"seconds": "4.5", "examples_per_s": "120"}])
    assert old["seconds_per_epoch"] == 4.0 and old["examples_per_s"] == 110 and old["peak_memory_mb"] is None
    new = cost_from_record({"cost": {"seconds_per_epoch": 2.0, "train_seconds": 6.0, "examples_per_s": 50.0,
                                     "peak_memory_mb": 300.0, "eval_ms_per_example": 0.5, "n_params": 123456,
                                     "device": "cuda:0", "threads": 4}})
    agg = aggregate_costs([old, new])
    assert agg["train_seconds"] == 9.0 and agg["device"] == "cpu,cuda:0" and agg["runs"] == 2
    cells = cost_cells(new)
    assert cells[:3] == ["2", "6", "50"] and "0.12M" in cells and "cuda:0" in cells


def _fake_run(root: Path, ds: str, model: str, seed: int, ranks: np.ndarray, checksum: str = "c" * 64) -> None:
    run = RunDir(root / "runs" / ds / model / f"r-s{seed}")
    run.save_ranks("test", ranks)
    atomic_write_json(run.metrics_path, {
        "model": model, "dataset": ds, "protocol": "t", "seed": seed, "select_on": "valid", "status": "complete",
        "test": metrics_from_ranks(ranks, (20,)), "dataset_checksum": checksum, "train_seconds": 10.0 + seed,
        "epochs_run": 2, "device": "cpu", "threads": 1,
        "cost": {"seconds_per_epoch": 5.0, "peak_memory_mb": 100.0 * seed, "n_params": 1000, "device": "cpu",
                 "threads": 1, "eval_ms_per_example": 0.1, "examples_per_s": 10.0, "train_seconds": 10.0},
    })


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(1)
    base = rng.integers(1, 60, N)
    rng_b = np.random.default_rng(1)  # dsB: per-example noise only; its seed means flip order
    base_b = rng_b.integers(1, 60, N)
    for seed in (1, 2, 3):
        noise = rng.integers(0, 3, N)
        _fake_run(root, "dsA", "good", seed, np.maximum(base // 6 + noise, 1))
        _fake_run(root, "dsA", "bad", seed, base * 3 + noise)
        _fake_run(root, "dsB", "x", seed, base_b + rng_b.integers(0, 3, N))
        _fake_run(root, "dsB", "y", seed, base_b + rng_b.integers(0, 3, N))
    _fake_run(root, "dsB", "other-data", 1, base, checksum="d" * 64)
    return root


def test_leaderboard_marks_significance_stability_and_cost(results: Path) -> None:
    lb = build_leaderboard(results, metrics=["MRR@20", "P@20"])
    by = {(r["dataset"], r["model"]): r for r in lb.rows}
    assert by[("dsA", "good")]["marks"]["MRR@20"] == "*" and by[("dsA", "bad")]["marks"]["MRR@20"] == ""
    assert by[("dsA", "bad")]["significance"]["MRR@20"]["vs"] == "good"
    assert set(by[("dsB", "x")]["marks"]["MRR@20"]) == {"=", "~"} and set(by[("dsB", "y")]["marks"]["MRR@20"]) == {"=", "~"}
    assert by[("dsB", "other-data")]["marks"]["MRR@20"] == "?"  # other examples: never compared
    assert by[("dsA", "good")]["cost"]["peak_memory_mb"] == 200.0 and by[("dsA", "good")]["cost"]["runs"] == 3
    md = render_leaderboard_markdown(lb)
    assert "s/epoch" in md and "peak MB" in md and "Holm" in md and " *" in md
    header = render_csv(lb).splitlines()[0]
    assert "MRR@20 mark" in header and "peak_memory_mb" in header
    json.dumps(lb.to_dict(), default=str)


def test_reproduction_rows_get_marks_and_cost(results: Path) -> None:
    from sbrbench.guards import annotate_reproduction
    from sbrbench.reproduce import TABLES, render_reproduction_markdown

    runs = sorted((results / "runs" / "dsA").glob("*/*"))
    rows = []
    for model in ("good", "bad"):
        dirs = [str(p) for p in runs if p.parent.name == model]
        per_seed = [{"seed": RunDir(d).read_metrics()["seed"], **RunDir(d).read_metrics()["test"]} for d in dirs]
        rows.append({"dataset": "dsA", "model": model, "run_dir": dirs[0], "run_dirs": dirs, "per_seed": per_seed,
                     "ours": {"P@20": None, "MRR@20": float(np.mean([p["MRR@20"] for p in per_seed]))},
                     "paper": {"P@20": None, "MRR@20": None}, "delta": {"P@20": None, "MRR@20": None},
                     "epochs": 2, "train_examples": 10, "data": "full", "device": "cpu"})
    info = annotate_reproduction(rows, ("MRR@20",))
    assert rows[0]["marks"]["MRR@20"] == "*" and rows[1]["marks"]["MRR@20"] == "" and "Holm" in info["test"]
    spec = TABLES.get("srgnn-table2")
    md = render_reproduction_markdown({"budget": "ci", "select_on": "valid", "device": "cpu", "rows": rows,
                                       "unavailable": {}, "claims": [], "table": spec.key}, spec)
    assert "s/epoch" in md and "Marks:" in md


def test_ablation_gets_stability_and_holm() -> None:
    from sbrbench.guards import annotate_ablation

    variants = [
        {"name": "full", "runs": [{"seed": 1, "run_dir": "/nonexistent", "metrics": {"M": 0.5}},
                                  {"seed": 2, "run_dir": "/nonexistent", "metrics": {"M": 0.3}}], "tests": {}},
        {"name": "-x", "runs": [{"seed": 1, "run_dir": "/nonexistent", "metrics": {"M": 0.4}},
                                {"seed": 2, "run_dir": "/nonexistent", "metrics": {"M": 0.35}}],
         "tests": {"M": {"wilcoxon": 0.02}}},
    ]
    annotate_ablation(variants, ["M"])
    assert variants[0]["unstable"] and variants[1]["unstable"]
    assert variants[1]["tests"]["M"]["wilcoxon_holm"] == pytest.approx(0.02)


def test_train_seeds_cli_prints_mean_and_std(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sbrbench.cli import main

    d = tmp_path / "honest"
    hd.clean().save(d)
    with pytest.raises(SystemExit) as exc:
        main(["train", "pop", str(d), "--seeds", "2", "--results-dir", str(tmp_path / "r"), "--json"])
    assert exc.value.code in (0, None)
    out = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in out["runs"]] == [42, 43] and out["summary"]["n"] == 2
    m = out["summary"]["metrics"]["MRR@20"]
    assert m["std"] == 0.0 and m["mean"] == out["runs"][0]["test"]["MRR@20"]  # pop is deterministic
