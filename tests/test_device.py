"""Devices, threads and precision: one place decides them, with one-line errors."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from sbrbench import device
from sbrbench.errors import SbrError


def test_bad_devices_and_precisions_are_one_line_errors(keep_threads) -> None:
    for kwargs, msg in [({"device": "tpu"}, "bad device|not supported"), ({"gpu": 0, "device": "cpu"}, "either"),
                        ({"device": "cuda:0"} if not __import__("torch").cuda.is_available() else {"device": "x"},
                         "not available|bad device")]:
        with pytest.raises(SbrError, match=msg):
            device.resolve_device(**kwargs)
    with pytest.raises(SbrError, match="needs a CUDA device"):
        device.configure_precision("bf16", "cpu")
    with pytest.raises(SbrError, match="unknown precision"):
        device.configure_precision("fp8", "cpu")
    with pytest.raises(SbrError, match=">= 1"):
        device.resolve_threads(0)


@pytest.fixture
def keep_threads():  # type: ignore[no-untyped-def]
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_second_process_takes_the_threads_the_first_left(
    monkeypatch: pytest.MonkeyPatch, tmp_path, keep_threads
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(device.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(device, "available_cores", lambda: 4)
    code = ("import sys, time; from sbrbench import device; device.available_cores = lambda: 4; "
            "print(device.resolve_threads(3), flush=True); time.sleep(30)")
    env = {**__import__("os").environ, "TMPDIR": str(tmp_path)}
    env.pop("OMP_NUM_THREADS", None)
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "3"
        assert device.claimed_by_others() == 3
        assert device.resolve_threads() == 1  # 4 cores, 3 claimed by the other process
    finally:
        other.kill()
        other.wait()
    deadline = time.time() + 5
    while device.claimed_by_others() and time.time() < deadline:
        time.sleep(0.05)
    assert device.claimed_by_others() == 0  # a dead process's claim no longer counts
    assert device.resolve_threads() == 4
