"""`sbrbench ablate`: variants, same seeds, deltas and paired tests from real runs; errors; components."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sbrbench.errors import SbrError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data_dir(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official SR-GNN sample of Diginetica, preprocessed (SR-GNN protocol, 10% validation)."""
    from sbrbench.data.preprocess import preprocess

    root = tmp_path_factory.mktemp("ablate-data")
    preprocess("diginetica-sample", data_dir=root, mirror=str(shared_datasets))
    return root


def _run_metric(run_dir: str, metric: str) -> float:
    from sbrbench.results import RunDir

    return RunDir(run_dir).metrics_from_ranks("test", (20,))["metrics"][metric]


def test_drop_component_cli_end_to_end(data_dir: Path, tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "sbrbench", "ablate", "srgnn", "--dataset", "diginetica-sample", "--drop", "gnn",
         "--seeds", "2", "--epochs", "1", "--set", "dim=16", "--data-dir", str(data_dir),
         "--results-dir", str(tmp_path), "--json"],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [v["name"] for v in out["variants"]] == ["full", "-gnn"]
    assert out["seeds"] == [42, 43] and out["metrics"] == ["P@20", "MRR@20"]
    assert "-gnn" in r.stderr and "full" in r.stderr  # the table goes to stderr with --json
    full, nognn = out["variants"]
    assert [x["seed"] for x in full["runs"]] == [x["seed"] for x in nognn["runs"]] == [42, 43]
    for m in out["metrics"]:
        ch = nognn["change"][m]
        assert math.isfinite(ch["abs"]) and ch["abs_std"] is not None and math.isfinite(ch["abs_std"])
        # The change is recomputed here from each run's stored ranks, seed by seed.
        diffs = [_run_metric(b["run_dir"], m) - _run_metric(a["run_dir"], m)
                 for a, b in zip(full["runs"], nognn["runs"])]
        assert ch["abs"] == pytest.approx(float(np.mean(diffs)), abs=1e-12)
        assert ch["rel_pct"] == pytest.approx(100 * ch["abs"] / full["mean"][m])
        t = nognn["tests"][m]
        assert 0.0 <= t["wilcoxon"] <= 1.0 and 0.0 <= t["ttest_rel"] <= 1.0 and t["n_examples"] == 99
        assert len(t["per_seed"]) == 2 and all(0.0 <= s["wilcoxon"] <= 1.0 for s in t["per_seed"])
    # The two variants really are different models: the -gnn runs have no GNN weights.
    for v, has_gnn in ((full, True), (nognn, False)):
        for run in v["runs"]:
            side = json.loads((Path(run["run_dir"]) / "ablation.json").read_text())
            assert side["variant"] == v["name"] and side["study"] == out["study"] and side["seed"] == run["seed"]
            cfg = json.loads((Path(run["run_dir"]) / "config.json").read_text())
            assert cfg["hparams"]["drop"] == ("" if has_gnn else "gnn") and cfg["hparams"]["dim"] == 16
    files = out["files"]
    assert Path(files["png"]).read_bytes()[:8] == PNG_MAGIC
    md = re.sub(r" +", " ", Path(files["md"]).read_text())  # tabulate pads cells: compare unpadded
    assert "| -gnn |" in md and "ΔP@20" in md
    assert json.loads(Path(files["json"]).read_text())["study"] == out["study"]
    assert Path(files["png"]).parent == tmp_path / "ablations"


def test_vary_non_neural_hyper_parameter(data_dir: Path, tmp_path: Path) -> None:
    from sbrbench.ablate import ablate

    out = ablate("sknn", "diginetica-sample", varies={"k": ["5", "50"]}, data_dir=data_dir, results_dir=tmp_path,
                 metrics=("P@20", "MRR@20", "HR@10"))
    names = [v["name"] for v in out["variants"]]
    assert names == ["full", "k=5", "k=50"] and out["seeds"] == [42]
    full, k5, k50 = out["variants"]
    # k=50 is sknn's Diginetica default, which applies to the derived diginetica-sample too
    assert k50["alias_of"] == "full" and k50["runs"] == full["runs"]  # the default value is the full model
    assert k50["change"]["P@20"]["abs"] == 0.0 and k50["tests"]["P@20"]["wilcoxon"] == 1.0
    run_full, run_k5 = full["runs"][0]["run_dir"], k5["runs"][0]["run_dir"]
    assert json.loads((Path(run_k5) / "config.json").read_text())["hparams"]["k"] == 5
    rec_full = json.loads((Path(run_full) / "metrics.json").read_text())["test"]
    rec_k5 = json.loads((Path(run_k5) / "metrics.json").read_text())["test"]
    assert rec_full["P@20"] != rec_k5["P@20"]  # real fits on real data: k changes the result
    for m in ("P@20", "MRR@20"):
        assert full["mean"][m] == pytest.approx(rec_full[m]) and k5["mean"][m] == pytest.approx(rec_k5[m])
        assert k5["change"][m]["abs"] == pytest.approx(rec_k5[m] - rec_full[m])
    assert k5["change"]["P@20"]["abs"] < 0  # 5 neighbours are too few on this sample
    assert Path(out["files"]["png"]).read_bytes()[:8] == PNG_MAGIC


def test_build_variants_validation_and_aliases() -> None:
    from sbrbench.ablate import build_variants, seed_list

    vs = build_variants("srgnn", "diginetica", ["gnn", "gnn", "gnn,global"], {"dim": ["100", "32"]}, {"epochs": 1})
    assert [(v.name, v.alias_of) for v in vs] == [
        ("full", None), ("-gnn", None), ("-gnn,attention", None), ("dim=100", "full"), ("dim=32", None)]
    assert vs[2].overrides == {"epochs": 1, "drop": "attention,gnn"}  # `global`: the component's old name
    # dropping on top of a user's --set drop=... keeps both
    assert build_variants("srgnn", None, ["gnn"], {}, {"drop": "attention"})[1].overrides["drop"] == "attention,gnn"
    assert seed_list(None, True) == [42, 43, 44] and seed_list(None, False) == [42] and seed_list([7, 3], True) == [7, 3]
    for args, msg in [
        ((["gnnn"], {}), "Did you mean 'gnn'"),
        (([], {"dimm": ["1"]}), "Did you mean 'dim'"),
        (([], {}), "at least one --drop"),
        (([], {"dim": ["x"]}), "expects an integer"),
    ]:
        with pytest.raises(SbrError, match=msg):
            build_variants("srgnn", None, *args)
    with pytest.raises(SbrError, match="declares no components"):
        build_variants("vsknn", None, ["gnn"], {})
    with pytest.raises(SbrError, match="has no effect"):
        build_variants("vsknn", None, [], {"lr": ["0.1"]})


@pytest.mark.parametrize(
    "args, message",
    [
        (["srgnn", "--drop", "gnnn"], "Did you mean 'gnn'"),
        (["vsknn", "--vary", "kk=50,100"], "Did you mean 'k'"),
        (["srgnn"], "at least one --drop"),
        (["sknn", "--drop", "gnn"], "declares no components"),
        (["srgnn", "--vary", "dim"], "PARAM=v1,v2"),
    ],
)
def test_cli_errors_are_one_line(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    from sbrbench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["ablate", *args, "--dataset", "diginetica-sample", "--data-dir", str(data_dir),
              "--results-dir", str(tmp_path)])
    assert exc.value.code not in (0, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not (tmp_path / "runs").exists()  # validation happens before any training


def test_a_neural_model_without_components_is_legal(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every registered model x component is run in test_every_model.py; declaring no component
    # only means --drop has nothing to switch off: --vary still ablates the model.
    from dataclasses import dataclass
    from typing import ClassVar

    import torch
    from torch import nn

    from sbrbench.ablate import build_variants
    from sbrbench.batching import ExampleSource
    from sbrbench.data.dataset import ProcessedDataset, augment_all_prefixes, from_sequences
    from sbrbench.models import MODELS, Model, create_model, model_info, register_model

    @dataclass
    class MeanParams:
        width: int = 8

    class MeanPool(Model):
        """Mean of the clicks' embeddings, scored against every item embedding."""

        Params: ClassVar[type] = MeanParams

        def __init__(self, n_items: int, params: MeanParams | None = None) -> None:
            super().__init__(n_items, params)
            self.embedding = nn.Embedding(n_items, self.params.width)

        def forward(self, batch):  # type: ignore[no-untyped-def]
            m = batch.mask.unsqueeze(2).float()
            s = (self.embedding(batch.seq) * m).sum(1) / m.sum(1)
            scores = s @ self.embedding.weight.t()
            scores[:, 0] = float("-inf")
            return scores

    monkeypatch.setattr(MODELS, "_items", dict(MODELS._items))  # the registration ends with the test
    register_model("meanpool")(MeanPool)
    assert model_info("meanpool")["components"] == []
    assert [v.name for v in build_variants("meanpool", None, [], {"width": ["4", "8"]})] == ["full", "width=4", "width=8"]
    with pytest.raises(SbrError, match="declares no components"):
        build_variants("meanpool", None, ["gnn"], {})
    with pytest.raises(SbrError, match="no setting 'drop'"):
        create_model("meanpool", 10, drop="gnn")  # nothing to drop: a one-line error
    items, offsets, n = from_sequences("toy", "t", [[1, 2, 3], [2, 3, 4, 1], [4, 4, 2]])
    ds = ProcessedDataset("toy", "t", n, items, offsets, {"train": augment_all_prefixes(offsets, np.arange(3))})
    model = create_model("meanpool", ds.n_items)
    batch = ExampleSource.from_dataset(ds, "train").batch(slice(0, 6))
    model.training_loss(batch).backward()
    assert torch.isfinite(model.embedding.weight.grad).all()
