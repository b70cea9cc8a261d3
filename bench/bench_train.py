"""SR-GNN training and evaluation throughput on full Diginetica: sbrbench vs the official code.

    python bench/bench_train.py [--official /work/official/SR-GNN] [--batches 200]

Each side runs in its own subprocess (so peak RSS is its own) on the same machine in the same
run: `--batches` training steps of 100 examples (after `--warmup` steps) with Adam, and
`--eval-batches` evaluation batches. The official PyTorch code (CRIPAC-DIG/SR-GNN,
`pytorch_code/{model,utils}.py`, fetched outside this repository) is imported from `--official`
and patched at run time only (`Tensor.cuda` becomes a no-op on CPU). The script also loads the
official model's weights into sbrbench's SR-GNN and reports the largest score difference on one
batch (identical maths → float rounding only). Writes results/bench/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

DIGI = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "diginetica" / "GCE-GNN"


def load_diginetica():  # type: ignore[no-untyped-def]
    from sbrbench.data.srgnn_pickles import build_from_srgnn_pickles, read_pairs, read_train_sessions

    prefixes, targets = read_pairs(DIGI / "test.txt")
    return build_from_srgnn_pickles(
        "diginetica", "srgnn", read_train_sessions(DIGI / "all_train_seq.txt"), prefixes, targets
    )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_ours(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from sbrbench.batching import ExampleSource
    from sbrbench.metrics import RankCollector
    from sbrbench.models import create_model
    from sbrbench.optim import make_optimizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ds = load_diginetica()
    model = create_model("srgnn", ds.n_items)
    opt = make_optimizer(model, 1e-3, 1e-5)
    src = ExampleSource.concat([ExampleSource.from_dataset(ds, s, graphs=True) for s in ("train", "valid")])
    it = src.batches(args.batch_size, generator=torch.Generator().manual_seed(0))
    model.train()
    n = 0
    for i in range(args.warmup + args.batches):
        if i == args.warmup:
            t0 = time.perf_counter()
            n = 0
        b = next(it)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(b), b.targets)
        loss.backward()
        opt.step()
        n += len(b)
    train_eps = n / (time.perf_counter() - t0)
    test = ExampleSource.from_dataset(ds, "test", graphs=True)
    col = RankCollector("cpu")
    model.eval()
    n_eval = min(len(test), args.eval_batches * args.batch_size)
    with torch.no_grad():
        model(test.batch(slice(0, args.eval_batch_size)))
        t0 = time.perf_counter()
        for i in range(0, n_eval, args.eval_batch_size):
            b = test.batch(slice(i, min(i + args.eval_batch_size, n_eval)))
            col.update(model(b), b.targets)
        col.metrics((20,))
    eval_eps = n_eval / (time.perf_counter() - t0)
    return {"train_examples_per_s": train_eps, "eval_examples_per_s": eval_eps, "peak_rss_mib": peak_rss_mib(),
            "eval_batch_size": args.eval_batch_size}


def _import_official(path: str):  # type: ignore[no-untyped-def]
    import torch

    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    sys.path.insert(0, path)
    sys.modules.pop("networkx", None)
    try:
        import networkx  # noqa: F401
    except ImportError:  # utils.py imports networkx only for an unused global graph
        import types

        sys.modules["networkx"] = types.ModuleType("networkx")
    import model as official_model  # type: ignore[import-not-found]
    import utils as official_utils  # type: ignore[import-not-found]

    return official_model, official_utils


def _opt(batch_size: int):  # type: ignore[no-untyped-def]
    return argparse.Namespace(hiddenSize=100, batchSize=batch_size, nonhybrid=False, step=1, lr=1e-3, l2=1e-5,
                              lr_dc_step=3, lr_dc=0.1)


def worker_official(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    om, ou = _import_official(args.official)
    ds = load_diginetica()
    px, tg = ds.prefixes("train")
    vx, vt = ds.prefixes("valid")
    train_data = ou.Data((px + vx, tg + vt), shuffle=True)
    tx, tt = ds.prefixes("test")
    test_data = ou.Data((tx, tt), shuffle=False)
    model = om.SessionGraph(_opt(args.batch_size), ds.n_items)
    model.train()
    slices = train_data.generate_batch(args.batch_size)
    n = 0
    for j, i in enumerate(slices[: args.warmup + args.batches]):
        if j == args.warmup:
            t0 = time.perf_counter()
            n = 0
        model.optimizer.zero_grad()
        targets, scores = om.forward(model, i, train_data)
        loss = model.loss_function(scores, torch.Tensor(targets).long() - 1)
        loss.backward()
        model.optimizer.step()
        n += len(i)
    train_eps = n / (time.perf_counter() - t0)
    model.eval()
    slices = test_data.generate_batch(args.batch_size)[: args.eval_batches]
    hit, mrr = [], []
    t0 = time.perf_counter()
    n_eval = 0
    for i in slices:
        targets, scores = om.forward(model, i, test_data)
        sub = scores.topk(20)[1].detach().numpy()
        for s, t in zip(sub, targets):
            hit.append(np.isin(t - 1, s))
            w = np.where(s == t - 1)[0]
            mrr.append(0 if len(w) == 0 else 1 / (w[0] + 1))
        n_eval += len(i)
    eval_eps = n_eval / (time.perf_counter() - t0)
    return {"train_examples_per_s": train_eps, "eval_examples_per_s": eval_eps, "peak_rss_mib": peak_rss_mib(),
            "eval_batch_size": args.batch_size}


def check_same_maths(args: argparse.Namespace) -> dict:
    """Load the official model's weights into ours; compare scores on one test batch."""
    import numpy as np
    import torch

    from sbrbench.batching import ExampleSource
    from sbrbench.models import create_model

    om, ou = _import_official(args.official)
    ds = load_diginetica()
    torch.manual_seed(0)
    off = om.SessionGraph(_opt(100), ds.n_items)
    ours = create_model("srgnn", ds.n_items)
    names = {"gnn.b_iah": "gnn.b_in", "gnn.b_oah": "gnn.b_out", "gnn.linear_edge_in": "gnn.edge_in",
             "gnn.linear_edge_out": "gnn.edge_out", "linear_one": "readout.w_last", "linear_two": "readout.w_pos",
             "linear_three": "readout.q", "linear_transform": "readout.transform"}
    state = {}
    for k, v in off.state_dict().items():
        if k.startswith("gnn.linear_edge_f"):
            continue  # declared but unused in the official code
        for a, b in names.items():
            if k.startswith(a):
                k = b + k[len(a):]
                break
        state[k] = v
    ours.load_state_dict(state)
    tx, tt = ds.prefixes("test")
    data = ou.Data((tx[:100], tt[:100]), shuffle=False)
    off.eval()
    ours.eval()
    with torch.no_grad():
        _, s_off = om.forward(off, np.arange(100), data)
        s_ours = ours(ExampleSource.from_dataset(ds, "test", graphs=True).batch(slice(0, 100)))[:, 1:]
    return {"max_abs_score_diff": float((s_off - s_ours).abs().max()), "score_scale": float(s_off.abs().max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", help="directory with the official pytorch_code/{model,utils}.py")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--eval-batches", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--eval-batch-size", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/bench/train.json")
    ap.add_argument("--worker", choices=["ours", "official", "maths"])
    args = ap.parse_args()
    if args.worker:
        fn = {"ours": worker_ours, "official": worker_official, "maths": check_same_maths}[args.worker]
        print(json.dumps(fn(args)))
        return
    import platform

    def run(worker: str) -> dict:
        cmd = [sys.executable, __file__, "--worker", worker] + [
            a for a in sys.argv[1:] if a != "--worker"
        ]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{worker} failed:\n{r.stderr}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    out: dict = {"machine": f"{platform.processor() or platform.machine()}, {args.threads} threads",
                 "load_avg_start": list(os.getloadavg()), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "batches": args.batches, "batch_size": args.batch_size, "ours": run("ours")}
    if args.official:
        out["official"] = run("official")
        out["maths"] = run("maths")
        out["speedup_train"] = out["ours"]["train_examples_per_s"] / out["official"]["train_examples_per_s"]
        out["speedup_eval"] = out["ours"]["eval_examples_per_s"] / out["official"]["eval_examples_per_s"]
    else:
        print("no --official PATH given: measuring sbrbench only", file=sys.stderr)
    out["load_avg_end"] = list(os.getloadavg())
    from sbrbench.io import atomic_write_json

    atomic_write_json(args.out, out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
