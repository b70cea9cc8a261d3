"""Paper-compatible switches: the official early-stopping rule, best-of figures, TAGNN's per-split
padding length, the released code's scheduler timing, TAGNN++'s AGC scope and initialisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sbrbench.batching import ExampleSource
from sbrbench.data.dataset import ProcessedDataset, augment_all_prefixes, from_sequences
from sbrbench.models import create_model
from sbrbench.train import train
from sbrbench.train.stopping import EarlyStopping


def _official_stopping(hits: list[float], mrrs: list[float], patience: int) -> int:
    """SR-GNN / TAGNN / GCE-GNN `main.py`: epochs run before `bad_counter >= patience` (re-statement)."""
    best = [0.0, 0.0]
    bad = 0
    for epoch, (hit, mrr) in enumerate(zip(hits, mrrs)):
        flag = 0
        if hit >= best[0]:
            best[0], flag = hit, 1
        if mrr >= best[1]:
            best[1], flag = mrr, 1
        bad += 1 - flag
        if bad >= patience:
            return epoch + 1
    return len(hits)


@pytest.mark.parametrize("seed", range(5))
def test_official_stopping_rule_equals_the_official_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    hits, mrrs = rng.integers(40, 50, 30).tolist(), rng.integers(10, 20, 30).tolist()
    stop = EarlyStopping(3, "MRR@20", "official")
    ran = 0
    for epoch, (h, m) in enumerate(zip(hits, mrrs), 1):
        if stop.should_stop:
            break
        stop.update(epoch, {"HR@20": h, "MRR@20": m})
        ran = epoch
    assert ran == _official_stopping(hits, mrrs, 3)
    assert stop.best_value == max(mrrs[:ran]) and mrrs[stop.best_epoch - 1] == stop.best_value


def test_metric_rule_resets_and_official_rule_never_does() -> None:
    metric, official = EarlyStopping(2, "MRR@20"), EarlyStopping(2, "MRR@20", "official")
    for epoch, (h, m) in enumerate([(1, 1), (0, 0), (2, 2), (0, 0)], 1):
        metric.update(epoch, {"HR@20": h, "MRR@20": m})
        official.update(epoch, {"HR@20": h, "MRR@20": m})
    assert (metric.bad_epochs, metric.should_stop) == (1, False)
    assert (official.bad_epochs, official.should_stop) == (2, True)


def _dataset(tmp: Path) -> Path:
    rng = np.random.default_rng(1)
    sessions = [[(s + k) % 30 + 1 for k in range(int(rng.integers(2, 9)))] for s in rng.integers(0, 30, 150)]
    sessions[-1] = list(range(1, 21))  # the test split's longest prefix (19) exceeds training's
    items, offsets, n_items = from_sequences("pc", "t", sessions)
    idx = np.arange(150)
    splits = {"train": augment_all_prefixes(offsets, idx[:110]), "valid": augment_all_prefixes(offsets, idx[110:130]),
              "test": augment_all_prefixes(offsets, idx[130:])}
    ProcessedDataset("pc", "t", n_items, items, offsets, splits).save(tmp / "pc")
    return tmp / "pc"


def test_paper_compatible_runs_use_the_official_habits_and_report_best_of_figures(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    small = {"dim": 8, "epochs": 3, "batch_size": 32, "lr": 0.01}
    honest = train("tagnn-code", data, results_dir=tmp_path / "a", overrides=small)
    paper = train("tagnn-code", data, results_dir=tmp_path / "b", overrides=small, select_on="test")
    cfg = json.loads((Path(paper["run_dir"]) / "config.json").read_text())
    assert cfg["train"]["stopping"] == "official" and cfg["hparams"]["eval_len_max"] == "split"
    assert cfg["train"]["lr_schedule"] == "epoch-start"  # the released code's default, in both modes
    hcfg = json.loads((Path(honest["run_dir"]) / "config.json").read_text())
    assert hcfg["train"]["stopping"] == "metric" and hcfg["hparams"]["eval_len_max"] == "fit"
    assert "paper_best" not in honest
    best = paper["paper_best"]
    rows = [json.loads(json.dumps(r)) for r in paper_history(Path(paper["run_dir"]))]
    assert best["MRR@20"]["value"] == pytest.approx(max(float(r["test_MRR@20"]) for r in rows), rel=1e-5)
    assert best["P@20"]["value"] == pytest.approx(max(float(r["test_P@20"]) for r in rows), rel=1e-5)
    # the user's own setting wins over the paper-compatible one
    mine = train("tagnn-code", data, results_dir=tmp_path / "c", overrides={**small, "stopping": "metric"},
                 select_on="test")
    assert json.loads((Path(mine["run_dir"]) / "config.json").read_text())["train"]["stopping"] == "metric"


def paper_history(run: Path) -> list[dict[str, str]]:
    import csv

    return list(csv.DictReader((run / "history.csv").open()))


def test_eval_len_max_split_pads_each_split_to_its_own_longest_prefix(tmp_path: Path) -> None:
    ds = ProcessedDataset.load(_dataset(tmp_path))
    test_max = int(ds.split("test").pos.max())
    torch.manual_seed(0)
    split = create_model("tagnn-code", ds.n_items, dim=8, eval_len_max="split")
    split.prepare(ds, ("train",))
    assert split.len_max < test_max
    fixed = create_model("tagnn-code", ds.n_items, dim=8)
    fixed.load_state_dict(split.state_dict())
    fixed.len_max = test_max  # what the official code does at test time: the test split's len_max
    batch = ExampleSource.from_dataset(ds, "test", graphs=True).batch(slice(0, 40))
    split.eval()
    fixed.eval()
    split.evaluation_split(ds, "test")
    with torch.no_grad():
        a, b = split(batch), fixed(batch)
        assert torch.allclose(a, b, atol=1e-6)
        fixed.len_max = split.len_max
        assert not torch.allclose(a, fixed(batch), atol=1e-6)  # padding length changes the scores
    split.train()  # training keeps the fitted len_max
    fixed.train()
    with torch.no_grad():
        assert torch.allclose(split(batch), fixed(batch), atol=1e-6)


def test_tagnnpp_agc_leaves_the_classifier_unclipped_unless_asked() -> None:
    from sbrbench.optim import adaptive_grad_clip_

    for scope in ("no-classifier", "all"):
        torch.manual_seed(0)
        model = create_model("tagnnpp", 40, dim=8, heads=2, agc_scope=scope)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 10  # every unit far above lambda * ||W||
        emb = model.embedding.weight.grad.clone()
        other = model.readout.linear_one.weight.grad.clone()
        model.clip_gradients()
        assert not torch.equal(model.readout.linear_one.weight.grad, other)
        assert torch.equal(model.embedding.weight.grad, emb) == (scope == "no-classifier")
        if scope == "all":
            ref = emb.clone()
            w = model.embedding.weight.detach().clone().requires_grad_()
            w.grad = ref
            adaptive_grad_clip_([w], model.params.agc_clip, model.params.agc_eps)
            assert torch.allclose(model.embedding.weight.grad, w.grad)
