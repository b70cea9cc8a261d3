"""Where sweeps and tuning trials run: a Ray instance (local or a cluster), or this process.

`open_runner(workers, address=...)` returns a context manager:

* `RayRunner`: by default a *local* Ray instance started for the command and stopped at its end
  (also on errors, Ctrl-C and SIGTERM): `workers × cpus_per_task` CPUs (`workers` None: the
  cores not claimed by other sbrbench processes, or the cluster's CPUs), `workers ×
  gpus_per_task` GPUs, no dashboard, a small object store, every process bound to the loopback
  address, its logs in a temporary directory removed afterwards. With `address` (or
  `$RAY_ADDRESS`) it connects to an existing cluster instead and leaves it running; the data and
  results directories must then be visible to every node at the same paths.
* `SerialRunner` (`workers=0`): runs each task in this process, one after the other, without Ray
  (debugging, measuring Ray's overhead).

Both run module-level functions `fn(payload) -> dict` (payloads and results are plain data) with
at most `workers` tasks in flight — the caller submits, then `wait`s for whichever finish.
A task that dies (a crashed worker, a cancelled task) comes back as
`{"status": "failed", "error": "<one line>"}`. `spawn(cls, ...)` makes a shared object (a Ray
actor on the driver's node, or a plain object) whose methods `invoke(handle, name, ...)` calls from
the driver and from tasks alike (the tuning study is one).

Ray is imported only here and only when a `RayRunner` starts: it belongs to the optional
`[sweep]` extra (`pip install 'sbrbench[sweep]'`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from sbrbench.errors import SbrError

INSTALL_HINT = "pip install 'sbrbench[sweep]'"
ENV_ADDRESS = "RAY_ADDRESS"
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # runs exchange small dicts; Ray's minimum is 75 MiB
CANCEL_GRACE_S = 10.0  # after Ctrl-C: how long cancelled tasks get to write their "interrupted" record


class RunnerInterrupted(SbrError):
    """Ctrl-C or SIGTERM while tasks ran: they were cancelled (training runs keep their last
    checkpoint) and the runner stopped."""

    exit_code = 130


def require(module: str, command: str) -> Any:
    """Import an optional dependency of the `[sweep]` extra, or raise a one-line install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SbrError(f"`sbrbench {command}` needs {module}: {INSTALL_HINT}") from None


def check_installed(command: str, modules: tuple[str, ...]) -> None:
    """A one-line install hint when a module of the `[sweep]` extra is missing (nothing imported)."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise SbrError(f"`sbrbench {command}` needs {' and '.join(missing)}: {INSTALL_HINT}")


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` (SbrError: the message alone)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, SbrError):
        return msg or type(exc).__name__
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def invoke(handle: Any, method: str, *args: Any) -> Any:
    """Call `method` on a shared object from `Runner.spawn`: a Ray actor or a plain object."""
    fn = getattr(handle, method)
    if hasattr(fn, "remote"):
        import ray

        return ray.get(fn.remote(*args))
    return fn(*args)


class Runner:
    """The interface of both runners (see the module docstring)."""

    kind = "base"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.started_s = 0.0  # seconds spent starting the runner (Ray's start-up)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(interrupted=exc[0] is not None and issubclass(exc[0], KeyboardInterrupt))

    def describe(self) -> str:
        raise NotImplementedError

    def submit(self, fn: Callable[[dict[str, Any]], dict[str, Any]], payload: dict[str, Any]) -> int:
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> list[tuple[int, dict[str, Any]]]:
        """The tasks finished by now (blocking up to `timeout` seconds for at least one)."""
        raise NotImplementedError

    @property
    def in_flight(self) -> int:
        raise NotImplementedError

    def spawn(self, cls: type, *args: Any) -> Any:
        raise NotImplementedError

    def close(self, interrupted: bool = False) -> None:
        """Stop what this runner started (cancelling tasks still running when `interrupted`)."""


class SerialRunner(Runner):
    """Tasks run in this process, one at a time, when `wait` is called."""

    kind = "serial"

    def __init__(self) -> None:
        super().__init__(workers=1)
        self._queue: list[tuple[int, Callable[[dict[str, Any]], dict[str, Any]], dict[str, Any]]] = []
        self._next = 0

    def describe(self) -> str:
        return "in this process (no Ray)"

    def submit(self, fn: Callable[[dict[str, Any]], dict[str, Any]], payload: dict[str, Any]) -> int:
        self._next += 1
        self._queue.append((self._next, fn, payload))
        return self._next

    def wait(self, timeout: float | None = None) -> list[tuple[int, dict[str, Any]]]:
        if not self._queue:
            return []
        tid, fn, payload = self._queue.pop(0)
        result = _guarded(fn, payload)
        if result.get("status") == "interrupted":  # Ctrl-C / SIGTERM reached the run in this process
            raise KeyboardInterrupt
        return [(tid, result)]

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    def spawn(self, cls: type, *args: Any) -> Any:
        return cls(*args)


def _guarded(fn: Callable[[dict[str, Any]], dict[str, Any]], payload: dict[str, Any]) -> dict[str, Any]:
    """Run a task; anything it lets escape becomes a failed result (KeyboardInterrupt propagates)."""
    try:
        return fn(payload)
    except Exception as exc:  # a task reports its own errors; this is the last resort
        return {"status": "failed", "error": one_line(exc)}


_LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _local_ray_environment() -> Callable[[], None]:
    """Settings for a local instance, applied before Ray is imported (children inherit them);
    returns the undo.

    Ray on Linux binds its processes to the address other machines would reach; a local instance
    needs none of that, so it is kept on the loopback address (the switch Ray uses for its
    single-machine platforms). No usage statistics are sent.
    """
    import sys

    saved = {k: os.environ.get(k) for k in _LOCAL_ENV}
    os.environ.update(_LOCAL_ENV)
    consts = sys.modules.get("ray._private.ray_constants")
    before = getattr(consts, "ENABLE_RAY_CLUSTER", None)
    if consts is not None:  # Ray imported earlier in this process: same switch, at run time
        consts.ENABLE_RAY_CLUSTER = False

    def undo() -> None:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        mod = sys.modules.get("ray._private.ray_constants")
        if mod is not None:
            mod.ENABLE_RAY_CLUSTER = True if before is None else before

    return undo


class RayRunner(Runner):
    """Tasks on Ray: a local instance started (and stopped) here, or an existing cluster."""

    kind = "ray"

    def __init__(self, workers: int | None, address: str | None = None, cpus_per_task: float = 1.0,
                 gpus_per_task: float = 0.0, command: str = "sweep") -> None:
        super().__init__(workers or 1)
        self._auto_workers = workers is None
        if cpus_per_task <= 0 or gpus_per_task < 0:
            raise SbrError(f"--cpus-per-trial must be > 0 and --gpus-per-trial >= 0, got {cpus_per_task}, "
                           f"{gpus_per_task}")
        self.address = address or os.environ.get(ENV_ADDRESS) or None
        self.cpus, self.gpus = float(cpus_per_task), float(gpus_per_task)
        if self._auto_workers and not self.address:  # the cores not claimed by other sbrbench processes
            from sbrbench.device import available_cores, claimed_by_others

            self.workers = max(1, int(max(1, available_cores() - claimed_by_others()) // self.cpus))
        self.command = command
        self._owned = False
        self._temp_dir: str | None = None
        self._refs: dict[Any, int] = {}
        self._fns: dict[Any, Any] = {}
        self._next = 0
        self._restore_term: Callable[[], None] = lambda: None
        self._restore_env: Callable[[], None] = lambda: None
        self._ray: Any = None

    def describe(self) -> str:
        res = f"{self.cpus:g} CPU" + (f", {self.gpus:g} GPU" if self.gpus else "") + " per task"
        where = f"Ray cluster at {self.address}" if self.address else "local Ray instance"
        return f"{where}, {self.workers} worker(s), {res}"

    def __enter__(self) -> RayRunner:
        if not self.address:
            self._restore_env = _local_ray_environment()
        ray = require("ray", self.command)
        self._ray = ray
        t0 = time.perf_counter()
        try:
            if ray.is_initialized():  # a caller's own Ray session: use it, leave it running
                pass
            elif self.address:
                ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False)
            else:
                self._owned = True
                # a short path: Ray's Unix sockets live under it (at most ~107 characters)
                self._temp_dir = tempfile.mkdtemp(prefix="sbrray-", dir="/tmp" if os.path.isdir("/tmp") else None)
                ray.init(
                    address="local", num_cpus=max(1, round(self.workers * self.cpus)),
                    num_gpus=self.workers * self.gpus if self.gpus else 0, include_dashboard=False,
                    object_store_memory=OBJECT_STORE_BYTES, logging_level=logging.ERROR, log_to_driver=False,
                    _temp_dir=self._temp_dir,
                )
        except BaseException as exc:
            self.close()
            if isinstance(exc, (KeyboardInterrupt, SbrError)):
                raise
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            raise SbrError(f"could not start {where}: {one_line(exc)}") from None
        self.started_s = time.perf_counter() - t0
        # after ray.init, which installs its own SIGTERM handler in this process (it would just exit)
        self._restore_term = _sigterm_interrupts()
        if self._auto_workers and self.address:  # as many as the cluster's CPUs hold
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            self.workers = max(1, int(cpus // self.cpus))
        return self

    def submit(self, fn: Callable[[dict[str, Any]], dict[str, Any]], payload: dict[str, Any]) -> int:
        ray = self._ray
        remote = self._fns.get(fn)
        if remote is None:
            remote = ray.remote(_guarded).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)
            self._fns[fn] = remote
        self._next += 1
        self._refs[remote.remote(fn, payload)] = self._next
        return self._next

    def wait(self, timeout: float | None = None) -> list[tuple[int, dict[str, Any]]]:
        if not self._refs:
            return []
        ray = self._ray
        ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if ready:  # collect everything finished by now, not only the first
            ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        out = []
        for ref in ready:
            tid = self._refs.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # a crashed worker or a cancelled task
                result = {"status": "failed", "error": one_line(exc)}
            out.append((tid, result))
        return out

    @property
    def in_flight(self) -> int:
        return len(self._refs)

    def spawn(self, cls: type, *args: Any) -> Any:
        ray = self._ray
        opts: dict[str, Any] = {"num_cpus": 0, "max_concurrency": 1, "max_restarts": 0}
        with contextlib.suppress(Exception):  # keep the actor (and the files it writes) on this machine
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                node_id=ray.get_runtime_context().get_node_id(), soft=False)
        return ray.remote(cls).options(**opts).remote(*args)

    def close(self, interrupted: bool = False) -> None:
        ray = self._ray
        try:
            if ray is not None and self._refs and ray.is_initialized():
                _cancel(ray, list(self._refs), CANCEL_GRACE_S if interrupted else 0.0)
            self._refs.clear()
        except BaseException:  # a second Ctrl-C: stop waiting, still shut down below
            pass
        finally:
            try:
                if ray is not None and self._owned and ray.is_initialized():
                    ray.shutdown()
            finally:
                self._restore_term()
                self._restore_env()
                if self._temp_dir and not os.environ.get("SBRBENCH_DEBUG"):
                    shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._owned = False


def _cancel(ray: Any, refs: list[Any], grace: float) -> None:
    """Cancel running tasks: each gets a KeyboardInterrupt (a training run then records itself as
    interrupted, resumable); wait up to `grace` seconds for them to finish."""
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=False)
    if grace > 0:
        with contextlib.suppress(Exception):
            ray.wait(refs, num_returns=len(refs), timeout=grace)


def _sigterm_interrupts() -> Callable[[], None]:
    """SIGTERM raises KeyboardInterrupt in the driver (so Ray is shut down); returns the undo."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def open_runner(workers: int | None, *, address: str | None = None, cpus_per_task: float = 1.0,
                gpus_per_task: float = 0.0, command: str = "sweep") -> Iterator[Runner]:
    """A started runner (see the module docstring); stopped when the block ends, however it ends."""
    if workers is not None and workers < 0:
        raise SbrError(f"--workers must be >= 0, got {workers}")
    if workers == 0 and address:
        raise SbrError("--workers 0 runs in this process; it cannot be combined with --address")
    try:
        if workers == 0:
            with SerialRunner() as runner:
                yield runner
        else:
            with RayRunner(workers, address, cpus_per_task, gpus_per_task, command) as runner:
                yield runner
    except KeyboardInterrupt:
        raise RunnerInterrupted(f"interrupted: running tasks were cancelled and Ray stopped; run the same "
                                f"`sbrbench {command}` again to resume (finished runs are kept)") from None
