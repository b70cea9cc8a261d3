"""Item feature matrices as data: reading user-supplied `.npy` files, one PCA basis, caches.

A feature matrix has one row per catalogue item: row r is item id r+1 (id 0 is padding and has no
row), so an (N × D) matrix fits a dataset whose catalogue is 1..N. Everything here raises one-line
`SbrError`s naming the expected shape; nothing is silently reshaped, truncated or padded.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sbrbench.errors import SbrError
from sbrbench.io import atomic_write_bytes

log = logging.getLogger(__name__)


def load_feature_matrix(path: str | Path, n_rows: int, dim: int, what: str) -> np.ndarray:
    """The (n_rows × dim) float32 matrix stored in the `.npy` file `path` (row r = item r+1).

    A missing, unreadable, mis-shaped or non-finite file is a one-line `SbrError` that names the
    expected shape.
    """
    want = f"a .npy array of shape ({n_rows}, {dim}): one row per item, row r = item id r+1"
    p = Path(path).expanduser()
    if not p.is_file():
        raise SbrError(f"{what}: no file {p} (expected {want})")
    try:
        arr = np.load(p, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise SbrError(f"{what}: cannot read {p} as .npy ({str(exc).splitlines()[0]}); expected {want}") from None
    if arr.ndim != 2 or tuple(arr.shape) != (n_rows, dim):
        raise SbrError(f"{what}: {p} has shape {tuple(arr.shape)}; expected {want}")
    if arr.dtype.kind not in "fiu":
        raise SbrError(f"{what}: {p} holds {arr.dtype} values; expected numbers ({want})")
    out = np.array(arr, dtype=np.float32)  # a writable copy, not the memory map
    if not np.isfinite(out).all():
        raise SbrError(f"{what}: {p} contains NaN or infinite values")
    return out


def pca_fit(x: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred PCA of `x` (n × D) with `d` components: (mean (D,), components (d, D)).

    Computed with an SVD in float64; each component's sign is fixed so that its largest-magnitude
    coordinate is positive, which makes the basis reproducible across runs and libraries.
    """
    n, dd = x.shape
    if not 1 <= d <= min(n, dd):
        raise SbrError(f"PCA to {d} dimensions needs at least {d} items and {d} input features, got {n} × {dd}")
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.mean(axis=0)
    _, _, vt = np.linalg.svd(x64 - mean, full_matrices=False)
    comps = vt[:d]
    flip = np.sign(comps[np.arange(d), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(flip == 0, 1.0, flip)[:, None]
    return mean, comps


def pca_apply(x: np.ndarray, mean: np.ndarray, comps: np.ndarray) -> np.ndarray:
    """Project `x` (n × D) onto a fitted basis: (n × d) float32."""
    return ((np.asarray(x, dtype=np.float64) - mean) @ comps.T).astype(np.float32)


META = "__meta__"  # a JSON description stored beside the matrices


def read_cache_meta(path: Path) -> dict:
    """The JSON description saved with the matrices at `path` ({} if none or unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return dict(json.loads(str(z[META]))) if META in z.files else {}
    except (OSError, ValueError, KeyError, EOFError):
        return {}


def read_matrix_cache(path: Path, names: Sequence[str], shape: tuple[int, int]) -> dict[str, np.ndarray] | None:
    """The named (shape) float32 matrices cached at `path`, or None when there is no usable cache.

    A damaged file (unreadable, a name missing, a wrong shape or dtype, non-finite values) is
    reported once and treated as absent, so the caller rebuilds and overwrites it.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {n: np.asarray(z[n]) for n in names}
        for n, a in out.items():
            if a.shape != shape or a.dtype != np.float32 or not np.isfinite(a).all():
                raise ValueError(f"{n}: {a.dtype} {a.shape}, expected float32 {shape}")
        return out
    except (OSError, ValueError, KeyError, EOFError) as exc:
        log.warning("rebuilding damaged feature cache %s (%s)", path, str(exc).splitlines()[0] if str(exc) else exc)
        return None


def write_matrix_cache(path: Path, arrays: dict[str, np.ndarray], meta: dict | None = None) -> None:
    """Write the matrices (and a JSON `meta`) atomically; a read-only directory only costs a rebuild."""
    buf = io.BytesIO()
    extra = {META: np.array(json.dumps(meta, default=str))} if meta is not None else {}
    np.savez(buf, **{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}, **extra)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        log.warning("could not cache features at %s: %s", path, exc)
