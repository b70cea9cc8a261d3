"""`macl-code`'s training step with its item-level CL as sbrbench computes it against the plain
autograd statement of the same loss, alternately in one process.

    python bench/bench_macl.py [--dataset macl-cellphones] [--rounds 3] [--steps 5] [--threads 1]
                               [--device cpu] [--out results/bench/macl-code-cpu.json]

The released code contrasts every item with 50 (Instacart 100) negatives at every step, each
negative a gathered row of a projected view table with its own dropout in the first epoch
(models-next.md §2.4): an (N, K, d) tensor per step. The reference computes it as autograd sees
it most simply — chunks of rows gathered with `index_select`, `F.dropout` on them, norms, dots and
means, backward through all of that; `macl-code` uses `gathered_row_stats` (with a dropout mask:
one gradient buffer, recomputed chunks; without one: the table's row norms, `embedding_bag` for the
means and both gradients, gathered rows only for the dots) and `dropout_mask` (eight mask entries
per random byte at rate 0.5). Both see
the same batches and draws; the loss values agree to float rounding without dropout (checked
here). Timed in epoch 1 (dropout on) and epoch 2 (the code's quirk: dropout off from then on).
Writes `--out` (JSON) with the load average, the thread count and the time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def reference_item_cl(model, items, views, draws):  # type: ignore[no-untyped-def]
    """The plain autograd statement of `MACLCode.item_cl` (the form before `gathered_row_stats`)."""
    import torch
    import torch.nn.functional as F

    from sbrbench.models.macl import with_zero_row
    from sbrbench.models.macl_code import EPS, released_loss

    p = model.params
    p_drop = model._p(p.dropout)
    n, k = items.shape[0], draws.item_negatives.shape[1]
    tables = [with_zero_row(t) for t in views]
    pos_tables = torch.stack([torch.tanh(model.item_proj[v + 1].layers[0](t)) for v, t in enumerate(tables)])
    if not p.image and p.negative_projector_quirk:
        neg_tables = torch.stack([torch.tanh(model.item_proj[v].layers[0](t)) for v, t in enumerate(tables)])
    else:
        neg_tables = pos_tables
    c = draws.item_views
    pos = F.dropout(pos_tables[c, torch.arange(1, n + 1, device=items.device)], p_drop, p_drop > 0)
    anchors = model.item_proj[0](items, p_drop)
    flat = neg_tables.reshape(-1, neg_tables.shape[-1])
    idx = c.unsqueeze(1) * neg_tables.shape[1] + draws.item_negatives
    dots, norms, means = [], [], []
    step = max(1, (1 << 22) // max(k * flat.shape[1], 1))
    for s in range(0, n, step):
        sel = idx[s : s + step]
        g = F.dropout(flat.index_select(0, sel.reshape(-1)).view(sel.shape[0], k, -1), p_drop, p_drop > 0)
        norms.append(g.norm(dim=-1))
        dots.append(torch.bmm(g, anchors[s : s + step].unsqueeze(2)).squeeze(2))
        means.append(g.mean(1))
    a_norm = anchors.norm(dim=-1)
    cos_n = torch.cat(dots) / (a_norm.unsqueeze(1) * torch.cat(norms) + EPS)
    cos_p = (anchors * pos).sum(-1) / (a_norm * pos.norm(dim=-1) + EPS)
    lam = model._lambda(model.item_adp, anchors, pos, torch.cat(means))
    return released_loss(cos_p, cos_n, lam, p.tau)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="macl-cellphones")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from sbrbench.batching import item_tensor, training_source
    from sbrbench.data.store import load_processed
    from sbrbench.models import MODELS, resolve_config
    from sbrbench.optim import make_optimizer

    torch.set_num_threads(args.threads)
    ds, ds_dir = load_processed(args.dataset, "macl")
    mc = resolve_config("macl-code", ds.name)
    torch.manual_seed(0)
    model = MODELS.get("macl-code")(ds.n_items, mc.params)
    model.prepare(ds, ("train",), ds_dir / "graphs")
    model = model.to(args.device)
    fit = training_source(model, ds, ("train",), args.device, items=item_tensor(ds, args.device))
    gen = fit.batches(mc.train.batch_size, generator=torch.Generator().manual_seed(0))
    batches = [next(gen) for _ in range(args.steps)]
    opt = model.configure_optimizer(mc.train.lr, mc.train.l2) or make_optimizer(model, mc.train.lr, mc.train.l2)
    ours_cl = type(model).item_cl

    def run(kind: str) -> float:
        model.item_cl = (lambda *a: reference_item_cl(model, *a)) if kind == "reference" else \
            (lambda *a: ours_cl(model, *a))
        t0 = time.perf_counter()
        for b in batches:
            opt.zero_grad()
            model.training_loss(b).backward()
            opt.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / len(batches)

    model.eval()  # agreement of the two losses, dropout off
    with torch.no_grad():
        draws = model.draw(batches[0].seq.shape[0], args.device)
        views = model.view_tables()
        items = model.item_table(views)
        a, b = ours_cl(model, items, views, draws), reference_item_cl(model, items, views, draws)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-3), (float(a), float(b))
    model.train()
    out: dict[str, object] = {"dataset": args.dataset, "n_items": ds.n_items - 1, "batch_size": mc.train.batch_size,
                              "item_negatives": mc.params.item_negatives, "device": args.device,
                              "threads": args.threads, "steps_per_round": args.steps,
                              "loss_agreement_without_dropout": [float(a), float(b)]}
    for epoch, label in ((0, "epoch1_dropout"), (1, "epoch2_no_dropout")):
        model.on_epoch_start(epoch)
        run("ours")  # warm-up
        rows = [(run("reference"), run("ours")) for _ in range(args.rounds)]
        ratios = [r / o for r, o in rows]
        out[label] = {"reference_s_per_step": statistics.median(r for r, _ in rows),
                      "ours_s_per_step": statistics.median(o for _, o in rows),
                      "speedup_median": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)]}
        print(label, json.dumps(out[label]), flush=True)
    out.update(load_average=list(os.getloadavg()), machine=platform.machine(), cpus=os.cpu_count(),
               torch=torch.__version__, time=time.strftime("%Y-%m-%d %H:%M:%S"))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
