"""No model, baseline or dataset-level graph may learn from held-out targets.

The fitted sessions (`ProcessedDataset.fit_sessions`) are the one line between the data a model
learns from and the data it is judged on. A differential test guards it: a copy of a synthetic
dataset in which every item the fit splits do *not* read (items after the last fit target of each
session, sessions only validation or test read, sessions nobody reads) is replaced by other random
items must give every registered model exactly the same fitted state and the same scores on a
fixed probe batch, and every graph the same arrays. Selecting on validation the fit splits are
`("train",)` (no validation target may leak); selecting on test they are `("train", "valid")`;
the test split never leaks. Positive controls prove the check fails on a leak.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sbrbench.batching import Batch, ExampleSource
from sbrbench.data.dataset import FitSessions, ProcessedDataset, Split, augment_all_prefixes, from_sequences
from sbrbench.errors import DataError, SbrError
from sbrbench.graphs import GRAPH_KINDS, dataset_graph
from sbrbench.models import MODELS, Model, create_model, model_info
from sbrbench.models.pop import Pop

FIT_CASES = [("train",), ("train", "valid")]
N_ITEMS = 31  # ids 1..30


# ---- the synthetic dataset and its scrambled copy ----------------------------------------------
def leak_dataset(seed: int = 0) -> ProcessedDataset:
    """Whole train / valid / test sessions, leave-one-out sequences read by all three splits,
    training sessions read only partly, and sessions no split reads."""
    rng = np.random.default_rng(seed)

    def sessions(n: int, lo: int, hi: int) -> list[list[int]]:
        return [rng.integers(1, N_ITEMS, size=int(rng.integers(lo, hi))).tolist() for _ in range(n)]

    groups = {"train": sessions(24, 2, 8), "valid": sessions(8, 2, 7), "test": sessions(8, 2, 7),
              "loo": sessions(8, 5, 9), "partial": sessions(4, 6, 9), "unread": sessions(2, 3, 6)}
    ids, start = {}, 0
    for name, ss in groups.items():
        ids[name] = np.arange(start, start + len(ss))
        start += len(ss)
    items, offsets, _ = from_sequences("leak", "t", [s for ss in groups.values() for s in ss], n_items=N_ITEMS)
    lens = np.diff(offsets)
    loo_len = lens[ids["loo"]]
    train_loo = [Split(np.full(n - 3, s, np.int32), np.arange(1, n - 2, dtype=np.int32))
                 for s, n in zip(ids["loo"], loo_len)]
    partial = Split(np.repeat(ids["partial"], 2).astype(np.int32), np.tile([1, 2], 4).astype(np.int32))
    train = [augment_all_prefixes(offsets, ids["train"]), partial, *train_loo]
    splits = {
        "train": Split(np.concatenate([t.session for t in train]), np.concatenate([t.pos for t in train])),
        "valid": _cat(augment_all_prefixes(offsets, ids["valid"]),
                      Split(ids["loo"].astype(np.int32), (loo_len - 2).astype(np.int32))),
        "test": _cat(augment_all_prefixes(offsets, ids["test"]),
                     Split(ids["loo"].astype(np.int32), (loo_len - 1).astype(np.int32))),
    }
    times = 1.6e9 + 3600.0 * np.arange(len(lens)) + rng.uniform(0, 600, len(lens))
    texts = [""] + [f"{['red', 'green', 'blue'][i % 3]} gadget number {i}" for i in range(1, N_ITEMS)]  # macl-text
    return ProcessedDataset("leak", "t", N_ITEMS, items, offsets, splits, session_time=times, item_text=texts)


def _cat(a: Split, b: Split) -> Split:
    return Split(np.concatenate([a.session, b.session]), np.concatenate([a.pos, b.pos]))


def read_by(ds: ProcessedDataset, splits: tuple[str, ...]) -> np.ndarray:
    """Mask of the clicks that the examples of `splits` read (prefix and target), computed
    example by example, independently of `fit_sessions`."""
    mask = np.zeros(ds.items.shape[0], dtype=bool)
    for name in splits:
        sp_ = ds.splits[name]
        for s, p in zip(sp_.session.tolist(), sp_.pos.tolist()):
            mask[ds.offsets[s] : ds.offsets[s] + p + 1] = True
    return mask


def scrambled(ds: ProcessedDataset, splits: tuple[str, ...], seed: int = 1) -> ProcessedDataset:
    """A copy that differs from `ds` in everything the `splits` do not read.

    Every click they do not read holds another random item, every session gets 0-3 random
    clicks appended (so session lengths differ beyond the fitted part), and the other splits'
    examples are replaced by random ones. The fit splits' examples and their clicks stay as
    they are, and so does every session's index and time.
    """
    keep = read_by(ds, splits)
    rng = np.random.default_rng(seed)
    shift = rng.integers(1, N_ITEMS - 1, size=ds.items.shape[0])  # never 0 mod (N_ITEMS - 1)
    other = ((ds.items.astype(np.int64) - 1 + shift) % (N_ITEMS - 1) + 1).astype(ds.items.dtype)
    flat = np.where(keep, ds.items, other)
    assert (flat[~keep] != ds.items[~keep]).all() and (~keep).sum() > 20
    seqs = [flat[ds.offsets[s] : ds.offsets[s + 1]].tolist() + rng.integers(1, N_ITEMS, size=int(rng.integers(0, 4))).tolist()
            for s in range(ds.n_sessions)]
    items, offsets, _ = from_sequences(ds.name, ds.protocol, seqs, n_items=N_ITEMS)
    lens = np.diff(offsets)
    new_splits = {}
    for name, sp_ in ds.splits.items():
        if name in splits:
            new_splits[name] = sp_
            continue
        sess = rng.integers(0, ds.n_sessions, size=len(sp_) + 3)
        pos = np.array([rng.integers(1, lens[x]) for x in sess])
        new_splits[name] = Split(sess.astype(np.int32), pos.astype(np.int32))
    return dataclasses.replace(ds, items=items, offsets=offsets, splits=new_splits)


def probe_batches(ds: ProcessedDataset) -> list[Batch]:
    """Fixed prefixes of every split of the original dataset, with their session graphs."""
    return [ExampleSource.from_dataset(ds, name, graphs=True).batch(slice(0, 40)) for name in ("train", "valid", "test")]


# ---- fitted state ------------------------------------------------------------------------------
def fingerprint(obj: Any) -> Any:
    """A comparable (==) snapshot of tensors, arrays, sparse matrices and plain containers."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.layout == torch.sparse_coo:
            t = t.coalesce()
            return ("sparse", tuple(t.shape), fingerprint(t.indices()), fingerprint(t.values()))
        if t.layout != torch.strided:
            t = t.to_dense()
        return ("tensor", str(t.dtype), tuple(t.shape), t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    if isinstance(obj, np.ndarray):
        return ("array", obj.dtype.str, obj.shape, np.ascontiguousarray(obj).tobytes())
    if sp.issparse(obj):
        m = obj.tocsr(copy=True)
        m.sum_duplicates()
        m.sort_indices()
        return ("csr", m.shape, fingerprint(m.data), fingerprint(m.indices), fingerprint(m.indptr))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return (type(obj).__name__, tuple((f.name, fingerprint(getattr(obj, f.name))) for f in dataclasses.fields(obj)))
    if isinstance(obj, dict):
        return tuple(sorted((str(k), fingerprint(v)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return tuple(fingerprint(v) for v in obj)
    if isinstance(obj, float):
        return repr(obj)  # nan == nan
    if obj is None or isinstance(obj, (bool, int, str, np.generic)):
        return obj
    if isinstance(obj, torch.Generator):
        return fingerprint(obj.get_state())
    if isinstance(obj, torch.nn.Module):
        return ("module", type(obj).__name__)  # its tensors are compared through named_modules
    if callable(obj) and hasattr(obj, "__qualname__"):  # a function (e.g. an activation)
        return ("callable", getattr(obj, "__module__", None), obj.__qualname__)
    if hasattr(obj, "__dict__"):
        return (type(obj).__name__, fingerprint(vars(obj)))
    raise TypeError(f"cannot fingerprint a {type(obj).__name__}; teach test_no_leak.fingerprint about it")


def model_state(model: Model) -> dict[str, Any]:
    """state_dict, every buffer (non-persistent ones included) and every plain attribute of
    every submodule (fitted indices, rule matrices, `len_max`, ...)."""
    out: dict[str, Any] = {f"state:{k}": fingerprint(v) for k, v in model.state_dict().items()}
    out.update({f"buffer:{k}": fingerprint(v) for k, v in model.named_buffers()})
    out.update({f"param:{k}": fingerprint(v) for k, v in model.named_parameters()})
    for prefix, mod in model.named_modules():
        for k, v in vars(mod).items():
            if not k.startswith("_") and k != "training":
                out[f"attr:{prefix + '.' if prefix else ''}{k}"] = fingerprint(v)
    return out


def fitted(make: Callable[[], Model], ds: ProcessedDataset, splits: tuple[str, ...],
           probes: list[Batch]) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """As the trainer does: construct with a fixed seed, then `prepare` (neural) or `fit`."""
    torch.manual_seed(0)
    model = make()
    if model.neural:
        model.prepare(ds, splits, None)
    else:
        model.fit(ds, splits)
    state = model_state(model)
    model.eval()
    with torch.no_grad():
        scores = [model(b).detach().cpu() for b in probes]
    return state, scores


def leaks(make: Callable[[], Model], fit_splits: tuple[str, ...], used_splits: tuple[str, ...] | None = None) -> list[str]:
    """What differs between the model fitted on the dataset and on its copy scrambled outside
    `fit_splits` (the model is given `used_splits`, default the same): empty = no leak."""
    ds = leak_dataset()
    other = scrambled(ds, fit_splits)
    probes = probe_batches(ds)
    used = used_splits or fit_splits
    s1, p1 = fitted(make, ds, used, probes)
    s2, p2 = fitted(make, other, used, probes)
    diff = sorted(k for k in s1.keys() | s2.keys() if s1.get(k) != s2.get(k))
    for i, (a, b) in enumerate(zip(p1, p2)):
        if a.shape != b.shape or not torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0)):
            diff.append(f"scores of probe batch {i}")
    return diff


def tiny(name: str, **extra: Any) -> Callable[[], Model]:
    """A factory of the registered model `name` with tiny dimensions."""
    hp = model_info(name)["hparams"]
    kw = {k: v for k, v in (("dim", 8), ("heads", 2)) if k in hp}
    kw.update({"text_encoder": "hash"} if name == "macl-text" else {})  # CI has no [text] extra (MiniLM)
    return lambda: create_model(name, N_ITEMS, **{**kw, **extra})


# ---- every registered model, every graph -------------------------------------------------------
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "pop": [{"count": "sessions"}],
    "sknn": [{"sampling": "random", "sample_size": 6, "k": 3}, {"sample_size": 5, "k": 4}],
    "vsknn": [{"sample_size": 5, "k": 4, "idf_weighting": 1.0, "weighting_time": True}],
    "stan": [{"sample_size": 5, "k": 4}],
    "sr": [{"idf_weight": 1, "last_in_session": 2, "steps": 3}],
    "cmgnn": [{"hgcn_scope": "all"}],
}


@pytest.mark.parametrize("fit_splits", FIT_CASES, ids="+".join)
@pytest.mark.parametrize("name", MODELS.names())
def test_no_model_sees_held_out_targets(name: str, fit_splits: tuple[str, ...]) -> None:
    for extra in [{}, *VARIANTS.get(name, [])]:
        diff = leaks(tiny(name, **extra), fit_splits)
        assert not diff, f"{name} {extra or ''} fitted on {fit_splits} depends on held-out items: {diff[:8]}"


@pytest.mark.parametrize("fit_splits", FIT_CASES, ids="+".join)
@pytest.mark.parametrize("kind", GRAPH_KINDS)
def test_no_graph_sees_held_out_targets(kind: str, fit_splits: tuple[str, ...]) -> None:
    ds = leak_dataset()
    other = scrambled(ds, fit_splits)
    for params in ([{"eps": 3, "topk": 12}, {"eps": 1, "topk": 4}] if kind == "global" else [{}]):
        a = dataset_graph(kind, ds, fit_splits, None, **params)
        b = dataset_graph(kind, other, fit_splits, None, **params)
        assert fingerprint(a) == fingerprint(b), f"{kind} graph {params} of {fit_splits} depends on held-out items"


# ---- positive controls: the check does catch leaks -----------------------------------------------
class LeakyPop(Pop):
    """Counts every click of the dataset: a model that reads `dataset.items` directly."""

    name: ClassVar[str] = "leaky-pop"

    def fit(self, dataset: ProcessedDataset, splits: tuple[str, ...]) -> None:
        pop = np.bincount(dataset.items, minlength=dataset.n_items).astype(np.float32)
        self.popularity = torch.from_numpy(pop)


class LeakyNeural(Model):
    """Keeps the item counts of the whole dataset in a non-persistent buffer."""

    def __init__(self, n_items: int, params: Any = None) -> None:
        super().__init__(n_items, params)
        self.embedding = torch.nn.Embedding(n_items, 4)
        self.register_buffer("prior", torch.zeros(n_items), persistent=False)

    def prepare(self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Any = None) -> None:
        self.prior = torch.from_numpy(np.bincount(dataset.items, minlength=self.n_items).astype(np.float32))

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.embedding(batch.last_items) @ self.embedding.weight.T


class LeakyStructure(LeakyNeural):
    """The number of test examples as a plain attribute: a leak of held-out structure, not items."""

    def prepare(self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Any = None) -> None:
        self.n_test = len(dataset.split("test"))


class LeakyAttribute(LeakyNeural):
    """The dataset's last click as a plain attribute (no buffer, no effect on scores)."""

    def prepare(self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Any = None) -> None:
        self.last_click = int(dataset.items[-1])


@pytest.mark.parametrize("fit_splits", FIT_CASES, ids="+".join)
def test_leaky_models_are_caught(fit_splits: tuple[str, ...]) -> None:
    diff = leaks(lambda: LeakyPop(N_ITEMS), fit_splits)
    assert {"buffer:popularity", "state:popularity", "scores of probe batch 2"} <= set(diff)
    assert leaks(lambda: LeakyNeural(N_ITEMS), fit_splits) == ["buffer:prior"]  # non-persistent, not scored
    assert leaks(lambda: LeakyAttribute(N_ITEMS), fit_splits) == ["attr:last_click"]
    assert leaks(lambda: LeakyStructure(N_ITEMS), fit_splits) == ["attr:n_test"]


def test_whole_sessions_instead_of_fitted_parts_are_caught(monkeypatch) -> None:
    """Were `fit_sessions` to return whole sessions (items after the last fit target included),
    the models and graphs built on it would be caught."""
    def whole(self: ProcessedDataset, splits: tuple[str, ...]) -> FitSessions:
        sess = np.unique(np.concatenate([self.splits[n].session for n in splits])).astype(np.int64)
        lens = self.offsets[sess + 1] - self.offsets[sess]
        idx = np.concatenate([np.arange(self.offsets[s], self.offsets[s + 1]) for s in sess])
        return FitSessions(self.items[idx].astype(np.int64), np.r_[0, np.cumsum(lens)].astype(np.int64), sess, tuple(splits))

    monkeypatch.setattr(ProcessedDataset, "fit_sessions", whole)
    for name in ("pop", "sknn", "sr", "gcegnn", "cmgnn"):
        assert leaks(tiny(name), ("train",)), name
    ds = leak_dataset()
    assert fingerprint(dataset_graph("hyper", ds, ("train",), None)) != fingerprint(
        dataset_graph("hyper", scrambled(ds, ("train",)), ("train",), None))


@pytest.mark.parametrize("name", ["pop", "spop", "itemknn", "sknn", "vsknn", "stan", "vstan", "sr", "ar",
                                  "gcegnn", "cmgnn"])
def test_fitting_on_validation_while_selecting_on_it_is_caught(name: str) -> None:
    """The scrambled copy really changes what a model would learn from held-out data: a run that
    fits on the validation split while it is held out is detected for every data-fitted model."""
    assert leaks(tiny(name), ("train",), used_splits=("train", "valid"))


def test_wider_graph_is_caught() -> None:
    ds = leak_dataset()
    other = scrambled(ds, ("train",))
    for kind in GRAPH_KINDS:
        a = dataset_graph(kind, ds, ("train", "valid"), None)
        b = dataset_graph(kind, other, ("train", "valid"), None)
        assert fingerprint(a) != fingerprint(b)


# ---- the fitted sessions themselves ---------------------------------------------------------------
def test_fit_sessions_are_the_read_part_of_each_session() -> None:
    ds = leak_dataset()
    for splits in FIT_CASES:
        f = ds.fit_sessions(splits)
        assert isinstance(f, FitSessions) and f.splits == splits
        assert f.items.dtype == np.int64 and f.offsets.dtype == np.int64 and f.session.dtype == np.int64
        assert f.offsets[0] == 0 and f.offsets[-1] == f.items.shape[0] and len(f) == f.offsets.shape[0] - 1
        assert (np.diff(f.session) > 0).all()  # dataset index order, each session once
        mask = read_by(ds, splits)
        want_sessions = [s for s in range(ds.n_sessions) if mask[ds.offsets[s] : ds.offsets[s + 1]].any()]
        assert f.session.tolist() == want_sessions
        for j, s in enumerate(want_sessions):
            read = mask[ds.offsets[s] : ds.offsets[s + 1]]
            n = int(np.flatnonzero(read).max()) + 1
            assert read[:n].all()  # a prefix of the session: up to and including the last fit target
            assert f.items[f.offsets[j] : f.offsets[j + 1]].tolist() == ds.session(s)[:n].tolist()
        assert np.array_equal(f.lengths, np.diff(f.offsets))
    assert ds.fit_sessions(("valid", "train", "train")).items.tolist() == ds.fit_sessions(("train", "valid")).items.tolist()
    assert ds.fit_sessions("train").session.tolist() == ds.fit_sessions(("train",)).session.tolist()


def test_fit_sessions_small_example() -> None:
    sessions = [[1, 2, 3], [2, 2, 4, 5], [3, 1], [4, 5, 6, 7, 1], [6, 7]]
    items, offsets, n_items = from_sequences("tiny", "t", sessions)
    splits = {
        "train": _cat(augment_all_prefixes(offsets, np.array([0, 2])), Split(np.array([1], np.int32), np.array([2], np.int32))),
        "valid": augment_all_prefixes(offsets, np.array([3])),
        "test": augment_all_prefixes(offsets, np.array([4])),
    }
    ds = ProcessedDataset("tiny", "t", n_items, items, offsets, splits)
    f = ds.fit_sessions(("train",))
    assert f.session.tolist() == [0, 1, 2] and f.offsets.tolist() == [0, 3, 6, 8]
    assert f.items.tolist() == [1, 2, 3, 2, 2, 4, 3, 1]  # session 1 cut after its last target (4)
    u = ds.fit_sessions(("train", "valid"))
    assert u.session.tolist() == [0, 1, 2, 3] and u.items[u.offsets[3] : u.offsets[4]].tolist() == [4, 5, 6, 7, 1]
    assert ds.counts()["items_seen_in_train"] == 7  # items 1..7 of train + valid, not the test-only ones


def test_fit_sessions_refuse_the_test_split_and_unknown_names() -> None:
    ds = leak_dataset()
    with pytest.raises(DataError, match="never the test split"):
        ds.fit_sessions(("train", "test"))
    with pytest.raises(DataError, match="never the test split"):
        ds.fit_sessions("test")
    with pytest.raises(DataError, match="unknown fit split 'trian'"):
        ds.fit_sessions(("trian",))
    for make in (tiny("pop"), tiny("sknn"), tiny("sr")):
        with pytest.raises(SbrError, match="test split"):
            make().fit(ds, ("train", "valid", "test"))
    for make in (tiny("gcegnn"), tiny("cmgnn"), tiny("tagnn")):
        with pytest.raises(SbrError, match="test split"):
            make().prepare(ds, ("train", "test"), None)
    with pytest.raises(SbrError, match="test split"):
        dataset_graph("hyper", ds, ("test",), None)


def test_fit_sessions_without_a_validation_split_fit_train_only() -> None:
    ds = leak_dataset()
    no_valid = dataclasses.replace(ds, splits={k: v for k, v in ds.splits.items() if k != "valid"})
    a, b = no_valid.fit_sessions(("train", "valid")), ds.fit_sessions(("train",))
    assert a.items.tolist() == b.items.tolist() and a.session.tolist() == b.session.tolist()
    empty = dataclasses.replace(ds, splits={"test": ds.splits["test"]})
    assert len(empty.fit_sessions(("train",))) == 0 and empty.fit_sessions(("train",)).offsets.tolist() == [0]
    with pytest.raises(SbrError, match="no training examples"):
        tiny("sknn")().fit(empty, ("train",))


def test_graph_cache_key_is_the_hash_of_the_fitted_sessions(tmp_path) -> None:
    """The cache file name still hashes the fitted CSR (int64 items, then int64 offsets), so
    caches written before `fit_sessions` existed stay valid, and a new split gets a new file."""
    ds = leak_dataset()
    mask = read_by(ds, ("train",))
    seqs = [ds.session(s)[: int(np.flatnonzero(mask[ds.offsets[s] : ds.offsets[s + 1]]).max()) + 1]
            for s in range(ds.n_sessions) if mask[ds.offsets[s] : ds.offsets[s + 1]].any()]
    items = np.concatenate(seqs).astype(np.int64)
    offsets = np.r_[0, np.cumsum([len(s) for s in seqs])].astype(np.int64)
    digest = hashlib.sha256(items.tobytes() + offsets.tobytes()).hexdigest()[:16]
    dataset_graph("global", ds, ("train",), tmp_path, eps=3, topk=12)
    assert [p.name for p in tmp_path.iterdir()] == [f"global-eps3-topk12-n{N_ITEMS}-{digest}.npz"]
    dataset_graph("global", ds, ("train", "valid"), tmp_path, eps=3, topk=12)
    assert len(list(tmp_path.iterdir())) == 2
