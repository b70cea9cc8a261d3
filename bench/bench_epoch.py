"""Training and evaluation throughput of several models in one process, on any device.

    python bench/bench_epoch.py --data DIR [--device cuda] [--models srgnn,gcegnn,cmgnn,tagnn,tagnnpp]
                                [--seconds 60] [--threads N] [--out results/bench]

`DIR` is a processed dataset (e.g. full Diginetica: `sbrbench preprocess diginetica`). For each model
(paper defaults for the dataset, as `sbrbench train` would use them): training steps through the
Trainer's own `train_epoch` path (`model.training_loss`, backward, clip, Adam) for about `--seconds`
after a warm-up, then evaluation for about the same time, with the device synchronised before each
clock read. Evaluation alternates, over the same spans of test examples, with the forward pass
alone (no gradient, evaluation mode, batches built outside the clock) at the training batch size,
so that a change of machine load hits both. Reports examples/s for the three, the epoch time
extrapolated to the whole training set, peak memory (CUDA: max allocated; CPU: peak RSS of the
process so far), the ratio of each model's training throughput to SR-GNN's, evaluation's cost
relative to the forward pass (`eval_cost_vs_forward` over all spans, and the median of the spans'
ratios; target <= 2) and whether evaluation beats training per example. Writes
`<out>/epoch-<device>.json` and one `<out>/<model>-<device>.json` per model (one written by another
benchmark, such as bench_tagnn's `tagnn-cpu.json`, is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _peak_mib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_model(name: str, ds, ds_dir: Path, device: str, seconds: float, precision: str) -> dict:  # type: ignore[no-untyped-def]
    import torch

    from sbrbench.batching import item_tensor, training_source
    from sbrbench.device import autocast
    from sbrbench.evaluate import evaluation_source
    from sbrbench.metrics import RankCollector
    from sbrbench.models import MODELS, resolve_config
    from sbrbench.optim import make_optimizer

    torch.manual_seed(0)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    mc = resolve_config(name, ds.name)
    cls = MODELS.get(name)
    model = cls(ds.n_items, mc.params)
    model.prepare(ds, ("train",), ds_dir / "graphs")
    model = model.to(device)
    items = item_tensor(ds, device)
    fit = training_source(model, ds, ("train",), device, items=items)
    opt = model.configure_optimizer(mc.train.lr, mc.train.l2) or make_optimizer(model, mc.train.lr, mc.train.l2)
    bs = mc.train.batch_size
    batches = fit.batches(bs, generator=torch.Generator().manual_seed(0))
    model.train()

    def step() -> int:
        b = next(batches)
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = model.training_loss(b)
        loss.backward()
        model.clip_gradients()
        opt.step()
        return len(b)

    for _ in range(3):
        step()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += step()
        if n % (bs * 10) == 0:
            _sync(device)
    _sync(device)
    train_eps = n / (time.perf_counter() - t0)

    test = evaluation_source(model, ds, "test", device, items=items)
    ebs = mc.train.eval_batch_size
    model.eval()
    total = len(test)
    span = min(total, 4 * ebs)
    with torch.no_grad():
        first = test.batch(slice(0, min(ebs, total)))  # warm-up
        RankCollector(device).update(model(first).float(), first.targets)
        # evaluation and the forward pass alone alternate over the same spans of test examples, so
        # that a change of machine load hits both; evaluation builds its batches inside the clock
        # (as `sbrbench evaluate`), the forward pass at the training batch size outside it
        m = f = 0
        eval_s = forward_s = 0.0
        ratios: list[float] = []
        start = 0
        while eval_s < seconds:
            spans = [slice(i % total, min(i % total + ebs, total)) for i in range(start, start + span, ebs)]
            start = (start + span) % total
            col = RankCollector(device)
            _sync(device)
            t0 = time.perf_counter()
            for sl in spans:
                b = test.batch(sl)
                with autocast(device, precision):
                    scores = model(b)
                col.update(scores.float(), b.targets)
            col.ranks()
            _sync(device)
            e_block = time.perf_counter() - t0
            batches = [test.batch(slice(i, min(i + bs, sl.stop))) for sl in spans for i in range(sl.start, sl.stop, bs)]
            _sync(device)
            t0 = time.perf_counter()
            for b in batches:
                with autocast(device, precision):
                    model(b)
            _sync(device)
            f_block = time.perf_counter() - t0
            n_block = sum(sl.stop - sl.start for sl in spans)
            m, f, eval_s, forward_s = m + n_block, f + n_block, eval_s + e_block, forward_s + f_block
            ratios.append(e_block / f_block)
        eval_eps = m / eval_s
        forward_eps = f / forward_s
    return {
        "model": name, "device": device, "precision": precision, "batch_size": bs, "eval_batch_size": ebs,
        "train_examples_per_s": round(train_eps, 1), "eval_examples_per_s": round(eval_eps, 1),
        "forward_examples_per_s": round(forward_eps, 1),
        "eval_cost_vs_forward_median_block": round(statistics.median(ratios), 2), "blocks": len(ratios),
        "train_examples_timed": n, "eval_examples_timed": m, "forward_examples_timed": f,
        "epoch_seconds_extrapolated": round(len(fit) / train_eps, 1), "peak_memory_mib": round(_peak_mib(device), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="processed dataset directory")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default="srgnn,gcegnn,cmgnn,tagnn,tagnnpp")
    ap.add_argument("--seconds", type=float, default=60.0, help="timed seconds per model and phase")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    args = ap.parse_args()

    from sbrbench.data.store import load_processed
    from sbrbench.device import configure_precision, resolve_device, resolve_threads
    from sbrbench.results import device_name

    device = resolve_device(device=args.device)
    threads = resolve_threads(args.threads)
    configure_precision(args.precision, device)
    ds, ds_dir = load_processed(args.data)
    rows = []
    for name in args.models.split(","):
        row = bench_model(name, ds, ds_dir, device, args.seconds, args.precision)
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = next((r for r in rows if r["model"] == "srgnn"), None)
    for r in rows:
        if base:
            r["train_vs_srgnn"] = round(r["train_examples_per_s"] / base["train_examples_per_s"], 3)
        r["eval_vs_train_per_example"] = round(r["eval_examples_per_s"] / r["train_examples_per_s"], 2)
        r["eval_cost_vs_forward"] = round(r["forward_examples_per_s"] / r["eval_examples_per_s"], 2)
        r["eval_faster_than_training"] = r["eval_examples_per_s"] > r["train_examples_per_s"]
        r["eval_within_2x_forward"] = r["eval_cost_vs_forward"] <= 2.0
    tag = "cuda" if device.startswith("cuda") else "cpu"
    meta = {"dataset": ds.name, "device": device, "device_name": device_name(device), "threads": threads,
            "load_avg": os.getloadavg(), "host": platform.node(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"epoch-{tag}.json").write_text(json.dumps({**meta, "models": rows}, indent=2) + "\n")
    for r in rows:
        path = args.out / f"{r['model']}-{tag}.json"
        if path.exists() and "train_examples_per_s" not in json.loads(path.read_text()):
            print(f"kept {path}: another benchmark's result (this run's row is in epoch-{tag}.json)", file=sys.stderr)
            continue
        path.write_text(json.dumps({**meta, **r}, indent=2) + "\n")
    print(json.dumps({**meta, "models": rows}, indent=2))


if __name__ == "__main__":
    main()
