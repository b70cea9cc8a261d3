"""Devices, threads, seeds and random-number states: the one place that decides them.

* `resolve_device(gpu, device)`: `--gpu N` / `--device D` → a checked torch device string;
* `resolve_threads(n)`: `--threads N`, else the cores this process may use (honouring an existing
  `OMP_NUM_THREADS`, the CPU affinity / cgroup quota and the threads other sbrbench processes
  already claimed), applied to torch once;
* `seed_everything(seed, device)`: Python, NumPy and torch (CPU and CUDA) seeded, deterministic
  algorithms on CPU;
* `configure_precision(precision, device, deterministic)` and `autocast(device, precision)`:
  `fp32` (default), `tf32` (TF32 matmuls on CUDA) or `bf16` (autocast on CUDA); `deterministic`
  makes CUDA runs repeatable (deterministic algorithms, cuBLAS workspace);
* `rng_state()` / `set_rng_state(state)`: every global RNG as tensors and plain values, so a
  checkpoint holding it loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sbrbench.errors import SbrError
from sbrbench.registry import unknown_name_message


def resolve_device(gpu: int | None = None, device: str | None = None) -> str:
    """`--gpu N` / `--device D` → a torch device string; a one-line error if it is not there."""
    import torch

    if gpu is not None and device is not None:
        raise SbrError("give either --gpu or --device, not both")
    name = f"cuda:{gpu}" if gpu is not None else (device or "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise SbrError(f"bad device {name!r}: {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SbrError(f"device {name} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SbrError(f"device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    elif dev.type != "cpu":
        raise SbrError(f"device {name!r} is not supported: use cpu or cuda:N")
    return str(dev)


def available_cores() -> int:
    """Cores this process may run on: affinity mask, then a cgroup v2 CPU quota if one is set."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max", encoding="ascii").read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _claims_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"sbrbench-threads-{os.getuid() if hasattr(os, 'getuid') else 0}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claimed_by_others() -> int:
    """Threads claimed by other live sbrbench processes of this user on this machine."""
    total = 0
    d = _claims_dir()
    for f in d.glob("*.json") if d.is_dir() else ():
        try:
            claim = json.loads(f.read_text(encoding="ascii"))
            pid, n = int(claim["pid"]), int(claim["threads"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid != os.getpid() and _pid_alive(pid):
            total += n
        elif pid != os.getpid():
            f.unlink(missing_ok=True)  # a dead process's claim
    return total


def _claim(threads: int) -> None:
    d = _claims_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{os.getpid()}.json"
        path.write_text(json.dumps({"pid": os.getpid(), "threads": threads}), encoding="ascii")
        atexit.register(path.unlink, missing_ok=True)
    except OSError:
        pass  # a read-only or full temporary directory: the claim is only a courtesy to others


def resolve_threads(threads: int | None = None) -> int:
    """The intra-op thread count to use, applied to torch and claimed for this process:
    `threads`, else `$OMP_NUM_THREADS`, else the cores available (`available_cores()`) minus the
    threads that other live sbrbench processes of this user have claimed (at least 1).

    Several processes that each take every core slow each other down by far more than their share
    (measured here: 5–36× slower steps with two 2-thread jobs on 2 cores), so a second process
    started by default takes what is left, and the count is recorded with every run.
    """
    import torch

    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        threads = int(env) if env.isdigit() and int(env) > 0 else max(1, available_cores() - claimed_by_others())
    if threads < 1:
        raise SbrError(f"--threads must be >= 1, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    _claim(threads)
    return threads


PRECISIONS = ("fp32", "tf32", "bf16")


def configure_precision(precision: str, device: str, deterministic: bool = False) -> dict[str, Any]:
    """Set the matmul precision and determinism of `device`; returns the flags for the run record.

    `tf32` and `bf16` need CUDA (a CPU has neither); `deterministic` on CUDA sets
    `CUBLAS_WORKSPACE_CONFIG` and deterministic algorithms (CPU runs are always deterministic).
    """
    import torch

    if precision not in PRECISIONS:
        raise SbrError(unknown_name_message("precision", precision, list(PRECISIONS)))
    cuda = device.startswith("cuda")
    if precision != "fp32" and not cuda:
        raise SbrError(f"--precision {precision} needs a CUDA device; CPU runs use fp32")
    if cuda:
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic = True
    return {"precision": precision, "deterministic": bool(deterministic) or not cuda}


@contextlib.contextmanager
def autocast(device: str, precision: str) -> Iterator[None]:
    """bf16 autocast on CUDA when `precision == "bf16"`, else nothing."""
    if precision == "bf16" and device.startswith("cuda"):
        import torch

        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


SEED_LIMIT = 2**32  # NumPy's global seed is taken modulo 2**32: larger seeds would alias smaller ones


def check_seeds(first: int, count: int = 1) -> None:
    """One-line errors unless `count >= 1` and the seeds `first … first+count-1` lie in [0, 2**32)."""
    if count < 1:
        raise SbrError(f"--seeds must be >= 1, got {count}")
    if first < 0 or first + count > SEED_LIMIT:
        which = f"--seed {first}" if count == 1 else f"seeds {first}…{first + count - 1}"
        raise SbrError(f"{which}: seeds must lie in 0 … {SEED_LIMIT - 1}")


def seed_everything(seed: int, device: str) -> dict[str, Any]:
    """Seed Python, NumPy and torch; deterministic algorithms on CPU. Returns the flags set."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # also seeds every CUDA device
    flags: dict[str, Any] = {"seed": seed, "deterministic_algorithms": False, "num_threads": torch.get_num_threads()}
    if device == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
        flags["deterministic_algorithms"] = True
    else:
        torch.backends.cudnn.benchmark = False
        flags["cudnn_benchmark"] = False
    return flags


def rng_state() -> dict[str, Any]:
    """Every global random state (Python, NumPy, torch CPU, each CUDA device) as tensors/values."""
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state()` returned."""
    import torch

    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
