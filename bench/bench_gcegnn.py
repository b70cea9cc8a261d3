"""GCE-GNN CPU training throughput: examples/s over a few hundred batches, extrapolated to a full epoch.

Usage: SBRBENCH_DATA_DIR=... python bench/bench_gcegnn.py DATASET [--batches N] [--threads T] [--set k=v ...]
Prints one JSON object: graph build time, train examples/s (wall and process CPU time), the
full-epoch time extrapolated from the timed batches (labelled as such), scoring examples/s and
peak RSS. On a shared machine use `--threads 1`: with more torch threads than free cores,
OpenMP's spinning barriers make every small op wait (measured 36x slower per step).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch
import torch.nn.functional as F


def main(argv: list[str]) -> None:
    """Run the benchmark on the processed dataset named in `argv[0]`."""
    from sbrbench.batching import ExampleSource, item_tensor
    from sbrbench.models import create_model, resolve_config
    from sbrbench.data.store import load_processed
    from sbrbench.device import seed_everything
    from sbrbench.optim import make_optimizer
    from sbrbench.options import parse_key_values

    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    name, n_batches = args.dataset, args.batches
    overrides = parse_key_values(args.set, "--set")
    ds, ds_dir = load_processed(name)
    seed_everything(42, "cpu")
    cfg = resolve_config("gcegnn", ds.name, overrides)
    model = create_model("gcegnn", ds.n_items, ds.name, **overrides)
    t0 = time.perf_counter()
    model.prepare(ds, ("train",), None)
    prep = time.perf_counter() - t0
    items = item_tensor(ds)
    fit = ExampleSource.from_dataset(ds, "train", graphs=True, items=items)
    bs = cfg.train.batch_size
    opt = make_optimizer(model, cfg.train.lr, cfg.train.l2)
    gen = torch.Generator().manual_seed(0)
    model.train()
    done, t0, c0 = 0, time.perf_counter(), time.process_time()
    for i, batch in enumerate(fit.batches(bs, generator=gen)):
        if i == n_batches:
            break
        opt.zero_grad()
        loss = F.cross_entropy(model(batch), batch.targets)
        loss.backward()
        opt.step()
        done += len(batch)
    train_s = time.perf_counter() - t0
    train_cpu_s = time.process_time() - c0
    ex_s = done / train_s
    test = ExampleSource.from_dataset(ds, "test", graphs=True, items=items)
    model.eval()
    n_eval, t0 = 0, time.perf_counter()
    with torch.no_grad():
        for i, batch in enumerate(test.batches(cfg.train.eval_batch_size)):
            if i == 10:
                break
            model(batch)
            n_eval += len(batch)
    eval_s = time.perf_counter() - t0
    print(json.dumps({
        "dataset": ds.name, "hparams": cfg.params_dict(), "torch_threads": torch.get_num_threads(),
        "graph_and_sampling_s": round(prep, 2), "train_examples_timed": done, "train_examples_per_s": round(ex_s, 1),
        "train_cpu_seconds_per_batch": round(train_cpu_s / max(n_batches, 1), 4),
        "fit_examples": len(fit), "full_epoch_s_extrapolated": round(len(fit) / ex_s, 1),
        "score_examples_per_s": round(n_eval / eval_s, 1), "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
