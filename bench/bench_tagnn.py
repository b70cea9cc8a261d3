"""TAGNN family vs SR-GNN: training and evaluation throughput, measured in one process.

    SBRBENCH_MIRROR=../shared/datasets sbrbench preprocess diginetica --data-dir /tmp/sbrdata   # once
    OMP_NUM_THREADS=1 python bench/bench_tagnn.py --data-dir /tmp/sbrdata [--threads 1] [--rounds 2]

On a fixed slice of full Diginetica (SR-GNN protocol, 43,097 items), with each model's Diginetica
defaults (batch size, dim, heads) and freshly initialised weights:

* training: `--train-examples` examples (twice as many for SR-GNN) of the same fixed random draw
  of the training split, cut into each model's batches, after one untimed warm-up step; Adam,
  AGC where the model applies it. Models: srgnn, tagnn, tagnnpp, tagnnpp-code, and
  `tagnn (previous)`: TAGNN with the previous target attention (`tagnn_reference`: every padded
  position, recomputing backward), on fewer examples;
* evaluation: the first `--eval-examples` of the test split (five times as many for SR-GNN, fewer
  for the previous TAGNN), batches of 500, scored over the full catalogue and ranked exactly as
  `sbrbench train` does (`evaluate.score_examples`: eval mode, `no_grad`).

Also the worst case for memory: one training step of TAGNN on the 100 longest training prefixes
(up to 69 clicks), whose kept probabilities would exceed the CPU budget, so the backward pass
recomputes them: peak RSS above the RSS before the step (sampled every 2 ms).

The models are measured in `--rounds` interleaved rounds and the best round of each is kept, so
that other processes on a shared machine disturb the ratios less. Printed and written to
results/bench/tagnn.json: the ratios TAGNN-family / SR-GNN training examples/s, TAGNN evaluation
new / previous, and evaluation / training examples/s of each model (> 1: a forward pass costs less
per example than forward + backward), the load average before and after, and the largest score
difference between the new and the previous TAGNN on one evaluation batch (fp32). Reports,
never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "results" / "bench"
MODELS = ("srgnn", "tagnn", "tagnnpp", "tagnnpp-code", "tagnn (previous)")
EVAL_BATCH = 500


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Bench:
    """The data slice, the models and their optimizers, shared by every round."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        from sbrbench.batching import ExampleSource
        from sbrbench.data.store import load_dataset

        self.args, self.device = args, args.device
        self.ds = load_dataset("diginetica", data_dir=Path(args.data_dir) if args.data_dir else None)
        self.train_src = ExampleSource.from_dataset(self.ds, "train", self.device, graphs=True)
        perm = torch.randperm(len(self.train_src), generator=torch.Generator().manual_seed(0))
        self.train_index = perm[: args.train_examples + 100].to(self.device)  # + warm-up batch
        self.models: dict[str, tuple] = {}

    def model(self, label: str):  # type: ignore[no-untyped-def]
        """(model, optimizer, train options) of `label`, created on first use (seed 0)."""
        if label not in self.models:
            import torch

            from sbrbench.models import create_model, resolve_config
            from sbrbench.optim import make_optimizer

            name = "tagnn" if label == "tagnn (previous)" else label
            cfg = resolve_config(name, "diginetica")
            torch.manual_seed(0)
            model = create_model(name, self.ds.n_items, "diginetica")
            model.prepare(self.ds, ("train",))
            model.to(self.device)
            if label == "tagnn (previous)":
                model.target.reference = True
            opt = make_optimizer(model, cfg.train.lr, cfg.train.l2)
            self.models[label] = (model, opt, cfg)
        return self.models[label]

    def train(self, label: str, n_examples: int) -> dict:
        """Training examples/s over `n_examples` of the fixed draw (after one warm-up batch)."""
        import torch.nn.functional as F

        model, opt, cfg = self.model(label)
        bs = cfg.train.batch_size
        model.train()
        n, t0 = 0, 0.0
        for i, start in enumerate(range(0, bs + n_examples, bs)):
            if i == 1:
                _sync(self.device)
                t0 = time.perf_counter()
            batch = self.train_src.batch(self.train_index[start : min(start + bs, bs + n_examples)])
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(batch), batch.targets)
            loss.backward()
            model.clip_gradients()
            opt.step()
            if i >= 1:
                n += len(batch)
        _sync(self.device)
        secs = time.perf_counter() - t0
        return {"examples": n, "batch_size": bs, "seconds": round(secs, 3), "examples_per_s": round(n / secs, 2)}

    def evaluate(self, label: str, n_examples: int) -> dict:
        """Evaluation examples/s over the first `n_examples` of the test split (as `sbrbench train`)."""
        from sbrbench.batching import ExampleSource
        from sbrbench.evaluate import score_examples

        model, _, _ = self.model(label)
        src = ExampleSource.from_dataset(self.ds, "test", self.device, graphs=True, limit=n_examples)
        _sync(self.device)
        t0 = time.perf_counter()
        score_examples(model, src, EVAL_BATCH, self.device).metrics((20,))
        _sync(self.device)
        secs = time.perf_counter() - t0
        return {"examples": len(src), "seconds": round(secs, 3), "examples_per_s": round(len(src) / secs, 2)}

    def score_check(self) -> dict:
        """Largest |new - previous| TAGNN score (fp32, untrained weights) on 100 test examples."""
        import torch

        from sbrbench.batching import ExampleSource
        from sbrbench.models.tagnn_reference import reference_mode

        model, _, _ = self.model("tagnn")
        batch = ExampleSource.from_dataset(self.ds, "test", self.device, graphs=True, limit=100).batch(slice(0, 100))
        model.eval()
        with torch.no_grad():
            new = model(batch)[:, 1:]
            with reference_mode(model):
                old = model(batch)[:, 1:]
        return {"max_abs_diff": float((new - old).abs().max()), "score_scale": float(old.abs().max())}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_check(bench: Bench) -> dict:
    """One TAGNN training step on the 100 longest training prefixes: seconds and peak RSS growth."""
    import threading

    import numpy as np
    import torch
    import torch.nn.functional as F

    from sbrbench.models.tagnn import node_units, plan_chunks

    model, _, _ = bench.model("tagnn")
    longest = np.argsort(-bench.ds.examples("train").length, kind="stable")[:100]
    batch = bench.train_src.batch(torch.as_tensor(longest, device=bench.device))
    n_units = int(node_units(model.embedding(batch.nodes), batch).rows.shape[0])
    chunk, keep = plan_chunks(n_units, 100, bench.ds.n_items - 1, torch.float32, torch.device(bench.device), 0, True)
    model.train()
    model.zero_grad(set_to_none=True)
    base = peak = _rss_mib()
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.002):
            peak = max(peak, _rss_mib())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    F.cross_entropy(model(batch), batch.targets).backward()
    _sync(bench.device)
    secs = time.perf_counter() - t0
    stop.set()
    thread.join()
    model.zero_grad(set_to_none=True)
    return {
        "batch": 100, "longest_prefix": int(batch.lengths.max()), "units": n_units, "chunk_items": chunk,
        "kept": keep, "seconds_fwd_bwd": round(secs, 3),
        "peak_rss_above_base_mib": round(max(peak, _rss_mib()) - base, 1),
    }


def main() -> None:
    """Parse options, run the rounds, print and write the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("SBRBENCH_DATA_DIR"), help="where diginetica is preprocessed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--train-examples", type=int, default=800, help="timed training examples per model and round")
    ap.add_argument("--eval-examples", type=int, default=1000, help="timed test examples per model and round")
    ap.add_argument("--previous-train-examples", type=int, default=200)
    ap.add_argument("--previous-eval-examples", type=int, default=500)
    ap.add_argument("--out", default=str(OUT / "tagnn.json"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    bench = Bench(args)
    report: dict = {
        "benchmark": "TAGNN family vs SR-GNN, training and evaluation examples/s in one process",
        "dataset": "diginetica (srgnn protocol), full catalogue",
        "n_items": bench.ds.n_items,
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "threads": args.threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "eval_batch_size": EVAL_BATCH,
        "load_average_before": [round(x, 2) for x in load_before],
    }
    if not args.device.startswith("cuda"):  # first, before other steps leave freed memory to reuse
        report["memory_worst_case"] = memory_check(bench)
        print(json.dumps({"memory_worst_case": report["memory_worst_case"]}), flush=True)
    report["score_check"] = bench.score_check()
    print(json.dumps({"score_check": report["score_check"]}), flush=True)
    runs: dict[str, dict[str, list]] = {m: {"train": [], "eval": []} for m in MODELS}
    for r in range(args.rounds):
        for label in MODELS:
            prev = label == "tagnn (previous)"
            tr = bench.train(label, args.previous_train_examples if prev else (
                2 * args.train_examples if label == "srgnn" else args.train_examples))
            ev = bench.evaluate(label, args.previous_eval_examples if prev else (
                5 * args.eval_examples if label == "srgnn" else args.eval_examples))
            runs[label]["train"].append(tr)
            runs[label]["eval"].append(ev)
            print(json.dumps({"round": r, "model": label, "train_eps": tr["examples_per_s"],
                              "eval_eps": ev["examples_per_s"], "load": os.getloadavg()[0]}), flush=True)
    best = {
        m: {k: max(x["examples_per_s"] for x in runs[m][k]) for k in ("train", "eval")} for m in MODELS
    }
    report["models"] = {m: {"best_examples_per_s": best[m], "runs": runs[m]} for m in MODELS}
    srgnn_train = best["srgnn"]["train"]
    report["ratios"] = {
        "train_vs_srgnn": {m: round(best[m]["train"] / srgnn_train, 4) for m in MODELS if m != "srgnn"},
        "train_srgnn_over_model": {m: round(srgnn_train / best[m]["train"], 2) for m in MODELS if m != "srgnn"},
        "tagnn_train_new_over_previous": round(best["tagnn"]["train"] / best["tagnn (previous)"]["train"], 2),
        "tagnn_eval_new_over_previous": round(best["tagnn"]["eval"] / best["tagnn (previous)"]["eval"], 2),
        "eval_over_train_per_example": {m: round(best[m]["eval"] / best[m]["train"], 2) for m in MODELS},
    }
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps({"best_examples_per_s": best, "ratios": report["ratios"],
                      "load_before": report["load_average_before"], "load_after": report["load_average_after"],
                      "wall_seconds": report["wall_seconds"]}, indent=1), flush=True)
    from sbrbench.io import atomic_write_json

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, report)


if __name__ == "__main__":
    main()
