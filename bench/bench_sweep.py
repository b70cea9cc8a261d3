"""Ray's overhead per trial: the same runs in this process and on a local Ray instance.

Runs `--cells` S-POP fits on diginetica-sample (each a complete run record, ~0.1 s of work)
alternately in this process (`workers=0`) and on a local Ray instance with one worker, and
reports Ray's start-up and shut-down, the first task (a fresh worker importing torch and sbrbench)
and the steady-state overhead per task (Ray's wall time per run minus the in-process one), plus
the round trip of an empty task. Writes `results/bench/sweep.json`.

    SBRBENCH_MIRROR=../shared/datasets python bench/bench_sweep.py [--cells 12] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "bench" / "sweep.json"


def _noop(payload: dict[str, Any]) -> dict[str, Any]:
    return {"status": "complete", "seconds": 0.0}


def _timed_runs(runner: Any, n: int, data: Path, results: Path) -> list[float]:
    """Wall seconds of each of `n` spop runs submitted one at a time (submit → result)."""
    from sbrbench.sweep import run_cell

    walls = []
    for seed in range(n):
        payload = {"model": "spop", "dataset": str(data), "overrides": {}, "seed": seed, "select_on": "valid",
                   "results_dir": str(results), "device": "cpu", "threads": 1}
        t0 = time.perf_counter()
        runner.submit(run_cell, payload)
        done: list[Any] = []
        while not done:
            done = runner.wait(timeout=5.0)
        assert done[0][1]["status"] == "complete", done
        walls.append(time.perf_counter() - t0)
    return walls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=12)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    from sbrbench.data.preprocess import preprocess
    from sbrbench.data.store import processed_location
    from sbrbench.runner import RayRunner, SerialRunner

    data_root = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        data = processed_location("diginetica-sample", data_dir=data_root)
    except Exception:
        preprocess("diginetica-sample", data_dir=data_root, mirror=os.environ.get("SBRBENCH_MIRROR"))
        data = processed_location("diginetica-sample", data_dir=data_root)
    results = Path(tempfile.mkdtemp(prefix="bench-sweep-results-"))
    serial = SerialRunner()
    _timed_runs(serial, 1, data, results)  # warm: imports, page cache
    t0 = time.perf_counter()
    runner = RayRunner(workers=1)
    runner.__enter__()
    inproc: list[float] = []
    ray_walls: list[float] = []
    try:
        start = runner.started_s
        first = _timed_runs(runner, 1, data, results)[0]
        for _ in range(args.cells):  # alternated, so that the machine's load hits both alike
            inproc += _timed_runs(serial, 1, data, results)
            ray_walls += _timed_runs(runner, 1, data, results)
        noops = []
        for _ in range(args.cells):
            t = time.perf_counter()
            runner.submit(_noop, {})
            while not runner.wait(timeout=5.0):
                pass
            noops.append(time.perf_counter() - t)
    finally:
        t = time.perf_counter()
        runner.close()
        stop = time.perf_counter() - t
    total = time.perf_counter() - t0
    import shutil

    shutil.rmtree(results, ignore_errors=True)
    if not args.data_dir:
        shutil.rmtree(data_root, ignore_errors=True)
    med_in, med_ray = statistics.median(inproc), statistics.median(ray_walls)
    out = {
        "cells": args.cells,
        "in_process_s_per_run": round(med_in, 4),
        "ray_s_per_run": round(med_ray, 4),
        "ray_overhead_s_per_run": round(statistics.median(r - i for r, i in zip(ray_walls, inproc, strict=True)), 4),
        "ray_empty_task_round_trip_s": round(statistics.median(noops), 4),
        "ray_start_s": round(start, 2),
        "ray_first_task_s": round(first, 2),
        "ray_shutdown_s": round(stop, 2),
        "ray_total_s": round(total, 2),
        "host": platform.node(), "cores": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    try:
        from importlib import metadata

        out["ray"] = metadata.version("ray")
    except Exception:
        pass
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
