"""Tie diagnostics: optimistic beside pessimistic ranks, from the same pass, stored per run."""

from __future__ import annotations

import json
from pathlib import Path

import honest_data as hd
import numpy as np
import pytest
import torch

from sbrbench.evaluate import evaluate_run_dir
from sbrbench.honesty import optimistic_ranks, tie_gap_differs, tie_summary
from sbrbench.metrics import (
    RankCollector,
    chunked_target_ranks_ties,
    rank_block_ties,
    target_ranks,
)
from sbrbench.results import RunDir


def _brute(scores: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor | None) -> tuple[list[int], list[int]]:
    ranks, ties = [], []
    for b in range(scores.shape[0]):
        t = int(targets[b])
        st = float(scores[b, t])
        excl = set(seen[b].tolist()) - {t} if seen is not None else set()
        cand = [j for j in range(1, scores.shape[1]) if j != t and j not in excl]
        ge = sum(1 for j in cand if scores[b, j] >= st)
        gt = sum(1 for j in cand if scores[b, j] > st)
        ranks.append(ge + 1)
        ties.append(ge - gt)
    return ranks, ties


@pytest.mark.parametrize("with_seen", [False, True])
def test_ties_equal_brute_force_full_and_chunked(with_seen: bool) -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (9, 37), generator=g).float()
    targets = torch.randint(1, 37, (9,), generator=g)
    seen = torch.randint(0, 37, (9, 4), generator=g) if with_seen else None
    want_r, want_t = _brute(scores, targets, seen)
    r, t, _, single = rank_block_ties(scores, targets, seen)
    assert single and r.tolist() == want_r and t.tolist() == want_t
    assert torch.equal(r, target_ranks(scores, targets, seen))  # the pessimistic rank is unchanged
    rc, tc, _ = chunked_target_ranks_ties(lambda a, b: scores[:, a:b], scores.gather(1, targets[:, None])[:, 0],
                                          targets, 37, chunk_size=5, seen=seen)
    assert rc.tolist() == want_r and tc.tolist() == want_t


@pytest.mark.parametrize("width", [3, 12])  # per-column counting and the sort path
def test_ties_of_several_targets(width: int) -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 3, (6, 30), generator=g).float()
    targets = torch.randint(1, 30, (6, width), generator=g)
    r, t, _, _ = rank_block_ties(scores, targets)
    for j in range(width):
        rj, tj, _, _ = rank_block_ties(scores, targets[:, j])
        first = [(targets[b, j] != targets[b, :j]).all().item() for b in range(6)]
        for b in range(6):
            if first[b]:
                assert (r[b, j], t[b, j]) == (rj[b], tj[b])
            else:
                assert r[b, j] == 0 and t[b, j] == 0


def test_a_constant_model_shows_the_full_gap_and_continuous_scores_none() -> None:
    n, B = 50, 40
    col = RankCollector()
    col.update(torch.zeros(B, n), torch.arange(1, B + 1))
    s = tie_summary(col.numpy(), col.ties().numpy(), (5, 20))
    assert s["tied_share"] == 1.0 and s["mean_tied_candidates"] == n - 2
    for k in ("HR@5", "HR@20", "MRR@5", "MRR@20"):
        assert s["pessimistic"][k] == 0.0 and s["optimistic"][k] == 1.0 and s["gap"][k] == 1.0
    assert tie_gap_differs(s)
    col = RankCollector()
    col.update(torch.rand(B, n, generator=torch.Generator().manual_seed(2)), torch.arange(1, B + 1))
    s = tie_summary(col.numpy(), col.ties().numpy(), (20,))
    assert s["tied_examples"] == 0 and all(v == 0 for v in s["gap"].values()) and not tie_gap_differs(s)
    assert (optimistic_ranks(col.numpy(), col.ties().numpy()) == col.numpy()).all()


@pytest.fixture(scope="module")
def pop_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sbrbench.train import train

    ds = hd.clean()
    d = tmp_path_factory.mktemp("data") / "honest"
    ds.save(d)
    rec = train("pop", d, results_dir=tmp_path_factory.mktemp("results"))
    return Path(rec["run_dir"])


def test_every_run_records_ties_lengths_and_cost(pop_run: Path) -> None:
    rec = json.loads((pop_run / "metrics.json").read_text())
    t = rec["ties"]["test"]
    assert set(t) >= {"tied_share", "pessimistic", "optimistic", "gap"} and "HR@20" in t["pessimistic"]
    assert t["pessimistic"]["HR@20"] == pytest.approx(rec["test"]["HR@20"])
    assert rec["by_length"]["test"][0]["name"] == "short" and sum(b["examples"] for b in rec["by_length"]["test"]) == 280
    c = rec["cost"]
    assert c["device"] == "cpu" and c["peak_memory_mb"] > 0 and c["eval_ms_per_example"] > 0 and c["n_params"] is None
    run = RunDir(pop_run)
    assert run.load_ties("test").shape == run.load_ranks("test").shape
    assert (run.load_lengths("test") >= 1).all()


def test_evaluate_shows_both_and_old_runs_stay_readable(pop_run: Path, tmp_path: Path) -> None:
    res = evaluate_run_dir(pop_run, "test", "5,20", length_buckets="1,3")
    assert res["ties"]["pessimistic"]["HR@20"] == pytest.approx(res["metrics"]["HR@20"])
    assert [b["bucket"] for b in res["by_length"]] == ["<=1", "2-3", ">3"]
    # a run written before ties and lengths were stored
    import shutil

    old = tmp_path / "old"
    shutil.copytree(pop_run, old)
    run = RunDir(old)
    run.ties_path("test").unlink()
    run.lengths_path("test").unlink()
    res = evaluate_run_dir(old, "test", "20")
    assert res["ties"] is None and res["metrics"]["HR@20"] > 0
    assert res["by_length"] is not None  # lengths from the run's dataset, checksum-verified
    assert run.load_ties("test") is None and run.load_lengths("test") is None


def test_ties_survive_the_int32_store(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.save_ties("valid", np.array([0, 3, 43096]))
    assert run.load_ties("valid").tolist() == [0, 3, 43096]
