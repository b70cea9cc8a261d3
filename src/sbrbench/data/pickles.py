"""A restricted unpickler for the SR-GNN family's `.txt` pickles, which are untrusted input.

Only plain containers and scalars are accepted (list, tuple, dict, int, float, str, bool, None);
any reference to a global (class, function) is refused before it can run, so a hostile file can
never execute code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from sbrbench.errors import DataError


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def safe_load_pickle(path: str | Path) -> Any:
    """Load a pickle holding only plain data, or raise `DataError` with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    data = path.read_bytes()
    if not data:
        raise DataError(f"{path} is empty")
    try:
        return _PlainUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        reason = " ".join(str(exc).split())  # some of pickle's messages span two lines
        raise DataError(f"{path} is not a plain-data pickle ({reason}); refusing to load it") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
            OverflowError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a readable pickle: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
