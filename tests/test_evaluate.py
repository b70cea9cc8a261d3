"""Evaluator: stored ranks, protocols, run re-evaluation, paired comparison, the `evaluate` command."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sbrbench.errors import DataError, SbrError
from sbrbench.evaluate import compare_runs, protocol_targets
from sbrbench.metrics import RankCollector
from sbrbench.results import RunDir, load_ranks, save_ranks
from sbrbench.io import atomic_write_json
from sbrbench.metrics import metrics_from_ranks

N_TEST = 2000  # the first test examples of Diginetica: enough for significance, fast on 2 cores


def _score(kind: str, prefixes: list[list[int]], counts: torch.Tensor, seed: int) -> torch.Tensor:
    """Real scorers: popularity ('pop'), session items first then popularity ('spop'), random."""
    B, n = len(prefixes), counts.shape[0]
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.rand(B, n, generator=g)
    scores = (counts + 0.5 * torch.rand(n, generator=g)).expand(B, n).clone()  # the seed breaks ties
    if kind == "spop":
        rows = torch.repeat_interleave(torch.arange(B), torch.tensor([len(p) for p in prefixes]))
        cols = torch.tensor([i for p in prefixes for i in p])
        boost = float(counts.max()) + 1.0  # above any popularity, small enough to keep the noise
        scores.index_put_((rows, cols), torch.full((len(cols),), boost), accumulate=True)
    return scores


def first_prefixes(ds, split: str, n: int) -> tuple[list[list[int]], list[int]]:
    """The first `n` examples of a split as (prefixes, targets) lists."""
    ex = ds.examples(split)
    items = ds.items
    return [items[a : a + b].tolist() for a, b in zip(ex.start[:n], ex.length[:n])], ex.target[:n].tolist()


def make_run(
    root: Path, ds, kind: str, seed: int, *, select_on: str = "valid", checksum: str | None = None,
    status: str = "complete", n: int = N_TEST,
) -> Path:
    """A structurally real run directory whose ranks come from scoring real Diginetica examples."""
    items = ds.fit_sessions(("train",)).items
    counts = torch.from_numpy(np.bincount(items, minlength=ds.n_items).astype(np.float32))
    checksum = checksum or hashlib.sha256(ds.items.tobytes() + ds.offsets.tobytes()).hexdigest()
    run = root / "runs" / ds.name / kind / f"{kind}-s{seed}-{select_on}"
    out: dict[str, dict[str, float]] = {}
    for split in ("valid", "test"):
        prefixes, targets = first_prefixes(ds, split, n)
        col = RankCollector("cpu")
        for i in range(0, n, 500):
            col.update(_score(kind, prefixes[i : i + 500], counts, seed), torch.tensor(targets[i : min(i + 500, n)]))
        save_ranks(run / "ranks" / f"{split}.npy", col.ranks())
        out[split] = col.metrics((5, 10, 20))
    ident = {"model": kind, "dataset": ds.name, "protocol": ds.protocol, "seed": seed, "select_on": select_on}
    atomic_write_json(run / "config.json", {**ident, "hparams": {}, "train": {}, "device": "cpu"})
    atomic_write_json(run / "metrics.json", {
        **ident, "status": status, "best_epoch": 1, "epochs_run": 1, "valid": out["valid"], "test": out["test"],
        "train_seconds": 0.0, "eval_seconds": 0.0, "dataset_checksum": checksum,
    })
    (run / "history.csv").write_text("epoch,loss\n1,0.0\n")
    atomic_write_json(run / "env.json", {"python": sys.version})
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, diginetica) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("results")
    return {
        "root": root,
        "pop": make_run(root, diginetica, "pop", 0),
        "spop": make_run(root, diginetica, "spop", 0),
        "spop1": make_run(root, diginetica, "spop", 1),
        "other_data": make_run(root, diginetica, "random", 0, checksum="0" * 64),
    }


def test_save_load_ranks_roundtrip(tmp_path: Path) -> None:
    r = torch.tensor([[1, 5, 0], [43097, 2, 3]])
    p = save_ranks(tmp_path / "ranks" / "test.npy", r)
    back = load_ranks(p)
    assert back.dtype == np.int32 and back.tolist() == r.tolist()
    assert [q.name for q in p.parent.iterdir()] == ["test.npy"]  # no temporary file left behind
    with pytest.raises(DataError, match="no stored ranks"):
        load_ranks(tmp_path / "missing.npy")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="damaged"):
        load_ranks(tmp_path / "bad.npy")


def test_metrics_for_run_recomputes_any_k(runs: dict[str, Path]) -> None:
    res = RunDir(runs["spop"]).metrics_from_ranks("test", "1,5,20,50")
    stored = json.loads((runs["spop"] / "metrics.json").read_text())["test"]
    assert res["n_examples"] == N_TEST and res["model"] == "spop"
    for k in ("HR@5", "MRR@20", "NDCG@20", "P@20"):
        assert res["metrics"][k] == pytest.approx(stored[k], rel=1e-12)
    assert res["metrics"]["HR@1"] <= res["metrics"]["HR@5"] <= res["metrics"]["HR@50"]
    assert res["metrics"]["HR@50"] > 0  # not a constant


def test_compare_runs_detects_a_much_better_scorer(runs: dict[str, Path]) -> None:
    res = compare_runs(runs["pop"], runs["spop"], metric="MRR@20")
    assert res["n_examples"] == N_TEST
    assert res["run_b"]["mean"] > res["run_a"]["mean"]
    assert res["diff"] == pytest.approx(res["run_b"]["mean"] - res["run_a"]["mean"])
    assert res["wilcoxon"]["pvalue"] < 1e-6 and res["ttest_rel"]["pvalue"] < 1e-6
    same = compare_runs(runs["spop"], runs["spop"], metric="P", k=20)
    assert same["diff"] == 0 and same["wilcoxon"]["pvalue"] == 1.0
    seeds = compare_runs(runs["spop"], runs["spop1"], metric="HR@20")  # only tie-breaks differ
    assert seeds["wilcoxon"]["pvalue"] > 1e-3


def test_compare_runs_refuses_different_data(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SbrError, match="different data"):
        compare_runs(runs["pop"], runs["other_data"])
    # same checksum but a different number of examples
    import shutil

    short = tmp_path / "short"
    shutil.copytree(runs["pop"], short)
    save_ranks(short / "ranks" / "test.npy", load_ranks(short / "ranks" / "test.npy")[:10])
    with pytest.raises(SbrError, match="numbers of test examples"):
        compare_runs(runs["pop"], short)


def test_protocol_targets(diginetica) -> None:
    idx, t = protocol_targets(diginetica, "test", "next-item")
    assert idx.shape == t.shape == (60858,)
    idx_last, _ = protocol_targets(diginetica, "test", "last-item")
    assert idx_last.shape == diginetica.split_sessions("test").shape  # one per test session
    idx_tr, rem = protocol_targets(diginetica, "train", "remaining-items", max_targets=5)
    ex = diginetica.examples("train")
    assert rem.shape == (len(ex.start), 5)
    assert (rem[:, 0] == ex.target).all()  # the first remaining item is the next item
    n_rem = np.minimum(ex.session_end - ex.start - ex.length, 5)
    assert ((rem != 0).sum(1) == n_rem).all()
    idx_l, t_l = protocol_targets(diginetica, "train", "last-item")
    assert (ex.start[idx_l] + ex.length[idx_l] + 1 == ex.session_end[idx_l]).all() and len(idx_l) < len(ex.start)
    with pytest.raises(SbrError, match="Did you mean"):
        protocol_targets(diginetica, "test", "next_item")


def test_remaining_items_metrics_on_real_data(diginetica) -> None:
    """Multi-target evaluation end to end: a session-aware scorer beats popularity on every metric."""
    _, rem = protocol_targets(diginetica, "train", "remaining-items", max_targets=10)
    prefixes, _ = first_prefixes(diginetica, "train", 400)
    items = diginetica.fit_sessions(("train",)).items
    counts = torch.from_numpy(np.bincount(items, minlength=diginetica.n_items).astype(np.float32))
    res = {}
    for kind in ("pop", "spop"):
        col = RankCollector("cpu")
        col.update(_score(kind, prefixes[:400], counts, 0), torch.from_numpy(rem[:400]))
        res[kind] = col.metrics((20,))
    assert all(res["spop"][k] >= res["pop"][k] for k in res["pop"])
    assert res["spop"]["Recall@20"] <= res["spop"]["HR@20"]
    assert res["spop"]["P@20"] <= res["spop"]["Recall@20"]


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _cli(*args: str, capsys: pytest.CaptureFixture[str]) -> _Result:
    """Run `sbrbench.cli.main` in-process (the real command, without paying torch's import again)."""
    from sbrbench.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return _Result(code, out.out, out.err)


def test_cli_evaluate_subprocess(runs: dict[str, Path]) -> None:
    p = subprocess.run([sys.executable, "-m", "sbrbench", "evaluate", str(runs["pop"]), "--json"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["n_examples"] == N_TEST


def test_cli_evaluate_and_compare(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    p = _cli("evaluate", str(runs["spop"]), "--ks", "10,50", "--json", capsys=capsys)
    assert p.returncode == 0, p.stderr
    obj = json.loads(p.stdout)
    ranks = load_ranks(runs["spop"] / "ranks" / "test.npy")
    assert obj["metrics"] == pytest.approx(metrics_from_ranks(ranks, (10, 50)))
    p = _cli("evaluate", str(runs["spop"]), "--split", "valid", capsys=capsys)
    assert p.returncode == 0 and "MRR" in p.stdout
    p = _cli("evaluate", "--compare", str(runs["pop"]), str(runs["spop"]), "--metric", "P@20", "--json", capsys=capsys)
    assert p.returncode == 0, p.stderr
    obj = json.loads(p.stdout)
    assert obj["metric"] == "P@20" and obj["ttest_rel"]["pvalue"] < 1e-6
    p = _cli("evaluate", "--compare", str(runs["pop"]), str(runs["spop"]), capsys=capsys)
    assert p.returncode == 0 and "Wilcoxon" in p.stdout


@pytest.mark.parametrize(
    "make_args,match",
    [
        (lambda r, t: ["evaluate", str(t / "nope")], "no run directory"),
        (lambda r, t: ["evaluate", str(t / "bad")], "malformed"),
        (lambda r, t: ["evaluate", str(r["pop"]), "--ks", "5,x"], "bad cut-off"),
        (lambda r, t: ["evaluate", str(r["pop"]), "--split", "tset"], "Did you mean"),
        (lambda r, t: ["evaluate", "--compare", str(r["pop"])], "exactly two"),
        (lambda r, t: ["evaluate", "--compare", str(r["pop"]), str(r["other_data"])], "different data"),
        (lambda r, t: ["evaluate", "--compare", str(r["pop"]), str(r["spop"]), "--metric", "MAP@5"], "unknown metric"),
        (lambda r, t: ["evaluate", str(r["pop"]), "--gpu", "0", "--recompute"], "CUDA|not available"),
    ],
)
def test_cli_evaluate_errors_are_one_line(
    runs: dict[str, Path], tmp_path: Path, make_args, match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text("{not json")
    p = _cli(*make_args(runs, tmp_path), capsys=capsys)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    import re

    assert re.search(match, lines[0]), lines[0]
