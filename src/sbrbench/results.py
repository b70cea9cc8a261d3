"""Run records: `results/runs/<dataset>/<model>/<run_id>/`, its one owner `RunDir`, and provenance.

A run directory holds

* `config.json`: what was asked, a `RunConfig` (model, dataset, seed, selection, hyper-parameters,
  training options, device, threads, ...);
* `metrics.json`: what came out, with a `status` (complete / interrupted / failed);
* `history.csv`: one row per epoch;
* `env.json`: git hash, package versions, device, seed, determinism flags, command line, dataset
  checksum, host, times; a resumed run keeps its start and lists each resumption's own git hash,
  versions, device, host and command under `resumes`;
* `ranks/{valid,test}.npy`: the pessimistic rank of every target (int32, (N,) or (N, T)), from
  which any metric at any K is recomputed without the model;
* `ranks/{valid,test}-ties.npy`: per target, the other candidates scoring exactly its score (the
  optimistic rank is the rank minus this), and `ranks/{valid,test}-lengths.npy`: each example's
  prefix length, and `ranks/{valid,test}-unfitted.npy`: the indices of the examples whose target
  never occurs in the fitted sessions (runs written before these files exist read as "not recorded");
* `checkpoint/{model,best}.safetensors` and `checkpoint/state.pt` (neural models; the state is
  tensors and plain values only, so it loads with `torch.load(weights_only=True)`).

`RunDir` is the only code that knows this layout: everything else asks it. Every file is
written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sbrbench.config import RunConfig
from sbrbench.data.dataset import legacy_manifest_matches, manifest_checksum
from sbrbench.data.store import dataset_checksum, load_processed, processed_location
from sbrbench.errors import DataError, SbrError
from sbrbench.io import atomic_open, atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from sbrbench.metrics import DEFAULT_KS, EXTRA_METRICS, metrics_from_ranks, parse_ks
from sbrbench.registry import unknown_name_message

if TYPE_CHECKING:
    import torch

    from sbrbench.data.dataset import ProcessedDataset
    from sbrbench.models import Model

RANK_SPLITS = ("valid", "test")


def build_model(cfg: RunConfig, ds: ProcessedDataset, ds_dir: Path | None, device: str) -> Model:
    """The run's model: constructed from its hyper-parameters, prepared on its fit splits (never
    the test split), moved to `device`."""
    from sbrbench.models import MODELS  # lazy: reading records (leaderboard) needs no model code

    cls = MODELS.get(cfg.model)
    model = cls(ds.n_items, cls.Params(**cfg.hparams))
    if model.neural:
        model.prepare(ds, tuple(cfg.fit_splits), ds_dir / "graphs" if ds_dir is not None else None)
    return model.to(device)


def _to_int32(a: np.ndarray) -> np.ndarray:
    if a.size and (int(a.max()) > np.iinfo(np.int32).max or int(a.min()) < -1):  # -1: a counted repeated target
        raise ValueError("ranks out of the int32 range")
    return a.astype(np.int32, copy=False)


def save_ranks(path: str | Path, ranks: torch.Tensor | np.ndarray) -> Path:
    """Write ranks ((N,) or (N, T)) as an int32 `.npy` file, atomically. Returns the path."""
    path = Path(path)
    arr = ranks if isinstance(ranks, np.ndarray) else ranks.detach().cpu().numpy()
    arr = _to_int32(np.ascontiguousarray(arr))
    with atomic_open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    return path


def load_ranks(path: str | Path) -> np.ndarray:
    """Read ranks written by `save_ranks`; a one-line `DataError` if missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no stored ranks at {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"damaged ranks file {path}: {exc}") from None
    if arr.dtype.kind not in "iu" or arr.ndim not in (1, 2):
        raise DataError(f"damaged ranks file {path}: expected int (N,) or (N, T), got {arr.dtype} {arr.shape}")
    return arr


def _weights_bytes(model: Model) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()})


def _file_sha256(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path.parent} is not a run directory ({what} missing)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"malformed {path}: {msg}") from None
    if not isinstance(obj, dict):
        raise DataError(f"malformed {path}: expected a JSON object")
    return obj


class RunDir:
    """One run directory: its paths, its files, its ranks, its checkpoint and its model.

    Example::

        run = RunDir.create(results_root, "diginetica", "srgnn", seed=42)
        run.write_config(cfg)
        ...
        run = RunDir.open(path)
        run.metrics_from_ranks("test", (10, 20))
        model, ds = run.load_model("cpu")
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._running_since: str | None = None  # when this process marked the run as running

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    @classmethod
    def create(cls, results_root: str | Path, dataset: str, model: str, seed: int) -> RunDir:
        """A fresh, unique run directory `runs/<dataset>/<model>/<UTC time>-s<seed>[-n]`."""
        base = Path(results_root) / "runs" / dataset / model
        base.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        for n in range(1000):
            name = f"{stamp}-s{seed}" + (f"-{n}" if n else "")
            try:
                (base / name).mkdir()
                return cls(base / name)
            except FileExistsError:
                continue
        raise SbrError(f"could not create a new run directory under {base}")

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory; a one-line error if there is none."""
        p = Path(path)
        if not p.is_dir():
            raise SbrError(f"no run directory at {p}")
        return cls(p)

    # ---- paths ---------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def history_path(self) -> Path:
        return self.path / "history.csv"

    @property
    def env_path(self) -> Path:
        return self.path / "env.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoint"

    def ranks_path(self, split: str) -> Path:
        """`ranks/<split>.npy` (split: valid or test)."""
        if split not in RANK_SPLITS:
            raise SbrError(unknown_name_message("split", split, list(RANK_SPLITS)))
        return self.path / "ranks" / f"{split}.npy"

    def weights_path(self, which: str = "model") -> Path:
        """`checkpoint/model.safetensors` (last epoch) or `checkpoint/best.safetensors`."""
        if which not in ("model", "best"):
            raise ValueError(f"which must be 'model' or 'best', got {which!r}")
        return self.checkpoint_dir / f"{which}.safetensors"

    @property
    def state_path(self) -> Path:
        return self.checkpoint_dir / "state.pt"

    # ---- records -------------------------------------------------------------------------------
    def write_config(self, cfg: RunConfig) -> None:
        atomic_write_json(self.config_path, cfg.to_dict())

    def read_config(self) -> RunConfig:
        return RunConfig.from_dict(_read_json_object(self.config_path, "config.json"), str(self.config_path))

    def write_metrics(self, record: dict[str, Any]) -> None:
        """`metrics.json`, pinning the size and sha256 of every rank file beside it (`rank_files`)."""
        files = sorted(self.ranks_path("test").parent.glob("*.npy"))
        pins = {f"{p.parent.name}/{p.name}": {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files}
        atomic_write_json(self.metrics_path, {**record, "rank_files": pins} if pins else record)

    def read_metrics(self) -> dict[str, Any]:
        """`metrics.json`, checked; one-line errors for a missing or malformed file."""
        return _read_json_object(self.metrics_path, "metrics.json")

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        """`history.csv` (columns: the union of the rows' keys, first-seen order)."""
        cols: list[str] = []
        for row in rows:
            cols += [k for k in row if k not in cols]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
        atomic_write_text(self.history_path, buf.getvalue())

    def read_history(self) -> list[dict[str, str]]:
        """`history.csv` rows (strings), [] when absent or unreadable."""
        try:
            with open(self.history_path, encoding="utf-8", newline="") as fh:
                return list(csv.DictReader(fh))
        except (OSError, csv.Error):
            return []

    def write_env(self, env: dict[str, Any]) -> None:
        atomic_write_json(self.env_path, env)

    def note_resume(self, env: dict[str, Any]) -> None:
        """Append a resumption's provenance to `env.json` `resumes` (git, versions, device, host, command,
        time): a run continued under other code or on another machine says so."""
        if not self.env_path.is_file():
            self.write_env(env)
            return
        record = json.loads(self.env_path.read_text(encoding="utf-8"))
        keep = ("git", "versions", "device", "device_name", "determinism", "command", "hostname", "platform")
        entry = {"time": env.get("start_time"), **{k: env.get(k) for k in keep}}
        record["resumes"] = [*(record.get("resumes") or []), entry]
        atomic_write_json(self.env_path, record)

    def finish_env(self) -> None:
        """Stamp the end time into `env.json`."""
        if self.env_path.is_file():
            env = json.loads(self.env_path.read_text(encoding="utf-8"))
            env["end_time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            atomic_write_json(self.env_path, env)

    @property
    def running_path(self) -> Path:
        return self.path / "running.json"

    def mark_running(self, progress: dict[str, Any] | None = None) -> None:
        """Say that this process is training the run now (removed by `clear_running`).

        `progress` (a heartbeat: epoch, batch, batches, seconds of that epoch so far) is what
        `reproduce --status` reads to tell how far a running row is; `since` is kept across beats.
        """
        if progress is None or self._running_since is None:
            self._running_since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_json(self.running_path, {
            "pid": os.getpid(), "host": socket.gethostname(), "since": self._running_since,
            **({"progress": progress} if progress is not None else {}),
        })

    def running_mark(self) -> dict[str, Any] | None:
        """The `running.json` mark (pid, host, since, maybe progress), or None when absent or unreadable."""
        return self.read_sidecar(self.running_path.name)

    def clear_running(self) -> None:
        self.running_path.unlink(missing_ok=True)

    def is_running(self) -> bool:
        """True while a live process on this host trains the run (a killed one leaves a stale mark)."""
        mark = self.running_mark()
        if mark is None:
            return False
        try:
            if mark.get("host") != socket.gethostname():
                return True  # another machine's run: assume it is alive
            os.kill(int(mark["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return True

    def status(self) -> str:
        """complete / failed / interrupted / running / resumable / empty, from the files alone."""
        if self.is_running():
            return "running"
        if self.metrics_path.is_file():
            try:
                status = str(self.read_metrics().get("status"))
            except DataError:
                status = "damaged"
            if status != "interrupted":
                return status
        return "resumable" if self.state_path.is_file() else "empty"

    def read_sidecar(self, name: str) -> dict[str, Any] | None:
        """A study's note about this run, or None when absent or unreadable."""
        try:
            obj = json.loads((self.path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return obj if isinstance(obj, dict) else None

    def write_sidecar(self, name: str, obj: dict[str, Any]) -> Path:
        """A study's note about this run (e.g. `ablation.json`)."""
        path = self.path / name
        atomic_write_json(path, obj)
        return path

    def identity(self, rec: dict[str, Any] | None = None) -> dict[str, Any]:
        """Who the run is: run_dir, model, dataset, protocol, seed, select_on."""
        rec = self.read_metrics() if rec is None else rec
        return {"run_dir": str(self.path), **{k: rec.get(k) for k in
                                               ("model", "dataset", "protocol", "seed", "select_on")}}

    # ---- ranks ---------------------------------------------------------------------------------
    def save_ranks(self, split: str, ranks: torch.Tensor | np.ndarray) -> Path:
        return save_ranks(self.ranks_path(split), ranks)

    def load_ranks(self, split: str) -> np.ndarray:
        return self._load_pinned(self.ranks_path(split), split)

    def _load_pinned(self, path: Path, split: str) -> np.ndarray:
        """A rank file, checked against the size and sha256 `metrics.json` pins (when it does)."""
        try:
            pins = json.loads(self.metrics_path.read_text(encoding="utf-8")).get("rank_files")
        except (OSError, ValueError, AttributeError):
            pins = None
        want = pins.get(f"{path.parent.name}/{path.name}") if isinstance(pins, dict) else None
        if isinstance(want, dict) and path.is_file():
            size = path.stat().st_size
            if size != want.get("bytes") or sha256_file(path) != want.get("sha256"):
                what = f"{size} bytes, metrics.json says {want.get('bytes')}" if size != want.get("bytes") \
                    else "its sha256 differs from metrics.json's"
                raise DataError(f"damaged ranks file {path} ({what}): recompute the metrics from the checkpoint "
                                f"with `sbrbench evaluate {self.path} --split {split} --recompute`")
        return load_ranks(path)

    def has_ranks(self, split: str) -> bool:
        return self.ranks_path(split).is_file()

    def ties_path(self, split: str) -> Path:
        """`ranks/<split>-ties.npy`: per target, the other candidates tying with it."""
        return self.ranks_path(split).with_name(f"{split}-ties.npy")

    def lengths_path(self, split: str) -> Path:
        """`ranks/<split>-lengths.npy`: the prefix length of each example."""
        return self.ranks_path(split).with_name(f"{split}-lengths.npy")

    def unfitted_path(self, split: str) -> Path:
        """`ranks/<split>-unfitted.npy`: indices of the examples whose target the fit never contains."""
        return self.ranks_path(split).with_name(f"{split}-unfitted.npy")

    def save_unfitted(self, split: str, index: np.ndarray) -> Path:
        return save_ranks(self.unfitted_path(split), np.asarray(index))

    def load_unfitted(self, split: str) -> np.ndarray | None:
        """The stored indices of examples with a target never fitted, or None for a run that did not record them."""
        path = self.unfitted_path(split)
        return self._load_pinned(path, split) if path.is_file() else None

    def save_ties(self, split: str, ties: torch.Tensor | np.ndarray) -> Path:
        return save_ranks(self.ties_path(split), ties)

    def load_ties(self, split: str) -> np.ndarray | None:
        """The stored tie counts, or None for a run that did not record them."""
        return self._load_pinned(self.ties_path(split), split) if self.ties_path(split).is_file() else None

    def save_lengths(self, split: str, lengths: np.ndarray) -> Path:
        return save_ranks(self.lengths_path(split), np.asarray(lengths))

    def load_lengths(self, split: str) -> np.ndarray | None:
        """The stored prefix lengths, or None for a run that did not record them."""
        return self._load_pinned(self.lengths_path(split), split) if self.lengths_path(split).is_file() else None

    def metrics_from_ranks(self, split: str = "test", ks: tuple[int, ...] | list[int] | str = DEFAULT_KS
                           ) -> dict[str, Any]:
        """Every metric at any K from the stored ranks, without the model.

        Returns {"run_dir", "model", "dataset", "protocol", "seed", "select_on", "split",
        "n_examples", "ks", "source": "stored ranks", "metrics": {name: fraction}}.
        """
        rec = self.read_metrics()
        kk = parse_ks(ks)
        ranks = self.load_ranks(split)
        extra = [k for k in (rec.get("metric_definitions") or {}) if k in EXTRA_METRICS]  # the run's extra families
        return {**self.identity(rec), "split": split, "n_examples": int(ranks.shape[0]), "ks": list(kk),
                "source": "stored ranks", "metrics": metrics_from_ranks(ranks, kk, extra)}

    # ---- checkpoint and model ------------------------------------------------------------------
    @property
    def pending_weights_path(self) -> Path:
        """`checkpoint/model.pending.safetensors`: an epoch's weights before its state commits them."""
        return self.checkpoint_dir / "model.pending.safetensors"

    def save_weights(self, model: Model, which: str = "model") -> str:
        """Write the model's weights as `which`; returns their sha256."""
        data = _weights_bytes(model)
        atomic_write_bytes(self.weights_path(which), data)
        return hashlib.sha256(data).hexdigest()

    def commit_checkpoint(self, model: Model, state: dict[str, Any], *, best: bool,
                          best_sha256: str | None) -> dict[str, str | None]:
        """Write an epoch's checkpoint so that a kill at any moment leaves the previous one or this
        one, whole, never a mix; returns the weights' sha256 recorded in the state.

        The weights go to a pending file beside the committed ones; the state, naming their sha256
        (and the selected weights' — these if `best`, else `best_sha256`), is the commit point;
        then the pending weights become `model` (and `best`). `settle_checkpoint` finishes a commit
        a kill interrupted.
        """
        data = _weights_bytes(model)
        sha = hashlib.sha256(data).hexdigest()
        atomic_write_bytes(self.pending_weights_path, data)
        weights = {"model": sha, "best": sha if best else best_sha256}
        self.save_state({**state, "weights": weights})
        if best:
            atomic_write_bytes(self.weights_path("best"), data)
        os.replace(self.pending_weights_path, self.weights_path("model"))
        return weights

    def settle_checkpoint(self, state: dict[str, Any]) -> None:
        """Bring the weight files in line with a loaded state: finish a commit a kill interrupted,
        drop uncommitted weights, and refuse (one line) weights that match nothing the state names."""
        for folder in (self.path, self.checkpoint_dir, self.ranks_path("test").parent):
            for left in folder.glob(".*.part"):  # temporaries of a killed writer (a resume is the only writer)
                left.unlink(missing_ok=True)
        weights = state.get("weights")
        if not isinstance(weights, dict):
            return  # a state written before weights were pinned
        want_model, want_best = weights.get("model"), weights.get("best")
        pending = self.pending_weights_path
        if pending.is_file():
            if _file_sha256(pending) == want_model:
                if want_best == want_model and _file_sha256(self.weights_path("best")) != want_best:
                    atomic_write_bytes(self.weights_path("best"), pending.read_bytes())
                os.replace(pending, self.weights_path("model"))
            else:
                pending.unlink()  # an epoch whose state never committed
        if _file_sha256(self.weights_path("model")) != want_model:
            raise DataError(f"damaged checkpoint weights {self.weights_path('model')} (sha256 differs from "
                            f"{self.state_path.name}'s): {self.retrain_hint()}")
        if want_best is not None and _file_sha256(self.weights_path("best")) != want_best:
            if want_best != want_model:
                raise DataError(f"damaged checkpoint weights {self.weights_path('best')} (sha256 differs from "
                                f"{self.state_path.name}'s): {self.retrain_hint()}")
            atomic_write_bytes(self.weights_path("best"), self.weights_path("model").read_bytes())

    def load_weights(self, model: Model, which: str = "best", device: str = "cpu") -> None:
        """Load `which` weights into `model`, checked against the sha256 the state pins (when it does)."""
        from safetensors.torch import load_file

        path = self.weights_path(which)
        if not path.is_file():
            raise DataError(f"missing checkpoint weights {path}: {self.retrain_hint()}")
        want = self._pinned_weights(which)
        if want is not None and _file_sha256(path) != want:
            raise DataError(f"damaged checkpoint weights {path} (sha256 differs from {self.state_path.name}'s): "
                            f"{self.retrain_hint()}")
        try:
            model.load_state_dict(load_file(str(path), device=device))
        except Exception as exc:  # safetensors raises its own error types for a damaged file
            raise DataError(f"damaged checkpoint weights {path} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): "
                            f"{self.retrain_hint()}") from None

    def _pinned_weights(self, which: str) -> str | None:
        try:
            state = self.load_state()
        except DataError:
            return None  # a damaged state is reported by whoever needs it; the weights stand on their own
        weights = state.get("weights") if state else None
        return weights.get(which) if isinstance(weights, dict) else None

    def retrain_hint(self) -> str:
        """How to train this run again from scratch, for errors about a damaged checkpoint."""
        try:
            cfg = self.read_config()
        except SbrError:
            return "train the run again"
        return f"train it again with `sbrbench train {cfg.model} {cfg.dataset} --seed {cfg.seed}` (settings in {self.config_path})"

    def save_state(self, state: dict[str, Any]) -> None:
        """The training state (tensors and plain values only) as `checkpoint/state.pt`."""
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.state_path, buf.getvalue())

    def load_state(self) -> dict[str, Any] | None:
        """The training state, loaded with `weights_only=True` (no pickled code runs); None if absent."""
        import pickle

        import torch

        if not self.state_path.is_file():
            return None
        try:
            state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
            raise DataError(f"damaged or untrusted checkpoint state {self.state_path}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        if not isinstance(state, dict):
            raise DataError(f"damaged checkpoint state {self.state_path}: not a state record")
        return state

    def load_dataset(self, cfg: RunConfig | None = None) -> tuple[ProcessedDataset, Path]:
        """The processed dataset the run was trained on.

        Its recorded directory when that exists on this machine, else the dataset of that name and
        protocol in the local data directory; either way its checksum must equal the one the run
        recorded (a one-line error otherwise), so a committed run record reloads on any machine.
        """
        cfg = cfg or self.read_config()
        recorded = cfg.data.path
        if recorded and (Path(recorded) / "manifest.json").is_file():
            ds, ds_dir = load_processed(recorded)
        else:
            ds, ds_dir = load_processed(cfg.dataset, cfg.protocol, data_dir=cfg.data.data_dir)
        want = self._recorded_checksum()
        if want and not want.startswith("arrays:"):
            have = dataset_checksum(ds, ds_dir)
            if have != want and not (ds_dir is not None and legacy_manifest_matches(ds_dir, want)):
                raise DataError(
                    f"the local {cfg.dataset} ({cfg.protocol}) at {ds_dir} differs from the data this run used "
                    f"(checksum {have[:12]} vs {want[:12]}): preprocess it again with the same sbrbench and sources "
                    "(records made before the checksum left out the audit's timing cannot be matched: their stored "
                    "ranks still re-evaluate without the dataset)"
                )
        return ds, ds_dir

    def data_checksum(self) -> str | None:
        """The dataset checksum this run recorded, as `manifest_checksum` defines it today.

        Records made before the checksum left out the audit's timing hold the sha256 of the
        manifest file of their own preprocessing; when the local copy of the run's dataset is
        proven the same data (`legacy_manifest_matches`: its manifest differs from that file at
        most in the timing), its content checksum is returned instead, so that such a run pairs
        with later runs on the same data. Otherwise the recorded value, or None.
        """
        want = self._recorded_checksum()
        if not want or want.startswith("arrays:"):
            return want
        try:
            cfg = self.read_config()
            recorded = Path(cfg.data.path) if cfg.data.path else None
            if recorded is not None and (recorded / "manifest.json").is_file():
                where = recorded
            else:
                where = processed_location(cfg.dataset, cfg.protocol, data_dir=cfg.data.data_dir)
            if legacy_manifest_matches(where, want):
                return manifest_checksum(where)
        except (SbrError, OSError, ValueError):
            pass
        return want

    def _recorded_checksum(self) -> str | None:
        for path in (self.metrics_path, self.env_path):
            if path.is_file():
                try:
                    value = json.loads(path.read_text(encoding="utf-8")).get("dataset_checksum")
                except (OSError, ValueError, AttributeError):
                    continue
                if value:
                    return str(value)
        return None

    def load_model(self, device: str = "cpu") -> tuple[Model, ProcessedDataset]:
        """The run's model as selected (best checkpoint; non-neural: a deterministic re-fit) and its
        dataset."""
        cfg = self.read_config()
        ds, ds_dir = self.load_dataset(cfg)
        model = build_model(cfg, ds, ds_dir, device)
        if model.neural:
            self.load_weights(model, "best", device)
        else:
            model.fit(ds, tuple(cfg.fit_splits))
        return model, ds


def git_info() -> dict[str, Any]:
    """Git commit and dirty flag of the sbrbench checkout this code runs from (None outside git)."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    """Versions of sbrbench and the numerical stack."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("sbrbench", "torch", "numpy", "scipy", "pandas"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def device_name(device: str) -> str:
    """A human name for a torch device string (GPU model or CPU description)."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def environment(device: str, seed: int, determinism: dict[str, Any], dataset_checksum: str | None) -> dict[str, Any]:
    """The provenance record `env.json` (end time is added when the run finishes)."""
    return {
        "git": git_info(),
        "versions": package_versions(),
        "device": device,
        "device_name": device_name(device),
        "seed": seed,
        "determinism": determinism,
        "command": sys.argv,
        "dataset_checksum": dataset_checksum,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "end_time": None,
    }
