"""SR-GNN's training step against its floor, measured in the same process.

    python bench/bench_floor.py --data DIR [--device cpu] [--rounds 8] [--steps 20] [--threads 1]
                                [--profile] [--out results/bench/srgnn-floor-<device>.json]

The floor of one full-catalogue training step at SR-GNN's batch size (B = 100) and dimension
(d = 100) on a catalogue of |V| items is what no implementation can skip:

* the scoring product `S = Q W^T` (B×d @ d×|V|) and its two backward products `dQ = dS W`
  and `dW = dS^T Q`;
* cross-entropy over the B×|V| scores, forward and backward;
* one dense Adam step (weight decay, as `sbrbench.optim.make_optimizer`) on the |V|×d item table.

The script times that floor (a leaf `Q`, the table `W`, one `make_optimizer` Adam on `W`) and
SR-GNN's real training step (`model.training_loss`, backward, `clip_gradients`, the run's
optimizer over all parameters, batches from `training_source` as `sbrbench train` draws them)
alternately, `--rounds` blocks of `--steps` steps each, and reports the ratio step / floor per
round (median and range) and each floor part alone. `--profile` prints the operators of one
block of SR-GNN steps (torch.profiler, self CPU time). Writes `--out` (JSON) with the machine's
load average, the thread count and the time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _per_step(fn: Callable[[], object], steps: int, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def floor_parts(
    n_items: int, dim: int, bsz: int, lr: float, l2: float, device: str = "cpu"
) -> dict[str, Callable[[], object]]:
    """Closures for the floor step and each of its parts alone, on fresh random tensors on `device`."""
    import torch
    import torch.nn.functional as F

    from sbrbench.optim import make_optimizer

    gen = torch.Generator().manual_seed(0)
    table = torch.nn.Parameter((torch.rand(n_items, dim, generator=gen) * 0.2 - 0.1).to(device))
    holder = torch.nn.Module()
    holder.table = table
    opt = make_optimizer(holder, lr, l2)
    query = (torch.rand(bsz, dim, generator=gen) * 0.2 - 0.1).to(device).requires_grad_()
    targets = torch.randint(1, n_items, (bsz,), generator=gen).to(device)
    q0 = query.detach()
    w0 = table.detach()
    ds = torch.rand(bsz, n_items, generator=gen).to(device)
    scores0 = q0 @ w0.t()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        query.grad = None
        F.cross_entropy(query @ table.t(), targets).backward()
        opt.step()

    def cross_entropy() -> None:
        s = scores0.detach().requires_grad_()
        F.cross_entropy(s, targets).backward()

    table.grad = torch.zeros_like(table)
    return {
        "floor_step": step,
        "score_forward": lambda: q0 @ w0.t(),
        "grad_query": lambda: ds @ w0,
        "grad_table": lambda: ds.t() @ q0,
        "cross_entropy": cross_entropy,
        "adam_step": opt.step,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="processed dataset directory (full Diginetica)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed block")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="default results/bench/srgnn-floor-<cpu|cuda>.json")
    args = ap.parse_args()

    import torch

    from sbrbench.batching import item_tensor, training_source
    from sbrbench.data.store import load_processed
    from sbrbench.device import resolve_device, resolve_threads
    from sbrbench.models import MODELS, resolve_config
    from sbrbench.optim import make_optimizer

    device = resolve_device(device=args.device)
    threads = resolve_threads(args.threads)
    tag = "cuda" if device.startswith("cuda") else "cpu"
    out = args.out or ROOT / "results" / "bench" / f"srgnn-floor-{tag}.json"
    ds, ds_dir = load_processed(args.data)
    torch.manual_seed(0)
    mc = resolve_config("srgnn", ds.name)
    model = MODELS.get("srgnn")(ds.n_items, mc.params)
    model.prepare(ds, ("train",), ds_dir / "graphs")
    model = model.to(device)
    fit = training_source(model, ds, ("train",), device, items=item_tensor(ds, device))
    opt = model.configure_optimizer(mc.train.lr, mc.train.l2) or make_optimizer(model, mc.train.lr, mc.train.l2)
    bsz = mc.train.batch_size
    batches = fit.batches(bsz, generator=torch.Generator().manual_seed(0))
    # the batches are drawn before timing: both sides then time arithmetic, not batch assembly
    pool = [next(batches) for _ in range(args.steps)]
    model.train()
    cursor = iter(())

    def model_step() -> None:
        nonlocal cursor
        b = next(cursor, None)
        if b is None:
            cursor = iter(pool)
            b = next(cursor)
        opt.zero_grad(set_to_none=True)
        model.training_loss(b).backward()
        model.clip_gradients()
        opt.step()

    parts = floor_parts(ds.n_items, model.params.dim, bsz, mc.train.lr, mc.train.l2, device)
    for fn in [model_step, *parts.values()]:
        for _ in range(3):
            fn()
    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        row = {"load_1min": os.getloadavg()[0]}
        order = ["model_step", *parts] if r % 2 == 0 else [*parts, "model_step"]
        for name in order:
            row[name] = _per_step(model_step if name == "model_step" else parts[name], args.steps, device)
        row["ratio"] = row["model_step"] / row["floor_step"]
        rounds.append(row)
        print(json.dumps({k: round(v * 1e3, 2) if k not in ("ratio", "load_1min") else round(v, 3)
                          for k, v in row.items()}), flush=True)

    def med(key: str) -> float:
        return statistics.median(x[key] for x in rounds)

    ratios = [x["ratio"] for x in rounds]
    result = {
        "dataset": ds.name, "n_items": ds.n_items, "dim": model.params.dim, "batch_size": bsz,
        "device": device, "threads": threads, "host": platform.node(),
        "machine": platform.processor() or platform.machine(),
        "load_avg_start": rounds[0]["load_1min"], "load_avg_end": list(os.getloadavg()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rounds": args.rounds, "steps_per_round": args.steps,
        "ms_per_step": {k: round(med(k) * 1e3, 3) for k in ["model_step", *parts]},
        "ratio_step_over_floor": {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3),
                                  "max": round(max(ratios), 3)},
        "floor_examples_per_s": round(bsz / med("floor_step"), 1),
        "model_examples_per_s": round(bsz / med("model_step"), 1),
        "target": "step / floor <= 1.3",
    }
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if tag == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                model_step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
