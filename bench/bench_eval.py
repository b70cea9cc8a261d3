"""Benchmark: full-catalogue evaluation of the 60,858 Diginetica test examples at dim 100.

Times, for several batch sizes, (a) the floor: a bare `matmul + topk(20)` per batch (what the
official SR-GNN code does, without even computing a metric), and (b) sbrbench's path: matmul +
`RankCollector.update` (pessimistic ranks on the device) + metrics at K = 5, 10, 20 at the end.
Best of N passes, the two paths interleaved in one process so machine load hits both alike; peak
memory of each path is measured in its own fresh process over 8 batches (ru_maxrss on CPU,
torch.cuda.max_memory_allocated on CUDA), since ru_maxrss never goes down.

    python bench/bench_eval.py [--device cpu|cuda] [--repeats 3] [--batches 100,500,2000] [--threads N]

Writes results/bench/eval.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

N_EXAMPLES = 60858  # Diginetica test examples (SR-GNN protocol)
N_ITEMS = 43098  # 43,097 items + padding id 0
DIM = 100


def _data(device: str, n: int):
    import torch

    g = torch.Generator().manual_seed(0)
    q = torch.randn(n, DIM, generator=g).to(device)
    emb = torch.randn(N_ITEMS, DIM, generator=g).to(device)
    targets = torch.randint(1, N_ITEMS, (n,), generator=g).to(device)
    return q, emb, targets


def _passes(device: str, n: int, batch: int):
    import torch

    from sbrbench.metrics import RankCollector

    q, emb, targets = _data(device, n)
    cuda = device.startswith("cuda")
    metrics: dict[str, float] = {}

    def floor_pass() -> None:
        for i in range(0, n, batch):
            torch.topk(q[i : i + batch] @ emb.T, 20, dim=1)
        if cuda:
            torch.cuda.synchronize()

    def ours_pass() -> None:
        col = RankCollector(device)
        for i in range(0, n, batch):
            col.update(q[i : i + batch] @ emb.T, targets[i : i + batch])
        metrics.update(col.metrics((5, 10, 20)))  # the one host synchronisation

    return floor_pass, ours_pass, metrics


def time_worker(batch: int, device: str, repeats: int, n: int) -> dict:
    """Best-of-`repeats` times of both paths, interleaved so machine load hits both alike."""
    import torch

    floor_pass, ours_pass, metrics = _passes(device, n, batch)
    times: dict[str, list[float]] = {"floor": [], "ours": []}
    with torch.inference_mode():
        for _ in range(repeats):
            for mode, fn in (("floor", floor_pass), ("ours", ours_pass)):
                t0 = time.perf_counter()
                fn()
                times[mode].append(time.perf_counter() - t0)
    return {"batch": batch, "times_s": times, "HR@20": metrics["HR@20"], "MRR@20": metrics["MRR@20"]}


def mem_worker(mode: str, batch: int, device: str) -> dict:
    """Peak memory of one path over 8 batches, in a fresh process (ru_maxrss never goes down)."""
    import torch

    n = 8 * batch
    floor_pass, ours_pass, _ = _passes(device, n, batch)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        (floor_pass if mode == "floor" else ours_pass)()
    res = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if cuda:
        res["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", default="100,500,2000")
    ap.add_argument("--n", type=int, default=N_EXAMPLES, help="examples (default: the 60,858 test examples)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--out", default="results/bench/eval.json")
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "BATCH"), help=argparse.SUPPRESS)
    ap.add_argument("--mem", nargs=2, metavar=("MODE", "BATCH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.worker:
        print(json.dumps(time_worker(int(a.worker[1]), a.device, a.repeats, a.n)))
        return
    if a.mem:
        print(json.dumps(mem_worker(a.mem[0], int(a.mem[1]), a.device)))
        return

    import torch
    from rich.console import Console
    from rich.table import Table

    from sbrbench.io import atomic_write_json

    def sub(*args: str) -> dict:
        cmd = [sys.executable, __file__, *args, "--device", a.device, "--repeats", str(a.repeats), "--n", str(a.n)]
        cmd += ["--threads", str(a.threads)] if a.threads else []
        p = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(p.stdout.strip().splitlines()[-1])

    rows = []
    for batch in [int(b) for b in a.batches.split(",")]:
        tm = sub("--worker", "time", str(batch))
        mem = {mode: sub("--mem", mode, str(batch)) for mode in ("floor", "ours")}
        floor_s, ours_s = min(tm["times_s"]["floor"]), min(tm["times_s"]["ours"])
        row = {
            "batch": batch, "floor_s": floor_s, "ours_s": ours_s, "ratio": ours_s / floor_s,
            "examples_per_s": a.n / ours_s, "times_s": tm["times_s"],
            "HR@20": tm["HR@20"], "MRR@20": tm["MRR@20"],
        }
        for mode in ("floor", "ours"):
            for key, v in mem[mode].items():
                row[f"{mode}_{key}"] = v
        rows.append(row)
        print(f"batch {batch}: floor {floor_s:.2f}s ours {ours_s:.2f}s ratio {ours_s / floor_s:.2f}", flush=True)
    info = {
        "benchmark": "full-catalogue evaluation, Diginetica test size",
        "n_examples": a.n, "n_items": N_ITEMS, "dim": DIM, "device": a.device, "repeats": a.repeats,
        "torch": torch.__version__, "threads": a.threads or torch.get_num_threads(),
        "load_average_at_end": list(__import__("os").getloadavg()), "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor() or platform.platform(),
        "target_ratio": 1.5, "rows": rows,
    }
    if a.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    atomic_write_json(Path(a.out), info)
    t = Table(title=f"evaluation of {a.n} examples × {N_ITEMS - 1} items, dim {DIM}, {a.device} "
                    f"({a.threads or torch.get_num_threads()} threads), best of {a.repeats}")
    for c in ("batch", "floor s", "ours s", "ours/floor", "examples/s", "peak RSS floor/ours MiB"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(str(r["batch"]), f"{r['floor_s']:.2f}", f"{r['ours_s']:.2f}", f"{r['ratio']:.2f}×",
                  f"{r['examples_per_s']:,.0f}", f"{r['floor_peak_rss_mib']:.0f} / {r['ours_peak_rss_mib']:.0f}"
                  + (f" (CUDA {r['floor_peak_cuda_mib']:.0f} / {r['ours_peak_cuda_mib']:.0f})"
                     if "ours_peak_cuda_mib" in r else ""))
    Console().print(t)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
