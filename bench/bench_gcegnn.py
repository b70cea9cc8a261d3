"""GCE-GNN and CM-GNN CPU throughput on a fixed slice of full Diginetica, beside the official GCE-GNN code.

    SBRBENCH_DATA_DIR=/tmp/sbrdata python bench/bench_gcegnn.py [DATASET] [--official PATH]
        [--batches 10] [--repeats 2] [--official-batches 2] [--eval-examples 2000] [--threads 1]

One process, one thread (on a shared machine more torch threads than free cores make every
small op spin-wait). The same `--batches` training batches of 100 (drawn once with a fixed seed
from the fit split) go through every model, in `--repeats` rounds that alternate the models, so
that ratios compare runs made under the same load; `uptime` load is recorded beside every figure.
A training step is what the Trainer does: build the batch, `training_loss`, backward, the model's
gradient clipping, fused Adam. Evaluation is `sbrbench.evaluate.score_examples` (ranks and
metrics) over the first `--eval-examples` test examples. Peak memory is measured apart, one
subprocess per model (`--worker memory:NAME`, skipped with `--no-memory`): RSS after loading the
data and building the model, then peak RSS over a few training steps and one evaluation batch
(high-water mark reset through /proc/self/clear_refs between the two).

With `--official PATH` (a checkout of CCIIPLab/GCE-GNN; its model.py / utils.py / aggregator.py
are imported from PATH, never copied here) the official CombineGraph trains on the same examples
(its `utils.Data` over the whole fit split, padded to its longest prefix as the official run
does; batches collated in this process: no DataLoader workers) and evaluates with its own loop
(top-20 hit and MRR in numpy) on the same test examples. No patch is needed to run it on a CPU
(its `trans_to_cuda` is a no-op without CUDA); `tqdm` is replaced by a pass-through when absent.
The official global graph is our ε-graph (identical to its `adj_12` / `num_12`) sampled by its
own `handle_adj` (numpy seed 2020, as its main.py). Same-weights check: our GCE-GNN's parameters
and sampled neighbours copied into the official model, scores compared on a few test batches.

CM-GNN (batch-restricted and `hgcn_scope=all` H-GCN) trains in the same rounds; the H-GCN pass
(forward + backward of s_h alone) is timed per step for both scopes on the same batches.
Writes `--out-dir`/gcegnn.json and `--out-dir`/cmgnn.json. About 3 minutes with `--official` on
one free core (the official code takes 8-12 s per training batch of 100 on one thread).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch


# ---- measurement helpers ----------------------------------------------------------------------------
def load() -> str:
    """`uptime`'s load averages (1, 5, 15 min)."""
    try:
        out = subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout
        return out.strip().split("load average:")[-1].strip()
    except (OSError, subprocess.CalledProcessError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _status_kib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return float("nan")


class Phase:
    """Peak RSS (MiB) of a block of code: resets the kernel's high-water mark on entry (Linux)."""

    def __enter__(self) -> Self:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.exact = True
        except OSError:
            self.exact = False  # then the peak is the process's since start
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_mib = round(_status_kib("VmHWM") / 1024, 1)


def timed(fn: Any, *args: Any) -> tuple[float, float]:
    """(wall, process CPU) seconds of fn(*args)."""
    w, c = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - w, time.process_time() - c


# ---- our side ----------------------------------------------------------------------------------------
def train_step(model: Any, opt: Any, source: Any, idx: torch.Tensor) -> None:
    """One Trainer step on the examples `idx` of `source`."""
    batch = source.batch(idx, idx.numpy())
    opt.zero_grad(set_to_none=True)
    loss = model.training_loss(batch)
    loss.backward()
    model.clip_gradients()
    opt.step()


def build(name: str, ds: Any, overrides: dict[str, Any]) -> tuple[Any, Any, float]:
    from sbrbench.models import create_model, resolve_config
    from sbrbench.optim import make_optimizer

    torch.manual_seed(0)
    cfg = resolve_config(name, ds.name, overrides)
    model = create_model(name, ds.n_items, ds.name, **overrides)
    t0 = time.perf_counter()
    model.prepare(ds, ("train",), None)
    prep = time.perf_counter() - t0
    model.train()
    return model, make_optimizer(model, cfg.train.lr, cfg.train.l2), prep


def evaluate_ours(model: Any, test: Any, batch_size: int) -> tuple[float, float, dict[str, float]]:
    """(wall s, CPU s, metrics) of sbrbench's evaluation of `test`."""
    from sbrbench.evaluate import score_examples

    score_examples(model, test.head(batch_size), batch_size, "cpu")  # warm-up
    w, c = time.perf_counter(), time.process_time()
    metrics = score_examples(model, test, batch_size, "cpu").metrics((20,))
    return time.perf_counter() - w, time.process_time() - c, metrics


def hgcn_pass(model: Any, batch: Any) -> None:
    """Forward and backward of the H-GCN session vector s_h alone."""
    model.zero_grad(set_to_none=True)
    s_h = model.high_order_session(batch.seq, batch.mask)
    s_h.backward(torch.ones_like(s_h))


# ---- the official code -------------------------------------------------------------------------------
def import_official(path: str) -> tuple[Any, Any]:
    """The official `model` and `utils` modules from `path` (tqdm stubbed if missing)."""
    try:
        import tqdm  # noqa: F401
    except ImportError:
        stub = types.ModuleType("tqdm")
        stub.tqdm = lambda x, *a, **k: x  # type: ignore[attr-defined]
        stub.__spec__ = importlib.machinery.ModuleSpec("tqdm", None)
        sys.modules["tqdm"] = stub
    sys.path.insert(0, str(Path(path).resolve()))
    import model as official_model  # type: ignore[import-not-found]
    import utils as official_utils  # type: ignore[import-not-found]

    return official_model, official_utils


def official_opt(p: Any) -> argparse.Namespace:
    """The official main.py's options for this dataset (Diginetica: n_iter 2, dropout_gcn 0.2)."""
    return argparse.Namespace(hiddenSize=p.dim, batch_size=100, n_iter=p.hop, n_sample=p.sample_num,
                              n_sample_all=p.topk, dropout_gcn=p.dropout_gcn, dropout_local=p.dropout_local,
                              dropout_global=p.dropout_global, activate=p.activate, alpha=p.alpha,
                              lr=1e-3, l2=1e-5, lr_dc=0.1, lr_dc_step=3)


def official_batch(data: Any, idx: np.ndarray) -> list[torch.Tensor]:
    """`DataLoader(data, num_workers=0)`'s batch of the examples `idx`."""
    from torch.utils.data import default_collate

    return default_collate([data[int(i)] for i in idx])


def official_train_step(om: Any, model: Any, data: Any, idx: np.ndarray) -> None:
    """One step of the official `train_test` training loop."""
    batch = official_batch(data, idx)
    model.optimizer.zero_grad()
    targets, scores = om.forward(model, batch)
    loss = model.loss_function(scores, targets.long() - 1)
    loss.backward()
    model.optimizer.step()


def official_evaluate(om: Any, model: Any, data: Any, n: int) -> tuple[float, float, dict[str, float]]:
    """The official predicting loop (batches of 100, top-20 hit and MRR in numpy) on the first n examples."""
    model.eval()
    hit, mrr = [], []
    w, c = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for start in range(0, n, 100):
            targets, scores = om.forward(model, official_batch(data, np.arange(start, min(start + 100, n))))
            sub = scores.topk(20)[1].numpy()
            for score, target in zip(sub, targets.numpy()):
                hit.append(np.isin(target - 1, score))
                where = np.where(score == target - 1)[0]
                mrr.append(0 if len(where) == 0 else 1 / (where[0] + 1))
    out = time.perf_counter() - w, time.process_time() - c, {"HR@20": float(np.mean(hit)), "MRR@20": float(np.mean(mrr))}
    model.train()
    return out


def copy_weights_into_official(ours: Any, official: Any) -> None:
    """Our GCE-GNN's parameters and sampled neighbours into the official CombineGraph."""
    sd = {k: v.detach().clone() for k, v in ours.state_dict().items()}
    d = ours.params.dim
    with torch.no_grad():
        official.embedding.weight.copy_(sd["embedding.weight"])
        for r in range(4):
            getattr(official.local_agg, f"a_{r}").copy_(sd["local_agg.a"][r].view(d, 1))
        for i in range(ours.params.hop):
            agg = getattr(official, f"agg_gcn_{i}")
            for w in ("w_1", "w_2", "w_3"):
                getattr(agg, w).copy_(sd[f"global_agg.{i}.{w}"])
        official.pos_embedding.weight.copy_(sd["readout.pos_embedding.weight"])
        official.w_1.copy_(sd["readout.w_1"])
        official.w_2.copy_(sd["readout.w_2"])
        official.glu1.weight.copy_(sd["readout.glu1.weight"])
        official.glu1.bias.copy_(sd["readout.glu1.bias"])
        official.glu2.weight.copy_(sd["readout.glu2.weight"])
    official.adj_all = ours.neighbour_items.clone()
    official.num = ours.neighbour_weights.float().clone()


# ---- setup shared by the timing run and the memory workers -------------------------------------------
def setup(args: argparse.Namespace) -> dict[str, Any]:
    from sbrbench.batching import ExampleSource, item_tensor
    from sbrbench.data.store import load_processed

    ds, _ = load_processed(args.dataset)
    items = item_tensor(ds)
    fit = ExampleSource.from_dataset(ds, "train", graphs=True, items=items)
    test = ExampleSource.from_dataset(ds, "test", graphs=True, items=items).head(args.eval_examples)
    perm = torch.randperm(len(fit), generator=torch.Generator().manual_seed(0))
    slices = [perm[i * 100:(i + 1) * 100] for i in range(1 + args.batches)]
    return {"ds": ds, "fit": fit, "test": test, "warm": slices[:1], "timed": slices[1:]}


MODELS = {"gcegnn": ("gcegnn", {}), "cmgnn": ("cmgnn", {}), "cmgnn_all": ("cmgnn", {"hgcn_scope": "all"})}


def build_official(args: argparse.Namespace, ds: Any, gcp: Any) -> tuple[Any, Any, Any, Any, float]:
    """(model module, CombineGraph, train Data, test Data, Data build seconds) of the official code."""
    from sbrbench.graphs import dataset_graph

    om, ou = import_official(args.official)
    px, tg = ds.prefixes("train")
    t0 = time.perf_counter()
    off_train = ou.Data((px, tg))  # padded to the fit split's longest prefix, as the official run
    data_s = time.perf_counter() - t0
    tx, tt = ds.prefixes("test")
    off_test = ou.Data((tx, tt))  # padded to the test split's longest prefix, as the official run
    g = dataset_graph("global", ds, ("train",), None, eps=gcp.eps, topk=gcp.topk)
    adj = [g.neighbors[i, : g.counts[i]].tolist() for i in range(ds.n_items)]
    num = [g.weights[i, : g.counts[i]].tolist() for i in range(ds.n_items)]
    np.random.seed(2020)
    torch.manual_seed(2020)
    a, n = ou.handle_adj(adj, ds.n_items, gcp.topk, num)
    official = om.CombineGraph(official_opt(gcp), ds.n_items, a, n)
    official.train()
    return om, official, off_train, off_test, data_s


def memory_worker(args: argparse.Namespace, side: str) -> dict[str, Any]:
    """RSS after set-up, then peak RSS over 2 training steps and over one evaluation batch, of one model."""
    from sbrbench.models import resolve_config

    st = setup(args)
    if side == "official":
        gcp = resolve_config("gcegnn", st["ds"].name).params
        om, official, off_train, off_test, _ = build_official(args, st["ds"], gcp)
        after_setup = _status_kib("VmRSS") / 1024
        with Phase() as train_ph:
            for idx in st["warm"] + st["timed"][:1]:
                official_train_step(om, official, off_train, idx.numpy())
        with Phase() as eval_ph:
            official_evaluate(om, official, off_test, 100)
        eval_batch = 100
    else:
        m, opt, _ = build(MODELS[side][0], st["ds"], MODELS[side][1])
        after_setup = _status_kib("VmRSS") / 1024
        with Phase() as train_ph:
            for idx in st["warm"] + st["timed"][:1]:
                train_step(m, opt, st["fit"], idx)
        with Phase() as eval_ph:
            evaluate_ours(m, st["test"].head(500), 500)
        eval_batch = 500
    return {"rss_after_setup_mib": round(after_setup, 1), "train_peak_rss_mib": train_ph.peak_mib,
            "eval_peak_rss_mib": eval_ph.peak_mib, "eval_batch_size": eval_batch,
            "peak_is_phase_only": train_ph.exact}


def memory(args: argparse.Namespace, side: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, args.dataset, "--worker", f"memory:{side}", "--batches", "2",
           "--threads", str(args.threads)] + (["--official", args.official] if args.official else [])
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"memory worker {side} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---- main --------------------------------------------------------------------------------------------
def main(argv: list[str]) -> None:
    from sbrbench.io import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", nargs="?", default="diginetica")
    ap.add_argument("--official", help="checkout of CCIIPLab/GCE-GNN (model.py, utils.py, aggregator.py)")
    ap.add_argument("--batches", type=int, default=10, help="timed training batches per model and round")
    ap.add_argument("--repeats", type=int, default=2, help="rounds alternating the models")
    ap.add_argument("--official-batches", type=int, default=2, help="timed official training batches per round")
    ap.add_argument("--eval-examples", type=int, default=2000)
    ap.add_argument("--official-eval-examples", type=int, default=100)
    ap.add_argument("--check-batches", type=int, default=2, help="test batches of 100 in the same-weights check")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-cmgnn", action="store_true")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--out-dir", default="results/bench")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(memory_worker(args, args.worker.split(":", 1)[1])))
        return
    bs = 100
    st = setup(args)
    ds, fit, test, warm, timed_slices = st["ds"], st["fit"], st["test"], st["warm"], st["timed"]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"
    print(f"{ds.name}: {len(fit)} fit examples; {args.batches} batches x {args.repeats} rounds; load {load()}", file=sys.stderr)

    models: dict[str, tuple[Any, Any]] = {}
    prepare_s: dict[str, float] = {}
    for key in ["gcegnn"] + ([] if args.no_cmgnn else ["cmgnn", "cmgnn_all"]):
        m, opt, prepare_s[key] = build(MODELS[key][0], ds, MODELS[key][1])
        models[key] = (m, opt)
    official = None
    if args.official:
        om, official, off_train, off_test, data_s = build_official(args, ds, models["gcegnn"][0].params)
        first = timed_slices[0]
        assert official_batch(off_train, first.numpy())[4].tolist() == fit.batch(first, first.numpy()).targets.tolist()

    # training rounds, alternating the models on the same batches
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in list(models) + (["official"] if official else [])}
    for r in range(args.repeats):
        for key, (m, opt) in models.items():
            for idx in warm:
                train_step(m, opt, fit, idx)
            l0, wall, cpu = load(), 0.0, 0.0
            for idx in timed_slices:
                w, c = timed(train_step, m, opt, fit, idx)
                wall, cpu = wall + w, cpu + c
            n_ex = bs * len(timed_slices)
            runs[key].append({"examples_per_s": n_ex / wall, "cpu_ms_per_batch": 1000 * cpu / len(timed_slices),
                              "load_before": l0, "load_after": load()})
            print(f"round {r} {key}: {n_ex / wall:.1f} ex/s, {1000 * cpu / len(timed_slices):.1f} CPU ms/batch, load {l0}",
                  file=sys.stderr)
        if official is not None:
            om_slices = timed_slices[: args.official_batches]
            if r == 0:
                official_train_step(om, official, off_train, warm[0].numpy())
            l0, wall, cpu, collate = load(), 0.0, 0.0, 0.0
            for idx in om_slices:
                w, c = timed(official_train_step, om, official, off_train, idx.numpy())
                wall, cpu = wall + w, cpu + c
                collate += timed(official_batch, off_train, idx.numpy())[0]
            n_ex = bs * len(om_slices)
            runs["official"].append({"examples_per_s": n_ex / wall, "cpu_ms_per_batch": 1000 * cpu / len(om_slices),
                                     "batch_collation_share": collate / wall, "load_before": l0, "load_after": load()})
            print(f"round {r} official: {n_ex / wall:.2f} ex/s, {1000 * cpu / len(om_slices):.0f} CPU ms/batch, load {l0}",
                  file=sys.stderr)

    def summary(key: str) -> dict[str, Any]:
        rs = runs[key]
        return {"train_examples_per_s": round(statistics.median(x["examples_per_s"] for x in rs), 2),
                "train_cpu_ms_per_batch": round(statistics.median(x["cpu_ms_per_batch"] for x in rs), 1),
                "rounds": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in x.items()} for x in rs]}

    def ratio(a: str, b: str) -> dict[str, Any]:
        wall = [x["examples_per_s"] / y["examples_per_s"] for x, y in zip(runs[a], runs[b])]
        cpu = [y["cpu_ms_per_batch"] / x["cpu_ms_per_batch"] for x, y in zip(runs[a], runs[b])]
        return {"median": round(statistics.median(wall), 3), "per_round": [round(x, 3) for x in wall],
                "cpu_time_median": round(statistics.median(cpu), 3), "cpu_time_per_round": [round(x, 3) for x in cpu]}

    # evaluation
    evals: dict[str, Any] = {}
    for key, (m, _) in models.items():
        if key == "cmgnn_all":
            continue  # H-GCN does not run in evaluation: the same computation as cmgnn's there
        l0 = load()
        w, c, met = evaluate_ours(m, test, 500)
        evals[key] = {"eval_examples_per_s": round(len(test) / w, 1), "eval_cpu_ms_per_100": round(100_000 * c / len(test), 1),
                      "eval_batch_size": 500, "eval_examples": len(test), "metrics_after_timed_training": met, "load": l0}
        m.train()
    if official is not None:
        n_eval = min(args.official_eval_examples, len(test))
        l0 = load()
        w, c, met = official_evaluate(om, official, off_test, n_eval)
        evals["official"] = {"eval_examples_per_s": round(n_eval / w, 2), "eval_cpu_ms_per_100": round(100_000 * c / n_eval, 1),
                             "eval_batch_size": 100, "eval_examples": n_eval, "load": l0}

    # same weights: ours into the official model
    same: dict[str, Any] | None = None
    if official is not None:
        ours = models["gcegnn"][0]
        copy_weights_into_official(ours, official)
        ours.eval()
        official.eval()
        diffs, scale = [], 0.0
        with torch.no_grad():
            for i in range(args.check_batches):
                sl = np.arange(i * bs, min((i + 1) * bs, len(test)))
                _, s_off = om.forward(official, official_batch(off_test, sl))
                s_ours = ours(test.batch(torch.from_numpy(sl), sl))[:, 1:]
                diffs.append(float((s_off - s_ours).abs().max()))
                scale = max(scale, float(s_off.abs().max()))
        same = {"batches": args.check_batches, "batch_size": bs, "max_abs_score_diff": max(diffs), "score_scale": scale,
                "weights": "sbrbench gcegnn (after its timed training) copied into the official CombineGraph, "
                           "with its sampled neighbours; eval mode, the first test batches"}
        ours.train()

    # H-GCN passes on the same batches, both scopes alternating
    hg: dict[str, list[float]] = {"batch": [], "all": [], "batch_cpu": [], "all_cpu": []}
    if not args.no_cmgnn:
        l_hg = load()
        for idx in timed_slices:
            batch = fit.batch(idx, idx.numpy())
            for key, scope in (("cmgnn", "batch"), ("cmgnn_all", "all")):
                w, c = timed(hgcn_pass, models[key][0], batch)
                hg[scope].append(w)
                hg[scope + "_cpu"].append(c)

    mem: dict[str, Any] = {}
    if not args.no_memory:
        for side in list(models) + (["official"] if official is not None else []):
            mem[side] = memory(args, side)
            print(f"memory {side}: {mem[side]}", file=sys.stderr)

    slice_info = {"fit_examples": len(fit), "train_batches": args.batches, "batch_size": bs, "rounds": args.repeats,
                  "official_train_batches_per_round": args.official_batches if official is not None else None,
                  "order": "a fixed random permutation (seed 0) of the fit split; the same batches for every model"}
    result: dict[str, Any] = {
        "dataset": ds.name, "machine": machine, "torch_threads": torch.get_num_threads(), "slice": slice_info,
        "ours": {**summary("gcegnn"), **evals["gcegnn"], "memory": mem.get("gcegnn"),
                 "graph_and_sampling_s": round(prepare_s["gcegnn"], 2), "hparams": dict(models["gcegnn"][0].params.__dict__)},
    }
    if official is not None:
        result["official"] = {**summary("official"), **evals["official"], "memory": mem.get("official"),
                              "data_build_s": round(data_s, 1), "path": str(args.official),
                              "note": "official model.py/utils.py unmodified; batches collated in-process (no workers)"}
        result["speedup_train"] = ratio("gcegnn", "official")
        result["speedup_train_target"] = 25
        result["speedup_eval"] = round(evals["gcegnn"]["eval_examples_per_s"] / evals["official"]["eval_examples_per_s"], 1)
        result["speedup_eval_cpu_time"] = round(evals["official"]["eval_cpu_ms_per_100"] / evals["gcegnn"]["eval_cpu_ms_per_100"], 1)
        result["same_weights"] = same
    else:
        print("no --official PATH given: measuring sbrbench only", file=sys.stderr)
    result["load_end"] = load()
    out_dir = Path(args.out_dir)
    atomic_write_json(out_dir / "gcegnn.json", result)
    print(json.dumps(result, indent=1))

    if not args.no_cmgnn:
        ms = {k: round(1000 * statistics.median(v), 1) for k, v in hg.items()}
        cm = {
            "dataset": ds.name, "machine": machine, "torch_threads": torch.get_num_threads(), "slice": slice_info,
            "gcegnn": summary("gcegnn"),
            "cmgnn": {**summary("cmgnn"), **evals["cmgnn"], "memory": mem.get("cmgnn"), "graphs_s": round(prepare_s["cmgnn"], 2)},
            "cmgnn_all": {**summary("cmgnn_all"), "memory": mem.get("cmgnn_all"), "graphs_s": round(prepare_s["cmgnn_all"], 2)},
            "train_ratio_cmgnn_to_gcegnn": ratio("cmgnn", "gcegnn"),
            "train_ratio_cmgnn_all_to_gcegnn": ratio("cmgnn_all", "gcegnn"),
            "train_ratio_target": 0.8,
            "hgcn_pass_ms_per_step": {"batch": ms["batch"], "all": ms["all"], "batch_cpu": ms["batch_cpu"],
                                      "all_cpu": ms["all_cpu"], "load": l_hg,
                                      "what": "median over the timed batches of forward + backward of s_h alone"},
            "load_end": load(),
        }
        atomic_write_json(out_dir / "cmgnn.json", cm)
        print(json.dumps(cm, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
