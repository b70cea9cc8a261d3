"""RepeatNet, CSRM and LESSR against plain re-statements of their official forward passes on
copied weights (RepeatNet's Chainer `AttReDecoder`, CSRM's TF graph with its outer memory, LESSR's
DGL layers session by session), CSRM's memory (written in training only), components."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from sbrbench.batching import make_batch, pad_prefixes
from sbrbench.models import create_model
from sbrbench.models.csrm import EpochBatch

PREFIXES = [[3, 1, 4, 1, 5], [7], [2, 7, 2, 7, 6, 2], [8, 8, 1], [5, 3, 9], [6, 6]]
N_ITEMS = 11


def batch_of(prefixes: list[list[int]], graphs: bool = False):
    flat = torch.tensor([i for p in prefixes for i in p])
    lengths = torch.tensor([len(p) for p in prefixes])
    seq, mask = pad_prefixes(flat, torch.cumsum(lengths, 0) - lengths, lengths)
    return make_batch(seq, lengths, torch.ones(len(prefixes), dtype=torch.long), mask, graphs=graphs)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy().copy()


def sig(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def gru_states(gru: torch.nn.GRU, xs: np.ndarray) -> list[np.ndarray]:
    """Chainer's n_step_gru / PyTorch's GRU equations, one sequence, zero initial state."""
    w_ih, w_hh, b_ih, b_hh = (_np(getattr(gru, n)) for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"))
    h = np.zeros(w_hh.shape[1])
    out = []
    for x in xs:
        (i_r, i_z, i_n), (h_r, h_z, h_n) = np.split(w_ih @ x + b_ih, 3), np.split(w_hh @ h + b_hh, 3)
        r, z = sig(i_r + h_r), sig(i_z + h_z)
        n = np.tanh(i_n + r * h_n)
        h = (1 - z) * n + z * h
        out.append(h)
    return out


# ---- RepeatNet -----------------------------------------------------------------------------------
def official_repeatnet(model, prefix: list[int]) -> np.ndarray:
    """RepeatNet.predict in evaluation (no dropout): P(i) = P_r · P_r(i) + P_e · P_e(i)."""
    emb = _np(model.embedding.weight)
    hs = np.stack(gru_states(model.gru, emb[prefix]))
    last = hs[-1]

    def att(a, query):
        e = np.tanh(hs @ _np(a.hh.weight).T + _np(a.xh.weight) @ query) @ _np(a.hw.weight)[0]
        return softmax(e)

    p_mode = softmax(_np(model.re.weight) @ (att(model.re_att, last) @ hs))
    logits = _np(model.fy.weight) @ np.concatenate([att(model.e_att, last) @ hs, last])
    logits[list(set(prefix))] = -np.inf  # explore: new items only
    logits[0] = -np.inf  # sbrbench: the padding item is not a candidate
    p_e = softmax(logits)
    p_r = np.zeros(N_ITEMS)
    for item, w in zip(prefix, att(model.r_att, last)):
        p_r[item] += w
    return p_mode[1] * p_r + p_mode[0] * p_e


def test_repeatnet_probabilities_equal_the_official() -> None:
    torch.manual_seed(0)
    model = create_model("repeatnet", N_ITEMS, emb_dim=6, hidden=5).double().eval()
    with torch.no_grad():
        ours = model(batch_of(PREFIXES)).exp().numpy()
    want = np.stack([official_repeatnet(model, p) for p in PREFIXES])
    np.testing.assert_allclose(ours, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.sum(1), 1.0, rtol=1e-9)
    assert create_model("repeatnet", N_ITEMS, drop="repeat").fy.in_features == 200


# ---- CSRM ----------------------------------------------------------------------------------------
def tf_gru(cell, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gk, gb, ck, cb = _np(cell.gate_kernel), _np(cell.gate_bias), _np(cell.cand_kernel), _np(cell.cand_bias)
    h = np.zeros(cell.hidden)
    outs = []
    for x in xs:
        r, u = np.split(sig(np.concatenate([x, h]) @ gk + gb), 2)
        c = np.tanh(np.concatenate([x, r * h]) @ ck + cb)
        h = u * h + (1 - u) * c
        outs.append(h)
    return np.stack(outs), h


def official_csrm(model, prefix: list[int], memory: np.ndarray) -> np.ndarray:
    """CSRM.build_graph in evaluation (keep probabilities 1) reading `memory` (update_memory)."""
    emb = _np(model.Wemb)[prefix]
    _, c_g = tf_gru(model.global_gru, emb)
    outs, last = tf_gru(model.local_gru, emb)
    sim = sig(outs @ _np(model.W_encoder) + last @ _np(model.W_decoder)) @ _np(model.bl_vector)[0]
    c_l = softmax(sim) @ outs
    cos = memory @ c_l / (np.linalg.norm(c_l) * np.linalg.norm(memory, axis=1) + 1e-8)
    top = np.argsort(-cos, kind="stable")[: model.params.memory_size]
    read = softmax(cos[top]) @ memory[top]

    def std(x):
        return (x - x.mean()) / np.sqrt(x.var() + 1e-10)

    gate = sig(std(c_l) @ _np(model.inner_encoder) + std(read) @ _np(model.outer_encoder) + std(c_g) @ _np(model.state_encoder))
    final = gate * np.concatenate([std(c_l), std(c_g)]) + (1 - gate) * np.concatenate([std(read), std(read)])
    return final @ (_np(model.Wemb) @ _np(model.bili)).T + 1e-10


def test_csrm_scores_equal_the_official_and_the_memory_is_written_in_training_only() -> None:
    torch.manual_seed(0)
    model = create_model("csrm", N_ITEMS, emb_dim=6, hidden=5, memory_size=3, memory_window=7, keep_emb=1.0,
                         keep_out=1.0).double()
    train = [PREFIXES[:4], PREFIXES[4:], PREFIXES[1:5]]
    model.train()
    for i, part in enumerate(train):
        b = batch_of(part)
        model.training_loss(EpochBatch(**{f: getattr(b, f) for f in b.__dataclass_fields__}, starting=i == 0)).backward()
    # the memory: the first batch replaced it (direct_assign), the others appended, the last 7 kept
    assert int(model.memory_len) == 7
    memory = _np(model.memory[:7])
    model.eval()
    with torch.no_grad():
        ours = model(batch_of(PREFIXES)).numpy()
    assert int(model.memory_len) == 7 and np.array_equal(_np(model.memory[:7]), memory)  # evaluation writes nothing
    want = np.stack([official_csrm(model, p, memory) for p in PREFIXES])
    np.testing.assert_allclose(ours[:, 1:], want[:, 1:], rtol=1e-9, atol=1e-10)
    # a new epoch restarts the memory from its first batch
    model.train()
    b = batch_of(PREFIXES[:2])
    model(EpochBatch(**{f: getattr(b, f) for f in b.__dataclass_fields__}, starting=True))
    assert int(model.memory_len) == 2
    assert create_model("csrm", N_ITEMS, drop="outer").inner_encoder is None


# ---- LESSR ---------------------------------------------------------------------------------------
def official_lessr(model, prefix: list[int]) -> np.ndarray:
    """LESSR.forward in evaluation for one session, with DGL's semantics written out: EOP
    multigraph messages in edge order through the GRU, shortcut-graph attention, readout."""
    emb = _np(model.embedding.weight)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True) / 1.0, 1.0)  # max_norm=1 (renorm ≈ x/‖x‖)
    items = sorted(set(prefix))
    nid = {it: k for k, it in enumerate(items)}
    seq = [nid[i] for i in prefix]
    edges = list(itertools.pairwise(seq))  # in occurrence order
    short = {(seq[i], seq[j]) for i in range(len(seq)) for j in range(i, len(seq))}

    def bn(mod, x):
        return (x - _np(mod.running_mean)) / np.sqrt(_np(mod.running_var) + mod.eps) * _np(mod.weight) + _np(mod.bias)

    def prelu(mod, x):
        a = _np(mod.weight)
        return np.where(x > 0, x, a * x)

    feat = emb[items]
    for layer in model.layers:
        x = bn(layer.batch_norm, feat)
        if type(layer).__name__ == "EOPA":
            out = x @ _np(layer.fc_self.weight).T
            for v in range(len(items)):
                msgs = [x[u] for u, w in edges if w == v]
                if msgs:
                    out[v] += _np(layer.fc_neigh.weight) @ gru_states(layer.gru, np.stack(msgs))[-1]
        else:
            q = x @ _np(layer.fc_q.weight).T + _np(layer.fc_q.bias)
            k, val = x @ _np(layer.fc_k.weight).T, x @ _np(layer.fc_v.weight).T
            out = np.zeros((len(items), val.shape[1]))
            for v in range(len(items)):
                us = [u for u in range(len(items)) if (u, v) in short]
                e = np.array([_np(layer.fc_e.weight)[0] @ sig(q[u] + k[v]) for u in us])
                out[v] = softmax(e) @ val[us]
        feat = np.concatenate([prelu(layer.activation, out), feat], 1)
    r = model.readout
    x = bn(r.batch_norm, feat)
    last = seq[-1]
    e = np.array([_np(r.fc_e.weight)[0] @ sig(x[i] @ _np(r.fc_u.weight).T + x[last] @ _np(r.fc_v.weight).T
                                              + _np(r.fc_v.bias)) for i in range(len(items))])
    s_g = prelu(r.activation, _np(r.fc_out.weight) @ (softmax(e) @ x))
    sr = bn(model.batch_norm, np.concatenate([feat[last], s_g]))
    return (_np(model.fc_sr.weight) @ sr) @ emb.T


def test_lessr_scores_equal_the_official_layers() -> None:
    torch.manual_seed(0)
    model = create_model("lessr", N_ITEMS, dim=4, num_layers=4).double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):  # evaluation statistics that are not the identity
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_()
            if isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(0.0, 0.5)
        model.embedding.weight.mul_(3.0)  # rows beyond norm 1: the lookup renormalises them
    want = np.stack([official_lessr(model, p) for p in PREFIXES])
    with torch.no_grad():
        ours = model(batch_of(PREFIXES, graphs=True)).numpy()
    np.testing.assert_allclose(ours[:, 1:], want[:, 1:], rtol=1e-6, atol=1e-8)
    assert (model.embedding.weight.norm(dim=1) <= 1 + 1e-6).all()  # renormalised in place, as the official
    decay, no_decay = model.configure_optimizer(1e-3, 1e-4).param_groups
    assert no_decay["weight_decay"] == 0 and decay["weight_decay"] == 1e-4
    assert len(create_model("lessr", N_ITEMS, dim=4, drop="sgat").layers) == 2


# Learning on real data: `reproduce tagnnpp-table2 --budget ci` (test_reproduce_baselines.py) trains all
# three on Diginetica's 1,000-item slice and checks them against POP.
