"""Training-example sources: prefixes with several targets, ComiRec random cuts, GRU4Rec session-parallel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbrbench.batching import ExampleSource, RandomCutSource, SessionParallelSource, item_tensor
from sbrbench.data.dataset import ProcessedDataset, augment_all_prefixes, from_sequences
from sbrbench.evaluate import protocol_targets


def _dataset(sessions: list[list[int]]) -> ProcessedDataset:
    items, offsets, n_items = from_sequences("s", "t", sessions)
    idx = np.arange(len(sessions))
    return ProcessedDataset("s", "t", n_items, items, offsets, {"train": augment_all_prefixes(offsets, idx)})


SESSIONS = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12], [13, 14, 15, 16], [17, 18, 19, 20, 21, 22],
            [23, 24], [25, 26, 27], [28]]


def test_remaining_targets_equal_the_remaining_items_protocol() -> None:
    ds = _dataset(SESSIONS)
    src = ExampleSource.from_dataset(ds, "train", targets="remaining")
    got = torch.cat([torch.nn.functional.pad(b.targets, (0, 6 - b.targets.shape[1]))
                     for b in src.batches(5)]).numpy()
    idx, want = protocol_targets(ds, "train", "remaining-items")
    assert np.array_equal(got, np.pad(want, ((0, 0), (0, 6 - want.shape[1]))))


def test_random_cuts_visit_each_user_once_with_valid_cuts() -> None:
    ds = _dataset(SESSIONS)
    fit = ds.fit_sessions(("train",))
    src = RandomCutSource(item_tensor(ds), fit, history=3, min_cut=4)
    assert len(src) == 7  # the one-click session is skipped
    seen_targets = []
    for b in src.batches(3, generator=torch.Generator().manual_seed(0)):
        assert len(b) <= 3
        for row, n, t in zip(b.seq.tolist(), b.lengths.tolist(), b.targets.tolist()):
            sess = next(s for s in SESSIONS if t in s)
            k = sess.index(t)
            assert min(4, len(sess) - 1) <= k <= len(sess) - 1
            assert row[:n] == sess[max(0, k - 3) : k] and n == min(k, 3)
            seen_targets.append(sess[0])
    assert sorted(seen_targets) == sorted(s[0] for s in SESSIONS if len(s) >= 2)
    again = [b.targets.tolist() for b in src.batches(3, generator=torch.Generator().manual_seed(0))]
    other = [b.targets.tolist() for b in src.batches(3, generator=torch.Generator().manual_seed(1))]
    first = [b.targets.tolist() for b in src.batches(3, generator=torch.Generator().manual_seed(0))]
    assert again == first and other != first


def _official_session_parallel(sessions: list[list[int]], batch_size: int) -> list[tuple[list, list, list]]:
    """A plain re-statement of GRU4Rec's session-parallel iterator (sessions in order, no shuffle)."""
    lens = [len(s) for s in sessions]
    offsets = np.r_[0, np.cumsum(lens)]
    flat = [x for s in sessions for x in s]
    iters = list(range(batch_size))
    maxiter = batch_size - 1
    start = [offsets[i] for i in iters]
    end = [offsets[i + 1] for i in iters]
    reset = [True] * batch_size
    out = []
    while True:
        minlen = min(e - s for s, e in zip(start, end))
        for i in range(minlen - 1):
            out.append(([flat[s + i] for s in start], [flat[s + i + 1] for s in start],
                        reset if i == 0 else [False] * batch_size))
        start = [s + minlen - 1 for s in start]
        finished = [j for j in range(batch_size) if end[j] - start[j] <= 1]
        reset = [False] * batch_size
        for j in finished:
            maxiter += 1
            if maxiter >= len(sessions):
                return out
            iters[j] = maxiter
            start[j], end[j] = offsets[maxiter], offsets[maxiter + 1]
            reset[j] = True


def test_session_parallel_batches_equal_the_official_iterator() -> None:
    sessions = [s for s in SESSIONS if len(s) >= 2]
    ds = _dataset(sessions)
    src = SessionParallelSource(item_tensor(ds), ds.fit_sessions(("train",)))
    got = [(b.seq[:, 0].tolist(), b.targets.tolist(), b.reset.tolist()) for b in src.batches(3)]
    assert got == _official_session_parallel(sessions, 3)
    assert len(got) <= len(src)
    with pytest.raises(ValueError, match="at least batch_size"):
        next(iter(src.batches(50)))
