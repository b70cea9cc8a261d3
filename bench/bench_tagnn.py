"""TAGNN target attention memory (naive vs chunked) and TAGNN-family training throughput.

    python bench/bench_tagnn.py [--device cpu|cuda] [--threads 2] [--steps 5] [--skip-naive]

On full Diginetica (43,097 items plus padding):

* `memory`: forward + backward of the target-attention term for the 100 training examples with
  the longest prefixes (L = 69), naive (`target_attention_scores_naive`, B x |V| x L tensors) and
  chunked (`target_attention_scores`), each in its own subprocess; CPU: peak RSS (sampled every 2 ms)
  above the process's RSS before the call; CUDA: peak allocated memory above the allocation before the call.
  Also the largest absolute difference between the two forms (outputs and gradients), computed
  on a smaller batch so the naive form fits anywhere.
* `throughput`: training examples/s of `tagnn`, `tagnnpp` and `tagnnpp-released` (their default
  batch sizes, Diginetica defaults, random batches of the full training set, Adam, AGC where
  the model applies it) over `--steps` steps after one warm-up step.

Reports, never asserts. Writes results/bench/tagnn-<device>.json (`--only` updates its part).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

DIGI = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "diginetica" / "GCE-GNN"
OUT = Path(__file__).resolve().parents[1] / "results" / "bench"


def load_diginetica():  # type: ignore[no-untyped-def]
    """Full Diginetica (SR-GNN protocol) from the shared GCE-GNN pickles."""
    from sbrbench.data.srgnn_pickles import build_from_srgnn_pickles, read_pairs, read_train_sessions

    prefixes, targets = read_pairs(DIGI / "test.txt")
    return build_from_srgnn_pickles(
        "diginetica", "srgnn", read_train_sessions(DIGI / "all_train_seq.txt"), prefixes, targets
    )


def _rss_now_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class _RssSampler:
    """Peak RSS during a block, sampled every 2 ms from /proc (ru_maxrss keeps earlier peaks)."""

    def __enter__(self) -> _RssSampler:
        import threading

        self.peak = _rss_now_mib()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_now_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_now_mib())


def _inputs(ds, batch: int, device: str, dim: int = 100):  # type: ignore[no-untyped-def]
    import numpy as np
    import torch

    from sbrbench.batching import ExampleSource

    ex = ds.examples("train")
    longest = np.argsort(-ex.length, kind="stable")[:batch]
    src = ExampleSource.from_dataset(ds, "train", device)
    b = src.batch(torch.as_tensor(longest, device=device))
    gen = torch.Generator().manual_seed(0)
    items = (torch.rand(ds.n_items - 1, dim, generator=gen) * 0.2 - 0.1).to(device).requires_grad_()
    shape = (len(b), b.seq.shape[1], dim)
    q = (torch.rand(shape, generator=gen) * 0.2 - 0.1).to(device).requires_grad_()
    h = (torch.rand(shape, generator=gen) * 0.2 - 0.1).to(device).requires_grad_()
    n_pad = (69 - b.lengths).clamp(min=0).float()
    return items, q, h, b.mask, n_pad


def worker_memory(args: argparse.Namespace) -> dict:
    """One form's peak memory for forward + backward at batch 100, L = 69."""
    import torch

    from sbrbench.models.tagnn import auto_chunk, target_attention_scores, target_attention_scores_naive

    torch.set_num_threads(args.threads)
    ds = load_diginetica()
    items, q, h, mask, n_pad = _inputs(ds, 100, args.device)
    fn = target_attention_scores_naive if args.worker == "naive" else target_attention_scores
    del ds
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_now_mib()
    t0 = time.perf_counter()
    with _RssSampler() as rss:
        out = fn(items, q, h, mask, n_pad)
        out.sum().backward()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = rss.peak
    return {
        "form": args.worker,
        "batch": int(q.shape[0]),
        "seqlen": int(q.shape[1]),
        "n_items": int(items.shape[0]),
        "chunk_items": auto_chunk(q.shape[0], q.shape[1] + 1, items.shape[0]) if args.worker == "chunked" else None,
        "peak_above_base_mib": round(peak - base, 1),
        "seconds_fwd_bwd": round(time.perf_counter() - t0, 3),
    }


def max_abs_diff(device: str) -> dict:
    """Largest |chunked - naive| over outputs and gradients (batch 20 of the longest prefixes)."""
    import torch

    from sbrbench.models.tagnn import target_attention_scores, target_attention_scores_naive

    ds = load_diginetica()
    res = {}
    for official in (False, True):
        items, q, h, mask, n_pad = _inputs(ds, 20, device)
        pad = n_pad if official else None
        w = torch.randn(q.shape[0], items.shape[0], generator=torch.Generator().manual_seed(1)).to(device)
        a = target_attention_scores(items, q, h, mask, pad, chunk=5000)
        ga = torch.autograd.grad((a * w).sum(), (items, q, h))
        b = target_attention_scores_naive(items, q, h, mask, pad)
        gb = torch.autograd.grad((b * w).sum(), (items, q, h))
        res["official" if official else "masked"] = {
            "scores": float((a - b).detach().abs().max()),
            "grad_items": float((ga[0] - gb[0]).abs().max()),
            "grad_queries": float((ga[1] - gb[1]).abs().max()),
            "grad_values": float((ga[2] - gb[2]).abs().max()),
            "score_scale": float(b.abs().max()),
        }
    return res


def worker_throughput(args: argparse.Namespace) -> dict:
    """Training examples/s of one model with its Diginetica defaults."""
    import torch
    import torch.nn.functional as F

    from sbrbench.batching import ExampleSource
    from sbrbench.models import create_model, resolve_config
    from sbrbench.optim import make_optimizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ds = load_diginetica()
    cfg = resolve_config(args.worker, "diginetica")
    model = create_model(args.worker, ds.n_items, "diginetica")
    model.prepare(ds, ("train",))
    model.to(args.device)
    opt = make_optimizer(model, cfg.train.lr, cfg.train.l2)
    src = ExampleSource.from_dataset(ds, "train", args.device, graphs=True)
    it = src.batches(cfg.train.batch_size, generator=torch.Generator().manual_seed(0))
    model.train()
    n = 0
    for i in range(1 + args.steps):
        if i == 1:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        batch = next(it)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(batch), batch.targets)
        loss.backward()
        model.clip_gradients()
        opt.step()
        if i >= 1:
            n += len(batch)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    return {
        "model": args.worker,
        "batch_size": cfg.train.batch_size,
        "dim": cfg.params.dim,
        "steps": args.steps,
        "examples_per_s": round(n / secs, 1),
        "loss_last": round(float(loss), 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _run_worker(name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--device", args.device, "--threads", str(args.threads),
           "--steps", str(args.steps)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        err = p.stderr.strip().splitlines()
        return {"worker": name, "error": err[-1] if err else f"rc {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    """Parse options; run the workers in subprocesses and print/write the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--only", choices=["memory", "throughput"], default=None)
    ap.add_argument("--worker", default=None)
    args = ap.parse_args()
    if args.worker in ("naive", "chunked"):
        print(json.dumps(worker_memory(args)))
        return
    if args.worker:
        print(json.dumps(worker_throughput(args)))
        return
    import platform

    import torch

    report: dict = {
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "threads": args.threads,
        "torch": torch.__version__,
    }
    if args.only in (None, "memory"):
        report["max_abs_diff"] = max_abs_diff(args.device)
        print(json.dumps({"max_abs_diff": report["max_abs_diff"]}), flush=True)
        forms = ["chunked"] + ([] if args.skip_naive else ["naive"])
        report["memory"] = [_run_worker(f, args) for f in forms]
        print(json.dumps({"memory": report["memory"]}), flush=True)
    if args.only in (None, "throughput"):
        report["throughput"] = [_run_worker(m, args) for m in ("tagnn", "tagnnpp", "tagnnpp-released")]
        print(json.dumps({"throughput": report["throughput"]}), flush=True)
    from sbrbench.io import atomic_write_json

    path = OUT / f"tagnn-{args.device.replace(':', '')}.json"
    if args.only and path.is_file():  # keep the other part of an earlier report
        report = {**json.loads(path.read_text()), **report}
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, report)


if __name__ == "__main__":
    main()
