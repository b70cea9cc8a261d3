"""GCE-GNN: session relations, neighbour sampling, agreement with the official computation, ablations, learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sbrbench.batching import ExampleSource
from sbrbench.data.dataset import ProcessedDataset, augment_all_prefixes, from_sequences
from sbrbench.data.subset import top_items_subset
from sbrbench.errors import SbrError
from sbrbench.graphs import dataset_graph
from sbrbench.models import create_model, resolve_config
from sbrbench.models.gcegnn import GCEGNN, reverse_prefixes, sample_neighbours, session_relations
from sbrbench.evaluate import evaluate_run, score_examples
from sbrbench.optim import make_optimizer
from sbrbench.train import train


def _dataset(sessions: list[list[int]], n_train: int, n_valid: int) -> ProcessedDataset:
    items, offsets, n_items = from_sequences("toy", "t", sessions)
    idx = np.arange(len(sessions))
    splits = {
        "train": augment_all_prefixes(offsets, idx[:n_train]),
        "valid": augment_all_prefixes(offsets, idx[n_train : n_train + n_valid]),
        "test": augment_all_prefixes(offsets, idx[n_train + n_valid :]),
    }
    return ProcessedDataset("toy", "t", n_items, items, offsets, splits)


def _random_dataset(n_sessions: int = 80, n_items: int = 40, seed: int = 0) -> ProcessedDataset:
    rng = np.random.default_rng(seed)
    sessions = [rng.integers(1, n_items, size=int(rng.integers(2, 10))).tolist() for _ in range(n_sessions)]
    return _dataset(sessions, int(n_sessions * 0.7), int(n_sessions * 0.15))


def _official_adjacency(prefix: list[int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """A plain re-statement of GCE-GNN `utils.Data.__getitem__` for one prefix padded by one 0."""
    u_input = list(reversed(prefix)) + [0]
    node = np.unique(u_input)
    adj = np.zeros((len(node), len(node)), dtype=np.int64)
    for i in range(len(u_input) - 1):
        u = int(np.where(node == u_input[i])[0][0])
        adj[u][u] = 1
        if u_input[i + 1] == 0:
            break
        v = int(np.where(node == u_input[i + 1])[0][0])
        if u == v or adj[u][v] == 4:
            continue
        adj[v][v] = 1
        if adj[v][u] == 2:
            adj[u][v] = adj[v][u] = 4
        else:
            adj[u][v], adj[v][u] = 2, 3
    alias = [int(np.where(node == i)[0][0]) for i in u_input[:-1]]
    return node, adj, alias


def _relations_of(prefixes: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Our relations for `prefixes`, with the batch's nodes."""
    items, offsets, _ = from_sequences("r", "t", prefixes)
    src = ExampleSource(
        torch.from_numpy(items.astype(np.int64)), offsets[:-1], np.diff(offsets), np.zeros(len(prefixes)), graphs=True
    )
    b = src.batch(slice(0, len(prefixes)))
    rev_alias = reverse_prefixes(b.alias, b.lengths, b.mask)
    return session_relations(rev_alias, b.mask, b.nodes > 0), b.nodes


def test_session_relations_hand_made() -> None:
    # clicks 5 → 7 → 5 → 9 → 9: reversed 9, 9, 5, 7, 5; nodes sorted by id: 5, 7, 9.
    rel, nodes = _relations_of([[5, 7, 5, 9, 9]])
    assert nodes[0].tolist() == [5, 7, 9]
    expected = [
        [1, 4, 3],  # 5–7 both ways (reversed steps 5→7 and 7→5); 9→5 in the reversed prefix gives (5, 9) = 3
        [4, 1, 0],
        [2, 0, 1],  # (9, 5) = 2: reversed step 9 → 5 (5 was clicked just before 9); the repeat 9 → 9 adds nothing
    ]
    assert rel[0].tolist() == expected


def test_session_relations_match_the_official_loop() -> None:
    rng = np.random.default_rng(3)
    prefixes = [rng.integers(1, 8, size=int(rng.integers(1, 12))).tolist() for _ in range(60)]
    rel, nodes = _relations_of(prefixes)
    for r, prefix in enumerate(prefixes):
        node, adj, _ = _official_adjacency(prefix)
        real = node[1:]  # node 0 is the official padding node
        n = len(real)
        assert nodes[r, :n].tolist() == real.tolist() and not nodes[r, n:].any()
        assert rel[r, :n, :n].numpy().tolist() == adj[1:, 1:].tolist(), prefix
        assert not rel[r, n:].any() and not rel[r, :, n:].any()


def _official_scores(model: GCEGNN, prefix: list[int]) -> torch.Tensor:
    """A per-example re-statement of the official CombineGraph forward and compute_scores (eval mode)."""
    p = model.params
    emb = model.embedding.weight
    node, adj, alias = _official_adjacency(prefix)
    h = emb[torch.as_tensor(node)]
    parts = []
    if model.local_agg is not None:
        a = model.local_agg.a
        logits = torch.full((len(node), len(node)), -9e15)
        for i in range(len(node)):
            for j in range(len(node)):
                if adj[i, j] > 0:
                    logits[i, j] = F.leaky_relu((h[i] * h[j] * a[adj[i, j] - 1]).sum(), p.alpha)
        parts.append(torch.softmax(logits, -1) @ h)
    if model.global_agg is not None:
        session = emb[torch.as_tensor(prefix)].mean(0)
        nb, wt = model.neighbour_items, model.neighbour_weights

        def rep(item: int, layer: int) -> torch.Tensor:
            if layer == 0:
                return emb[item]
            agg = model.global_agg[layer - 1]
            neigh = torch.stack([rep(int(n), layer - 1) for n in nb[item]])
            if agg.w_1 is not None:
                x = torch.cat([session * neigh, wt[item].unsqueeze(1)], 1) @ agg.w_1
                pi = torch.softmax((F.leaky_relu(x, 0.2) @ agg.w_2).squeeze(1), 0)
                pooled = (pi.unsqueeze(1) * neigh).sum(0)
            else:
                pooled = neigh.mean(0)
            return agg.act(torch.cat([rep(item, layer - 1), pooled]) @ agg.w_3)

        parts.append(torch.stack([rep(int(v), p.hop) if v else torch.zeros(p.dim) for v in node]))
    hidden = sum(parts) if parts else h
    seq_hidden = hidden[torch.as_tensor(alias)]  # reversed order
    ro = model.readout
    hs = seq_hidden.mean(0)
    if ro.pos_embedding is not None:
        z = torch.cat([ro.pos_embedding.weight[: len(prefix)], seq_hidden], 1) @ ro.w_1
    else:
        z = seq_hidden @ ro.w_1
    z = torch.sigmoid(ro.glu1(torch.tanh(z)) + ro.glu2(hs))
    select = ((z @ ro.w_2) * seq_hidden).sum(0)
    return select @ emb[1:].t()


@pytest.mark.parametrize(("hop", "drop"), [(1, ""), (2, ""), (2, "gattn"), (1, "posemb,local"), (1, "global")])
def test_scores_match_the_official_computation(hop: int, drop: str) -> None:
    ds = _random_dataset()
    torch.manual_seed(1)
    model = create_model("gcegnn", ds.n_items, "toy", dim=8, hop=hop, drop=drop, sample_num=4, topk=6)
    model.prepare(ds, ("train",))
    model.eval()
    src = ExampleSource.from_dataset(ds, "valid", graphs=True)
    batch = src.batch(slice(0, 40))
    with torch.no_grad():
        ours = model(batch)
        for r in range(len(batch)):
            prefix = batch.seq[r, : batch.lengths[r]].tolist()
            torch.testing.assert_close(ours[r, 1:], _official_scores(model, prefix), rtol=1e-4, atol=1e-5)


def test_neighbour_sampling_is_deterministic_and_uses_only_training_transitions() -> None:
    # Item 1 has 13 training neighbours (more than the 12 sampled); items 30..33 occur only in
    # validation or test sessions, and the transition 2 → 3 only in validation.
    train = [[1, k] for k in range(2, 15)] + [[2, 20, 21]]
    sessions = train + [[2, 3, 30, 31], [32, 33, 1]]
    ds = _dataset(sessions, len(train), 1)
    graph = dataset_graph("global", ds, ("train",), None, eps=3, topk=14)
    model = create_model("gcegnn", ds.n_items, "toy", dim=8, topk=14)
    model.prepare(ds, ("train",))
    items, weights = model.neighbour_items, model.neighbour_weights
    again = create_model("gcegnn", ds.n_items, "toy", dim=8, topk=14)
    again.prepare(ds, ("train",))
    assert torch.equal(items, again.neighbour_items) and torch.equal(weights, again.neighbour_weights)
    other = create_model("gcegnn", ds.n_items, "toy", dim=8, topk=14, graph_seed=7)
    other.prepare(ds, ("train",))
    assert not torch.equal(items, other.neighbour_items)

    fitted = ds.fit_sessions(("train",))
    tr_items, tr_offsets = fitted.items, fitted.offsets
    seen = {(int(a), int(b)) for s in range(len(tr_offsets) - 1)
            for x in [tr_items[tr_offsets[s] : tr_offsets[s + 1]].tolist()]
            for i in range(len(x)) for j in range(i + 1, min(i + 4, len(x))) for a, b in ((x[i], x[j]), (x[j], x[i]))}
    for item in range(ds.n_items):
        c = int(graph.counts[item])
        truth = dict(zip(graph.neighbors[item, :c].tolist(), graph.weights[item, :c].tolist()))
        sampled = items[item].tolist()
        if c == 0:
            assert sampled == [0] * 12 and not weights[item].any()
            continue
        assert all((item, n) in seen for n in sampled)
        assert [truth[n] for n in sampled] == weights[item].tolist()
        if c >= 12:
            assert len(set(sampled)) == 12
        else:
            assert set(sampled) <= set(truth)
    for only_heldout in (30, 31, 32, 33):
        assert not items[only_heldout].any()
    assert 3 not in items[2].tolist()
    assert graph.counts[1] == 13
    with pytest.raises(SbrError, match="never the test split"):
        model.prepare(ds, ("train", "test"))


def test_sample_neighbours_with_and_without_replacement() -> None:
    neighbors = np.array([[0, 0, 0, 0], [2, 3, 0, 0], [1, 3, 4, 5]])
    weights = np.array([[0, 0, 0, 0], [5, 1, 0, 0], [4, 3, 2, 1]], dtype=np.float32)
    counts = np.array([0, 2, 4])
    items, w = sample_neighbours(neighbors, weights, counts, 3, torch.Generator().manual_seed(0))
    assert items[0].tolist() == [0, 0, 0] and w[0].tolist() == [0, 0, 0]
    assert set(items[1].tolist()) <= {2, 3}
    assert len(set(items[2].tolist())) == 3 and set(items[2].tolist()) <= {1, 3, 4, 5}
    lookup = {1: 4.0, 3: 3.0, 4: 2.0, 5: 1.0}
    assert w[2].tolist() == [lookup[i] for i in items[2].tolist()]


def test_defaults_per_dataset_are_the_official_ones() -> None:
    cfg = resolve_config("gcegnn")
    t = cfg.train
    assert (t.epochs, t.batch_size, t.lr, t.lr_dc, t.lr_dc_step, t.l2, t.patience) == (20, 100, 1e-3, 0.1, 3, 1e-5, 3)
    p = cfg.params
    assert (p.dim, p.sample_num, p.topk, p.eps, p.dropout_global, p.max_position) == (100, 12, 12, 3, 0.5, 200)
    expect = {"diginetica-top3000": (2, 0.2, 0.0), "tmall": (1, 0.6, 0.5), "nowplaying": (1, 0.0, 0.0)}
    for name, (hop, gcn, local) in expect.items():
        q = resolve_config("gcegnn", name).params
        assert (q.hop, q.dropout_gcn, q.dropout_local, q.dropout_global) == (hop, gcn, local, 0.5), name
    with pytest.raises(SbrError, match="hop"):
        create_model("gcegnn", 10, hop=0)


ABSENT = {
    "global": ("global_agg.", "neighbour_items"),
    "local": ("local_agg.",),
    "posemb": ("readout.pos_embedding",),
    "gattn": ("global_agg.0.w_1", "global_agg.0.w_2"),
}


@pytest.mark.parametrize("component", sorted(GCEGNN.components))
def test_every_component_switches_off_cleanly(component: str) -> None:
    ds = _random_dataset()
    torch.manual_seed(0)
    full = create_model("gcegnn", ds.n_items, "toy", dim=8, hop=2)
    model = create_model("gcegnn", ds.n_items, "toy", dim=8, hop=2, drop=component)
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    full_names = {n for n, _ in full.named_parameters()} | {n for n, _ in full.named_buffers()}
    for prefix in ABSENT[component]:
        assert any(n.startswith(prefix) for n in full_names)
        assert not any(n.startswith(prefix) for n in names), (component, prefix)
    # scores, loss and gradients of every variant: test_every_model.py


def test_unprepared_model_says_so() -> None:
    ds = _random_dataset()
    model = create_model("gcegnn", ds.n_items, "toy", dim=8)
    batch = ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 4))
    with pytest.raises(SbrError, match="prepare"):
        model(batch)
    assert create_model("gcegnn", ds.n_items, "toy", dim=8, drop="global")(batch).shape == (4, ds.n_items)


def test_prefixes_longer_than_max_position_keep_their_most_recent_clicks() -> None:
    ds = _random_dataset()
    model = create_model("gcegnn", ds.n_items, "toy", dim=8, max_position=3)
    model.prepare(ds, ("train",))
    model.eval()
    prefixes = [[1, 2, 3, 4, 5, 2], [7, 8], [9, 9, 9, 10]]
    cut = [p[-3:] for p in prefixes]

    def scores(ps: list[list[int]]) -> torch.Tensor:
        items, offsets, _ = from_sequences("r", "t", ps)
        src = ExampleSource(torch.from_numpy(items.astype(np.int64)), offsets[:-1], np.diff(offsets),
                            np.zeros(len(ps)), graphs=True)
        with torch.no_grad():
            return model(src.batch(slice(0, len(ps))))

    torch.testing.assert_close(scores(prefixes), scores(cut))


def test_trainer_run_and_re_evaluation_agree(tmp_path: Path, one_thread: None) -> None:
    # The sampled neighbours are not in the checkpoint: re-evaluation must rebuild the same ones.
    _random_dataset(n_sessions=300, n_items=300).save(tmp_path / "toy")
    overrides = {"epochs": 1, "dim": 8, "hop": 2, "lr": 0.01}
    rec = train("gcegnn", tmp_path / "toy", results_dir=tmp_path / "runs", overrides=overrides, ks=(1, 5, 20))
    assert rec["status"] == "complete" and rec["hparams"]["hop"] == 2
    again = evaluate_run(rec["run_dir"], ks=(1, 5, 20))
    assert again["metrics"] == pytest.approx(rec["test"])
    assert list((tmp_path / "toy" / "graphs").glob("global-*.npz"))  # cached beside the dataset


def test_gcegnn_learns_on_real_data_and_beats_spop(diginetica, one_thread: None) -> None:
    # 200 batches of Diginetica restricted to its 3,000 most frequent items; one global hop (the
    # official Tmall/Nowplaying setting) keeps this within the CI budget.
    sub = top_items_subset(diginetica, 3000)
    torch.manual_seed(0)
    model = create_model("gcegnn", sub.n_items, sub.name, hop=1)
    model.prepare(sub, ("train",))
    opt = make_optimizer(model, 1e-3, 1e-5)
    model.train()
    fit = ExampleSource.from_dataset(sub, "train", graphs=True)
    for i, batch in enumerate(fit.batches(100, generator=torch.Generator().manual_seed(0))):
        if i == 200:
            break
        opt.zero_grad()
        F.cross_entropy(model(batch), batch.targets).backward()
        opt.step()
    test = ExampleSource.from_dataset(sub, "test", graphs=True, limit=5000)
    ours = score_examples(model, test, 500, "cpu").metrics((20,))
    base = {}
    for name in ("pop", "spop"):
        b = create_model(name, sub.n_items)
        b.fit(sub, ("train",))
        base[name] = score_examples(b, ExampleSource.from_dataset(sub, "test", limit=5000), 500, "cpu").metrics((20,))
    assert ours["HR@20"] > base["spop"]["HR@20"] + 0.05, (ours, base)
    assert ours["MRR@20"] > base["spop"]["MRR@20"], (ours, base)
    assert ours["HR@20"] > 5 * base["pop"]["HR@20"], (ours, base)


def _per_slot_node_representations(
    model: GCEGNN, mask: torch.Tensor, nodes: torch.Tensor, rev_alias: torch.Tensor
) -> torch.Tensor:
    """GCE-GNN's node representations with the official per-slot global loop (sbrbench's form
    before the neighbour trees were deduplicated): every tree slot gets its own attention."""
    p = model.params
    node_mask = nodes > 0
    b_idx, n_idx = node_mask.nonzero(as_tuple=True)
    t = b_idx.shape[0]
    h = model.embedding(nodes)
    parts = []
    if model.local_agg is not None:
        h_local = model.local_agg(h, session_relations(rev_alias, mask, node_mask))
        parts.append(F.dropout(h_local, p.dropout_local, training=model.training))
    if model.global_agg is not None:
        level, entities, weights = nodes[b_idx, n_idx], [], []
        for _ in range(p.hop):
            weights.append(model.neighbour_weights[level].view(t, -1))
            level = model.neighbour_items[level].view(t, -1)
            entities.append(level)
        m = mask.to(h.dtype).unsqueeze(-1)
        clicks = h.gather(1, rev_alias.unsqueeze(2).expand(-1, -1, p.dim))
        session = ((clicks * m).sum(1) / m.sum(1))[b_idx]
        vectors = [h[b_idx, n_idx].unsqueeze(1)] + [model.embedding(e) for e in entities]
        s = p.sample_num
        for layer in range(p.hop):
            agg = model.global_agg[layer]
            vectors = [agg(vectors[k], vectors[k + 1].view(t, -1, s, p.dim), weights[k].view(t, -1, s), session)
                       for k in range(p.hop - layer)]
        h_global = torch.zeros_like(h).index_put((b_idx, n_idx), vectors[0].view(t, p.dim))
        parts.append(F.dropout(h_global, p.dropout_global, training=model.training))
    return h if not parts else sum(parts[1:], parts[0])


@pytest.mark.parametrize(("hop", "drop"), [(1, ""), (2, ""), (3, ""), (2, "gattn"), (2, "local")])
def test_deduplicated_neighbour_trees_equal_the_per_slot_loop(
    hop: int, drop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = _random_dataset(n_sessions=120, n_items=30)
    torch.manual_seed(3)
    model = create_model("gcegnn", ds.n_items, "toy", dim=8, hop=hop, drop=drop, sample_num=4, topk=6,
                         dropout_gcn=0.3, dropout_local=0.2)
    model.prepare(ds, ("train",))
    model.double()
    batch = ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 60))

    def run(train: bool, reference: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.train(train)
        model.zero_grad(set_to_none=True)
        with monkeypatch.context() as m:
            if reference:
                m.setattr(model, "node_representations",
                          lambda *a: _per_slot_node_representations(model, *a))
            torch.manual_seed(11)
            scores = model(batch)
        F.cross_entropy(scores, batch.targets).backward()
        return scores.detach(), [torch.zeros_like(q) if q.grad is None else q.grad.clone() for q in model.parameters()]

    for train in (False, True):
        new, new_grads = run(train, False)
        old, old_grads = run(train, True)
        torch.testing.assert_close(new, old, rtol=1e-10, atol=1e-10)
        for g_new, g_old in zip(new_grads, old_grads):
            torch.testing.assert_close(g_new, g_old, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("name", "overrides"), [("gcegnn", {"hop": 2, "sample_num": 4, "topk": 6}),
                                               ("cmgnn", {"topk": 4})])
def test_evaluation_in_slices_equals_the_whole_batch(
    name: str, overrides: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GCE-GNN and CM-GNN (built on it) score evaluation batches in slices of `eval_slice` rows."""
    ds = _random_dataset()
    torch.manual_seed(2)
    model = create_model(name, ds.n_items, "toy", dim=8, **overrides)
    model.prepare(ds, ("train",))
    model.double().eval()
    batch = ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 50))
    with torch.no_grad():
        monkeypatch.setattr(type(model), "eval_slice", 10**6)
        whole = model(batch)
        monkeypatch.setattr(type(model), "eval_slice", 7)
        torch.testing.assert_close(model(batch), whole, rtol=1e-10, atol=1e-10)
