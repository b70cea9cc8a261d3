"""CM-GNN and InfoNCE: hand-computed loss, exact batch-restricted H-GCN, components, depth variants, learning.

The fast forms (one embedding lookup, the deduplicated neighbour tree, the CSR hypergraph kernels)
are checked in float64 against `_reference_encode`, a copy of the earlier straightforward forward
pass (five lookups, per-slot G-GCN loop, COO hypergraph products): same scores, losses and
gradients, in training mode with the same dropout draws.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sbrbench.ablate import build_variants
from sbrbench.batching import ExampleSource
from sbrbench.data.dataset import ProcessedDataset, augment_all_prefixes, from_sequences
from sbrbench.data.subset import top_items_subset
from sbrbench.errors import SbrError
from sbrbench.evaluate import evaluate_run, score_examples
from sbrbench.graphs import dataset_graph, session_hypergraph
from sbrbench.losses import info_nce
from sbrbench.models import create_model, resolve_config
from sbrbench.models.cmgnn import CMGNN, HypergraphRows, keep_recent, masked_mean
from sbrbench.models.layers import (
    NeighbourTree,
    SessionAwareNeighbourAggregator,
    aggregate_neighbour_tree,
    reverse_prefixes,
    session_relations,
)
from sbrbench.optim import make_optimizer
from sbrbench.train import train


def _random_dataset(n_sessions: int = 80, n_items: int = 40, seed: int = 0) -> ProcessedDataset:
    rng = np.random.default_rng(seed)
    sessions = [rng.integers(1, n_items, size=int(rng.integers(2, 10))).tolist() for _ in range(n_sessions)]
    items, offsets, n = from_sequences("toy", "t", sessions)
    idx = np.arange(n_sessions)
    a, b = int(n_sessions * 0.7), int(n_sessions * 0.85)
    splits = {
        "train": augment_all_prefixes(offsets, idx[:a]),
        "valid": augment_all_prefixes(offsets, idx[a:b]),
        "test": augment_all_prefixes(offsets, idx[b:]),
    }
    return ProcessedDataset("toy", "t", n, items, offsets, splits)


# ---- InfoNCE --------------------------------------------------------------------------------------
def test_info_nce_matches_a_hand_computed_value() -> None:
    # Normalised: a1=(1,0), a2=(0,1); b1=(1,0), b2=(1,1)/sqrt2. Cosines: [[1, 1/sqrt2], [0, 1/sqrt2]].
    # At tau = 0.5 the logits are [[2, sqrt2], [0, sqrt2]]; the positives are the diagonal.
    a = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # norms do not matter
    b = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    r2 = math.sqrt(2.0)
    row1 = math.log(1 + math.exp(r2 - 2))  # -log(e^2 / (e^2 + e^sqrt2))
    row2 = math.log(1 + math.exp(-r2))  # -log(e^sqrt2 / (e^0 + e^sqrt2))
    assert info_nce(a, b, 0.5).item() == pytest.approx((row1 + row2) / 2, rel=1e-6)
    col1 = math.log(1 + math.exp(-2.0))  # column 1: logits [2, 0], positive 2
    col2 = math.log(2.0)  # column 2: logits [sqrt2, sqrt2]
    both = 0.5 * ((row1 + row2) / 2 + (col1 + col2) / 2)
    assert info_nce(a, b, 0.5, symmetric=True).item() == pytest.approx(both, rel=1e-6)
    assert info_nce(a[:1], b[:1], 0.5).item() == pytest.approx(0.0, abs=1e-7)  # no negatives
    with pytest.raises(ValueError):
        info_nce(a, b, 0.0)


def test_info_nce_rewards_aligned_views() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 8, generator=g)
    assert info_nce(x, x, 0.2) < info_nce(x, torch.randn(16, 8, generator=g), 0.2)


# ---- H-GCN ----------------------------------------------------------------------------------------
def test_hypergraph_convolution_matches_dense_formula_and_batch_rows_are_exact() -> None:
    ds = _random_dataset()
    fitted = ds.fit_sessions(("train",))
    items, offsets = fitted.items, fitted.offsets
    h = session_hypergraph(items, offsets, ds.n_items)
    inc = np.zeros((h.n_items, h.n_edges))
    inc[h.item, h.edge] = 1.0
    d = np.maximum(inc.sum(1), 1)
    b = np.maximum(inc.sum(0), 1)
    prop = torch.tensor((inc / d[:, None]) @ (inc / b[None, :]).T)
    x = torch.randn(ds.n_items, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    hyper = HypergraphRows.from_graph(h, factors=True, dtype=torch.float64)
    sel = torch.tensor([0, 3, 7, 20, 33])
    for layers in (1, 2, 3):
        dense, cur = x, x
        for _ in range(layers):
            cur = prop @ cur
            dense = dense + cur
        dense = dense / (layers + 1)
        g_dense = torch.autograd.grad(dense[sel].square().sum(), x, retain_graph=True)[0]
        full = hyper.full(x, layers)  # DHCN's pass: every row; its backward only P's rows that get a gradient
        torch.testing.assert_close(full, dense, rtol=1e-12, atol=1e-12)
        g_full = torch.autograd.grad(full[sel].square().sum(), x, retain_graph=True)[0]
        torch.testing.assert_close(g_full, g_dense, rtol=1e-12, atol=1e-12)
        g_all = torch.autograd.grad(full.sin().sum(), x)[0]  # every row receives a gradient
        torch.testing.assert_close(g_all, torch.autograd.grad(dense.sin().sum(), x)[0], rtol=1e-12, atol=1e-12)
        for x_items in (None, x[sel] * 1.0):
            got = hyper.rows(x, sel, layers, x_items)
            torch.testing.assert_close(got, dense[sel], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(torch.autograd.grad(got.square().sum(), x)[0], g_dense, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # float32 values, as models use them
        torch.testing.assert_close(HypergraphRows.from_graph(h).rows(x.float(), sel, 2), (prop.float() @ (prop.float() @ x.float()) + prop.float() @ x.float() + x.float())[sel] / 3)
    with pytest.raises(SbrError, match="factors"):
        HypergraphRows.from_graph(h).full(x, 1)


@pytest.mark.parametrize("layers", [1, 2])
def test_batch_scope_equals_dhcn_full_propagation(layers: int) -> None:
    ds = _random_dataset()
    batch = ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 40))
    out = []
    for scope in ("all", "batch"):
        torch.manual_seed(0)
        m = create_model("cmgnn", ds.n_items, "toy", dim=8, hgcn_layers=layers, hgcn_scope=scope)
        m.prepare(ds, ("train",))
        s_h = m.high_order_session(batch.seq, batch.mask)
        grad = torch.autograd.grad(s_h.sum(), m.embedding.weight)[0]
        out.append((s_h.detach(), grad))
    torch.testing.assert_close(out[0][0], out[1][0])
    torch.testing.assert_close(out[0][1], out[1][1])


# ---- the earlier forward pass, kept as the reference of the fast one ----------------------------------
def _reference_aggregate(agg: SessionAwareNeighbourAggregator, self_vectors: torch.Tensor, neighbours: torch.Tensor,
                         weights: torch.Tensor, session: torch.Tensor) -> torch.Tensor:
    """GCE-GNN's `GlobalAggregator.forward` for every tree slot (the aggregator's original code)."""
    dim = agg.dim
    if agg.w_1 is not None and agg.w_2 is not None:
        s = session.view(session.shape[0], 1, 1, dim)
        x = torch.matmul(s * neighbours, agg.w_1[:dim]) + weights.unsqueeze(-1) * agg.w_1[dim]
        pi = torch.softmax(torch.matmul(F.leaky_relu(x, 0.2), agg.w_2).squeeze(-1), dim=-1)
        pooled = (pi.unsqueeze(-1) * neighbours).sum(-2)
    else:
        pooled = neighbours.mean(-2)
    out = F.dropout(torch.cat([self_vectors, pooled], -1), agg.dropout, training=agg.training)
    return agg.act(torch.matmul(out, agg.w_3))


def _reference_tree(aggs, embedding, roots, session, nbr_items, nbr_weights):  # type: ignore[no-untyped-def]
    """The official layer-by-layer loop over per-slot embeddings of the full K**h trees (T, d)."""
    t, k = roots.shape[0], nbr_items.shape[1]
    ids, weights = [roots.unsqueeze(1)], []
    for _ in range(len(aggs)):
        weights.append(nbr_weights[ids[-1]].view(t, -1, k))
        ids.append(nbr_items[ids[-1]].view(t, -1))
    vectors = [embedding(i) for i in ids]
    for layer, agg in enumerate(aggs):
        vectors = [
            _reference_aggregate(agg, vectors[h], vectors[h + 1].view(t, -1, k, vectors[h].shape[-1]), weights[h], session)
            for h in range(len(aggs) - layer)
        ]
    return vectors[0].view(t, -1)


def _reference_encode(m: CMGNN, batch, hyper) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    """(s_p, s_h) as CM-GNN computed them before: a lookup per use, per-slot G-GCN, COO H-GCN of all items."""
    from sbrbench.batching import session_graphs

    p = m.params
    seq, mask, lengths, nodes, alias = batch.seq, batch.mask, batch.lengths, batch.nodes, batch.alias
    if seq.shape[1] > p.max_position:
        seq, mask, lengths = keep_recent(seq, lengths, p.max_position)
        nodes, alias, _, _ = session_graphs(seq, lengths, mask)
    rev_alias = reverse_prefixes(alias, lengths, mask)
    h0 = m.embedding(nodes)
    views = []
    if m.lgcn is not None:
        hidden = h0
        rel = session_relations(rev_alias, mask, nodes > 0)
        for layer in m.lgcn:
            hidden = layer(hidden, rel)
        views.append(F.dropout(hidden, p.dropout_local, training=m.training))
    if m.ggcn is not None:
        b_idx, n_idx = (nodes > 0).nonzero(as_tuple=True)
        session = masked_mean(m.embedding(seq), mask)[b_idx]
        roots = _reference_tree(m.ggcn, m.embedding, nodes[b_idx, n_idx], session, m.nbr_items, m.nbr_weights)
        out = torch.zeros(*nodes.shape, p.dim, dtype=roots.dtype).index_put((b_idx, n_idx), roots)
        views.append(F.dropout(out, p.dropout_global, training=m.training))
    if not views:
        hidden = h0
    elif m.fusion is not None:
        hidden = m.fusion(views)
    else:
        hidden = views[0] if len(views) == 1 else views[0] + views[1]
    s_p = m.readout(hidden.gather(1, rev_alias.unsqueeze(2).expand(-1, -1, p.dim)), mask)
    d, b = (torch.from_numpy(v).double() for v in hyper.degrees())
    e, i = torch.from_numpy(hyper.edge), torch.from_numpy(hyper.item)
    edge_from_items = torch.sparse_coo_tensor(torch.stack([e, i]), 1.0 / b[e], (hyper.n_edges, hyper.n_items),
                                              check_invariants=True).coalesce()
    item_from_edges = torch.sparse_coo_tensor(torch.stack([i, e]), 1.0 / d[i], (hyper.n_items, hyper.n_edges),
                                              check_invariants=True).coalesce()
    x = total = m.embedding.weight
    for _ in range(p.hgcn_layers):
        x = torch.sparse.mm(item_from_edges, torch.sparse.mm(edge_from_items, x))
        total = total + x
    s_h = masked_mean((total / (p.hgcn_layers + 1))[seq], mask)
    return s_p, s_h


def _double(m: CMGNN, hyper) -> CMGNN:  # type: ignore[no-untyped-def]
    """`m` in float64, its hypergraph operator with float64 values (not float32 ones cast up)."""
    m.double()
    m.hyper = HypergraphRows.from_graph(hyper, factors=m.params.hgcn_scope == "all", dtype=torch.float64)
    return m


def _losses_and_grads(m: CMGNN, batch, seed: int, reference=None):  # type: ignore[no-untyped-def]
    """(scores, cross-entropy, InfoNCE term, {parameter: gradient}) of one training-mode step."""
    m.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    if reference is None:
        scores = m(batch)
        extra = m.extra_loss(batch, scores)
    else:
        s_p, s_h = _reference_encode(m, batch, reference)
        scores = s_p @ m.embedding.weight.t()
        scores[:, 0] = float("-inf")
        extra = m.params.beta * info_nce(s_p, s_h, m.params.temperature) if m.training else None
    ce = F.cross_entropy(scores, batch.targets)
    (ce if extra is None else ce + extra).backward()
    grads = {n: q.grad.clone() for n, q in m.named_parameters() if q.grad is not None}
    return scores.detach(), ce.detach(), None if extra is None else extra.detach(), grads


@pytest.mark.parametrize(("scope", "ggcn_layers", "hgcn_layers"), [("batch", 2, 1), ("all", 2, 1), ("batch", 3, 2),
                                                                    ("all", 1, 2), ("batch", 1, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_fast_forward_equals_the_reference_in_float64(scope: str, ggcn_layers: int, hgcn_layers: int,
                                                      training: bool) -> None:
    # topk 4 on 40 items: many repeated (session, item) pairs and neighbours drawn with replacement;
    # every dropout on, beta 1 so that the contrastive term weighs in the gradients.
    ds = _random_dataset()
    torch.manual_seed(3)
    m = create_model("cmgnn", ds.n_items, "toy", dim=8, topk=4, ggcn_layers=ggcn_layers, hgcn_layers=hgcn_layers,
                     hgcn_scope=scope, beta=1.0, dropout_gcn=0.3, dropout_local=0.2, dropout_global=0.4)
    m.prepare(ds, ("train",))
    hyper = dataset_graph("hyper", ds, ("train",))
    _double(m, hyper).train(training)
    batch = ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 64))
    fast = _losses_and_grads(m, batch, 11)
    ref = _losses_and_grads(m, batch, 11, reference=hyper)
    torch.testing.assert_close(fast[0], ref[0], rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(fast[1], ref[1], rtol=1e-6, atol=0)
    assert (fast[2] is None) == (not training) == (ref[2] is None)
    if training:
        torch.testing.assert_close(fast[2], ref[2], rtol=1e-6, atol=0)
    assert fast[3].keys() == ref[3].keys() and "embedding.weight" in fast[3]
    for name in fast[3]:
        torch.testing.assert_close(fast[3][name], ref[3][name], rtol=1e-6, atol=1e-9, msg=name)


def test_fast_forward_equals_the_reference_on_real_batches(diginetica, one_thread: None) -> None:
    # Full Diginetica (43,097 items, its own global graph and hypergraph), float64, training mode.
    torch.manual_seed(0)
    m = create_model("cmgnn", diginetica.n_items, diginetica.name, dim=16)
    m.prepare(diginetica, ("train",))
    hyper = dataset_graph("hyper", diginetica, ("train",))
    _double(m, hyper).train()
    src = ExampleSource.from_dataset(diginetica, "train", graphs=True)
    for i, batch in enumerate(src.batches(100, generator=torch.Generator().manual_seed(1))):
        if i == 2:
            break
        fast = _losses_and_grads(m, batch, i)
        ref = _losses_and_grads(m, batch, i, reference=hyper)
        torch.testing.assert_close(fast[0], ref[0], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(fast[2], ref[2], rtol=1e-6, atol=0)
        for name in fast[3]:
            torch.testing.assert_close(fast[3][name], ref[3][name], rtol=1e-6, atol=1e-9, msg=name)


@pytest.mark.parametrize(("layers", "attention", "act"), [(1, True, "relu"), (2, True, "relu"), (3, True, "tanh"),
                                                          (2, False, "relu")])
def test_deduplicated_neighbour_tree_equals_the_per_slot_loop(layers: int, attention: bool, act: str) -> None:
    # GCE-GNN's aggregators too (averaging, tanh): values, gradients, and the same dropout draws.
    gen = torch.Generator().manual_seed(0)
    n, k, dim, n_sessions = 30, 3, 6, 5
    nbr_items = torch.randint(0, n, (n, k), generator=gen)
    nbr_weights = torch.randint(0, 4, (n, k), generator=gen).double()
    nbr_items[0] = 0
    nbr_weights[0] = 0
    # a session's roots are distinct items; few items overall, so they repeat across sessions
    codes = torch.unique(torch.randint(0, n_sessions, (14,), generator=gen) * n + torch.randint(1, 8, (14,), generator=gen))
    roots, root_session = codes % n, codes // n
    emb = torch.nn.Embedding(n, dim).double()
    session = torch.randn(n_sessions, dim, generator=gen, dtype=torch.float64, requires_grad=True)
    aggs = torch.nn.ModuleList(SessionAwareNeighbourAggregator(dim, 0.3, act, attention) for _ in range(layers)).double()
    tree = NeighbourTree.build(roots, root_session, nbr_items, nbr_weights, layers, keys=attention)
    if layers > 1:  # something was deduplicated
        assert tree.pair_session.shape[0] < sum(i.numel() for i in tree.ids)
    if attention:
        assert tree.key_items.shape[0] < tree.pair_neighbours.numel()
    ids = torch.unique(tree.items())
    out = []
    for fast in (True, False):
        torch.manual_seed(5)
        if fast:
            rows = emb(ids)
            got = aggregate_neighbour_tree(aggs, tree, lambda i, rows=rows: rows[torch.searchsorted(ids, i)], session)
        else:
            got = _reference_tree(aggs, emb, roots, session[root_session], nbr_items, nbr_weights)
        params = [emb.weight, *aggs.parameters()] + ([session] if attention else [])  # averaging ignores s
        out.append((got, torch.autograd.grad(got.square().sum(), params)))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-9, atol=1e-12)
    for a, b in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# ---- components and configuration -------------------------------------------------------------------
ABSENT = {
    "lgcn": ("lgcn.", "fusion."),
    "ggcn": ("ggcn.", "nbr_items", "fusion."),
    "hgcn": ("hyper.",),
    "fusion": ("fusion.",),
    "cl": ("hyper.",),
}


@pytest.mark.parametrize("component", sorted(CMGNN.components))
def test_every_component_switches_off_cleanly(component: str) -> None:
    ds = _random_dataset()

    def names(m: torch.nn.Module) -> set[str]:
        return {n for n, _ in m.named_parameters()} | {n for n, _ in m.named_buffers()}

    torch.manual_seed(0)
    full = create_model("cmgnn", ds.n_items, "toy", dim=8)
    full.prepare(ds, ("train",))
    model = create_model("cmgnn", ds.n_items, "toy", dim=8, drop=component)
    model.prepare(ds, ("train",))
    for prefix in ABSENT[component]:
        assert any(n.startswith(prefix) for n in names(full)), prefix
        assert not any(n.startswith(prefix) for n in names(model)), (component, prefix)
    model.train()
    batch = ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 50))
    scores = model(batch)
    extra = model.extra_loss(batch, scores)
    assert (extra is None) == (component in ("hgcn", "cl"))
    assert set(model.state_dict()) == {n for n, _ in model.named_parameters()}  # graphs stay out of checkpoints
    # scores, loss and gradients of every variant: test_every_model.py


def test_full_model_adds_the_weighted_contrastive_loss_only_in_training() -> None:
    ds = _random_dataset()
    torch.manual_seed(0)
    m = create_model("cmgnn", ds.n_items, "toy", dim=8, beta=0.5, temperature=0.3)
    m.prepare(ds, ("train",))
    batch = ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 30))
    m.train()
    scores = m(batch)
    assert m._views is not None
    s_p, s_h = m._views
    extra = m.extra_loss(batch, scores)
    assert extra is not None and extra.item() == pytest.approx(0.5 * info_nce(s_p, s_h, 0.3).item())
    m.eval()
    with torch.no_grad():
        m(batch)
    assert m.extra_loss(batch, scores) is None


def test_defaults_and_validation() -> None:
    p = resolve_config("cmgnn", "diginetica").params
    assert (p.ggcn_layers, p.hgcn_layers, p.lgcn_layers, p.beta, p.eps, p.topk) == (2, 1, 1, 0.01, 3, 12)
    assert resolve_config("cmgnn", "tmall").params.dropout_gcn == 0.6
    for bad in ({"ggcn_layers": 0}, {"temperature": 0.0}, {"hgcn_scope": "some"}, {"dropout_gcn": 1.0}):
        with pytest.raises(SbrError):
            create_model("cmgnn", 10, **bad)
    ds = _random_dataset()
    model = create_model("cmgnn", ds.n_items, "toy", dim=8)
    with pytest.raises(SbrError, match="prepare"):
        model(ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 4)))


def test_vary_ggcn_layers_builds_models_of_different_depth() -> None:
    variants = build_variants("cmgnn", "diginetica", [], {"ggcn_layers": ["1", "2", "3"]})
    by_name = {v.name: v for v in variants}
    assert by_name["ggcn_layers=2"].alias_of == "full"  # the default depth is the full model
    depths = {}
    for name in ("ggcn_layers=1", "ggcn_layers=3"):
        model = create_model("cmgnn", 50, "diginetica", **by_name[name].overrides)
        depths[name] = len(model.ggcn)
    assert depths == {"ggcn_layers=1": 1, "ggcn_layers=3": 3}
    assert [v.name for v in build_variants("cmgnn", "diginetica", ["ggcn"], {})] == ["full", "-ggcn"]


def test_trainer_run_and_re_evaluation_agree(tmp_path: Path, one_thread: None) -> None:
    # The graphs are buffers outside the checkpoint: re-evaluation must rebuild the same ones.
    _random_dataset(n_sessions=200, n_items=100).save(tmp_path / "toy")
    overrides = {"epochs": 1, "dim": 8, "lr": 0.01}
    rec = train("cmgnn", tmp_path / "toy", results_dir=tmp_path / "runs", overrides=overrides, ks=(1, 5, 20))
    assert rec["status"] == "complete" and rec["hparams"]["ggcn_layers"] == 2
    again = evaluate_run(rec["run_dir"], ks=(1, 5, 20))
    assert again["metrics"] == pytest.approx(rec["test"])
    cached = {p.name.split("-")[0] for p in (tmp_path / "toy" / "graphs").glob("*.npz")}
    assert cached == {"global", "hyper"}


# ---- learning on real data --------------------------------------------------------------------------
def test_cmgnn_learns_on_real_data_and_beats_spop(diginetica, one_thread: None) -> None:
    # 100 batches of Diginetica restricted to its 3,000 most frequent items, with all five
    # components on (one G-GCN layer and dim 64 keep it within the CI budget).
    sub = top_items_subset(diginetica, 3000)
    torch.manual_seed(0)
    model = create_model("cmgnn", sub.n_items, sub.name, dim=64, ggcn_layers=1)
    model.prepare(sub, ("train",))
    opt = make_optimizer(model, 3e-3, 1e-5)
    model.train()
    fit = ExampleSource.from_dataset(sub, "train", graphs=True)
    for i, batch in enumerate(fit.batches(100, generator=torch.Generator().manual_seed(0))):
        if i == 100:
            break
        opt.zero_grad()
        scores = model(batch)
        extra = model.extra_loss(batch, scores)
        assert extra is not None
        (F.cross_entropy(scores, batch.targets) + extra).backward()
        opt.step()
    ours = score_examples(model, ExampleSource.from_dataset(sub, "test", graphs=True, limit=4000), 500, "cpu").metrics((20,))
    base = {}
    for name in ("pop", "spop"):
        b = create_model(name, sub.n_items)
        b.fit(sub, ("train",))
        base[name] = score_examples(b, ExampleSource.from_dataset(sub, "test", limit=4000), 500, "cpu").metrics((20,))
    assert ours["HR@20"] > base["spop"]["HR@20"] + 0.05, (ours, base)
    assert ours["MRR@20"] > base["spop"]["MRR@20"], (ours, base)
    assert ours["HR@20"] > 5 * base["pop"]["HR@20"], (ours, base)
