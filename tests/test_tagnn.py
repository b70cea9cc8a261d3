"""TAGNN, TAGNN++ (paper) and TAGNN++ (as released): packed target attention against the previous
implementation (`tagnn_reference`), official padding, Adaptive Gradient Clipping, components,
defaults, and learning on real Diginetica data."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sbrbench.batching import ExampleSource
from sbrbench.data.dataset import ProcessedDataset
from sbrbench.errors import SbrError
import sbrbench.models.tagnn as tagnn_module
from sbrbench.batching import Batch, pad_prefixes, session_graphs_packed
from sbrbench.models import create_model, resolve_config
from sbrbench.models.tagnn import node_units, packed_target_scores, plan_chunks
from sbrbench.models.tagnn_reference import (
    reference_mode,
    reference_target_scores,
    target_attention_scores,
    target_attention_scores_naive,
)
from sbrbench.optim import adaptive_grad_clip_
from toy_data import random_sessions, split_dataset


def tiny_dataset(n_sessions: int = 80, n_items: int = 25, seed: int = 3) -> ProcessedDataset:
    # short alphabets so prefixes repeat items (repeated nodes, self-loops)
    return split_dataset("tiny", random_sessions(n_sessions, n_items, seed, max_len=9), (60, 70), n_items=n_items)


# ---- chunked target attention ----------------------------------------------------------------------
@pytest.mark.parametrize("official", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 0])
def test_chunked_target_attention_equals_naive_forward_and_gradients(official: bool, chunk: int) -> None:
    gen = torch.Generator().manual_seed(0)
    bsz, seqlen, dim, n = 5, 7, 6, 31
    lengths = torch.tensor([7, 3, 1, 5, 7])
    mask = torch.arange(seqlen).unsqueeze(0) < lengths.unsqueeze(1)
    n_pad = (torch.tensor([9, 9, 9, 9, 7]) - lengths).float() if official else None
    items = torch.randn(n, dim, generator=gen, dtype=torch.float64, requires_grad=True)
    q = torch.randn(bsz, seqlen, dim, generator=gen, dtype=torch.float64, requires_grad=True)
    h = torch.randn(bsz, seqlen, dim, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(bsz, n, generator=gen, dtype=torch.float64)
    fast = target_attention_scores(items, q, h, mask, n_pad, chunk)
    slow = target_attention_scores_naive(items, q, h, mask, n_pad)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
    g_fast = torch.autograd.grad((fast * w).sum(), (items, q, h))
    g_slow = torch.autograd.grad((slow * w).sum(), (items, q, h))
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # padded positions and padding rows get no gradient
    assert g_fast[1][~mask].abs().max() == 0 and g_fast[2][~mask].abs().max() == 0


def test_official_padding_changes_the_target_softmax() -> None:
    gen = torch.Generator().manual_seed(1)
    items = torch.randn(4, 3, generator=gen)
    q, h = torch.randn(2, 3, 3, generator=gen), torch.randn(2, 3, 3, generator=gen)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    masked = target_attention_scores(items, q, h, mask)
    padded = target_attention_scores(items, q, h, mask, torch.tensor([4.0, 0.0]))
    assert not torch.allclose(masked[0], padded[0])  # row 0 has 4 zero-logit slots in its softmax
    torch.testing.assert_close(masked[1], padded[1])  # row 1 has none


# ---- packed target attention against the previous implementation -----------------------------------
#: Prefixes with repeated items, length-1 prefixes and very different lengths in one batch.
PREFIXES = [
    [3],
    [5, 5, 5, 5, 5, 5, 5],
    [1, 2, 1, 2, 1, 3],
    [7],
    [2, 4, 6, 8, 10, 12, 11, 9, 7, 5, 3, 1, 2, 4, 6, 8, 10, 12, 11, 9, 7, 5, 3, 1, 13, 13, 2],
    [9, 1],
    [4, 4],
    [6, 2, 6, 11, 2, 6],
]


def graph_batch(prefixes: list[list[int]], dtype: torch.dtype = torch.float64, packed: bool = True) -> Batch:
    """A graph batch of `prefixes` (adjacency in `dtype`); `packed=False` leaves the packed fields None."""
    items = torch.tensor([x for p in prefixes for x in p])
    lens = torch.tensor([len(p) for p in prefixes])
    seq, mask = pad_prefixes(items, torch.cumsum(lens, 0) - lens, lens)
    nodes, alias, a_in, a_out, node_rows, node_cols = session_graphs_packed(seq, lens, mask)
    b = Batch(seq, lens, torch.ones_like(lens), mask, nodes, alias, a_in.to(dtype), a_out.to(dtype))
    if packed:
        b.pos_rows, b.pos_cols = mask.nonzero(as_tuple=True)
        b.node_rows, b.node_cols = node_rows, node_cols
    return b


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("chunk", [1, 5, 0])
@pytest.mark.parametrize("official", [False, True])
def test_packed_target_scores_equal_the_previous_form_with_gradients(
    official: bool, chunk: int, keep: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Distinct items weighted by log-counts == every position; kept or recomputed probabilities."""
    if not keep:
        monkeypatch.setattr(tagnn_module, "CPU_MEMORY_BUDGET", 0)
    gen = torch.Generator().manual_seed(0)
    b = graph_batch(PREFIXES)
    n_items, dim = 14, 6
    f64 = {"generator": gen, "dtype": torch.float64}
    weight = torch.randn(n_items, dim, **f64).requires_grad_()
    session = torch.randn(len(b), dim, **f64).requires_grad_()
    node_h = torch.randn(*b.nodes.shape, dim, **f64).requires_grad_()
    linear_t = torch.nn.Linear(dim, dim, bias=False).double()
    n_pad = (30 - b.lengths).clamp(min=0).double() if official else None
    n_pad = n_pad.index_fill(0, torch.tensor([4]), 0.0) if n_pad is not None else None  # a full row
    seq_h = node_h.gather(1, b.alias.unsqueeze(2).expand(-1, -1, dim))
    ref = session @ weight[1:].t() + reference_target_scores(linear_t, weight[1:], seq_h, b.mask, n_pad)
    units = node_units(node_h, b)
    assert units.rows.shape[0] == sum(len(set(p)) for p in PREFIXES)
    h = units.states()
    new = packed_target_scores(weight, session, linear_t(h), h, units.rows, units.log_count, n_pad, chunk)
    assert torch.isneginf(new[:, 0]).all()
    torch.testing.assert_close(new[:, 1:], ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(len(b), n_items - 1, **f64)
    inputs = (weight, session, node_h, linear_t.weight)
    g_new = torch.autograd.grad((new[:, 1:] * w).sum(), inputs)
    g_ref = torch.autograd.grad((ref * w).sum(), inputs)
    for a, r in zip(g_new, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)
    assert g_new[0][0].abs().max() == 0  # the padding item is no candidate
    with torch.no_grad():  # the forward-only path
        fwd = packed_target_scores(weight, session, linear_t(h), h, units.rows, units.log_count, n_pad, chunk)
    assert fwd.grad_fn is None
    torch.testing.assert_close(fwd, new.detach(), rtol=0, atol=0)


def test_the_forward_only_path_keeps_nothing_and_the_backward_reuses_kept_probabilities(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = tagnn_module._attend_chunk
    monkeypatch.setattr(tagnn_module, "_attend_chunk", lambda *a: (calls.append(1), real(*a))[1])
    gen = torch.Generator().manual_seed(2)
    weight = torch.randn(40, 4, generator=gen, requires_grad=True)
    q, h, s = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen), torch.randn(2, 4, generator=gen)
    rows = torch.tensor([0, 0, 1, 1, 1, 1])
    out = packed_target_scores(weight, s, q, h, rows, chunk=8)
    n_chunks = len(calls)
    assert n_chunks == 5 and out.grad_fn is not None
    out.sum().backward()
    assert len(calls) == n_chunks  # kept: no recomputation
    monkeypatch.setattr(tagnn_module, "CPU_MEMORY_BUDGET", 0)
    packed_target_scores(weight, s, q, h, rows, chunk=8).sum().backward()
    assert len(calls) == 3 * n_chunks  # not kept: recomputed in backward
    with torch.no_grad():
        assert packed_target_scores(weight, s, q, h, rows).grad_fn is None
    assert packed_target_scores(weight.detach(), s, q, h, rows).grad_fn is None


def test_plan_chunks_follows_the_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(tagnn_module, "CPU_MEMORY_BUDGET", 512 << 20)
    chunk, keep = plan_chunks(400, 100, 43097, torch.float32, cpu, 0, True)
    assert keep and 1 <= chunk <= 43097  # 2 x 400 x 43097 floats = 132 MiB
    assert not plan_chunks(400, 100, 43097, torch.float32, cpu, 0, False)[1]  # nothing to keep without grad
    assert not plan_chunks(4000, 100, 43097, torch.float32, cpu, 0, True)[1]  # 1.3 GiB: recompute
    assert plan_chunks(400, 100, 43097, torch.float32, cpu, 77, True)[0] == 77
    assert plan_chunks(4, 2, 10, torch.float32, cpu, 0, True)[0] == 10


MODEL_VARIANTS = [
    ("tagnn", {}),
    ("tagnn", {"padding": "masked"}),
    ("tagnn", {"hybrid": False}),
    ("tagnn", {"hybrid": False, "padding": "masked", "drop": "gnn"}),
    ("tagnnpp", {"heads": 2, "dropout": 0.0}),
    ("tagnnpp", {"heads": 2, "dropout": 0.0, "hybrid": False}),
    ("tagnnpp", {"heads": 2, "dropout": 0.0, "drop": "transformer"}),
    ("tagnnpp-released", {"heads": 2, "dropout": 0.0}),
    ("tagnnpp-released", {"heads": 2, "dropout": 0.0, "padding": "masked"}),
    ("tagnnpp-released", {"heads": 2, "dropout": 0.0, "hybrid": True}),
]


@pytest.mark.parametrize("packed_fields", [True, False])
@pytest.mark.parametrize(("name", "kw"), MODEL_VARIANTS)
def test_models_score_and_learn_exactly_as_the_previous_implementation(
    name: str, kw: dict, packed_fields: bool
) -> None:
    """Scores and every parameter's gradient (float64) equal the previous padded implementation."""
    b = graph_batch(PREFIXES, packed=packed_fields)
    torch.manual_seed(0)
    model = create_model(name, 14, dim=8, **kw).double().train()
    if hasattr(model, "len_max"):
        model.len_max = 25  # the 27-click row gets no padding terms
    runs = []
    for ref in (False, True):
        model.zero_grad(set_to_none=True)
        if ref:
            with reference_mode(model):
                scores = model(b)
        else:
            scores = model(b)
        F.cross_entropy(scores, torch.tensor([2, 3, 4, 5, 6, 7, 8, 9])).backward()
        runs.append((scores.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (new, g_new), (old, g_old) = runs
    torch.testing.assert_close(new, old, rtol=1e-10, atol=1e-12)
    assert set(g_new) == set(g_old) and "target.linear_t.weight" in g_new
    for k in g_old:
        scale = g_old[k].abs().max().clamp(min=1e-30)
        assert (g_new[k] - g_old[k]).abs().max() / scale < 1e-10, k
    model.eval()
    with torch.no_grad():
        fast = model(b)
        with reference_mode(model):
            slow = model(b)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["tagnn", "tagnnpp", "tagnnpp-released"])
def test_the_step_needs_no_host_synchronisation(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No .item()/.tolist()/nonzero()/bool()/int() or boolean-mask indexing in forward and backward."""
    ds = tiny_dataset()
    batch = ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 64))
    torch.manual_seed(0)
    model = create_model(name, ds.n_items, dim=8, **({"heads": 2} if name != "tagnn" else {}))
    model.prepare(ds, ("train",))

    def forbid(what: str):  # noqa: ANN202
        def raiser(*a: object, **k: object) -> None:
            raise AssertionError(f"host synchronisation: {what}")

        return raiser

    real_getitem = torch.Tensor.__getitem__

    def getitem(self: torch.Tensor, idx: object) -> torch.Tensor:
        parts = idx if isinstance(idx, tuple) else (idx,)
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in parts):
            raise AssertionError("host synchronisation: boolean-mask indexing")
        return real_getitem(self, idx)

    with monkeypatch.context() as m:
        for attr in ("item", "tolist", "nonzero", "__bool__", "__int__", "__float__"):
            m.setattr(torch.Tensor, attr, forbid(attr))
        m.setattr(torch.Tensor, "__getitem__", getitem)
        loss = F.cross_entropy(model(batch), batch.targets)
        loss.backward()


# ---- the official code, re-done naively on inputs padded to len_max ------------------------------------
def official_slice(prefixes: list[list[int]], len_max: int) -> tuple[torch.Tensor, ...]:
    """The official `Data.get_slice` on prefixes padded with item 0 up to `len_max`."""
    inputs = [p + [0] * (len_max - len(p)) for p in prefixes]
    mask = torch.tensor([[1.0] * len(p) + [0.0] * (len_max - len(p)) for p in prefixes])
    n_node = max(len(np.unique(u)) for u in inputs)
    nodes, a_in, a_out, alias = [], [], [], []
    for u in inputs:
        node = np.unique(u)
        nodes.append(node.tolist() + [0] * (n_node - len(node)))
        a = np.zeros((n_node, n_node))
        for i in range(len(u) - 1):
            if u[i + 1] == 0:
                break
            a[np.where(node == u[i])[0][0], np.where(node == u[i + 1])[0][0]] = 1
        indeg, outdeg = a.sum(0), a.sum(1)
        indeg[indeg == 0], outdeg[outdeg == 0] = 1, 1
        a_in.append((a / indeg).T)
        a_out.append(a / outdeg[:, None])
        alias.append([int(np.where(node == i)[0][0]) for i in u])
    f = lambda x: torch.tensor(np.array(x), dtype=torch.float32)  # noqa: E731
    return torch.tensor(nodes), f(a_in), f(a_out), torch.tensor(alias), mask


def official_compute_scores(model: torch.nn.Module, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TAGNN's `compute_scores`, naive: softmaxes over every padded position, (B, |V|-1) scores."""
    r = model.readout
    ht = hidden[torch.arange(mask.shape[0]), mask.sum(1).long() - 1]
    alpha = F.softmax(r.linear_three(torch.sigmoid(r.linear_one(ht).unsqueeze(1) + r.linear_two(hidden))), 1)
    a = (alpha * hidden * mask.unsqueeze(2)).sum(1)
    if r.transform is not None:
        a = r.transform(torch.cat([a, ht], 1))
    b = model.embedding.weight[1:]
    hidden = hidden * mask.unsqueeze(2)
    beta = F.softmax(b @ model.target.linear_t(hidden).transpose(1, 2), -1)
    return ((a.unsqueeze(1) + beta @ hidden) * b).sum(-1)


def _batch_and_prefixes(ds: ProcessedDataset) -> tuple[object, list[list[int]]]:
    src = ExampleSource.from_dataset(ds, "test", graphs=True)
    batch = src.batch(slice(0, len(src)))
    prefixes = [batch.seq[i, : batch.lengths[i]].tolist() for i in range(len(batch))]
    return batch, prefixes


def _against_official(name: str, ds: ProcessedDataset, extra: int,
                      after_gnn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None
                      ) -> tuple[torch.nn.Module, Batch, torch.Tensor, torch.Tensor]:
    """Model `name` (dim 8, seed 0, eval) padded to the test batch's longest prefix + `extra`, and
    the official code's scores with the same weights (`after_gnn`: what runs between the GNN and
    the readout): (model, batch, scores, official scores without column 0)."""
    batch, prefixes = _batch_and_prefixes(ds)
    torch.manual_seed(0)
    model = create_model(name, ds.n_items, dim=8).eval()
    len_max = int(batch.lengths.max()) + extra
    model.len_max = len_max
    nodes, a_in, a_out, alias, mask = official_slice(prefixes, len_max)
    with torch.no_grad():
        hidden = model.gnn(a_in, a_out, model.embedding(nodes))
        if after_gnn is not None:
            hidden = after_gnn(model, hidden)
        seq_hidden = torch.stack([hidden[i][alias[i]] for i in range(len(alias))])
        expected = official_compute_scores(model, seq_hidden, mask)
        got = model(batch)
    return model, batch, got, expected


@pytest.mark.parametrize("extra", [0, 3])
def test_tagnn_official_padding_equals_the_official_code_padded_to_len_max(extra: int) -> None:
    ds = tiny_dataset()
    model, batch, got, expected = _against_official("tagnn-code", ds, extra)
    assert (batch.lengths == model.len_max).any() == (extra == 0)  # full-length rows covered
    torch.testing.assert_close(got[:, 1:], expected, rtol=1e-5, atol=1e-5)
    assert torch.isneginf(got[:, 0]).all()
    masked = create_model("tagnn", ds.n_items, dim=8, padding="masked").eval()
    masked.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(masked(batch), got)


@pytest.mark.parametrize("extra", [0, 2])
def test_tagnnpp_released_equals_the_released_code_padded_to_len_max(extra: int) -> None:
    def released_block(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        causal = torch.ones(hidden.shape[1], hidden.shape[1], dtype=torch.bool).triu(1)
        att, _ = model.block.attn(hidden, hidden, hidden, attn_mask=causal)
        return att + model.block.norm(hidden)

    model, _, got, expected = _against_official("tagnnpp-code", tiny_dataset(seed=5), extra, released_block)
    assert model.readout.transform is None  # nonhybrid, as released
    torch.testing.assert_close(got[:, 1:], expected, rtol=1e-5, atol=1e-5)


def test_dropping_the_attention_blocks_gives_tagnn() -> None:
    ds = tiny_dataset()
    batch, _ = _batch_and_prefixes(ds)
    torch.manual_seed(0)
    tagnn = create_model("tagnn-code", ds.n_items, dim=8, hybrid=False).eval()
    tagnn.len_max = 12
    released = create_model("tagnnpp-code", ds.n_items, dim=8, drop="transformer").eval()
    released.load_state_dict(tagnn.state_dict())
    released.len_max = 12
    paper = create_model("tagnnpp", ds.n_items, dim=8, hybrid=False, drop="transformer,agc").eval()
    paper.load_state_dict(tagnn.state_dict())
    masked = create_model("tagnn", ds.n_items, dim=8, hybrid=False, padding="masked").eval()
    masked.load_state_dict(tagnn.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(released(batch), tagnn(batch))
        torch.testing.assert_close(paper(batch), masked(batch))


# ---- AGC ----------------------------------------------------------------------------------------------
def test_agc_matches_a_hand_computed_example() -> None:
    w = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.6, 0.8]], requires_grad=True)  # row norms 5, 0, 1
    b = torch.tensor([0.6, 0.8], requires_grad=True)  # norm 1
    w.grad = torch.tensor([[0.3, 0.4], [1.0, 0.0], [0.006, 0.008]])  # norms 0.5, 1, 0.01
    b.grad = torch.tensor([0.03, 0.04])  # norm 0.05
    adaptive_grad_clip_([w, b], clipping=0.01, eps=1e-3)
    # row 0: max 0.01*5 = 0.05 < 0.5 -> scaled by 0.1; row 1: max 0.01*eps = 1e-5 -> (1e-5, 0);
    # row 2: max 0.01 = 0.01 -> untouched (not above); bias: max 0.01 < 0.05 -> scaled by 0.2
    torch.testing.assert_close(w.grad, torch.tensor([[0.03, 0.04], [1e-5, 0.0], [0.006, 0.008]]))
    torch.testing.assert_close(b.grad, torch.tensor([0.006, 0.008]))
    conv = torch.ones(2, 1, 2, 2, requires_grad=True)  # one unit per output channel, norm 2
    conv.grad = torch.cat([torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 1e-3)])
    adaptive_grad_clip_(conv, clipping=0.1)
    torch.testing.assert_close(conv.grad[0], torch.full((1, 2, 2), 0.1))
    torch.testing.assert_close(conv.grad[1], torch.full((1, 2, 2), 1e-3))
    with pytest.raises(ValueError):
        adaptive_grad_clip_(conv, clipping=0.0)


# ---- components ----------------------------------------------------------------------------------------
COMPONENTS = {
    "tagnn": {"gnn": ("gnn.",), "target": ("target.",)},
    "tagnnpp": {
        "transformer": ("encoder.", "pos_embedding."),
        "gnn": ("gnn.",),
        "posemb": ("pos_embedding.",),
        "agc": (),
    },
    "tagnnpp-code": {"transformer": ("block.",), "gnn": ("gnn.",)},
}


@pytest.mark.parametrize(("name", "component"), [(m, c) for m, cs in COMPONENTS.items() for c in cs])
def test_every_component_switches_off_cleanly(name: str, component: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import sbrbench.models.tagnnpp as tagnnpp_module

    calls: list[int] = []
    real_agc = tagnnpp_module.adaptive_grad_clip_
    monkeypatch.setattr(tagnnpp_module, "adaptive_grad_clip_", lambda *a, **k: (calls.append(1), real_agc(*a, **k)))
    ds = tiny_dataset()
    batch = ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 16))
    kw = {"dim": 8, "heads": 2} if name != "tagnn" else {"dim": 8}
    full = create_model(name, ds.n_items, **kw)
    model = create_model(name, ds.n_items, drop=component, **kw)
    assert set(model.components) == set(COMPONENTS[name])
    names = [n for n, _ in model.named_parameters()]
    full_names = [n for n, _ in full.named_parameters()]
    for prefix in COMPONENTS[name][component]:
        assert any(n.startswith(prefix) for n in full_names)
        assert not any(n.startswith(prefix) for n in names), f"{component} still has parameters"
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < sum(p.numel() for p in full.parameters()) or component == "agc"
    for m in (full, model):
        calls.clear()
        m.prepare(ds, ("train",))
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        loss = F.cross_entropy(m(batch), batch.targets)
        assert torch.isfinite(loss)
        loss.backward()
        m.clip_gradients()
        opt.step()
        if name == "tagnnpp":
            assert len(calls) == (0 if m is model and component == "agc" else 1)
        else:
            assert not calls


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(SbrError, match="padding must be one of"):
        create_model("tagnn", 10, padding="zero")
    with pytest.raises(SbrError, match="multiple of heads"):
        create_model("tagnnpp", 10, dim=10, heads=3)
    with pytest.raises(SbrError, match="no component"):
        create_model("tagnnpp-code", 10, drop="agc")


# ---- defaults -----------------------------------------------------------------------------------------
def test_paper_and_release_defaults() -> None:
    expected = {"diginetica": (120, 8), "diginetica-top3000": (120, 8), "yoochoose1_64": (100, 2)}
    for ds_name, (dim, heads) in expected.items():
        cfg = resolve_config("tagnnpp", ds_name)
        assert (cfg.params.dim, cfg.params.heads, cfg.params.dropout) == (dim, heads, 0.1)
        t = cfg.train
        assert (t.batch_size, t.lr, t.lr_dc, t.lr_dc_step, t.l2, t.epochs) == (50, 1e-4, 0.1, 3, 1e-6, 15)
    for ds_name, (bs, dim) in {"diginetica": (50, 100), "yoochoose1_64": (75, 120)}.items():
        cfg = resolve_config("tagnnpp-code", ds_name)
        assert (cfg.train.batch_size, cfg.params.dim, cfg.params.heads, cfg.params.hybrid) == (bs, dim, 2, False)
        assert (cfg.train.lr, cfg.train.l2, cfg.train.epochs) == (1e-3, 1e-5, 30)
        assert cfg.params.padding == "official"
    cfg = resolve_config("tagnn-code", "diginetica")
    assert (cfg.params.dim, cfg.params.hybrid, cfg.params.padding, cfg.train.batch_size, cfg.train.l2) == (
        100, True, "official", 100, 1e-5,
    )
    assert resolve_config("tagnn", "diginetica").params.padding == "masked"  # the paper's softmaxes


def test_prepare_takes_len_max_from_the_fit_splits_only() -> None:
    ds = tiny_dataset()
    model = create_model("tagnn", ds.n_items, dim=8)
    model.prepare(ds, ("train",))
    assert model.len_max == int(ds.examples("train").length.max())
    model.prepare(ds, ("train", "valid"))
    assert model.len_max == max(int(ds.examples(s).length.max()) for s in ("train", "valid"))


# ---- learning on real data ----------------------------------------------------------------------------
def test_tagnn_learns_on_diginetica_beyond_pop_and_spop(diginetica, tmp_path) -> None:
    from sbrbench.data.subset import top_items_subset
    from sbrbench.train import train

    ds = top_items_subset(diginetica, 1000)
    rng = np.random.default_rng(0)
    sp = ds.splits
    ds = dataclasses.replace(
        ds,
        splits={
            "train": sp["train"].take(np.sort(rng.choice(len(sp["train"]), 10_000, replace=False))),
            "valid": sp["valid"].take(np.arange(0, len(sp["valid"]), 20)),
            "test": sp["test"].take(np.arange(0, len(sp["test"]), 10)),
        },
    )
    res = {
        m: train(m, ds, results_dir=tmp_path, overrides=ov)["test"]
        for m, ov in {
            "pop": {},
            "spop": {},
            "tagnn": {"dim": 32, "lr": 0.01, "epochs": 1, "batch_size": 100, "eval_batch_size": 500},
        }.items()
    }
    assert res["tagnn"]["P@20"] > res["pop"]["P@20"] + 0.3
    assert res["tagnn"]["MRR@20"] > res["pop"]["MRR@20"] + 0.1
    assert res["tagnn"]["P@20"] > res["spop"]["P@20"] + 0.08
