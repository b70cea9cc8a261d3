"""GRU4Rec: sbrbench against the official PyTorch code on the same data, in one process.

    git clone https://github.com/hidasib/GRU4Rec_PyTorch_Official /tmp/gru4rec_official   # never into the repo
    SBRBENCH_MIRROR=../shared/datasets sbrbench preprocess diginetica --data-dir /tmp/sbrdata   # once
    OMP_NUM_THREADS=1 python bench/bench_gru4rec.py --official /tmp/gru4rec_official --data-dir /tmp/sbrdata

Data: the training sessions of a processed dataset (default Diginetica, SR-GNN protocol, the
`train` split of a validation-selected run; `--top-items N`: restricted to its N most frequent
items, `sbrbench.data.subset`), in time order, the first ones up to
`--train-examples` targets; both implementations train on exactly these sessions in this order
(the official code gets them as a DataFrame whose Time orders them) with the dataset's official
parameter file (sbrbench's per-dataset defaults of `gru4rec`) for `--epochs` epochs.

* Throughput: the official `GRU4Rec.fit`'s epoch time (its own printed timing) against the epoch
  time of sbrbench's Trainer (`sbrbench.train.train`, history `seconds`: the training pass only),
  as events (targets) per second; implementations alternate seed by seed so that load drifts hit
  both.
* Accuracy: the first `--eval-examples` test examples, scored by sbrbench's evaluator for both:
  the official model's weights are copied into sbrbench's GRU4Rec through the official item map
  (items outside it are not scored by either); HR@20 / MRR@20 per seed, mean ± std.

Prints and writes results/bench/gru4rec.json (with the load average before and after). Reports,
never asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import json
import os
import platform
import re
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "results" / "bench"


def load_official(path: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gru4rec_official", path / "gru4rec_pytorch.py")
    if spec is None or spec.loader is None:
        sys.exit(f"no gru4rec_pytorch.py under {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # Under NumPy 2 its compatibility-mode init returns float64 (float32 array × np.float64 sigma),
    # which `Tensor.set_` refuses: cast back to the float32 it intends (values unchanged).
    init = mod.GRU4RecModel._init_numpy_weights
    mod.GRU4RecModel._init_numpy_weights = lambda self, shape: init(self, shape).astype("float32")
    return mod


def bench_data(ds, n_targets: int, n_eval: int):  # type: ignore[no-untyped-def]
    """(dataset restricted to the chosen training sessions and the first eval examples, sessions)."""
    from sbrbench.data.dataset import Split

    fit = ds.fit_sessions(("train",))
    order = np.arange(len(fit))
    if ds.session_time is not None and np.isfinite(ds.session_time[fit.session]).all():
        order = np.argsort(ds.session_time[fit.session], kind="stable")
    order = order[fit.lengths[order] >= 2]
    cum = np.cumsum(fit.lengths[order] - 1)
    order = order[: int(np.searchsorted(cum, n_targets)) + 1]
    chosen = fit.session[order]
    tr = ds.splits["train"]
    keep = np.isin(tr.session, chosen)
    splits = {"train": Split(tr.session[keep], tr.pos[keep])}
    for name in ("valid", "test"):
        sp = ds.splits[name]
        splits[name] = Split(sp.session[:n_eval], sp.pos[:n_eval])
    sessions = [fit.items[fit.offsets[j] : fit.offsets[j + 1]] for j in order]
    return dataclasses.replace(ds, name=f"{ds.name}-bench", splits=splits), sessions


def official_frame(sessions):  # type: ignore[no-untyped-def]
    import pandas as pd

    rows = [(j, int(item), j * 10_000 + k) for j, s in enumerate(sessions) for k, item in enumerate(s)]
    return pd.DataFrame(rows, columns=["SessionId", "ItemId", "Time"])


def official_params(cfg) -> dict:  # type: ignore[no-untyped-def]
    p, t = cfg.params, cfg.train
    return {"layers": [int(x) for x in p.layers.replace("/", ",").split(",")], "loss": p.loss,
            "batch_size": t.batch_size, "dropout_p_embed": p.dropout_p_embed, "dropout_p_hidden": p.dropout_p_hidden,
            "learning_rate": t.lr, "momentum": p.momentum, "sample_alpha": p.sample_alpha, "n_sample": p.n_sample,
            "embedding": p.embedding, "constrained_embedding": p.constrained_embedding, "n_epochs": t.epochs,
            "bpreg": p.bpreg, "elu_param": p.elu_param, "logq": p.logq}


def run_official(mod, frame, cfg, seed: int):  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(seed)  # dropout and the sample cache; the weights use numpy seed 42 (compatibility mode)
    gru = mod.GRU4Rec(device=torch.device("cpu"), **official_params(cfg))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        gru.fit(frame)
    secs = [float(x) for x in re.findall(r"Epoch\d+ --> loss: [-\d.naninf]+ \t\(([\d.]+)s\)", buf.getvalue())]
    return gru, secs


def copy_official(gru, model) -> None:  # type: ignore[no-untyped-def]
    """The official weights into sbrbench's GRU4Rec, rows of the official item map."""
    import torch

    ids = torch.as_tensor(gru.data_iterator.itemidmap.index.values.astype(np.int64))
    idx = torch.as_tensor(gru.data_iterator.itemidmap.values.astype(np.int64))
    m = gru.model
    with torch.no_grad():
        model.Wy.weight.zero_()
        model.By.weight.zero_()
        model.Wy.weight[ids] = m.Wy.weight[idx]
        model.By.weight[ids] = m.By.weight[idx]
        for ours, theirs in zip(model.G, m.G):
            ours.load_state_dict(theirs.state_dict())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, default=Path("/tmp/gru4rec_official"))
    ap.add_argument("--dataset", default="diginetica")
    ap.add_argument("--data-dir", default=os.environ.get("SBRBENCH_DATA_DIR"))
    ap.add_argument("--top-items", type=int, default=None, help="restrict the dataset to its N most frequent items")
    ap.add_argument("--train-examples", type=int, default=60_000)
    ap.add_argument("--eval-examples", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="hyper-parameter overrides key=value (both)")
    ap.add_argument("--out", type=Path, default=OUT / "gru4rec.json")
    args = ap.parse_args()

    import torch

    from sbrbench.batching import ExampleSource
    from sbrbench.data.store import load_processed
    from sbrbench.evaluate import score_examples
    from sbrbench.models import create_model, resolve_config
    from sbrbench.options import parse_key_values
    from sbrbench.results import RunDir
    from sbrbench.train import train

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    mod = load_official(args.official)
    ds, _ = load_processed(args.dataset, None, data_dir=args.data_dir)
    if args.top_items:
        from sbrbench.data.subset import top_items_subset

        ds = top_items_subset(ds, args.top_items)
    small, sessions = bench_data(ds, args.train_examples, args.eval_examples)
    overrides = {**parse_key_values(args.set, "--set"), "epochs": args.epochs}
    cfg = resolve_config("gru4rec", ds.name, overrides)  # a subset keeps its dataset's defaults
    frame = official_frame(sessions)
    n_targets = sum(len(s) - 1 for s in sessions)
    test = ExampleSource.from_dataset(small, "test")
    print(f"{len(sessions)} sessions, {n_targets} training events, {len(test)} test examples; "
          f"{cfg.params.loss}, layers {cfg.params.layers}, batch {cfg.train.batch_size}, {args.epochs} epoch(s)",
          file=sys.stderr)
    rows = []
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            gru, off_secs = run_official(mod, frame, cfg, seed)
            off_model = create_model("gru4rec", small.n_items, ds.name, **overrides)
            off_model.prepare(small, ("train",))
            copy_official(gru, off_model)
            off_metrics = score_examples(off_model, test, 500, "cpu").metrics((20,))
            rec = train("gru4rec", small, results_dir=tmp, overrides=overrides, seed=seed, ks=(20,),
                        threads=args.threads)
            ours_secs = [float(r["seconds"]) for r in RunDir(Path(rec["run_dir"])).read_history()]
            row = {"seed": seed, "official_seconds": sum(off_secs), "ours_seconds": sum(ours_secs),
                   "official_events_per_s": n_targets * len(off_secs) / max(sum(off_secs), 1e-9),
                   "ours_events_per_s": n_targets * len(ours_secs) / max(sum(ours_secs), 1e-9),
                   "official": {k: off_metrics[k] for k in ("HR@20", "MRR@20")},
                   "ours": {k: rec["test"][k] for k in ("HR@20", "MRR@20")}}
            row["speed_ratio"] = row["ours_events_per_s"] / row["official_events_per_s"]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)

    def stat(key: str, metric: str) -> dict:
        v = np.array([r[key][metric] for r in rows])
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}

    out = {
        "dataset": ds.name, "top_items": args.top_items, "sessions": len(sessions), "training_events": n_targets, "test_examples": len(test),
        "epochs": args.epochs, "params": dataclasses.asdict(cfg.params), "batch_size": cfg.train.batch_size,
        "lr": cfg.train.lr, "threads": args.threads, "device": "cpu", "platform": platform.platform(),
        "torch": torch.__version__, "official_commit": "d1fc31105577665d2f105de1c8d9a38d223a9a22",
        "rows": rows,
        "speed_ratio": {"mean": float(np.mean([r["speed_ratio"] for r in rows])),
                        "min": float(np.min([r["speed_ratio"] for r in rows]))},
        "official": {m: stat("official", m) for m in ("HR@20", "MRR@20")},
        "ours": {m: stat("ours", m) for m in ("HR@20", "MRR@20")},
        "load_before": load0, "load_after": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("speed_ratio", "official", "ours", "load_before", "load_after")}, indent=2))


if __name__ == "__main__":
    main()
