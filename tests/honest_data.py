"""Synthetic datasets for the audit: a clean one on which every check stays silent, and the same
with one planted fault per check."""

from __future__ import annotations

import dataclasses

import numpy as np

from sbrbench.data.dataset import (
    ProcessedDataset,
    Split,
    augment_all_prefixes,
    from_sequences,
)

N_ITEMS = 61  # ids 1..60


def _zipf_sessions(rng: np.random.Generator, n: int, first: np.ndarray, lengths_from: int = 0) -> list[list[int]]:
    """`n` sessions of distinct items: the first from `first`, the rest Zipf over 1..60; lengths
    3, 4, 5, 6 in turn (so every group has the same length distribution)."""
    w = 1.0 / np.arange(1, N_ITEMS)
    out = []
    for i in range(n):
        length = 3 + (i + lengths_from) % 4
        head = int(rng.choice(first))
        pool = np.delete(np.arange(1, N_ITEMS), head - 1)
        p = np.delete(w, head - 1)
        rest = rng.choice(pool, size=length - 1, replace=False, p=p / p.sum())
        out.append([head, *rest.tolist()])
    return out


def groups(seed: int = 0) -> dict[str, list[list[int]]]:
    """Train, valid and test sessions of the clean dataset. Training sessions start with an item
    of 1..20, test sessions with one of 21..60 (so no test session repeats a training one), every
    item occurs in training, no session repeats an item."""
    rng = np.random.default_rng(seed)
    cover = [[1, *range(k, k + 4)] for k in range(2, N_ITEMS, 4)]
    cover = [[x for x in s if x < N_ITEMS] for s in cover]
    cover = [s for s in cover if len(s) >= 3]
    train = _zipf_sessions(rng, 240, np.arange(1, 21)) + cover
    return {"train": train, "valid": _zipf_sessions(rng, 40, np.arange(1, 21)),
            "test": _zipf_sessions(rng, 80, np.arange(21, N_ITEMS))}


def build(g: dict[str, list[list[int]]], *, extra_train: list[tuple[int, int]] = (), times: bool = True,
          name: str = "honest", n_items: int = N_ITEMS) -> ProcessedDataset:
    """Sessions of `g` (train, valid, test in order) with prefix-augmented splits; `extra_train`
    adds training examples (session index, position)."""
    seqs = g["train"] + g["valid"] + g["test"]
    items, offsets, _ = from_sequences(name, "t", seqs, n_items=n_items)
    n_tr, n_va = len(g["train"]), len(g["valid"])
    idx = np.arange(len(seqs))
    train = augment_all_prefixes(offsets, idx[:n_tr])
    if extra_train:
        s, p = np.array(extra_train, dtype=np.int32).T
        train = Split(np.concatenate([train.session, s]), np.concatenate([train.pos, p]))
    splits = {"train": train, "valid": augment_all_prefixes(offsets, idx[n_tr : n_tr + n_va]),
              "test": augment_all_prefixes(offsets, idx[n_tr + n_va :])}
    t = 1.6e9 + 60.0 * idx.astype(np.float64) if times else None
    return ProcessedDataset(name, "t", n_items, items, offsets, splits, session_time=t)


def clean() -> ProcessedDataset:
    return build(groups())


def session_of_test(g: dict[str, list[list[int]]], k: int) -> int:
    """Dataset index of the k-th test session."""
    return len(g["train"]) + len(g["valid"]) + k


def planted(check: str) -> ProcessedDataset:
    """The clean dataset with one fault that `check` must report."""
    g = groups()
    if check == "duplicates":
        g["test"][0] = list(g["train"][0])  # an exact copy of a training session
        g["test"][1] = list(g["train"][3][:3])  # the start of a longer training session (length 6)
    elif check == "unseen_targets":
        g["test"][0] = [*g["test"][0][:-1], 99]  # an item id never seen in training
        return build(g, name="planted", n_items=100)
    elif check == "repeats":
        for k in range(20):
            s = g["test"][k]
            g["test"][k] = [*s[:2], s[1], *s[2:]]  # the second click repeated right away
    elif check == "crossing":
        s = session_of_test(g, 0)
        return build(g, extra_train=[(s, 1), (s, 2)])  # training reads test targets
    elif check == "time":
        ds = build(g)
        assert ds.session_time is not None
        t = ds.session_time.copy()
        t[session_of_test(g, 5)] = t[0] - 1.0  # a test session older than the training period
        return dataclasses.replace(ds, session_time=t)
    elif check == "target_in_prefix":
        for k in range(40):
            s = g["test"][k]
            g["test"][k] = [*s, s[0]]  # the session returns to its first item
    elif check == "lengths":
        for k in range(len(g["test"])):
            s = g["test"][k]
            extra = [x for x in range(1, N_ITEMS) if x not in s][: 6]
            g["test"][k] = [*s, *extra]  # much longer test sessions
    elif check == "popularity":
        for k in range(len(g["test"])):
            head = g["test"][k][0]
            rare = [x for x in range(45, N_ITEMS) if x != head]
            g["test"][k] = [head, *rare[k % 8 : k % 8 + len(g["test"][k]) - 1]]  # targets among rare items
    else:
        raise ValueError(check)
    return build(g, name="planted")
