"""NARM and STAMP: scores equal plain re-statements of the official forward passes (NARM's Theano
`build_model`, STAMP's TensorFlow `Seq2SeqAttNN.build_model`) on copied weights, STAMP's gradient
clip equals the official clip of the summed loss, defaults and components."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sbrbench.batching import make_batch, pad_prefixes
from sbrbench.models import create_model, resolve_config

PREFIXES = [[3, 1, 4, 1, 5, 9, 2, 6], [7], [2, 7, 2, 7], [8, 8, 1], [5, 3, 9, 9, 11, 4, 2]]
N_ITEMS = 12


def batch_of(prefixes: list[list[int]]):
    flat = torch.tensor([i for p in prefixes for i in p])
    lengths = torch.tensor([len(p) for p in prefixes])
    start = torch.cumsum(lengths, 0) - lengths
    seq, mask = pad_prefixes(flat, start, lengths)
    return make_batch(seq, lengths, torch.ones(len(prefixes), dtype=torch.long), mask)


def np_params(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy().copy() for k, v in model.named_parameters()}


# ---- NARM -----------------------------------------------------------------------------------------
def theano_hard_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip(0.2 * x + 0.5, 0.0, 1.0)


def official_narm_logits(tp: dict[str, np.ndarray], prefixes: list[list[int]], maxlen: int,
                         h_units: int) -> np.ndarray:
    """NARM.build_model in evaluation (use_noise = 0) after data_process.load_data(maxlen) and
    prepare_data: time-major x (maxlen, n) padded at the end, mask = x != 0, a scan over every
    step, softmax over padded steps then re-masked and renormalised; returns the softmax's logits."""
    seqs = [p[:maxlen] if maxlen else p for p in prefixes]  # load_data keeps x[:maxlen]
    lengths = [len(s) for s in seqs]
    x = np.zeros((max(lengths), len(seqs)), dtype=np.int64)
    for i, s in enumerate(seqs):
        x[: len(s), i] = s
    mask = (x != 0).astype(np.float64)
    emb = tp["Wemb"][x] * (1 - 0.25)  # dropout_layer without noise: state * retain
    below = emb @ tp["Wxrz"] + tp["b"]
    h = np.zeros((len(seqs), h_units))
    proj = []
    for t in range(x.shape[0]):
        pre = h @ tp["Urz"] + below[t][:, : 2 * h_units]
        z = theano_hard_sigmoid(pre[:, :h_units])
        r = theano_hard_sigmoid(pre[:, h_units : 2 * h_units])
        hc = np.tanh((h * r) @ tp["Uh"] + below[t][:, 2 * h_units :])
        hn = (1.0 - z) * h + z * hc
        h = mask[t][:, None] * hn + (1.0 - mask[t])[:, None] * h
        proj.append(h)
    proj = np.stack(proj)
    last = proj[-1]
    sim = np.stack([(tp["bl_vector"] @ theano_hard_sigmoid(tp["W_encoder"] @ s.T + tp["W_decoder"] @ last.T)).sum(0)
                    for s in proj])  # (L, n)
    logits = sim.T * mask.T
    att = np.exp(logits - logits.max(1, keepdims=True))
    att = att / att.sum(1, keepdims=True) * mask.T
    weight = att / att.sum(1)[:, None]
    att_proj = (proj * weight.T[:, :, None]).sum(0)
    c = np.concatenate([att_proj, last], 1) * (1 - 0.5)
    return c @ (tp["Wemb"] @ tp["bili"]).T


@pytest.mark.parametrize("maxlen", [19, 5])
def test_narm_scores_equal_the_official_forward(maxlen: int) -> None:
    torch.manual_seed(0)
    model = create_model("narm", N_ITEMS, emb_dim=6, hidden=5, max_len=maxlen).double().eval()
    with torch.no_grad():
        model.bili.mul_(3.0)  # larger context weights: hard sigmoids off their flat parts
        model.W_encoder.mul_(2.0)
        ours = model(batch_of(PREFIXES)).numpy()
    want = official_narm_logits(np_params(model), PREFIXES, maxlen, 5)
    assert np.isneginf(ours[:, 0]).all()
    np.testing.assert_allclose(ours[:, 1:], want[:, 1:], rtol=1e-10, atol=1e-12)


def test_narm_hard_sigmoid_and_dropout_are_theanos() -> None:
    from sbrbench.models.narm import hard_sigmoid, theano_dropout

    x = torch.tensor([-3.0, -2.5, 0.0, 1.0, 2.5, 4.0])
    assert hard_sigmoid(x).tolist() == pytest.approx([0.0, 0.0, 0.5, 0.7, 1.0, 1.0])
    y = torch.ones(10_000)
    assert theano_dropout(y, 0.25, training=False).unique().tolist() == [0.75]
    torch.manual_seed(0)
    kept = theano_dropout(y, 0.25, training=True)
    assert set(kept.unique().tolist()) == {0.0, 1.0} and 0.72 < kept.mean().item() < 0.78  # no 1/keep rescaling


def test_narm_defaults_and_components() -> None:
    cfg = resolve_config("narm", "diginetica")
    assert (cfg.params.emb_dim, cfg.params.hidden, cfg.params.max_len) == (50, 100, 19)
    assert (cfg.params.drop_emb, cfg.params.drop_ctx) == (0.25, 0.5)
    t = cfg.train
    assert (t.epochs, t.batch_size, t.lr, t.lr_dc, t.l2) == (30, 512, 1e-3, 1.0, 0.0)
    full = create_model("narm", N_ITEMS, emb_dim=6, hidden=5)
    glob = create_model("narm", N_ITEMS, emb_dim=6, hidden=5, drop="local")
    loc = create_model("narm", N_ITEMS, emb_dim=6, hidden=5, drop="global")
    assert full.bili.shape == (6, 10) and glob.bili.shape == (6, 5) and loc.bili.shape == (6, 5)
    assert glob.W_encoder is None and glob.bl_vector is None and loc.W_encoder is not None
    with pytest.raises(Exception, match="at least one"):
        create_model("narm", N_ITEMS, drop="local,global")
    # prefixes longer than max_len keep their first clicks, as the official load_data
    model = create_model("narm", N_ITEMS, emb_dim=6, hidden=5, max_len=3).eval()
    with torch.no_grad():
        a = model(batch_of([[3, 1, 4, 1, 5]]))
        b = model(batch_of([[3, 1, 4]]))
    torch.testing.assert_close(a, b)


# ---- STAMP ----------------------------------------------------------------------------------------
def official_stamp_logits(tp: dict[str, np.ndarray], prefixes: list[list[int]]) -> np.ndarray:
    """STAMP_cikm.build_model on equal-length batches (as its batcher feeds them): embedding
    lookups with max_norm=1.5, mean pool, FwNnAttLayer(norm_type='none'), + pool_out, tanh layers
    without biases, scores against embe_dict[1:] (row 0 masked by pe_mask)."""
    table = tp["embedding"].copy()
    table[0] = 0.0

    def lookup(ids: np.ndarray) -> np.ndarray:
        e = table[ids]
        norm = np.sqrt((e * e).sum(-1, keepdims=True))
        return e * 1.5 / np.maximum(norm, 1.5)

    out = np.zeros((len(prefixes), table.shape[0] - 1))
    for length in sorted({len(p) for p in prefixes}):
        rows = [i for i, p in enumerate(prefixes) if len(p) == length]
        x = np.array([prefixes[i] for i in rows])
        inputs, last = lookup(x), lookup(x[:, -1])
        pool = inputs.sum(1) / length
        res = (last @ tp["w_last"])[:, None] + inputs @ tp["w_ctx"] + (pool @ tp["w_mean"])[:, None]
        alpha = ((1 / (1 + np.exp(-res))) @ tp["w_0"]).reshape(len(rows), length)
        attout = np.einsum("nt,ntd->nd", alpha, inputs) + pool
        prod = np.tanh(attout @ tp["w_a"]) * np.tanh(last @ tp["w_b"])
        out[rows] = prod @ table[1:].T
    return out


def test_stamp_scores_equal_the_official_forward() -> None:
    torch.manual_seed(0)
    model = create_model("stamp", N_ITEMS, dim=6).double().eval()
    with torch.no_grad():  # some embeddings above the 1.5 norm clip, some below
        model.embedding.normal_(0, 0.75)
        model.embedding[0].zero_()
        for w in (model.w_last, model.w_ctx, model.w_mean, model.w_0, model.w_a, model.w_b):
            w.normal_(0, 0.5)
        ours = model(batch_of(PREFIXES)).numpy()
    norms = np.linalg.norm(np_params(model)["embedding"][1:], axis=1)
    assert (norms > 1.5).any() and (norms < 1.5).any()
    want = official_stamp_logits(np_params(model), PREFIXES)
    assert np.isneginf(ours[:, 0]).all()
    np.testing.assert_allclose(ours[:, 1:], want, rtol=1e-10, atol=1e-12)


def test_stamp_gradient_clip_is_the_official_clip_of_the_summed_loss() -> None:
    torch.manual_seed(0)
    model = create_model("stamp", N_ITEMS, dim=6, grad_clip=0.5).double()
    with torch.no_grad():
        for w in model.parameters():
            w.normal_(0, 0.5)
    batch = batch_of(PREFIXES)
    batch.targets = torch.tensor([1, 2, 3, 4, 5])
    model.zero_grad()
    model.training_loss(batch).backward()
    model.clip_gradients()
    ours = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    F.cross_entropy(model(batch), batch.targets, reduction="sum").backward()  # TF: the loss vector's sum
    clipped = 0
    for k, p in model.named_parameters():
        g = p.grad
        norm = g.norm()
        want = g * 0.5 / torch.clamp(norm, min=0.5)  # tf.clip_by_norm
        clipped += int(norm > 0.5)
        torch.testing.assert_close(ours[k] * len(PREFIXES), want)
    assert 1 <= clipped < 6  # some tensors clipped, some not


def test_stamp_defaults_and_components() -> None:
    dg, yc = resolve_config("stamp", "diginetica"), resolve_config("stamp", "yoochoose1_64")
    assert dg.params.grad_clip == 110 and yc.params.grad_clip == 150 and dg.params.dim == 100
    assert (dg.train.epochs, dg.train.batch_size, dg.train.lr, dg.train.l2) == (10, 512, 3e-3, 0.0)
    stmp = create_model("stamp", N_ITEMS, dim=6, drop="attention")
    assert stmp.w_0 is None and stmp.w_ctx is None
    assert sum(p.numel() for p in stmp.parameters()) == N_ITEMS * 6 + 2 * 36


# Learning on real data: `reproduce srgnn-table2 --budget ci` and `tagnnpp-table2 --budget ci`
# (test_reproduce.py, test_reproduce_baselines.py) train both on Diginetica slices and check them against POP.
