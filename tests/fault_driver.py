"""Run the `sbrbench` command line with a fault injected: a real process that SIGKILLs itself.

    python tests/fault_driver.py SBRBENCH-ARGS...    (the fault comes from $SBRBENCH_FAULT)

`$SBRBENCH_FAULT` is JSON: {"file": NAME, "nth": N, "when": "half" | "after", "delay": S}

* `half`: the N-th atomic write of a file called NAME gets half its bytes onto disk (written,
  flushed, fsynced into the temporary), then the process is killed with SIGKILL: a kill (or power
  loss) in the middle of writing it;
* `after`: the process is killed right after the N-th write of NAME is complete (renamed into
  place): a kill between two files that belong together;
* NAME `arrays.npz` hooks `numpy.savez` (the processed dataset's arrays), others `sbrbench.io`'s
  atomic writes (checkpoints, run records, ranks, graph caches, manifests);
* `{"slow_copy": S}` instead makes every `shutil.copyfile` sleep S seconds half-way (a slow
  download, so that two processes overlap);
* `{"replace": PATTERN, "nth": N}` instead kills the process right after the N-th `os.replace`
  whose destination's name matches the glob PATTERN (e.g. between the two renames that swap a
  processed dataset in: `{"replace": ".srgnn.old-*"}`);
* `"clock": T` (with any of the above, or alone) freezes `time.gmtime()` at T seconds since the
  epoch, so that two processes started at different moments still see the same second (the time
  stamp of run directories).

Nothing is patched unless `$SBRBENCH_FAULT` is set; the patch is installed before `sbrbench`'s
modules import `sbrbench.io`'s functions by name.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(spec: dict[str, Any]) -> None:
    import sbrbench.io as sio

    if "clock" in spec:
        real_gmtime, frozen = time.gmtime, float(spec["clock"])
        time.gmtime = lambda secs=None: real_gmtime(frozen if secs is None else secs)  # type: ignore[assignment]
    if "replace" in spec:
        import fnmatch

        real_replace, pattern, nth = os.replace, str(spec["replace"]), int(spec.get("nth", 1))
        count = {"n": 0}

        def replace(src: Any, dst: Any, **kw: Any) -> None:
            real_replace(src, dst, **kw)
            if fnmatch.fnmatch(Path(dst).name, pattern):
                count["n"] += 1
                if count["n"] == nth:
                    _die()

        os.replace = replace  # type: ignore[assignment]
        return
    if "slow_copy" in spec:
        def slow_copyfile(src: Any, dst: Any, **kw: Any) -> Any:
            data = Path(src).read_bytes()
            with open(dst, "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                time.sleep(float(spec["slow_copy"]))
                fh.write(data[len(data) // 2:])
            return dst

        shutil.copyfile = slow_copyfile  # type: ignore[assignment]
        return
    if "file" not in spec:
        return
    name, nth, when = str(spec["file"]), int(spec.get("nth", 1)), str(spec.get("when", "half"))
    seen = {"n": 0}

    def hit(path: Any) -> bool:
        if Path(path).name != name:
            return False
        seen["n"] += 1
        return seen["n"] == nth

    if name == "arrays.npz":
        import numpy as np

        real_savez = np.savez

        def savez(file: Any, *args: Any, **kw: Any) -> None:
            real_savez(file, *args, **kw)
            if hit(file):
                size = os.path.getsize(file)
                with open(file, "r+b") as fh:
                    fh.truncate(size // 2 if when == "half" else size)
                    os.fsync(fh.fileno())
                _die()

        np.savez = savez  # type: ignore[assignment]
        return
    real_open = sio.atomic_open

    @contextlib.contextmanager
    def atomic_open(path: Any, mode: str = "wb") -> Iterator[IO[Any]]:
        if not hit(path):
            with real_open(path, mode) as fh:
                yield fh
            return
        if when == "after":
            with real_open(path, mode) as fh:
                yield fh
            _die()
        buf: IO[Any] = io.BytesIO() if "b" in mode else io.StringIO()
        yield buf
        data = buf.getvalue()
        with contextlib.ExitStack() as stack:
            fh = stack.enter_context(real_open(path, mode))
            fh.write(data[: len(data) // 2])
            fh.flush()
            os.fsync(fh.fileno())
            _die()  # inside the atomic write: the temporary holds half the bytes, never renamed

    sio.atomic_open = atomic_open  # type: ignore[assignment]


def main() -> None:
    spec = os.environ.get("SBRBENCH_FAULT")
    if spec:
        _install(json.loads(spec))
    from sbrbench.cli import main as cli_main

    cli_main(sys.argv[1:])


if __name__ == "__main__":
    main()
